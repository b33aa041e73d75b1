//! The running balancer's view of its frontends, backends and servers: configuration plus
//! the live counters, health and admin state the data path and the admin API share.
//!
//! `server` holds one server's live state (health, admin state, counters, slots); this
//! file the frontends, backends and the snapshot swapped whole on reload.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntGauge};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::balance::{Balancer, Candidate, hash_bytes};
use crate::config::{BackendConfig, FrontendConfig, ServerConfig};
use crate::metrics::Metrics;
use crate::passive::FailureGate;

mod server;

pub use server::{ActiveGuard, QueueGuard, Server, ServerMetrics, ServerView};

/// An operator's say over a server, independent of its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Takes connections while healthy.
    Ready,
    /// Takes no new connections; open ones continue.
    Drain,
    /// Maintenance: no new connections and reported down.
    Maint,
}

impl AdminState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }
}

/// One backend, live.
pub struct Backend {
    /// Its configuration (servers live in `servers`).
    pub cfg: BackendConfig,
    /// The servers, in configuration order.
    pub servers: Vec<Arc<Server>>,
    balancer: Mutex<Balancer>,
    /// Retries counter child.
    pub retries: IntCounter,
    /// No-server counter child.
    pub no_server: IntCounter,
}

impl Backend {
    /// Builds a live backend.
    pub fn new(cfg: BackendConfig, servers: Vec<Arc<Server>>, metrics: &Metrics) -> Self {
        Backend {
            balancer: Mutex::new(Balancer::new(cfg.balance, servers.len())),
            retries: metrics.be_retries.with_label_values(&[cfg.name.as_str()]),
            no_server: metrics.be_no_server.with_label_values(&[cfg.name.as_str()]),
            servers,
            cfg,
        }
    }

    /// Picks a server for a client, skipping those already tried.
    pub fn pick(&self, client: IpAddr, exclude: &[usize]) -> Option<usize> {
        let candidates: smallvec::SmallVec<[Candidate; 16]> =
            self.servers.iter().map(|s| s.candidate()).collect();
        let key = match client {
            IpAddr::V4(a) => hash_bytes(&a.octets()),
            IpAddr::V6(a) => hash_bytes(&a.octets()),
        };
        let mut balancer = self.balancer.lock().ok()?;
        balancer.pick(&candidates, exclude, key, rand::random::<u64>)
    }

    /// At least one server is known up and ready.
    pub fn any_up(&self) -> bool {
        self.servers.iter().any(|s| s.up())
    }
}

/// One frontend, live.
pub struct Frontend {
    /// Its configuration.
    pub cfg: FrontendConfig,
    /// Where it actually listens (ports chosen by the OS resolved).
    pub bound: Vec<SocketAddr>,
    /// Where its connections go (when no SNI route matches).
    pub backend: Arc<Backend>,
    /// SNI routes, in order.
    pub routes: Vec<(crate::config::SniPattern, Arc<Backend>)>,
    /// `maxconn` slots.
    pub limit: Arc<Semaphore>,
    /// Metric children.
    pub connections: IntCounter,
    /// Open connections gauge.
    pub active: IntGauge,
    /// Accept errors.
    pub accept_errors: IntCounter,
    /// Bytes from clients.
    pub bytes_in: IntCounter,
    /// Bytes to clients.
    pub bytes_out: IntCounter,
}

/// Everything `/api/state` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StateView {
    /// Every frontend, in configuration order.
    pub frontends: Vec<FrontendView>,
    /// Every backend, in configuration order.
    pub backends: Vec<BackendView>,
    /// The VIPs offered to the routers, with `[announce]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announce: Option<crate::announce::AnnounceView>,
}

/// A frontend in `/api/state`.
#[derive(Debug, Clone, Serialize)]
pub struct FrontendView {
    /// The frontend's name in the configuration.
    pub name: String,
    /// Bound addresses.
    pub bind: Vec<String>,
    /// Backend name.
    pub backend: String,
    /// Connections open.
    pub active: i64,
    /// Connections accepted.
    pub total: u64,
    /// `proxy` or `dr`.
    pub mode: crate::config::Mode,
    /// The forwarding tier's view, for a dr frontend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dr: Option<crate::dr::DrView>,
}

/// A backend in `/api/state`.
#[derive(Debug, Clone, Serialize)]
pub struct BackendView {
    /// The backend's name in the configuration.
    pub name: String,
    /// How it picks a server.
    pub balance: crate::config::Balance,
    /// Its servers, in configuration order.
    pub servers: Vec<ServerView>,
}

/// The whole live balancer, as of one configuration. A reload builds a new one and swaps
/// it in; connections keep the objects they started with.
#[derive(Default)]
pub struct State {
    /// Every frontend, in configuration order.
    pub frontends: Vec<Arc<Frontend>>,
    /// Every backend, in configuration order.
    pub backends: Vec<Arc<Backend>>,
    /// Configured bind address to index in `frontends`.
    pub binds: std::collections::HashMap<SocketAddr, usize>,
}

impl State {
    /// The frontend listening on configured address `bind`.
    pub fn frontend_for_bind(&self, bind: SocketAddr) -> Option<&Arc<Frontend>> {
        self.binds.get(&bind).and_then(|i| self.frontends.get(*i))
    }

    /// Server `server` of backend `backend`.
    pub fn server(&self, backend: &str, server: &str) -> Option<&Arc<Server>> {
        self.backends
            .iter()
            .find(|b| b.cfg.name == backend)?
            .servers
            .iter()
            .find(|s| s.cfg.name == server)
    }

    /// A snapshot for `/api/state`.
    pub fn view(&self) -> StateView {
        StateView {
            frontends: self
                .frontends
                .iter()
                .map(|f| FrontendView {
                    name: f.cfg.name.clone(),
                    bind: f.bound.iter().map(|a| a.to_string()).collect(),
                    backend: f.backend.cfg.name.clone(),
                    active: f.active.get(),
                    total: f.connections.get(),
                    mode: if f.cfg.dr.is_some() {
                        crate::config::Mode::Dr
                    } else {
                        crate::config::Mode::Proxy
                    },
                    dr: None,
                })
                .collect(),
            backends: self
                .backends
                .iter()
                .map(|b| BackendView {
                    name: b.cfg.name.clone(),
                    balance: b.cfg.balance,
                    servers: b.servers.iter().map(|s| s.view()).collect(),
                })
                .collect(),
            announce: None,
        }
    }

    /// `/readyz`: every frontend's backend has a server known up.
    pub fn readiness(&self) -> Result<(), String> {
        let missing: Vec<&str> = self
            .frontends
            .iter()
            .filter(|f| !f.backend.any_up())
            .map(|f| f.cfg.name.as_str())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("no server up for frontend {}", missing.join(", ")))
        }
    }
}
