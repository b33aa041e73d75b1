//! `tether lb`: a layer-4 TCP load balancer with active health checks.
//!
//! - [`config`]: the TOML a user writes and its validation.
//! - [`balance`]: the balancing algorithms, sans-IO.
//! - [`inspect`]: the PROXY header and TLS ClientHello parsers, and what a first read
//!   means (sans-IO); [`peer`]: reading a socket's state without consuming it.
//! - [`state`]: live frontends, backends and servers shared by the data path and the API.
//! - `proxy`: the data path (accept, inspect, pick, connect with retries, relay, log);
//!   [`relay`]: the bidirectional copy with half-close and idle timeouts; `listener`: the
//!   frontends' sockets.
//! - [`runtime`]: the running balancer and the swap of a new state; `reload`: the pure plan
//!   of what a new configuration changes; `resolve`: servers given by host name.
//! - `health`: the health monitors of servers; `passive`: failures seen on live traffic.
//! - [`metrics`]: the Prometheus families; `admin`: the admin API and stats page.
//! - [`dr`]: the forwarding tier (`mode = "dr"`): direct server return in the kernel.
//! - [`announce`]: offering dr VIPs to a routing daemon (BIRD) while they are ready.
//! - [`workers`]: the thread-per-core worker pool the binary runs the balancer on.
//! - [`start`] / [`run`]: the daemon, with shutdown injected so tests run it in-process.
#![warn(missing_docs)]

mod admin;
pub mod announce;
pub mod balance;
pub mod config;
pub mod dr;
mod health;
pub mod inspect;
mod listener;
pub mod metrics;
mod passive;
pub mod peer;
mod proxy;
pub mod relay;
mod reload;
mod resolve;
pub mod runtime;
mod spread;
pub mod state;
pub mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use thiserror::Error;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use runtime::{Lb, ReloadError, ReloadReport};

/// Why the balancer could not start.
#[derive(Debug, Error)]
pub enum LbError {
    /// A frontend could not bind.
    #[error("frontend \"{frontend}\": cannot listen on {addr}: {source}")]
    Bind {
        /// Frontend name.
        frontend: String,
        /// The address.
        addr: SocketAddr,
        /// The error from the OS (address in use, not available, no permission).
        source: std::io::Error,
    },
    /// The admin listener could not bind.
    #[error("admin: cannot listen on {addr}: {source}")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// The error from the OS (address in use, not available, no permission).
        source: std::io::Error,
    },
    /// A `mode = "dr"` frontend could not be put into the kernel.
    #[error("mode = \"dr\": {0}")]
    Dr(String),
    /// The metric families could not be registered (a bad or repeated definition).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The `[announce]` device could not be made.
    #[error("announce: {0}")]
    Announce(#[source] announce::device::DeviceError),
    /// A TLS health check's CA file could not be used.
    #[error("backend \"{backend}\": health ca {path}: {reason}")]
    Ca {
        /// Backend name.
        backend: String,
        /// The file.
        path: String,
        /// What was wrong with the file.
        reason: String,
    },
}

/// How the daemon runs, beyond its configuration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Accept loops (and listening sockets, with `SO_REUSEPORT`) per bind address.
    pub workers: usize,
    /// Runtimes that run the accept loops and their connections: accept loop `i` of each
    /// bind runs on runtime `i % len`, so with one current-thread runtime per worker thread
    /// each connection stays on the thread that accepted it (thread per core, as HAProxy's
    /// and nginx's workers). Empty: the runtime that calls [`start`] runs them.
    pub runtimes: Vec<tokio::runtime::Handle>,
    /// The file to read again on reload; `None` for embedded configurations.
    pub config_path: Option<PathBuf>,
}

/// A running balancer.
pub struct Running {
    /// The shared core (state, metrics, reload).
    pub lb: Arc<Lb>,
    /// Where the admin listener is, if any.
    pub admin_addr: Option<SocketAddr>,
    task: JoinHandle<()>,
}

impl Running {
    /// Where frontend `name` listens (ports chosen by the OS resolved).
    pub fn frontend_addrs(&self, name: &str) -> Vec<SocketAddr> {
        self.lb
            .state()
            .frontends
            .iter()
            .find(|f| f.cfg.name == name)
            .map(|f| f.bound.clone())
            .unwrap_or_default()
    }

