//! The running balancer: the live [`State`] behind a lock-free pointer, and the control
//! side that builds a new state from a configuration and swaps it in, at start, on reload
//! and when DNS answers change.
//!
//! What a swap keeps: listeners whose bind did not change (their sockets and accept loops),
//! servers whose configuration and address did not change (the same objects, so their
//! health, counters and open connections carry on), and health monitors of those servers.
//! Connections already open keep the frontend, backend and server they started with, so a
//! reload never cuts one, even to a server the new configuration removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Serialize;
use tether_health::check::{Health, MonitorSpec, spawn_monitor};
use tether_health::config::ConfigErrors;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::LbError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::{self, Ctx};
use crate::resolve::{self, Answers};
use crate::state::{Backend, Frontend, Server, State};

/// What a reload changed, as `POST /api/reload` reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// Bind addresses newly listened on.
    pub listeners_added: Vec<String>,
    /// Bind addresses closed.
    pub listeners_removed: Vec<String>,
    /// Listeners that kept their sockets.
    pub listeners_kept: usize,
    /// `backend/server` names that appeared.
    pub servers_added: Vec<String>,
    /// `backend/server` names that went away (their open connections finish).
    pub servers_removed: Vec<String>,
    /// Servers carried over unchanged (health, counters, connections).
    pub servers_kept: usize,
    /// Settings the file changed that a reload cannot apply (the running value stays until
    /// a restart), e.g. `admin.listen changed from ... to ...: needs a restart`.
    pub needs_restart: Vec<String>,
}

/// Why a reload was refused; the running configuration keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The balancer was started without a file to read again.
    #[error("no configuration file to reload (started from an embedded configuration)")]
    NoFile,
    /// The new file has errors.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
    /// The new configuration could not be put in place.
    #[error("{0}")]
    Apply(#[from] LbError),
}

struct Listening {
    bound: SocketAddr,
    stop: CancellationToken,
}

struct Monitor {
    key: String,
    stop: CancellationToken,
}

struct Control {
    config: Option<Config>,
    workers: usize,
    runtimes: Vec<tokio::runtime::Handle>,
    listeners: HashMap<SocketAddr, Listening>,
    monitors: HashMap<(String, String), Monitor>,
    answers: Answers,
}

/// The shared core of a running balancer.
pub struct Lb {
    state: Arc<ArcSwap<State>>,
    /// The metrics, shared by every generation of the state.
    pub metrics: Metrics,
    pub(crate) ctx: Arc<Ctx>,
    control: tokio::sync::Mutex<Control>,
    /// Set once `SIGTERM` starts the drain.
    pub(crate) draining: AtomicBool,
    pub(crate) token: ArcSwapOption<String>,
    config_path: Option<PathBuf>,
    /// Parent of accept loops: cancelled when the drain starts.
    pub(crate) accepting: CancellationToken,
    /// The accept loops, so the drain can wait until every listening socket is closed.
    pub(crate) accept_tasks: tokio_util::task::TaskTracker,
    /// Parent of monitors, the resolver and the admin server: cancelled at the very end.
    pub(crate) background: CancellationToken,
    resolver: Option<tether_health::resolve::Resolver>,
    /// The forwarding tier's status and change signal.
    pub dr: crate::dr::Dr,
    /// The VIPs offered to the routers (`[announce]`).
    pub announce: crate::announce::Announce,
}

