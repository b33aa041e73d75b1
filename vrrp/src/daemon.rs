//! The tokio driver: sockets, netlink, tracking and timers around the sans-IO
//! [`fsm::Instance`](crate::fsm::Instance). One task per instance; each owns its sockets.
//!
//! A file per concern: [`admin`] (the HTTP status and readiness), `instance` (the
//! per-instance task: wait for the interface, then drive the machine), `setup` (what must
//! exist before the machine starts, with its typed errors), `actions` (carrying out what
//! the machine asks for), `tracks` (tracked checks and interfaces) and `running` (the
//! instance tasks by name and the [`Reloader`] that changes them on `SIGHUP`). What to do
//! with a received packet is decided without IO in [`crate::admit`], and what a reload
//! changes in [`crate::reload`].

mod actions;
pub mod admin;
mod instance;
mod running;
pub mod setup;
mod tracks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::error;

use crate::config::{Config, InstanceConfig};
use crate::metrics::Metrics;
use crate::notify::Notifier;

pub use admin::InstanceStatus;
pub use running::{LastReload, Reloader, reload_on};
use running::{Running, spawn_notifier};
pub use setup::SetupError;

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The admin listener could not be bound.
    #[error("binding admin listener {addr}: {source}")]
    AdminBind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running daemon.
pub struct DaemonHandle {
    /// Where the admin server listens, if configured.
    pub admin_addr: Option<SocketAddr>,
    /// Live per-instance status, in the order of the running configuration.
    pub status: Arc<Mutex<Vec<InstanceStatus>>>,
    /// The metrics.
    pub metrics: Metrics,
    reloader: Reloader,
    shutdown: CancellationToken,
    admin_task: Option<JoinHandle<()>>,
}

impl DaemonHandle {
    /// Reloads from `path` (the file the daemon was started from) on every signal `hup`
    /// delivers (SIGHUP) and on `POST /api/reload`, which answers 404 until this is called.
    /// The first path given stays.
    pub fn reload_from(&self, path: PathBuf, hup: tokio::signal::unix::Signal) {
        let _ = self.reloader.file.set(path.clone());
        tokio::spawn(reload_on(hup, self.reloader.clone(), path));
    }

    /// Waits for shutdown, then until every instance has finished its own (priority 0
    /// sent, VIPs removed, notify queue drained).
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        let tracker = {
            // Under the lock: no reload is between stopping and starting instances.
            let running = self.reloader.running.lock().await;
            running.tracker.clone()
        };
        tracker.close();
        tracker.wait().await;
        if let Some(t) = self.admin_task {
            if let Err(e) = t.await {
                error!("admin task failed: {e}");
            }
        }
    }
}

/// Runs the daemon until `shutdown` is cancelled, then shuts every instance down cleanly.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

/// Starts the daemon and returns once the admin listener is bound and every instance task
/// is spawned.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<DaemonHandle, DaemonError> {
    let metrics = Metrics::new()?;
    let status = Arc::new(Mutex::new(
        config
            .instances
            .iter()
            .map(InstanceStatus::initial)
            .collect::<Vec<_>>(),
    ));
    let last_reload = Arc::new(Mutex::new(None));
    // The admin API reloads through the reloader, made after it: it gets it once made.
    let api_reloader = Arc::new(std::sync::OnceLock::new());
    let (admin_addr, admin_task) = match config.admin {
        Some(addr) => {
            let (local, task) = admin::spawn(
                addr,
                &metrics,
                &status,
                &last_reload,
                &api_reloader,
                shutdown.clone(),
            )
            .await?;
            (Some(local), Some(task))
        }
        None => (None, None),
    };
    let mut running = Running {
        config: Config {
            admin: config.admin,
            instances: Vec::new(),
            sync_groups: Vec::new(),
        },
        slots: HashMap::new(),
        groups: HashMap::new(),
        siblings: Arc::new(Vec::new()),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
        tracker: TaskTracker::new(),
    };
    running.install(config);
    for idx in 0..running.config.instances.len() {
        running.spawn_instance(idx);
    }
    let reloader = Reloader {
        running: Arc::new(tokio::sync::Mutex::new(running)),
        metrics: metrics.clone(),
        last: last_reload,
        file: Arc::new(std::sync::OnceLock::new()),
    };
    let _ = api_reloader.set(reloader.clone());
    Ok(DaemonHandle {
        admin_addr,
        status,
        metrics,
        reloader,
        shutdown,
        admin_task,
    })
}

/// A sync group as one member sees it: every member's published state, and its own
/// position.
type Group = (watch::Sender<Vec<crate::sync::Member>>, usize);

/// What an instance task is told at start and on every reload that concerns it.
#[derive(Clone)]
struct Live {
    cfg: Arc<InstanceConfig>,
    /// Its position in the running configuration (the sibling list's order).
    idx: usize,
    /// Interface, VRID and family of every configured instance.
    siblings: Arc<Vec<(String, u8, bool)>>,
}

/// What one instance task shares with the rest of the daemon.
struct Ctx {
    live: watch::Receiver<Live>,
    metrics: Metrics,
    status: Arc<Mutex<Vec<InstanceStatus>>>,
    /// Cancelled on daemon shutdown, or when a reload removes or restarts the instance.
    shutdown: CancellationToken,
    group: Option<Group>,
    /// Replaced when a reload changes the notify command.
    notifier: Mutex<Option<Notifier>>,
}

impl Ctx {
    /// The instance's current settings.
    fn cfg(&self) -> Arc<InstanceConfig> {
        self.live.borrow().cfg.clone()
    }
    fn set_status(&self, f: impl FnOnce(&mut InstanceStatus)) {
        let name = self.cfg().name.clone();
        if let Ok(mut s) = self.status.lock() {
            if let Some(i) = s.iter_mut().find(|i| i.name == name) {
                f(i);
            }
        }
    }
    fn problem(&self, p: Option<String>) {
        self.set_status(|s| s.problem = p);
    }
    fn notify(&self, to: crate::fsm::State, prio: u8) {
        if let Ok(n) = self.notifier.lock() {
            if let Some(n) = n.as_ref() {
                n.notify(to, prio);
            }
        }
    }
    /// A reload changed the notify command: later transitions use the new one; the old
    /// one still runs what it had queued.
    fn replace_notifier(&self, cfg: &InstanceConfig) {
        let new = spawn_notifier(cfg, &self.metrics);
        let old = match self.notifier.lock() {
            Ok(mut n) => std::mem::replace(&mut *n, new),
            Err(_) => None,
        };
        if let Some(old) = old {
            tokio::spawn(old.finish());
        }
    }
    fn take_notifier(&self) -> Option<Notifier> {
        self.notifier.lock().ok().and_then(|mut n| n.take())
    }
}
