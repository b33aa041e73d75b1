//! What runs and what changes it: the instance tasks by name, with the handles a reload
//! needs (their settings channel, their stop token), and the [`Reloader`] that carries out
//! [`crate::reload`]'s plan on them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tether_health::config::ConfigErrors;
use tokio::signal::unix::Signal;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::{Ctx, Live, instance};
use crate::config::{Config, InstanceConfig};
use crate::daemon::InstanceStatus;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::reload::{self, Plan};
use crate::sync::Member;

/// The outcome of the last reload, for `/api/reload`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastReload {
    /// `ok` or `failed`.
    pub result: &'static str,
    /// Unix time it was tried at, in seconds.
    pub at_unix: f64,
    /// What the reload did (`ok`) or the errors that refused it (`failed`).
    pub detail: String,
}

/// Reloads a running daemon's configuration: instances with equal settings keep running
/// untouched, changed ones are changed in place, and only those whose interface, VRID,
/// family or sockets changed are restarted ([`crate::reload`] decides which).
#[derive(Clone)]
pub struct Reloader {
    pub(super) running: Arc<tokio::sync::Mutex<Running>>,
    pub(super) metrics: Metrics,
    pub(super) last: Arc<Mutex<Option<LastReload>>>,
    /// The file `POST /api/reload` reads, once the binary named it
    /// ([`super::DaemonHandle::reload_from`]).
    pub(super) file: Arc<std::sync::OnceLock<PathBuf>>,
}

impl Reloader {
    /// Reads and validates `path`, then applies it. A file that does not validate is
    /// refused with its `file:line: key` errors and counted as failed; the running
    /// configuration keeps serving.
    pub async fn reload_file(&self, path: &Path) -> Result<Plan, ConfigErrors> {
        match crate::config::load(path) {
            Ok(cfg) => Ok(self.apply(cfg).await),
            Err(e) => {
                self.record("failed", e.to_string());
                Err(e)
            }
        }
    }

    /// Reloads from the file the daemon was told to reload from (what `POST /api/reload`
    /// does); `None` when none was named.
    pub async fn reload_named(&self) -> Option<Result<Plan, ConfigErrors>> {
        let path = self.file.get()?.clone();
        info!(file = %path.display(), "admin API: reloading");
        Some(self.reload_logged(&path).await)
    }

    /// [`Reloader::reload_file`], with its outcome logged.
    async fn reload_logged(&self, path: &Path) -> Result<Plan, ConfigErrors> {
        let outcome = self.reload_file(path).await;
        match &outcome {
            Ok(plan) => info!("reload applied: {plan}"),
            Err(e) => error!("reload refused, still running the previous configuration:\n{e}"),
        }
        outcome
    }

    /// Applies an already validated configuration; returns what was done.
    pub async fn apply(&self, config: Config) -> Plan {
        let mut running = self.running.lock().await;
        let plan = running.apply(config).await;
        drop(running);
        self.record("ok", plan.to_string());
        plan
    }

    fn record(&self, result: &'static str, detail: String) {
        self.metrics.reloads.with_label_values(&[result]).inc();
        let at_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.metrics.last_reload_timestamp.set(at_unix);
        self.metrics
            .last_reload_success
            .set(i64::from(result == "ok"));
        if let Ok(mut l) = self.last.lock() {
            *l = Some(LastReload {
                result,
                at_unix,
                detail,
            });
        }
    }
}

/// Reloads from `path` on every signal `hup` delivers (SIGHUP), logging the outcome,
/// until the stream ends. The signal stream is made by the caller before the daemon
/// starts, so an early SIGHUP cannot kill the process.
pub async fn reload_on(mut hup: Signal, reloader: Reloader, path: PathBuf) {
    while hup.recv().await.is_some() {
        info!(file = %path.display(), "SIGHUP: reloading");
        let _ = reloader.reload_logged(&path).await;
    }
}

/// The instances as they run, and what a reload needs to change them.
pub(super) struct Running {
    pub(super) config: Config,
    pub(super) slots: HashMap<String, Slot>,
    /// Each sync group's shared member states, by group name.
    pub(super) groups: HashMap<String, watch::Sender<Vec<Member>>>,
    pub(super) siblings: Arc<Vec<(String, u8, bool)>>,
    pub(super) shutdown: CancellationToken,
    pub(super) metrics: Metrics,
    pub(super) status: Arc<Mutex<Vec<InstanceStatus>>>,
    pub(super) tracker: TaskTracker,
}