impl Lb {
    pub(crate) fn new(
        workers: usize,
        runtimes: Vec<tokio::runtime::Handle>,
        config_path: Option<PathBuf>,
        nameservers: &[SocketAddr],
    ) -> Result<Arc<Self>, prometheus::Error> {
        let resolver = match resolve::resolver(nameservers) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS resolver; host:port servers cannot be resolved");
                None
            }
        };
        let metrics = Metrics::new()?;
        let announce = crate::announce::Announce::new(&metrics.registry)?;
        Ok(Arc::new(Lb {
            state: Arc::new(ArcSwap::from_pointee(State::default())),
            ctx: Arc::new(Ctx::new(metrics.clone(), runtimes.clone())),
            metrics,
            control: tokio::sync::Mutex::new(Control {
                config: None,
                workers: workers.max(1),
                runtimes,
                listeners: HashMap::new(),
                monitors: HashMap::new(),
                answers: Answers::new(),
            }),
            draining: AtomicBool::new(false),
            token: ArcSwapOption::empty(),
            config_path,
            accepting: CancellationToken::new(),
            accept_tasks: tokio_util::task::TaskTracker::new(),
            background: CancellationToken::new(),
            resolver,
            dr: crate::dr::Dr::default(),
            announce,
        }))
    }

    /// The live state (a snapshot: it may be replaced by the next reload).
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// Reads the configuration file again and applies it.
    pub async fn reload(self: &Arc<Self>) -> Result<ReloadReport, ReloadError> {
        let path = self.config_path.clone().ok_or(ReloadError::NoFile)?;
        let mut config = crate::reload::load_off_thread(path).await?;
        crate::warn_open_admin(&config);
        let needs_restart = match &self.control.lock().await.config {
            Some(running) => crate::reload::keep_running_values(running, &mut config),
            None => Vec::new(),
        };
        let mut report = self.apply(config).await?;
        report.needs_restart = needs_restart;
        self.metrics.reloads.inc();
        tracing::info!(report = ?report, "configuration reloaded");
        Ok(report)
    }

    /// Puts `config` in place: binds new listeners first (so a bind failure changes
    /// nothing), resolves new host names, swaps the state, then retires what went away.
    pub async fn apply(self: &Arc<Self>, config: Config) -> Result<ReloadReport, LbError> {
        let mut control = self.control.lock().await;
        for (host, port) in resolve::hosts(&config) {
            if !control.answers.contains_key(&(host.clone(), port)) {
                match self.lookup(&host, port).await {
                    Ok(addrs) => {
                        control.answers.insert((host, port), addrs);
                    }
                    Err(e) => {
                        self.metrics.resolve_failures.inc();
                        tracing::warn!(host = %host, error = %e, "cannot resolve; the server is left out until it resolves");
                    }
                }
            }
        }
        self.apply_locked(&mut control, config)
    }

    async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        match &self.resolver {
            Some(r) => resolve::lookup(r, host, port).await,
            None => Err("no resolver".into()),
        }
    }

    fn apply_locked(
        self: &Arc<Self>,
        control: &mut Control,
        config: Config,
    ) -> Result<ReloadReport, LbError> {
        let mut report = ReloadReport::default();

        // 1. New listeners, all or nothing. The kernel serves dr frontends: no socket.
        let plan = crate::reload::listener_plan(control.listeners.keys().copied(), &config);
        let mut fresh: Vec<(SocketAddr, Vec<std::net::TcpListener>)> = Vec::new();
        for (bind, frontend) in &plan.open {
            let group = crate::listener::bind_group(*bind, control.workers).map_err(|source| {
                LbError::Bind {
                    frontend: frontend.clone(),
                    addr: *bind,
                    source,
                }
            })?;
            fresh.push((*bind, group));
        }
        let mut bound: HashMap<SocketAddr, SocketAddr> = control
            .listeners
            .iter()
            .map(|(k, l)| (*k, l.bound))
            .collect();
        for (bind, group) in &fresh {
            let actual = group
                .first()
                .and_then(|l| l.local_addr().ok())
                .unwrap_or(*bind);
            bound.insert(*bind, actual);
        }

        // 2. The new state, reusing unchanged servers.
        let old = self.state.load_full();
        let state = build_state(
            &config,
            &control.answers,
            &old,
            &self.metrics,
            &bound,
            &mut report,
            &self.dr.changed,
        );
        let state = Arc::new(state);
        self.state.store(state.clone());
        self.dr.changed.notify_one();

        // 3. Listeners: retire the ones no frontend wants, start the new ones.
        for bind in &plan.close {
            if let Some(l) = control.listeners.remove(bind) {
                l.stop.cancel();
                report.listeners_removed.push(bind.to_string());
            }
        }
        report.listeners_kept = plan.keep.len();
        for (bind, group) in fresh {
            let stop = self.accepting.child_token();
            let actual = bound.get(&bind).copied().unwrap_or(bind);
            for (i, l) in group.into_iter().enumerate() {
                let worker = i % control.runtimes.len().max(1);
                let task = proxy::accept_loop(
                    worker,
                    l,
                    bind,
                    self.state.clone(),
                    self.ctx.clone(),
                    stop.clone(),
                );
                match control.runtimes.get(worker) {
                    Some(rt) => self.accept_tasks.spawn_on(task, rt),
                    None => self.accept_tasks.spawn(task),
                };
            }
            control.listeners.insert(
                bind,
                Listening {
                    bound: actual,
                    stop,
                },
            );
            report.listeners_added.push(actual.to_string());
        }

        // 4. Health monitors follow the servers.
        let mut wanted = BTreeMap::new();
        let mut specs = HashMap::new();
        for b in &state.backends {
            for s in &b.servers {
                let id = (b.cfg.name.clone(), s.cfg.name.clone());
                let Some(h) = &b.cfg.health else {
                    s.set_health(Health::Up);
                    continue;
                };
                let spec = match crate::health::monitor_spec(h, s, &b.cfg.name) {
                    Ok(spec) => spec,
                    Err(e) => {
                        // A TLS check whose CA cannot be read: the server stays unchecked.
                        tracing::error!(error = %e, "health check not started");
                        continue;
                    }
                };
                // The server's identity is part of the key: a server the reload rebuilt
                // (a new address) gets a new monitor writing to it.
                let key = format!("{h:?}|{}|{:p}", spec.checker.target, Arc::as_ptr(s));
                wanted.insert(id.clone(), key);
                specs.insert(id, (spec, s.clone(), h.rise, h.fall));
            }
        }
        let running: BTreeMap<_, String> = control
            .monitors
            .iter()
            .map(|(id, m)| (id.clone(), m.key.clone()))
            .collect();
        let plan = crate::reload::monitor_plan(&running, &wanted);
        for id in &plan.stop {
            if let Some(m) = control.monitors.remove(id) {
                m.stop.cancel();
            }
        }
        for id in plan.start {
            let (Some((spec, server, rise, fall)), Some(key)) =
                (specs.remove(&id), wanted.get(&id))
            else {
                continue;
            };
            server.init_judge(rise, fall);
            let stop = self.background.child_token();
            let spec = MonitorSpec {
                initial: server.health(),
                ..spec
            };
            let target = server.clone();
            spawn_monitor(spec, stop.clone(), move |ev| {
                crate::health::on_check(&target, ev)
            });
            control.monitors.insert(
                id,
                Monitor {
                    key: key.clone(),
                    stop,
                },
            );
        }
        for gone in &report.servers_removed {
            if let Some((b, s)) = gone.split_once('/') {
                self.metrics.forget_server(b, s);
            }
        }

        self.token.store(config.admin_token.clone().map(Arc::new));
        control.config = Some(config);
        Ok(report)
    }

    /// Resolves every host name again every `resolve_interval`; applies the configuration
    /// again when an answer changed. Failures keep the last good answer.
    pub(crate) async fn resolve_loop(self: Arc<Self>) {
        loop {
            let interval = {
                let control = self.control.lock().await;
                control
                    .config
                    .as_ref()
                    .and_then(|c| {
                        c.backends
                            .iter()
                            .filter(|b| {
                                b.servers.iter().any(|s| {
                                    matches!(s.address, crate::config::ServerAddress::Host(..))
                                })
                            })
                            .map(|b| b.resolve_interval)
                            .min()
                    })
                    .unwrap_or(Duration::from_secs(10))
            };
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.background.cancelled() => return,
            }
            let (config, hosts) = {
                let control = self.control.lock().await;
                let Some(config) = control.config.clone() else {
                    continue;
                };
                let hosts = resolve::hosts(&config);
                (config, hosts)
            };
            if hosts.is_empty() {
                continue;
            }
            let mut answers = Answers::new();
            for (host, port) in hosts {
                match self.lookup(&host, port).await {
                    Ok(addrs) => {
                        answers.insert((host, port), addrs);
                    }
                    Err(e) => {
                        self.metrics.resolve_failures.inc();
                        tracing::warn!(host = %host, error = %e, "resolution failed; keeping the last answer");
                    }
                }
            }
            let mut control = self.control.lock().await;
            let mut changed = false;
            for (k, v) in answers {
                if control.answers.get(&k) != Some(&v) {
                    tracing::info!(host = %k.0, addresses = ?v, "DNS answer changed");
                    control.answers.insert(k, v);
                    changed = true;
                }
            }
            if changed {
                self.metrics.resolve_changes.inc();
                if let Err(e) = self.apply_locked(&mut control, config) {
                    tracing::error!(error = %e, "applying new DNS answers failed");
                }
            }
        }
    }
}

