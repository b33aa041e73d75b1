//! `tether lb`: a layer-4 TCP load balancer with active health checks.
//!
//! - [`config`]: the TOML a user writes and its validation.
//! - [`balance`]: the balancing algorithms, sans-IO.
//! - [`state`]: live frontends, backends and servers shared by the data path and the API.
//! - [`relay`]: the bidirectional copy with half-close and idle timeouts.
//! - [`start`] / [`run`]: the daemon, with shutdown injected so tests run it in-process.
#![warn(missing_docs)]

pub mod balance;
pub mod config;
mod health;
mod listener;
pub mod metrics;
mod proxy;
pub mod relay;
pub mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
use config::ServerAddress;
use metrics::Metrics;
use state::{Backend, Frontend, Server, State};

/// Why the balancer could not start.
#[derive(Debug, Error)]
pub enum LbError {
    /// A server's host name did not resolve.
    #[error("backend \"{backend}\": server \"{server}\": cannot resolve {address}: {reason}")]
    Resolve {
        /// Backend name.
        backend: String,
        /// Server name.
        server: String,
        /// The address as configured.
        address: String,
        /// Why.
        reason: String,
    },
    /// A frontend could not bind.
    #[error("frontend \"{frontend}\": cannot listen on {addr}: {source}")]
    Bind {
        /// Frontend name.
        frontend: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The admin listener could not bind.
    #[error("admin: cannot listen on {addr}: {source}")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS health check's CA file could not be used.
    #[error("backend \"{backend}\": health ca {path}: {reason}")]
    Ca {
        /// Backend name.
        backend: String,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// How the daemon runs, beyond its configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// Accept loops (and listening sockets, with `SO_REUSEPORT`) per bind address.
    pub workers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { workers: 1 }
    }
}

/// A running balancer.
pub struct Running {
    /// The live state (for tests and embedding).
    pub state: Arc<State>,
    /// Where the admin listener is, if any.
    pub admin_addr: Option<SocketAddr>,
    task: JoinHandle<()>,
}

impl Running {
    /// Where frontend `name` listens (ports chosen by the OS resolved).
    pub fn frontend_addrs(&self, name: &str) -> Vec<SocketAddr> {
        self.state
            .frontends
            .iter()
            .find(|f| f.cfg.name == name)
            .map(|f| f.bound.clone())
            .unwrap_or_default()
    }

