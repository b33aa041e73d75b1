//! The tokio driver: sockets, netlink, tracking and timers around the sans-IO
//! [`fsm::Instance`]. One task per instance; each owns its sockets.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::get;
use tether_health::check::{CheckKind, Checker, Health, MonitorSpec, spawn_monitor};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{Config, InstanceConfig, TrackKind};
use crate::fsm::{self, Action, Input, State};
use crate::metrics::Metrics;
use crate::net::{FrameSocket, RxSocket, TxSocket};
use crate::netlink::{Link, Netlink, primary_address};
use crate::notify::Notifier;
use crate::packet::{self, Advert, ChecksumMatch, MCAST_V4, MCAST_V6, RxExpect};
use crate::rx::{RxFilter, Verdict};
use crate::track::{Tracked, effective_priority};

/// How often the interface's link state is read (link down = FAULT).
const LINK_POLL: Duration = Duration::from_millis(100);
/// How often a missing interface or address is looked for again.
const RETRY: Duration = Duration::from_secs(1);

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

/// What `/api/state` reports for one instance.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceStatus {
    /// Instance name.
    pub name: String,
    /// Interface.
    pub interface: String,
    /// VRID.
    pub vrid: u8,
    /// Current state.
    pub state: State,
    /// Configured priority.
    pub priority: u8,
    /// Effective priority (0 in fault).
    pub effective_priority: u8,
    /// Why the instance is not running normally, if it is not.
    pub problem: Option<String>,
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
            .map(|i| InstanceStatus {
                name: i.name.clone(),
                interface: i.interface.clone(),
                vrid: i.vrid,
                state: State::Initialize,
                priority: i.priority,
                effective_priority: i.priority,
                problem: None,
            })
            .collect::<Vec<_>>(),
    ));
    let mut tasks = Vec::new();
    let admin_addr = match config.admin {
        Some(addr) => {
            let listener = tether_health::admin::bind(addr)
                .await
                .map_err(|source| DaemonError::AdminBind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| DaemonError::AdminBind { addr, source })?;
            let st = status.clone();
            let ready_st = status.clone();
            let readiness: tether_health::admin::Readiness = Arc::new(move || {
                let s = ready_st
                    .lock()
                    .map_err(|_| "state lock poisoned".to_string())?;
                match s.iter().find(|i| i.state == State::Initialize) {
                    Some(i) => Err(format!(
                        "instance {} not started{}",
                        i.name,
                        i.problem
                            .as_deref()
                            .map(|p| format!(": {p}"))
                            .unwrap_or_default()
                    )),
                    None => Ok(()),
                }
            });
            let router = tether_health::admin::router(metrics.registry.clone(), readiness).route(
                "/api/state",
                get(move || {
                    let st = st.clone();
                    async move { Json(st.lock().map(|s| s.clone()).unwrap_or_default()) }
                }),
            );
            let sd = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = tether_health::admin::serve(listener, router, sd).await {
                    error!("admin server: {e}");
                }
            }));
            Some(local)
        }
        None => None,
    };

    // Sync groups: each member publishes its own fault; a member faults when any does.
    let mut group_of: Vec<Option<(watch::Sender<Vec<bool>>, usize)>> =
        vec![None; config.instances.len()];
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
        tasks.push(tokio::spawn(run_instance(ctx)));
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