/// One running instance task and the handles to change or stop it.
pub(super) struct Slot {
    live: watch::Sender<Live>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Makes `config` the running one: sync group channels (kept for groups whose
    /// members did not change), the sibling list and the status table.
    pub(super) fn install(&mut self, config: Config) {
        let mut groups = HashMap::new();
        for g in &config.sync_groups {
            let names = |c: &Config, m: &[usize]| -> Vec<String> {
                m.iter()
                    .filter_map(|&i| c.instances.get(i).map(|x| x.name.clone()))
                    .collect()
            };
            let same = self
                .config
                .sync_groups
                .iter()
                .find(|o| o.name == g.name)
                .is_some_and(|o| names(&self.config, &o.members) == names(&config, &g.members));
            let tx = match self.groups.remove(&g.name) {
                Some(tx) if same => tx,
                _ => watch::channel(vec![Member::default(); g.members.len()]).0,
            };
            groups.insert(g.name.clone(), tx);
        }
        self.groups = groups;
        // VRIDs of every instance per interface and family: a sibling instance's adverts
        // reach our socket too and are not "unknown".
        self.siblings = Arc::new(
            config
                .instances
                .iter()
                .map(|i| (i.interface.clone(), i.vrid, i.is_v6()))
                .collect(),
        );
        if let Ok(mut st) = self.status.lock() {
            let old = std::mem::take(&mut *st);
            *st = config
                .instances
                .iter()
                .map(|i| match old.iter().find(|o| o.name == i.name) {
                    Some(o) if self.slots.contains_key(&i.name) => InstanceStatus {
                        priority: i.priority,
                        ..o.clone()
                    },
                    _ => InstanceStatus::initial(i),
                })
                .collect();
        }
        self.config = config;
    }

    fn live(&self, idx: usize) -> Option<Live> {
        let cfg = self.config.instances.get(idx)?;
        Some(Live {
            cfg: Arc::new(cfg.clone()),
            idx,
            siblings: self.siblings.clone(),
        })
    }

    pub(super) fn spawn_instance(&mut self, idx: usize) {
        let Some(live) = self.live(idx) else { return };
        let inst = live.cfg.clone();
        self.metrics.init_instance(&inst.name);
        let notifier = spawn_notifier(&inst, &self.metrics);
        let group = self.config.sync_groups.iter().find_map(|g| {
            let pos = g.members.iter().position(|&m| m == idx)?;
            Some((self.groups.get(&g.name)?.clone(), pos))
        });
        let (live_tx, live_rx) = watch::channel(live);
        let stop = self.shutdown.child_token();
        let ctx = Ctx {
            live: live_rx,
            metrics: self.metrics.clone(),
            status: self.status.clone(),
            shutdown: stop.clone(),
            group,
            notifier: Mutex::new(notifier),
        };
        let task = self.tracker.spawn(instance::run(ctx));
        self.slots.insert(
            inst.name.clone(),
            Slot {
                live: live_tx,
                stop,
                task,
            },
        );
    }

    async fn apply(&mut self, new: Config) -> Plan {
        let plan = reload::plan(&self.config, &new);
        if plan.admin_changed {
            warn!("reload: the [admin] address changed; it applies at the next restart");
        }
        if self.shutdown.is_cancelled() {
            return plan;
        }
        // Removed and restarted instances stop first (priority 0 if master, VIPs
        // removed), so a restarted one never meets its old self on the interface.
        let stopping = plan
            .removed
            .iter()
            .chain(plan.restarted.iter().map(|(n, _)| n));
        let mut stopped = Vec::new();
        for name in stopping {
            if let Some(slot) = self.slots.remove(name) {
                slot.stop.cancel();
                stopped.push(slot.task);
            }
        }
        for t in stopped {
            if let Err(e) = t.await {
                error!("instance task failed: {e}");
            }
        }
        self.install(new);
        // Every instance still running learns its (maybe equal) settings and its place
        // among its siblings; it compares and applies only what differs.
        for idx in 0..self.config.instances.len() {
            let Some(live) = self.live(idx) else { continue };
            if let Some(slot) = self.slots.get(&live.cfg.name) {
                slot.live.send_if_modified(|cur| {
                    let same = *cur.cfg == *live.cfg
                        && cur.idx == live.idx
                        && *cur.siblings == *live.siblings;
                    if !same {
                        *cur = live;
                    }
                    !same
                });
            }
        }
        for idx in 0..self.config.instances.len() {
            let missing = self
                .config
                .instances
                .get(idx)
                .is_some_and(|i| !self.slots.contains_key(&i.name));
            if missing {
                self.spawn_instance(idx);
            }
        }
        plan
    }
}

pub(super) fn spawn_notifier(inst: &InstanceConfig, metrics: &Metrics) -> Option<Notifier> {
    inst.notify.clone().map(|argv| {
        Notifier::spawn(
            argv,
            inst.name.clone(),
            inst.notify_timeout,
            metrics.clone(),
        )
    })
}