    /// Reads the configuration file again and applies it (what `SIGHUP` does).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let r = self.lb.reload().await;
        if r.is_err() {
            self.lb.metrics.reload_failures.inc();
        }
        r
    }

    /// Waits until the balancer has stopped (after `shutdown` was cancelled and open
    /// connections finished or the grace period ran out).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts the balancer: binds every listener (failing before anything serves if one cannot
/// bind), resolves servers, starts health checks, the admin listener and the accept loops.
/// Cancelling `shutdown` stops accepting, waits up to the grace period for open
/// connections, then closes what is left.
pub async fn start(
    config: Config,
    opts: Options,
    shutdown: CancellationToken,
) -> Result<Running, LbError> {
    let lb = Lb::new(
        opts.workers,
        opts.runtimes.clone(),
        opts.config_path.clone(),
        &config.nameservers,
    )?;
    let admin_listener = match config.admin {
        Some(addr) => Some(
            tether_health::admin::bind(addr)
                .await
                .map_err(|source| LbError::AdminBind { addr, source })?,
        ),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    warn_open_admin(&config);
    let grace = config.grace_period;
    let stop_delay = config.stop_delay;
    // Made before anything listens or checks, so a device name in use fails the start with
    // nothing to undo.
    let announce_dev = match config.announce.clone() {
        Some(cfg) => {
            let dev = announce::prepare(&lb, &cfg)
                .await
                .map_err(LbError::Announce)?;
            Some((cfg, dev))
        }
        None => None,
    };
    let report = lb.apply(config).await?;
    let has_dr = lb.state().frontends.iter().any(|f| f.cfg.dr.is_some());
    // The kernel keeps forwarding until the very end of the stop, after the proxy's drain.
    let dr_stop = CancellationToken::new();
    let mut controller = dr::core::Controller::new();
    if has_dr {
        dr::first_apply(&lb.state(), &lb.dr, &mut controller, &lb.metrics)
            .await
            .map_err(LbError::Dr)?;
    }
    // Also without dr frontends now: a reload may add one.
    let dr_task = tokio::spawn(dr::run(lb.clone(), controller, dr_stop.clone()));
    let announce_stop = CancellationToken::new();
    let announce_task = announce_dev
        .map(|(cfg, dev)| tokio::spawn(announce::run(lb.clone(), cfg, dev, announce_stop.clone())));
    for f in &lb.state().frontends {
        match &f.cfg.dr {
            None => {
                tracing::info!(frontend = %f.cfg.name, bind = ?f.bound, backend = %f.backend.cfg.name, "listening")
            }
            Some(dr) => {
                tracing::info!(frontend = %f.cfg.name, vip = ?f.bound, backend = %f.backend.cfg.name, interface = %dr.interface, "forwarding (mode = dr)")
            }
        }
    }
    tracing::debug!(report = ?report, "started");
    if let Some(listener) = admin_listener {
        if let Some(a) = admin_addr {
            tracing::info!(listen = %a, "admin listening");
        }
        tokio::spawn(tether_health::admin::serve(
            listener,
            admin::router(&lb),
            lb.background.clone(),
        ));
    }
    tokio::spawn(lb.clone().resolve_loop());

    let core = lb.clone();
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        core.draining.store(true, Ordering::SeqCst);
        // Withdrawn first: the routers move the VIPs' traffic to the other balancers while
        // this one still forwards what arrives (stop_delay below).
        announce_stop.cancel();
        if let Some(t) = announce_task {
            let _ = t.await;
        }
        let forwarding_until = tokio::time::Instant::now() + stop_delay;
        core.accepting.cancel();
        // Every listening socket is closed once its accept loop has returned.
        core.accept_tasks.close();
        core.accept_tasks.wait().await;
        let ctx = &core.ctx;
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
        if core.state().frontends.iter().any(|f| f.cfg.dr.is_some()) {
            // `/readyz` says 503 from the start of the stop; frames still arriving until the
            // VIP has moved are forwarded, not answered with resets by this host.
            tokio::time::sleep_until(forwarding_until).await;
        }
        dr_stop.cancel();
        let _ = dr_task.await;
        core.background.cancel();
        tracing::info!("stopped");
    });

    Ok(Running {
        lb,
        admin_addr,
        task,
    })
}

/// Warns (at start and on every reload) when the admin API is open beyond loopback with no
/// token: allowed, for containers and labs, but said loudly.
pub(crate) fn warn_open_admin(config: &Config) {
    if let Some(addr) = config.admin
        && let Some(w) =
            tether_health::admin::open_admin_warning(addr, config.admin_token.is_some())
    {
        tracing::warn!("{w}");
    }
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