struct Ctx {
    idx: usize,
    cfg: Arc<InstanceConfig>,
    metrics: Metrics,
    status: Arc<Mutex<Vec<InstanceStatus>>>,
    shutdown: CancellationToken,
    group: Option<(watch::Sender<Vec<bool>>, usize)>,
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

/// Everything resolved about the interface before the state machine may start.
struct Setup {
    link: Link,
    src: IpAddr,
    rx: RxSocket,
    tx: TxSocket,
    frames: FrameSocket,
}

enum Exit {
    Shutdown,
    /// The interface vanished or changed index: set up again.
    Restart,
}

async fn run_instance(mut ctx: Ctx) {
    instance(&ctx).await;
    // The STOP notification (and any still queued) runs before the daemon exits.
    if let Some(n) = ctx.notifier.take() {
        n.finish().await;
    }
}

async fn instance(ctx: &Ctx) {
    let name = ctx.cfg.name.clone();
    let nl = match Netlink::open() {
        Ok(n) => n,
        Err(e) => {
            error!(instance = %name, "{e}; instance not started");
            ctx.problem(Some(e.to_string()));
            return;
        }
    };
    // Tracks run for the whole life of the instance; their health feeds a watch channel.
    let tracks = Tracks::spawn(&ctx.cfg, ctx.shutdown.clone());
    let mut first = true;
    loop {
        let Some(setup) = setup(ctx, &nl, first).await else {
            return;
        };
        first = false;
        match drive(ctx, &nl, setup, &tracks).await {
            Exit::Shutdown => return,
            Exit::Restart => continue,
        }
    }
}

/// Waits for the interface and its address, removes stale VIPs (first time only) and
/// opens sockets. Returns `None` on shutdown.
async fn setup(ctx: &Ctx, nl: &Netlink, first: bool) -> Option<Setup> {
    let cfg = &ctx.cfg;
    let name = &cfg.name;
    let mut reported = None::<String>;
    loop {
        let attempt: Result<Setup, String> = async {
            let link = nl
                .link(&cfg.interface)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("interface {} not found", cfg.interface))?;
            ctx.metrics.interface_present.with_label_values(&[name]).set(1);
            let addrs = nl.addrs(link.index).await.map_err(|e| e.to_string())?;
            if first {
                let stale: Vec<_> = cfg
                    .vips
                    .iter()
                    .filter(|v| addrs.iter().any(|a| a.addr == v.addr))
                    .copied()
                    .collect();
                if !stale.is_empty() {
                    warn!(
                        instance = %name,
                        interface = %cfg.interface,
                        "found {} configured VIP(s) on the interface at start ({}), left by an unclean stop; \
                         another host may have held them too until now; removing",
                        stale.len(),
                        stale.iter().map(|v| v.addr.to_string()).collect::<Vec<_>>().join(", ")
                    );
                    for v in stale {
                        nl.del_vip(link.index, v).await.map_err(|e| e.to_string())?;
                        ctx.metrics.stale_vips.with_label_values(&[name]).inc();
                    }
                }
            }
            let src = match cfg.unicast_src {
                Some(s) => s,
                None => primary_address(&addrs, cfg.is_v6(), &cfg.vips).ok_or_else(|| {
                    format!(
                        "no {} address on {} to send adverts from",
                        if cfg.is_v6() { "IPv6 link-local" } else { "primary IPv4" },
                        cfg.interface
                    )
                })?,
            };
            let multicast = cfg.unicast_peers.is_empty();
            let rx = RxSocket::open(&cfg.interface, link.index, cfg.is_v6(), multicast)
                .map_err(|e| format!("opening receive socket on {}: {e}", cfg.interface))?;
            let tx = TxSocket::open(&cfg.interface, link.index, src)
                .map_err(|e| format!("opening send socket on {} from {src}: {e}", cfg.interface))?;
            let frames = FrameSocket::open(link.index)
                .map_err(|e| format!("opening packet socket on {}: {e}", cfg.interface))?;
            Ok(Setup {
                link,
                src,
                rx,
                tx,
                frames,
            })
        }
        .await;
        match attempt {
            Ok(s) => {
                ctx.problem(None);
                info!(instance = %name, interface = %cfg.interface, src = %s.src, vrid = cfg.vrid, "instance ready");
                return Some(s);
            }
            Err(e) => {
                if e.contains("not found") {
                    ctx.metrics
                        .interface_present
                        .with_label_values(&[name])
                        .set(0);
                }
                // Report once per distinct problem, then retry quietly.
                if reported.as_deref() != Some(e.as_str()) {
                    error!(instance = %name, "{e}; retrying every {}s", RETRY.as_secs());
                    reported = Some(e.clone());
                }
                ctx.problem(Some(e));
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = ctx.shutdown.cancelled() => return None,
                }
            }
        }
    }
}

