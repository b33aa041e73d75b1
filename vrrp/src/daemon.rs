//! The tokio driver: sockets, netlink, tracking and timers around the sans-IO
//! [`fsm::Instance`](crate::fsm::Instance). One task per instance; each owns its sockets.
//!
//! A file per concern: [`admin`] (the HTTP status and readiness), `instance` (the
//! per-instance task: wait for the interface, then drive the machine), `setup` (what must
//! exist before the machine starts, with its typed errors), `actions` (carrying out what
//! the machine asks for) and `tracks` (tracked checks and interfaces). What to do with a
//! received packet is decided without IO in [`crate::admit`].

mod actions;
pub mod admin;
mod instance;
pub mod setup;
mod tracks;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{Config, InstanceConfig};
use crate::metrics::Metrics;
use crate::notify::Notifier;

pub use admin::InstanceStatus;
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
    /// Live per-instance status.
    pub status: Arc<Mutex<Vec<InstanceStatus>>>,
    /// The metrics.
    pub metrics: Metrics,
    tasks: Vec<JoinHandle<()>>,
}

impl DaemonHandle {
    /// Waits until every instance has finished its shutdown (priority 0 sent, VIPs removed).
    pub async fn wait(self) {
        for t in self.tasks {
            if let Err(e) = t.await {
                error!("instance task failed: {e}");
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
    let mut tasks = Vec::new();
    let admin_addr = match config.admin {
        Some(addr) => {
            let (local, task) = admin::spawn(addr, &metrics, &status, shutdown.clone()).await?;
            tasks.push(task);
            Some(local)
        }
        None => None,
    };

    // Sync groups: each member publishes its own fault; a member faults when any does.
    let mut group_of: Vec<Option<Group>> = vec![None; config.instances.len()];
    for g in &config.sync_groups {
        let (tx, _) = watch::channel(vec![false; g.members.len()]);
        for (pos, &idx) in g.members.iter().enumerate() {
            if let Some(slot) = group_of.get_mut(idx) {
                *slot = Some((tx.clone(), pos));
            }
        }
    }

    // VRIDs of every instance per interface and family: a sibling instance's adverts
    // reach our socket too and are not "unknown".
    let siblings: Vec<(String, u8, bool)> = config
        .instances
        .iter()
        .map(|i| (i.interface.clone(), i.vrid, i.is_v6()))
        .collect();
    let siblings = Arc::new(siblings);
    for (idx, inst) in config.instances.into_iter().enumerate() {
        metrics.init_instance(&inst.name);
        let notifier = inst.notify.clone().map(|argv| {
            Notifier::spawn(
                argv,
                inst.name.clone(),
                inst.notify_timeout,
                metrics.clone(),
            )
        });
        let ctx = Ctx {
            idx,
            cfg: Arc::new(inst),
            metrics: metrics.clone(),
            status: status.clone(),
            shutdown: shutdown.clone(),
            group: group_of.get_mut(idx).and_then(Option::take),
            siblings: siblings.clone(),
            notifier,
        };
        tasks.push(tokio::spawn(instance::run(ctx)));
    }
    Ok(DaemonHandle {
        admin_addr,
        status,
        metrics,
        tasks,
    })
}

/// Cancels `token` on SIGTERM or SIGINT (the binary and test children use this).
pub fn cancel_on_signals(token: CancellationToken) -> std::io::Result<JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: sending priority 0 and removing VIPs"),
            _ = int.recv() => info!("SIGINT: sending priority 0 and removing VIPs"),
        }
        token.cancel();
    }))
}

/// A sync group as one member sees it: every member's fault flag, and its own position.
type Group = (watch::Sender<Vec<bool>>, usize);

/// What one instance task shares with the rest of the daemon.
struct Ctx {
    idx: usize,
    cfg: Arc<InstanceConfig>,
    metrics: Metrics,
    status: Arc<Mutex<Vec<InstanceStatus>>>,
    shutdown: CancellationToken,
    group: Option<Group>,
    siblings: Arc<Vec<(String, u8, bool)>>,
    notifier: Option<Notifier>,
}

impl Ctx {
    fn set_status(&self, f: impl FnOnce(&mut InstanceStatus)) {
        if let Ok(mut s) = self.status.lock() {
            if let Some(i) = s.get_mut(self.idx) {
                f(i);
            }
        }
    }
    fn problem(&self, p: Option<String>) {
        self.set_status(|s| s.problem = p);
    }
}