fn build_state(
    config: &Config,
    answers: &Answers,
    old: &State,
    metrics: &Metrics,
    bound: &HashMap<SocketAddr, SocketAddr>,
    report: &mut ReloadReport,
    changed: &Arc<tokio::sync::Notify>,
) -> State {
    let mut backends = Vec::new();
    let mut present = HashSet::new();
    for b in &config.backends {
        let mut servers = Vec::new();
        for s in &b.servers {
            for (name, addr) in resolve::expand(&s.name, &s.address, answers) {
                let mut cfg = s.clone();
                cfg.name = name;
                present.insert(format!("{}/{}", b.name, cfg.name));
                let previous = old.server(&b.name, &cfg.name);
                let server = match previous {
                    Some(p) if p.cfg == cfg && p.addr == addr => {
                        report.servers_kept += 1;
                        p.clone()
                    }
                    Some(p) => {
                        let n = Arc::new(Server::new(&b.name, cfg, addr, metrics, changed.clone()));
                        n.carry_from(p);
                        n
                    }
                    None => {
                        report
                            .servers_added
                            .push(format!("{}/{}", b.name, cfg.name));
                        Arc::new(Server::new(&b.name, cfg, addr, metrics, changed.clone()))
                    }
                };
                servers.push(server);
            }
        }
        backends.push(Arc::new(Backend::new(b.clone(), servers, metrics)));
    }
    for b in &old.backends {
        for s in &b.servers {
            let id = format!("{}/{}", b.cfg.name, s.cfg.name);
            if !present.contains(&id) {
                report.servers_removed.push(id);
            }
        }
    }
    let mut binds = HashMap::new();
    let mut frontends = Vec::new();
    for (i, f) in config.frontends.iter().enumerate() {
        for b in &f.binds {
            binds.insert(*b, i);
        }
        // Keep the maxconn slots of an unchanged frontend, so connections open across a
        // reload still count against the limit.
        let limit = old
            .frontends
            .iter()
            .find(|o| o.cfg.name == f.name && o.cfg.maxconn == f.maxconn)
            .map(|o| o.limit.clone())
            .unwrap_or_else(|| Arc::new(Semaphore::new(f.maxconn)));
        let l = &[f.name.as_str()];
        if f.dr.is_none() {
            let sends_proxy = backends[f.backend].cfg.send_proxy.is_some();
            let mut routed_to: Vec<&str> = Vec::new();
            if !f.routes.is_empty() {
                for i in f.routes.iter().map(|r| r.backend).chain([f.backend]) {
                    let name = backends[i].cfg.name.as_str();
                    if !routed_to.contains(&name) {
                        routed_to.push(name);
                    }
                }
            }
            metrics.frontend(
                &f.name,
                &crate::proxy::inspect_reasons(f, sends_proxy),
                &routed_to,
            );
        } else {
            metrics.dr_frontend(&f.name);
        }
        frontends.push(Arc::new(Frontend {
            bound: f
                .binds
                .iter()
                .map(|b| bound.get(b).copied().unwrap_or(*b))
                .collect(),
            backend: backends[f.backend].clone(),
            routes: f
                .routes
                .iter()
                .map(|r| (r.sni.clone(), backends[r.backend].clone()))
                .collect(),
            limit,
            connections: metrics.fe_connections.with_label_values(l),
            active: metrics.fe_active.with_label_values(l),
            accept_errors: metrics.fe_accept_errors.with_label_values(l),
            bytes_in: metrics.fe_bytes_in.with_label_values(l),
            bytes_out: metrics.fe_bytes_out.with_label_values(l),
            cfg: f.clone(),
        }));
    }
    State {
        frontends,
        backends,
        binds,
    }
}