async fn drive(ctx: &Ctx, nl: &Netlink, s: Setup, tracks: &Tracks) -> Exit {
    let cfg = ctx.cfg.clone();
    let name = cfg.name.clone();
    let mut machine = fsm::Instance::new(fsm::Params {
        version: cfg.version,
        priority: cfg.priority,
        advert_interval: cfg.advert_interval,
        preempt: cfg.preempt,
        preempt_delay: cfg.preempt_delay,
        primary: s.src,
        garp_delay: cfg.garp_delay,
    });
    let mut io = Io {
        ctx,
        nl,
        s: &s,
        vips_held: false,
    };
    let mut link_up = s.link.up;
    let mut track_rx = tracks.changed.subscribe();
    let mut group_rx = ctx.group.as_ref().map(|(tx, _)| tx.subscribe());
    let mut last_eff = None::<Option<u8>>;
    let compute =
        |link_up: bool, group_rx: &Option<watch::Receiver<Vec<bool>>>| -> (bool, Option<u8>) {
            let mut tracked = tracks.snapshot();
            tracked.push(Tracked {
                weight: 0,
                up: link_up,
            });
            let own = effective_priority(cfg.priority, &tracked);
            let own_fault = own.is_none();
            let peer_fault = match (group_rx, &ctx.group) {
                (Some(r), Some((_, pos))) => {
                    r.borrow().iter().enumerate().any(|(i, f)| i != *pos && *f)
                }
                _ => false,
            };
            (own_fault, if peer_fault { None } else { own })
        };
    // Publish our fault state and feed the machine the effective priority.
    let mut update = |machine: &mut fsm::Instance,
                      link_up: bool,
                      group_rx: &Option<watch::Receiver<Vec<bool>>>|
     -> Vec<Action> {
        let (own_fault, eff) = compute(link_up, group_rx);
        if let Some((tx, pos)) = &ctx.group {
            tx.send_if_modified(|v| {
                let changed = v.get(*pos).copied() != Some(own_fault);
                if let Some(x) = v.get_mut(*pos) {
                    *x = own_fault;
                }
                changed
            });
        }
        if last_eff == Some(eff) {
            return Vec::new();
        }
        last_eff = Some(eff);
        machine.handle(Instant::now(), Input::Tracking(eff))
    };
    tracks.poll_interfaces(nl).await;
    let acts = update(&mut machine, link_up, &group_rx);
    io.exec(&mut machine, acts).await;
    let acts = machine.handle(Instant::now(), Input::Startup);
    io.exec(&mut machine, acts).await;

    let expect_addrs: Vec<IpAddr> = cfg.vips.iter().map(|v| v.addr).collect();
    let own = [s.src];
    let want = RxExpect {
        version: cfg.version,
        interval_field: cfg.interval_field(),
        addrs: &expect_addrs,
        auth: &cfg.auth,
        unicast_peers: &cfg.unicast_peers,
        own: &own,
    };
    let filter = RxFilter::new(ctx.idx, &ctx.siblings);
    let mut buf = vec![0u8; 2048];
    let mut noted: std::collections::HashSet<(IpAddr, &'static str)> =
        std::collections::HashSet::new();
    let mut link_poll = tokio::time::interval(LINK_POLL);
    link_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let far = Duration::from_secs(3600);
    loop {
        let deadline = machine
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + far);
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => {
                let acts = machine.handle(Instant::now(), Input::Shutdown);
                io.exec(&mut machine, acts).await;
                if io.vips_held {
                    io.remove_vips().await;
                }
                return Exit::Shutdown;
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let acts = machine.handle(Instant::now(), Input::Timer);
                io.exec(&mut machine, acts).await;
            }
            r = s.rx.recv(&mut buf) => {
                let got = match r {
                    Ok(got) => got,
                    Err(e) => {
                        debug!(instance = %name, "receive error: {e}");
                        continue;
                    }
                };
                match filter.classify(got, &want) {
                    Verdict::Ignore => {}
                    Verdict::Drop { reason, from } => {
                        ctx.metrics.drops.with_label_values(&[&name, reason.label()]).inc();
                        // A foreign cluster on our VRID (or a misconfigured peer): say so
                        // once per source and reason, never per packet.
                        if let Some(src) = from
                            && reason != packet::DropReason::Own
                            && noted.len() < 64
                            && noted.insert((src, reason.label()))
                        {
                            warn!(instance = %name, %src, "ignoring adverts for VRID {}: {reason} (logged once; see tether_vrrp_dropped_packets_total)", cfg.vrid);
                        }
                    }
                    Verdict::Accept(rx) => {
                        ctx.metrics.adverts_received.with_label_values(&[&name]).inc();
                        let conv = match rx.checksum {
                            ChecksumMatch::Only => "only",
                            ChecksumMatch::PseudoHeader => "pseudo-header",
                            ChecksumMatch::Rfc9568 => "rfc9568",
                        };
                        ctx.metrics.checksum.with_label_values(&[&name, conv]).inc();
                        if rx.checksum != ChecksumMatch::Only
                            && noted.len() < 64
                            && noted.insert((rx.src, conv))
                        {
                            info!(instance = %name, src = %rx.src, "peer uses the {conv} v3 checksum convention");
                        }
                        let acts = machine.handle(Instant::now(), Input::Advert {
                            src: rx.src,
                            priority: rx.advert.priority,
                            interval: rx.advert.interval(),
                        });
                        io.exec(&mut machine, acts).await;
                    }
                }
            }
            _ = link_poll.tick() => {
                match nl.link(&cfg.interface).await {
                    Ok(Some(l)) if l.index == s.link.index => {
                        if l.up != link_up {
                            link_up = l.up;
                            if link_up {
                                info!(instance = %name, interface = %cfg.interface, "link up; waiting for fresh track results");
                                tracks.new_epoch();
                            } else {
                                warn!(instance = %name, interface = %cfg.interface, "link down: FAULT");
                            }
                            let acts = update(&mut machine, link_up, &group_rx);
                            io.exec(&mut machine, acts).await;
                        }
                        tracks.poll_interfaces(nl).await;
                    }
                    Ok(_) => {
                        warn!(instance = %name, interface = %cfg.interface, "interface gone or replaced; setting up again");
                        let acts = update(&mut machine, false, &group_rx);
                        io.exec(&mut machine, acts).await;
                        let acts = machine.handle(Instant::now(), Input::Shutdown);
                        io.exec(&mut machine, acts).await;
                        return Exit::Restart;
                    }
                    Err(e) => debug!(instance = %name, "link poll: {e}"),
                }
            }
            Ok(()) = track_rx.changed() => {
                let acts = update(&mut machine, link_up, &group_rx);
                io.exec(&mut machine, acts).await;
            }
            Some(Ok(())) = async { match group_rx.as_mut() { Some(r) => Some(r.changed().await), None => None } } => {
                let acts = update(&mut machine, link_up, &group_rx);
                io.exec(&mut machine, acts).await;
            }
        }
    }
}