    /// Waits until the balancer has stopped (after `shutdown` was cancelled and open
    /// connections finished or the grace period ran out).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts the balancer: resolves servers, binds every listener (failing before anything
/// serves if one cannot bind), starts health checks, the admin listener and the accept
/// loops. Cancelling `shutdown` stops accepting, waits up to the grace period for open
/// connections, then closes what is left.
pub async fn start(
    config: Config,
    opts: Options,
    shutdown: CancellationToken,
) -> Result<Running, LbError> {
    let metrics = Metrics::new();
    let mut backends = Vec::new();
    for b in &config.backends {
        let mut servers = Vec::new();
        for s in &b.servers {
            let addr = resolve(&s.address)
                .await
                .map_err(|reason| LbError::Resolve {
                    backend: b.name.clone(),
                    server: s.name.clone(),
                    address: s.address.to_string(),
                    reason,
                })?;
            servers.push(Arc::new(Server::new(&b.name, s.clone(), addr, &metrics)));
        }
        backends.push(Arc::new(Backend::new(b.clone(), servers, &metrics)));
    }

    let mut listeners = Vec::new();
    let mut frontends = Vec::new();
    for f in &config.frontends {
        let mut bound = Vec::new();
        for &addr in &f.binds {
            let group =
                listener::bind_group(addr, opts.workers).map_err(|source| LbError::Bind {
                    frontend: f.name.clone(),
                    addr,
                    source,
                })?;
            if let Some(l) = group.first()
                && let Ok(a) = l.local_addr()
            {
                bound.push(a);
            }
            listeners.push((frontends.len(), group));
        }
        let l = &[f.name.as_str()];
        frontends.push(Arc::new(Frontend {
            cfg: f.clone(),
            bound,
            backend: backends[f.backend].clone(),
            limit: Arc::new(Semaphore::new(f.maxconn)),
            connections: metrics.fe_connections.with_label_values(l),
            active: metrics.fe_active.with_label_values(l),
            accept_errors: metrics.fe_accept_errors.with_label_values(l),
            bytes_in: metrics.fe_bytes_in.with_label_values(l),
            bytes_out: metrics.fe_bytes_out.with_label_values(l),
        }));
    }

    let admin_listener = match config.admin {
        Some(addr) => Some(
            tether_health::admin::bind(addr)
                .await
                .map_err(|source| LbError::AdminBind { addr, source })?,
        ),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

    let state = Arc::new(State {
        frontends,
        backends,
        metrics: metrics.clone(),
        started: Instant::now(),
    });

    let background = CancellationToken::new();
    health::start_monitors(&state, &background)?;

    let draining = Arc::new(AtomicBool::new(false));
    if let Some(listener) = admin_listener {
        let router = admin_router(&state, draining.clone());
        tokio::spawn(tether_health::admin::serve(
            listener,
            router,
            background.clone(),
        ));
    }

    let accepting = CancellationToken::new();
    let ctx = Arc::new(proxy::Ctx {
        tracker: TaskTracker::new(),
        hard_stop: CancellationToken::new(),
        metrics,
    });
    let accept_tasks = TaskTracker::new();
    for (fi, group) in listeners {
        for l in group {
            accept_tasks.spawn(proxy::accept_loop(
                l,
                state.frontends[fi].clone(),
                ctx.clone(),
                accepting.clone(),
            ));
        }
    }
    accept_tasks.close();
    for f in &state.frontends {
        tracing::info!(frontend = %f.cfg.name, bind = ?f.bound, backend = %f.backend.cfg.name, "listening");
    }

    let grace = config.grace_period;
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        draining.store(true, Ordering::SeqCst);
        accepting.cancel();
        accept_tasks.wait().await;
        ctx.tracker.close();
        let open = ctx.tracker.len();
        tracing::info!(open, grace = ?grace, "stopped accepting; waiting for open connections");
        if tokio::time::timeout(grace, ctx.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = ctx.tracker.len(),
                "grace period over; closing open connections"
            );
            ctx.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), ctx.tracker.wait()).await;
        }
        background.cancel();
        tracing::info!("stopped");
    });

    Ok(Running {
        state,
        admin_addr,
        task,
    })
}

/// Starts the balancer and waits until it has stopped.
pub async fn run(
    config: Config,
    opts: Options,
    shutdown: CancellationToken,
) -> Result<(), LbError> {
    start(config, opts, shutdown).await?.wait().await;
    Ok(())
}

fn admin_router(state: &Arc<State>, draining: Arc<AtomicBool>) -> Router {
    let ready_state = state.clone();
    let readiness: tether_health::admin::Readiness = Arc::new(move || {
        if draining.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        ready_state.readiness()
    });
    let api_state = state.clone();
    let extra = Router::new().route(
        "/api/state",
        get(move || {
            let s = api_state.clone();
            async move { Json(s.view()) }
        }),
    );
    tether_health::admin::router(state.metrics.registry.clone(), readiness).merge(extra)
}

async fn resolve(address: &ServerAddress) -> Result<SocketAddr, String> {
    match address {
        ServerAddress::Ip(a) => Ok(*a),
        ServerAddress::Host(host, port) => {
            let mut addrs = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| e.to_string())?;
            addrs.next().ok_or_else(|| "no address".to_string())
        }
    }
}

/// Where each frontend listens, by name (for the demo and tests).
pub fn bound_addrs(state: &State) -> HashMap<String, Vec<SocketAddr>> {
    state
        .frontends
        .iter()
        .map(|f| (f.cfg.name.clone(), f.bound.clone()))
        .collect()
}
