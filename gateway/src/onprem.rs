//! The on-prem role's driver: dials sessions as [`Placement`] says, registers exports and
//! consumes in HELLO, reports its servers' health as SERVICE_STATE, serves reverse streams
//! to on-prem servers and carries local clients to the cloud on forward streams.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use rustls_pki_types::ServerName;
use tether_health::check::{CheckKind, Checker, Health, MonitorSpec, spawn_monitor};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf, split};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::common::{self, GatewayError};
use crate::config::{Consume, OnpremConfig, WhenNotReady};
use crate::metrics::{Metrics, ServiceSide};
use crate::mux::{Mux, MuxTuning, Side, YamuxSession, YamuxStream};
use crate::placement::{Action, DialId, Landed, Placement, Target};
use crate::proto::{
    Control, ExportState, PROTO_VERSION, Preamble, RejectCode, RosterEntry, Status, StreamKind,
};
use crate::tls;

struct OnSession {
    node: String,
    mux: YamuxSession,
    accepted: BTreeSet<String>,
    control: mpsc::Sender<Control>,
    kill: CancellationToken,
    draining: AtomicBool,
    active: AtomicUsize,
}

struct Onprem {
    cfg: OnpremConfig,
    boot_epoch: u64,
    metrics: Metrics,
    placement: Mutex<Placement>,
    sessions: Mutex<BTreeMap<u64, Arc<OnSession>>>,
    export_up: Mutex<BTreeMap<String, bool>>,
    consume_ready: BTreeMap<String, watch::Sender<bool>>,
    wake: Notify,
    kill: CancellationToken,
    tracker: TaskTracker,
    connector: TlsConnector,
    next_session: AtomicU64,
    streams: AtomicUsize,
    /// Local clients accepted and not finished (a drain waits for them too).
    inflight: Arc<AtomicUsize>,
    draining: AtomicBool,
    wedged: AtomicBool,
    rr: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running on-prem gateway.
pub struct OnpremHandle {
    /// Admin HTTP address.
    pub admin_addr: SocketAddr,
    /// Address of each consume listener.
    pub consume_addrs: BTreeMap<String, SocketAddr>,
    inner: Arc<Onprem>,
}

impl std::fmt::Debug for OnpremHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnpremHandle")
            .field("id", &self.inner.cfg.id)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl OnpremHandle {
    /// Kept sessions per cloud node.
    pub fn coverage(&self) -> BTreeMap<String, usize> {
        lock(&self.inner.placement).coverage()
    }

    /// Whether a consumed service can be carried to the cloud now.
    pub fn is_ready(&self, service: &str) -> bool {
        self.inner
            .consume_ready
            .get(service)
            .is_some_and(|t| *t.borrow())
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Fault injection for tests and drills: while wedged, reverse stream opens are held
    /// unanswered (pings still flow), the failure mode of cloudflared #1300.
    pub fn set_wedged(&self, wedged: bool) {
        self.inner.wedged.store(wedged, Ordering::SeqCst);
    }

    /// Stops at once, like a crash. Resolves when every task has ended.
    pub async fn kill(&self) {
        self.inner.kill.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    /// Waits until the gateway has stopped.
    pub async fn wait(&self) {
        self.inner.kill.cancelled().await;
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

/// Starts an on-prem gateway. When `shutdown` is cancelled it drains: consume listeners
/// unbound, DRAIN sent on every session so cloud nodes stop opening streams on them,
/// streams given `timers.drain_grace`; then it stops.
pub async fn start(
    cfg: OnpremConfig,
    shutdown: CancellationToken,
) -> Result<OnpremHandle, GatewayError> {
    let connector = TlsConnector::from(tls::client_config(&cfg.tls)?);
    let metrics = Metrics::new()?;
    for e in &cfg.export {
        metrics.service(&e.service, "reverse", ServiceSide::Server);
    }
    for c in &cfg.consume {
        metrics.service(&c.service, "forward", ServiceSide::Clients);
    }
    let admin_listener = common::bind("admin listener", cfg.admin_listen).await?;
    let admin_addr = admin_listener.local_addr().unwrap_or(cfg.admin_listen);
    let mut consume_listeners = Vec::new();
    let mut consume_addrs = BTreeMap::new();
    for c in &cfg.consume {
        let l = common::bind(&format!("consume {:?} listener", c.service), c.listen).await?;
        consume_addrs.insert(c.service.clone(), l.local_addr().unwrap_or(c.listen));
        let (addr, initial) = common::initial_listener(l, c.when_not_ready);
        consume_listeners.push((c.clone(), addr, initial));
    }
    let export_up = cfg
        .export
        .iter()
        .map(|e| (e.service.clone(), e.health.is_none()))
        .collect();
    let consume_ready = cfg
        .consume
        .iter()
        .map(|c| (c.service.clone(), watch::channel(false).0))
        .collect();
    let placement = Placement::new(
        cfg.prepared_connections,
        cfg.sni_pinning,
        cfg.timers.backoff_cap,
    );
    let gw = Arc::new(Onprem {
        boot_epoch: rand::random(),
        metrics,
        placement: Mutex::new(placement),
        sessions: Mutex::new(BTreeMap::new()),
        export_up: Mutex::new(export_up),
        consume_ready,
        wake: Notify::new(),
        kill: CancellationToken::new(),
        tracker: TaskTracker::new(),
        connector,
        next_session: AtomicU64::new(1),
        streams: AtomicUsize::new(0),
        inflight: Arc::new(AtomicUsize::new(0)),
        draining: AtomicBool::new(false),
        wedged: AtomicBool::new(false),
        rr: AtomicUsize::new(0),
        cfg,
    });
    info!(gateway = %gw.cfg.id, cloud = %gw.cfg.cloud, "on-prem gateway started");

    // Health of exported servers, reported to every session.
    for e in gw.cfg.export.clone() {
        let Some(h) = e.health.clone() else { continue };
        let target = match tokio::net::lookup_host(e.connect.as_str())
            .await
            .map(|mut a| a.next())
        {
            Ok(Some(a)) => a,
            _ => {
                warn!(service = %e.service, connect = %e.connect, "cannot resolve server; reported down");
                continue;
            }
        };
        let spec = MonitorSpec {
            checker: Checker {
                kind: CheckKind::Tcp,
                target,
                timeout: h.timeout,
            },
            interval: h.interval,
            rise: h.rise,
            fall: h.fall,
            initial: Health::Unknown,
        };
        let g = gw.clone();
        let service = e.service.clone();
        let _monitor = spawn_monitor(spec, gw.kill.clone(), move |ev| {
            if ev.transition.is_some() {
                g.set_export_state(
                    &service,
                    ev.state == Health::Up,
                    ev.result.as_ref().err().map(|e| e.to_string()),
                );
            }
        });
    }

    // Placement loop.
    let g = gw.clone();
    gw.tracker.spawn(async move { g.placement_loop().await });

    // Consume listeners.
    for (c, addr, initial) in consume_listeners {
        let Some(rx) = gw
            .consume_ready
            .get(&c.service)
            .map(watch::Sender::subscribe)
        else {
            continue;
        };
        let bound = gw.metrics.listener_bound.with_label_values(&[&c.service]);
        let g = gw.clone();
        let c = Arc::new(c);
        gw.tracker.spawn(async move {
            let kill = g.kill.clone();
            let g2 = g.clone();
            let c2 = c.clone();
            common::gated_accept(
                addr,
                initial,
                c.when_not_ready,
                rx,
                kill,
                bound,
                move |tcp, peer| {
                    let g3 = g2.clone();
                    let c3 = c2.clone();
                    let guard = common::Inflight::new(g2.inflight.clone());
                    g2.tracker.spawn(async move {
                        g3.serve_consumer(c3, tcp, peer).await;
                        drop(guard);
                    });
                },
            )
            .await;
        });
    }

    // Admin.
    let router = admin_router(&gw);
    let kill = gw.kill.clone();
    gw.tracker.spawn(async move {
        if let Err(e) = tether_health::admin::serve(admin_listener, router, kill).await {
            warn!(error = %e, "admin server failed");
        }
    });

    // Drain on shutdown.
    let g = gw.clone();
    gw.tracker.spawn(async move {
        tokio::select! {
            _ = g.kill.cancelled() => {}
            _ = shutdown.cancelled() => g.drain().await,
        }
    });

    Ok(OnpremHandle {
        admin_addr,
        consume_addrs,
        inner: gw,
    })
}

fn admin_router(gw: &Arc<Onprem>) -> axum::Router {
    let g = gw.clone();
    let readiness: tether_health::admin::Readiness = Arc::new(move || {
        if g.draining.load(Ordering::SeqCst) {
            return Err("draining".into());
        }
        let coverage = lock(&g.placement).coverage();
        if coverage.is_empty() {
            return Err("no cloud node reached yet".into());
        }
        let uncovered: Vec<String> = coverage
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(id, _)| id.clone())
            .collect();
        if uncovered.is_empty() {
            Ok(())
        } else {
            Err(format!("no session to {}", uncovered.join(", ")))
        }
    });
    let mine = axum::Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz/{service}", get(consume_readyz))
        .route("/status", get(status))
        .with_state(gw.clone());
    tether_health::admin::router(gw.metrics.registry.clone(), readiness).merge(mine)
}

async fn consume_readyz(
    State(g): State<Arc<Onprem>>,
    Path(service): Path<String>,
) -> (StatusCode, Json<serde_json::Value>) {
    let ready = g.consume_ready.get(&service).map(|t| *t.borrow());
    let status = match ready {
        Some(true) if !g.draining.load(Ordering::SeqCst) => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
        None => StatusCode::NOT_FOUND,
    };
    (
        status,
        Json(serde_json::json!({ "service": service, "ready": ready.unwrap_or(false) })),
    )
}

async fn status(State(g): State<Arc<Onprem>>) -> Json<serde_json::Value> {
    let coverage = lock(&g.placement).coverage();
    let exports = lock(&g.export_up).clone();
    Json(serde_json::json!({
        "gateway_id": g.cfg.id,
        "boot_epoch": g.boot_epoch,
        "quota": g.cfg.prepared_connections,
        "coverage": coverage,
        "exports_up": exports,
        "draining": g.draining.load(Ordering::SeqCst),
    }))
}

struct Established {
    mux: YamuxSession,
    inbound: mpsc::Receiver<YamuxStream>,
    rd: ReadHalf<YamuxStream>,
    wr: WriteHalf<YamuxStream>,
    node_id: String,
    roster: Vec<RosterEntry>,
    accepted: BTreeSet<String>,
}

struct DialFailure {
    reason: &'static str,
    retry_after: Duration,
    roster: Vec<RosterEntry>,
    draining_hint: bool,
}

impl DialFailure {
    fn new(reason: &'static str) -> Self {
        DialFailure {
            reason,
            retry_after: Duration::ZERO,
            roster: Vec::new(),
            draining_hint: false,
        }
    }
}

impl Onprem {
    fn set_export_state(&self, service: &str, up: bool, reason: Option<String>) {
        info!(gateway = %self.cfg.id, %service, up, "exported server state");
        lock(&self.export_up).insert(service.to_string(), up);
        let msg = Control::ServiceState {
            service: service.to_string(),
            up,
            reason: reason.unwrap_or_default(),
        };
        for s in lock(&self.sessions).values() {
            let _ = s.control.try_send(msg.clone());
        }
    }

    fn refresh_consume_ready(&self) {
        let sessions = lock(&self.sessions);
        let draining = self.draining.load(Ordering::SeqCst);
        for (service, tx) in &self.consume_ready {
            let ready = !draining
                && sessions
                    .values()
                    .any(|s| !s.draining.load(Ordering::SeqCst) && s.accepted.contains(service));
            if *tx.borrow() != ready {
                info!(gateway = %self.cfg.id, %service, ready, "consume readiness");
                self.metrics
                    .service_ready
                    .with_label_values(&[service])
                    .set(i64::from(ready));
                tx.send_replace(ready);
            }
        }
    }

    async fn placement_loop(self: Arc<Self>) {
        loop {
            if self.draining.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            let (actions, next, deficits) = {
                let mut p = lock(&self.placement);
                let a = p.poll(now);
                (a, p.next_timeout(), p.deficits())
            };
            for (node, d) in deficits {
                self.metrics
                    .coverage_deficit
                    .with_label_values(&[&node])
                    .set(i64::try_from(d).unwrap_or(i64::MAX));
            }
            for Action::Dial {
                dial,
                target,
                for_node,
            } in actions
            {
                let g = self.clone();
                self.tracker
                    .spawn(async move { g.dial(dial, target, for_node).await });
            }
            let wait = next
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(500))
                .min(Duration::from_millis(500));
            tokio::select! {
                _ = self.kill.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn dial(self: Arc<Self>, dial: DialId, target: Target, for_node: Option<String>) {
        let label = for_node.clone().unwrap_or_else(|| "vip".into());
        let outcome = tokio::select! {
            _ = self.kill.cancelled() => return,
            r = self.try_dial(&target) => r,
        };
        match outcome {
            Err(f) => {
                debug!(gateway = %self.cfg.id, node = %label, reason = f.reason, "dial failed");
                self.metrics
                    .dials
                    .with_label_values(&[&label, f.reason])
                    .inc();
                {
                    let mut p = lock(&self.placement);
                    p.apply_roster(&f.roster);
                    p.dial_failed(Instant::now(), dial, f.retry_after, &mut rand::rng());
                    if f.draining_hint
                        && let Some(n) = &for_node
                        && matches!(target, Target::Node { .. })
                    {
                        p.node_draining(Instant::now(), n, f.retry_after);
                    }
                }
                self.wake.notify_one();
            }
            Ok(est) => {
                let sid = self.next_session.fetch_add(1, Ordering::Relaxed);
                let landed = lock(&self.placement).session_up(
                    Instant::now(),
                    dial,
                    sid,
                    &est.node_id,
                    &est.roster,
                    &mut rand::rng(),
                );
                match landed {
                    Landed::Surplus => {
                        debug!(gateway = %self.cfg.id, node = %est.node_id, "surplus session closed");
                        self.metrics
                            .dials
                            .with_label_values(&[&est.node_id, "surplus"])
                            .inc();
                        est.mux.close();
                        self.wake.notify_one();
                    }
                    Landed::Keep => {
                        self.metrics
                            .dials
                            .with_label_values(&[&est.node_id, "ok"])
                            .inc();
                        self.wake.notify_one();
                        self.run_session(sid, est).await;
                    }
                }
            }
        }
    }

    async fn try_dial(&self, target: &Target) -> Result<Established, DialFailure> {
        let t = &self.cfg.timers;
        let name = match target {
            Target::Node { sni, .. } if !sni.is_empty() => sni.clone(),
            _ => self.cfg.server_name.clone(),
        };
        let server_name = ServerName::try_from(name).map_err(|_| DialFailure::new("bad_name"))?;
        let tcp = match tokio::time::timeout(
            t.handshake_timeout,
            TcpStream::connect(self.cfg.cloud.as_str()),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => return Err(DialFailure::new("connect")),
            Err(_) => return Err(DialFailure::new("connect_timeout")),
        };
        common::session_socket_options(&tcp);
        let tls = match tokio::time::timeout(
            t.handshake_timeout,
            self.connector.connect(server_name, tcp),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn!(gateway = %self.cfg.id, error = %e, "session TLS handshake failed");
                self.metrics.handshake_failed("tls");
                return Err(DialFailure::new("tls"));
            }
            Err(_) => return Err(DialFailure::new("tls_timeout")),
        };
        let (mux, inbound) =
            YamuxSession::spawn(tls, Side::Client, MuxTuning::new(&self.cfg.limits));
        let hello = Control::Hello {
            proto: PROTO_VERSION,
            gateway_id: self.cfg.id.clone(),
            boot_epoch: self.boot_epoch,
            slot: u32::try_from(self.next_session.load(Ordering::Relaxed) % u64::from(u32::MAX))
                .unwrap_or(0),
            want_node: match target {
                Target::Node { node, .. } => Some(node.clone()),
                Target::Vip => None,
            },
            exports: lock(&self.export_up)
                .iter()
                .map(|(service, up)| ExportState {
                    service: service.clone(),
                    up: *up,
                })
                .collect(),
            consumes: self.cfg.consume.iter().map(|c| c.service.clone()).collect(),
        };
        let handshake = async {
            let ctrl = mux.open().await.map_err(|_| DialFailure::new("mux"))?;
            let (mut rd, mut wr) = split(ctrl);
            hello
                .write_to(&mut wr)
                .await
                .map_err(|_| DialFailure::new("hello"))?;
            let reply = Control::read_from(&mut rd)
                .await
                .map_err(|_| DialFailure::new("hello"))?;
            Ok::<_, DialFailure>((rd, wr, reply))
        };
        let (rd, wr, reply) = match tokio::time::timeout(t.handshake_timeout, handshake).await {
            Ok(Ok(r)) => r,
            Ok(Err(f)) => {
                mux.close();
                // In TLS 1.3 a refused client certificate surfaces here, on the first read.
                return Err(f);
            }
            Err(_) => {
                mux.close();
                return Err(DialFailure::new("hello_timeout"));
            }
        };
        match reply {
            Some(Control::HelloAck {
                node_id,
                roster,
                accepted,
                rejected,
                ..
            }) => {
                for r in &rejected {
                    warn!(gateway = %self.cfg.id, node = %node_id, service = %r.service, reason = %r.reason, "service refused by cloud node");
                }
                Ok(Established {
                    mux,
                    inbound,
                    rd,
                    wr,
                    node_id,
                    roster,
                    accepted: accepted.into_iter().collect(),
                })
            }
            Some(Control::Reject {
                code,
                message,
                retry_after_ms,
                roster,
            }) => {
                mux.close();
                if code != RejectCode::Draining {
                    warn!(gateway = %self.cfg.id, ?code, %message, "session rejected");
                }
                Err(DialFailure {
                    reason: match code {
                        RejectCode::Auth => "rejected_auth",
                        RejectCode::Draining => "rejected_draining",
                        RejectCode::Version => "rejected_version",
                        RejectCode::OverQuota => "rejected_over_quota",
                    },
                    retry_after: Duration::from_millis(retry_after_ms.min(60_000)),
                    roster,
                    draining_hint: code == RejectCode::Draining,
                })
            }
            _ => {
                mux.close();
                Err(DialFailure::new("protocol"))
            }
        }
    }

    async fn run_session(self: Arc<Self>, sid: u64, est: Established) {
        let t = &self.cfg.timers;
        let (out_tx, out_rx) = mpsc::channel(16);
        let session = Arc::new(OnSession {
            node: est.node_id.clone(),
            mux: est.mux.clone(),
            accepted: est.accepted,
            control: out_tx,
            kill: self.kill.child_token(),
            draining: AtomicBool::new(false),
            active: AtomicUsize::new(0),
        });
        lock(&self.sessions).insert(sid, session.clone());
        self.metrics
            .sessions
            .with_label_values(&[&session.node])
            .inc();
        info!(gateway = %self.cfg.id, session = sid, node = %session.node, "session up");
        // Server states changed since HELLO are sent at once; after that the full set is
        // repeated every ping interval, so a state message lost to a full queue (changes are
        // sent with try_send) cannot leave a cloud node with a stale view for long.
        let resync = {
            let g = self.clone();
            let s = session.clone();
            let every = t.ping;
            tokio::spawn(async move {
                loop {
                    let states: Vec<(String, bool)> = lock(&g.export_up)
                        .iter()
                        .map(|(k, v)| (k.clone(), *v))
                        .collect();
                    for (service, up) in states {
                        let m = Control::ServiceState {
                            service,
                            up,
                            reason: String::new(),
                        };
                        if s.control.send(m).await.is_err() {
                            return;
                        }
                    }
                    tokio::select! {
                        _ = s.kill.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                }
            })
        };
        self.refresh_consume_ready();
        let g = self.clone();
        let g2 = self.clone();
        let s2 = session.clone();
        let end = common::session_loop(
            est.rd,
            est.wr,
            &est.mux,
            est.inbound,
            out_rx,
            t.ping,
            t.dead_after,
            session.kill.clone(),
            self.metrics.session_rtt_seconds.clone(),
            move |m| g.on_control(&s2, m),
            move |stream| {
                let g3 = g2.clone();
                g2.tracker
                    .spawn(async move { g3.serve_reverse(stream).await });
            },
        )
        .await;
        resync.abort();
        info!(gateway = %self.cfg.id, session = sid, node = %session.node, reason = end.as_str(), "session down");
        self.metrics.session_closed(end.as_str());
        lock(&self.sessions).remove(&sid);
        self.metrics
            .sessions
            .with_label_values(&[&session.node])
            .dec();
        lock(&self.placement).session_down(Instant::now(), sid, &mut rand::rng());
        est.mux.close();
        self.refresh_consume_ready();
        self.wake.notify_one();
    }

    fn on_control(&self, session: &OnSession, m: Control) {
        match m {
            Control::Drain { reason, .. } => {
                info!(gateway = %self.cfg.id, node = %session.node, %reason, "cloud node drains");
                session.draining.store(true, Ordering::SeqCst);
                lock(&self.placement).node_draining(
                    Instant::now(),
                    &session.node,
                    Duration::from_secs(1),
                );
                self.refresh_consume_ready();
                self.wake.notify_one();
            }
            other => debug!(msg = ?other, "ignored control message"),
        }
    }

    /// A stream opened by the cloud: connect the exported server and relay.
    async fn serve_reverse(self: Arc<Self>, mut s: YamuxStream) {
        if self.wedged.load(Ordering::SeqCst) {
            // Fault injection: swallow the open without answering.
            let kill = self.kill.clone();
            let mut sink = tokio::io::sink();
            tokio::select! {
                _ = tokio::io::copy(&mut s, &mut sink) => {}
                _ = kill.cancelled() => {}
            }
            return;
        }
        let t = &self.cfg.timers;
        let pre = match tokio::time::timeout(t.open_timeout, Preamble::read_from(&mut s)).await {
            Ok(Ok(p)) => p,
            _ => return,
        };
        if pre.kind == StreamKind::Probe {
            let _ = s.write_all(&[Status::Ok as u8]).await;
            return;
        }
        let export = self.cfg.export.iter().find(|e| e.service == pre.service);
        let Some(export) = export.filter(|_| pre.kind == StreamKind::Reverse) else {
            let _ = s.write_all(&[Status::Unauthorized as u8]).await;
            return;
        };
        if self.draining.load(Ordering::SeqCst) {
            let _ = s.write_all(&[Status::Draining as u8]).await;
            return;
        }
        let mut server = match common::connect_server(&export.connect, t.connect_timeout).await {
            Ok(c) => c,
            Err(st) => {
                self.metrics
                    .streams
                    .with_label_values(&[&pre.service, "reverse", st.as_str()])
                    .inc();
                let _ = s.write_all(&[st as u8]).await;
                return;
            }
        };
        if s.write_all(&[Status::Ok as u8]).await.is_err() {
            return;
        }
        self.metrics
            .streams
            .with_label_values(&[&pre.service, "reverse", "ok"])
            .inc();
        common::relay_counted(
            &self.metrics,
            &self.streams,
            &self.kill,
            &pre.service,
            "reverse",
            &mut server,
            common::TcpEnd::Server,
            &mut s,
        )
        .await;
    }

    fn pick(&self, service: &str, exclude: &[Arc<OnSession>]) -> Option<Arc<OnSession>> {
        let sessions = lock(&self.sessions);
        let usable: Vec<&Arc<OnSession>> = sessions
            .values()
            .filter(|s| !s.draining.load(Ordering::SeqCst) && s.accepted.contains(service))
            .filter(|s| !exclude.iter().any(|e| Arc::ptr_eq(e, s)))
            .collect();
        let other_node: Vec<&Arc<OnSession>> = usable
            .iter()
            .copied()
            .filter(|s| !exclude.iter().any(|e| e.node == s.node))
            .collect();
        let pool = if other_node.is_empty() {
            usable
        } else {
            other_node
        };
        let least = pool
            .iter()
            .map(|s| s.active.load(Ordering::Relaxed))
            .min()?;
        let ties: Vec<&Arc<OnSession>> = pool
            .into_iter()
            .filter(|s| s.active.load(Ordering::Relaxed) == least)
            .collect();
        let i = self.rr.fetch_add(1, Ordering::Relaxed) % ties.len();
        ties.get(i).map(|s| (*s).clone())
    }

    /// A local client of a consumed service: carry it to a cloud node on a forward stream,
    /// with a second open on another node's session when the first fails or is slow to
    /// answer ([`common::race_opens`]).
    async fn serve_consumer(
        self: Arc<Self>,
        c: Arc<Consume>,
        mut client: TcpStream,
        peer: SocketAddr,
    ) {
        let service = c.service.as_str();
        let reject = |reason: &str| {
            self.metrics
                .clients_rejected
                .with_label_values(&[service, reason])
                .inc()
        };
        let Some(mut ready) = self
            .consume_ready
            .get(service)
            .map(watch::Sender::subscribe)
        else {
            return;
        };
        if !*ready.borrow() {
            match c.when_not_ready {
                // Accepted just before the listener closed: serve it if a session is left.
                WhenNotReady::Unbind => {}
                WhenNotReady::Reject => {
                    reject("not_ready");
                    return;
                }
                WhenNotReady::Hold => {
                    if !common::wait_ready(&mut ready, c.accept_wait).await {
                        reject("not_ready");
                        return;
                    }
                }
            }
        }
        let preamble = Preamble {
            kind: StreamKind::Forward,
            service: service.to_string(),
            client: Some(peer),
            trace_id: common::trace_id(),
        };
        let Some(first) = self.pick(service, &[]) else {
            reject("no_stream");
            return;
        };
        let mut tried: Vec<Arc<OnSession>> = Vec::new();
        let another = |session: &Arc<OnSession>, hedge: bool| {
            tried.push(session.clone());
            let next = self.pick(service, &tried)?;
            if hedge && next.node == session.node {
                return None;
            }
            self.metrics
                .open_retries
                .with_label_values(&[service])
                .inc();
            Some(next)
        };
        let open = |session: Arc<OnSession>| {
            let g = self.clone();
            let preamble = preamble.clone();
            async move {
                let stream = g.open_on(&session, &preamble).await;
                (session, stream)
            }
        };
        let unused = |session: Arc<OnSession>| {
            session.active.fetch_sub(1, Ordering::Relaxed);
        };
        let hedge = common::hedge_after(self.cfg.timers.open_timeout);
        let (won, leftover) = common::race_opens(first, another, open, hedge, unused).await;
        if let Some(rest) = leftover {
            self.tracker.spawn(rest);
        }
        let Some((session, mut stream)) = won else {
            reject("no_stream");
            return;
        };
        self.metrics
            .streams
            .with_label_values(&[service, "forward", "ok"])
            .inc();
        common::relay_counted(
            &self.metrics,
            &self.streams,
            &self.kill,
            service,
            "forward",
            &mut client,
            common::TcpEnd::Client,
            &mut stream,
        )
        .await;
        session.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// One stream open on `session` for a consumer client: counts the stream on the
    /// session, and on failure logs why; a silent session is ejected (placement dials a
    /// replacement). `None` when it failed.
    async fn open_on(&self, session: &OnSession, preamble: &Preamble) -> Option<YamuxStream> {
        let service = preamble.service.as_str();
        session.active.fetch_add(1, Ordering::Relaxed);
        let open_started = Instant::now();
        match common::open_stream(&session.mux, preamble, self.cfg.timers.open_timeout).await {
            Ok(stream) => {
                self.metrics
                    .stream_open_seconds
                    .with_label_values(&[service])
                    .observe(open_started.elapsed().as_secs_f64());
                Some(stream)
            }
            Err(e) => {
                session.active.fetch_sub(1, Ordering::Relaxed);
                warn!(gateway = %self.cfg.id, node = %session.node, %service, reason = e.as_str(), "forward stream open failed");
                self.metrics
                    .stream_open_failures
                    .with_label_values(&[service, e.as_str()])
                    .inc();
                if matches!(e, common::OpenError::Silent) {
                    session.kill.cancel();
                }
                None
            }
        }
    }

    async fn drain(self: Arc<Self>) {
        info!(gateway = %self.cfg.id, "draining");
        self.draining.store(true, Ordering::SeqCst);
        self.refresh_consume_ready();
        let grace = self.cfg.timers.drain_grace;
        let sessions: Vec<Arc<OnSession>> = lock(&self.sessions).values().cloned().collect();
        for s in &sessions {
            let _ = s.control.try_send(Control::Drain {
                deadline_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                reason: "gateway draining".into(),
            });
        }
        let until = Instant::now() + grace;
        while (self.streams.load(Ordering::SeqCst) > 0 || self.inflight.load(Ordering::SeqCst) > 0)
            && Instant::now() < until
            && !self.kill.is_cancelled()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for s in lock(&self.sessions).values() {
            s.mux.close();
        }
        self.kill.cancel();
    }
}