/// Carries out the machine's actions.
struct Io<'a> {
    ctx: &'a Ctx,
    nl: &'a Netlink,
    s: &'a Setup,
    vips_held: bool,
}

impl Io<'_> {
    async fn exec(&mut self, machine: &mut fsm::Instance, actions: Vec<Action>) {
        let cfg = &self.ctx.cfg;
        let name = cfg.name.as_str();
        for a in actions {
            match a {
                Action::SendAdvert { priority } => self.send_advert(priority),
                Action::AddVips => {
                    for v in &cfg.vips {
                        if let Err(e) = self.nl.add_vip(self.s.link.index, *v).await {
                            error!(instance = %name, "{e}");
                        }
                    }
                    self.vips_held = true;
                }
                Action::RemoveVips => self.remove_vips().await,
                Action::Garp => self.garp(),
                Action::Transition { from, to } => {
                    info!(instance = %name, "{} -> {} (priority {})", from.keepalived_name(), to.keepalived_name(), machine.effective_priority());
                    self.ctx.metrics.transition(name, from, to);
                    if let Some(n) = &self.ctx.notifier {
                        n.notify(to, machine.effective_priority());
                    }
                }
            }
        }
        let eff = machine.effective_priority();
        let st = machine.state();
        self.ctx
            .metrics
            .priority
            .with_label_values(&[name])
            .set(i64::from(eff));
        self.ctx.set_status(|s| {
            s.state = st;
            s.effective_priority = eff;
        });
    }

    async fn remove_vips(&mut self) {
        for v in &self.ctx.cfg.vips {
            if let Err(e) = self.nl.del_vip(self.s.link.index, *v).await {
                error!(instance = %self.ctx.cfg.name, "{e}");
            }
        }
        self.vips_held = false;
    }

    fn send_advert(&self, priority: u8) {
        let cfg = &self.ctx.cfg;
        let ad = Advert {
            version: cfg.version,
            vrid: cfg.vrid,
            priority,
            interval_field: cfg.interval_field(),
            addrs: cfg.vips.iter().map(|v| v.addr).collect(),
            auth: cfg.auth.clone(),
        };
        let dsts: Vec<IpAddr> = if cfg.unicast_peers.is_empty() {
            vec![if cfg.is_v6() {
                IpAddr::V6(MCAST_V6)
            } else {
                IpAddr::V4(MCAST_V4)
            }]
        } else {
            cfg.unicast_peers.clone()
        };
        for dst in dsts {
            // The v3 pseudo-header carries the real destination (keepalived >= 1.3.6).
            let msg = ad.encode(self.s.src, dst, cfg.checksum);
            match self.s.tx.send(&msg, dst, self.s.link.index) {
                Ok(()) => self
                    .ctx
                    .metrics
                    .adverts_sent
                    .with_label_values(&[&cfg.name])
                    .inc(),
                // Link down or no route: FAULT handling takes care; do not flood the log.
                Err(e) => debug!(instance = %cfg.name, "sending advert to {dst}: {e}"),
            }
        }
    }

    fn garp(&self) {
        let cfg = &self.ctx.cfg;
        for _ in 0..cfg.garp_repeat {
            for v in &cfg.vips {
                let r = match v.addr {
                    IpAddr::V4(a) => self.s.frames.send(&packet::garp_frame(self.s.link.mac, a)),
                    IpAddr::V6(a) => self
                        .s
                        .frames
                        .send(&packet::unsolicited_na_frame(self.s.link.mac, a)),
                };
                if let Err(e) = r {
                    debug!(instance = %cfg.name, "gratuitous ARP/NA for {}: {e}", v.addr);
                }
            }
        }
    }
}

/// The instance's tracked objects: built-in checks from tether-health run as monitors;
/// interface tracks are read on the link poll.
struct Tracks {
    weights: Vec<i32>,
    health: Arc<Mutex<Vec<TrackHealth>>>,
    interfaces: Vec<(usize, String)>,
    changed: watch::Sender<()>,
    /// Bumped when the link comes back: a check counts as up again only after a pass
    /// observed since then, so a master returning from a cut does not take the VIP on
    /// the strength of results from before the cut (the tracked balancer may not yet
    /// know its servers are unreachable, nor that they are back).
    epoch: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Clone, Copy, Default)]
struct TrackHealth {
    up: bool,
    /// Epoch of the last passing check; interface tracks use `u64::MAX` (always fresh).
    ok_epoch: u64,
}

impl TrackHealth {
    fn effective(self, epoch: u64) -> bool {
        self.up && (self.ok_epoch == epoch || self.ok_epoch == u64::MAX)
    }
}

impl Tracks {
    fn spawn(cfg: &InstanceConfig, shutdown: CancellationToken) -> Tracks {
        let (changed, _) = watch::channel(());
        // Unknown counts as down: never take the VIP before the tracked service answered.
        let health = Arc::new(Mutex::new(vec![TrackHealth::default(); cfg.tracks.len()]));
        let epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut interfaces = Vec::new();
        for (i, t) in cfg.tracks.iter().enumerate() {
            let (kind, target) = match &t.kind {
                TrackKind::Http {
                    addr,
                    path,
                    host,
                    expect_status,
                } => (
                    CheckKind::Http {
                        path: path.clone(),
                        host: Some(host.clone()),
                        expect_status: *expect_status,
                    },
                    *addr,
                ),
                TrackKind::Tcp { addr } => (CheckKind::Tcp, *addr),
                TrackKind::Exec { argv } => (
                    CheckKind::Exec { argv: argv.clone() },
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                ),
                TrackKind::Interface { name } => {
                    interfaces.push((i, name.clone()));
                    continue;
                }
            };
            let spec = MonitorSpec {
                checker: Checker {
                    kind,
                    target,
                    timeout: t.timeout,
                },
                interval: t.interval,
                // keepalived's vrrp_script checks at one interval whatever the state.
                fast_interval: t.interval,
                down_interval: t.interval,
                rise: t.rise,
                fall: t.fall,
                initial: Health::Unknown,
            };
            let h = health.clone();
            let ch = changed.clone();
            let ep = epoch.clone();
            let instance = cfg.name.clone();
            spawn_monitor(spec, shutdown.clone(), move |ev| {
                if let Some(tr) = ev.transition {
                    info!(instance = %instance, track = i, "track {} -> {}", tr.from.as_str(), tr.to.as_str());
                }
                let e = ep.load(std::sync::atomic::Ordering::SeqCst);
                let mut changed = false;
                if let Ok(mut v) = h.lock() {
                    if let Some(x) = v.get_mut(i) {
                        let before = x.effective(e);
                        x.up = ev.state == Health::Up;
                        if ev.result.is_ok() {
                            x.ok_epoch = e;
                        }
                        changed = x.effective(e) != before;
                    }
                }
                if changed {
                    ch.send_replace(());
                }
            });
        }
        Tracks {
            weights: cfg.tracks.iter().map(|t| t.weight).collect(),
            health,
            interfaces,
            changed,
            epoch,
        }
    }

    fn snapshot(&self) -> Vec<Tracked> {
        let e = self.epoch.load(std::sync::atomic::Ordering::SeqCst);
        let h = self.health.lock().map(|v| v.clone()).unwrap_or_default();
        self.weights
            .iter()
            .zip(h)
            .map(|(&weight, t)| Tracked {
                weight,
                up: t.effective(e),
            })
            .collect()
    }

    /// The link came back: require a fresh pass from every check.
    fn new_epoch(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    async fn poll_interfaces(&self, nl: &Netlink) {
        for (i, name) in &self.interfaces {
            let up = matches!(nl.link(name).await, Ok(Some(l)) if l.up);
            let mut changed = false;
            if let Ok(mut v) = self.health.lock() {
                if let Some(x) = v.get_mut(*i) {
                    changed = x.up != up;
                    *x = TrackHealth {
                        up,
                        ok_epoch: u64::MAX,
                    };
                }
            }
            if changed {
                self.changed.send_replace(());
            }
        }
    }
}
