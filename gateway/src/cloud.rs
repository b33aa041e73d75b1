//! The cloud role's driver: accepts mTLS sessions from on-prem gateways, authorizes them,
//! feeds [`CloudCore`] and applies its actions (readiness, listener gating, ejection), opens
//! reverse streams for its clients and serves forward streams to cloud-side servers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncWriteExt, split};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::common::{self, End, GatewayError, OpenError};
use crate::config::{CloudConfig, ReverseService, WhenNotReady};
use crate::duplicate::{self, Admission, DuplicateIds};
use crate::loggate::LogGate;
use crate::metrics::{Metrics, ServiceSide};
use crate::mux::{Mux, MuxTuning, Side, YamuxSession, YamuxStream};
use crate::proto::{
    Control, ExportState, PROTO_VERSION, Preamble, Refused, RejectCode, RosterEntry, Status,
    StreamKind,
};
use crate::readiness::{Action, CloudCore, SessionId, SessionInfo};
use crate::tls;

/// Sessions one gateway incarnation may hold on one node: bounds a misbehaving gateway
/// (16 is the highest `prepared_connections`, plus room for re-dials and surplus).
const MAX_SESSIONS_PER_GATEWAY: usize = 32;

/// Interval of the log gate for sessions failing before their HELLO is accepted.
const UNAUTHENTICATED_LOG_EVERY: Duration = Duration::from_secs(10);

struct Session {
    gateway: String,
    /// The gateway's address, to name it when another process claims its id.
    peer: SocketAddr,
    mux: YamuxSession,
    consumes: BTreeSet<String>,
    control: mpsc::Sender<Control>,
    kill: CancellationToken,
}

struct Cloud {
    cfg: CloudConfig,
    boot_epoch: u64,
    metrics: Metrics,
    core: Mutex<CloudCore>,
    duplicates: Mutex<DuplicateIds>,
    unauth_log: Mutex<LogGate>,
    sessions: Mutex<BTreeMap<SessionId, Arc<Session>>>,
    ready: BTreeMap<String, watch::Sender<bool>>,
    draining: AtomicBool,
    kill: CancellationToken,
    tracker: TaskTracker,
    next_id: AtomicU64,
    streams: AtomicUsize,
    /// Clients accepted and not finished (a drain waits for them too).
    inflight: Arc<AtomicUsize>,
    roster: Vec<RosterEntry>,
    acceptor: TlsAcceptor,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks would be a bug; keep serving with the data as is.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running cloud node.
pub struct CloudHandle {
    /// Where sessions are accepted.
    pub session_addr: SocketAddr,
    /// Admin HTTP address.
    pub admin_addr: SocketAddr,
    /// Address of each reverse service listener (ports resolved when configured as 0).
    pub service_addrs: BTreeMap<String, SocketAddr>,
    inner: Arc<Cloud>,
}

impl std::fmt::Debug for CloudHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudHandle")
            .field("id", &self.inner.cfg.id)
            .field("session_addr", &self.session_addr)
            .finish_non_exhaustive()
    }
}

impl CloudHandle {
    /// Whether `service` is ready on this node (and, with `unbind`, its listener is bound).
    pub fn is_ready(&self, service: &str) -> bool {
        self.inner.service_ready(service)
    }

    /// A receiver that follows `service`'s readiness.
    pub fn readiness(&self, service: &str) -> Option<watch::Receiver<bool>> {
        self.inner.ready.get(service).map(watch::Sender::subscribe)
    }

    /// Number of registered sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.inner.core).session_count()
    }

    /// Registered sessions per gateway id.
    pub fn sessions_by_gateway(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for s in lock(&self.inner.sessions).values() {
            *out.entry(s.gateway.clone()).or_insert(0) += 1;
        }
        out
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Stops at once, like a crash: sockets close without DRAIN. Resolves when every task
    /// has ended and every port is released.
    pub async fn kill(&self) {
        self.inner.kill.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    /// Waits until the node has stopped (after a drain or a kill).
    pub async fn wait(&self) {
        self.inner.kill.cancelled().await;
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

/// Starts a cloud node. When `shutdown` is cancelled the node drains: readiness off at once,
/// listeners unbound, new sessions refused, peers told (DRAIN), streams given
/// `timers.drain_grace` to finish; then it stops.
pub async fn start(
    cfg: CloudConfig,
    shutdown: CancellationToken,
) -> Result<CloudHandle, GatewayError> {
    let server_config = tls::server_config(&cfg.tls)?;
    let acceptor = TlsAcceptor::from(server_config);
    let metrics = Metrics::new()?;
    for r in &cfg.reverse {
        metrics.service(&r.service, "reverse", ServiceSide::Clients);
    }
    for f in &cfg.forward {
        metrics.service(&f.service, "forward", ServiceSide::Server);
    }
    // Stream probes of a session are not for a service.
    metrics
        .stream_open_failures
        .with_label_values(&["-", "probe_timeout"]);
    let session_listener = common::bind("session listener", cfg.session_listen).await?;
    let admin_listener = common::bind("admin listener", cfg.admin_listen).await?;
    let mut service_listeners = Vec::new();
    let mut service_addrs = BTreeMap::new();
    for svc in &cfg.reverse {
        let l = common::bind(&format!("service {:?} listener", svc.service), svc.listen).await?;
        let addr = l.local_addr().unwrap_or(svc.listen);
        service_addrs.insert(svc.service.clone(), addr);
        let (addr, initial) = common::initial_listener(l, svc.when_not_ready);
        service_listeners.push((svc.clone(), addr, initial));
    }
    let session_addr = session_listener.local_addr().unwrap_or(cfg.session_listen);
    let admin_addr = admin_listener.local_addr().unwrap_or(cfg.admin_listen);

    let services: Vec<String> = cfg.reverse.iter().map(|r| r.service.clone()).collect();
    let core = CloudCore::new(services.clone(), cfg.timers.readiness_down, 1);
    let ready = services
        .iter()
        .map(|s| {
            metrics.service_ready.with_label_values(&[s]).set(0);
            (s.clone(), watch::channel(false).0)
        })
        .collect();
    let roster = if cfg.roster.is_empty() {
        vec![RosterEntry {
            node_id: cfg.id.clone(),
            sni: String::new(),
            draining: false,
        }]
    } else {
        cfg.roster
            .iter()
            .map(|n| RosterEntry {
                node_id: n.id.clone(),
                sni: n.sni.clone(),
                draining: false,
            })
            .collect()
    };
    let cloud = Arc::new(Cloud {
        boot_epoch: rand::random(),
        metrics,
        core: Mutex::new(core),
        duplicates: Mutex::new(DuplicateIds::new(duplicate::HOLD_DOWN)),
        unauth_log: Mutex::new(LogGate::new(UNAUTHENTICATED_LOG_EVERY)),
        sessions: Mutex::new(BTreeMap::new()),
        ready,
        draining: AtomicBool::new(false),
        kill: CancellationToken::new(),
        tracker: TaskTracker::new(),
        next_id: AtomicU64::new(1),
        streams: AtomicUsize::new(0),
        inflight: Arc::new(AtomicUsize::new(0)),
        roster,
        acceptor,
        cfg,
    });
    info!(node = %cloud.cfg.id, %session_addr, %admin_addr, "cloud gateway started");

    // Sessions.
    let c = cloud.clone();
    cloud.tracker.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = c.kill.cancelled() => return,
                a = session_listener.accept() => a,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let c2 = c.clone();
                    c.tracker
                        .spawn(async move { c2.handle_session(tcp, peer).await });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });

    // Service listeners.
    for (svc, addr, initial) in service_listeners {
        let c = cloud.clone();
        let svc = Arc::new(svc);
        let rx = cloud.ready.get(&svc.service).map(watch::Sender::subscribe);
        let Some(rx) = rx else { continue };
        let bound = cloud
            .metrics
            .listener_bound
            .with_label_values(&[&svc.service]);
        cloud.tracker.spawn(async move {
            let kill = c.kill.clone();
            let c2 = c.clone();
            let svc2 = svc.clone();
            common::gated_accept(
                addr,
                initial,
                svc.when_not_ready,
                rx,
                kill,
                bound,
                move |tcp, peer| {
                    let c3 = c2.clone();
                    let svc3 = svc2.clone();
                    // Counted before the task starts, so a drain cannot miss it.
                    let guard = common::Inflight::new(c2.inflight.clone());
                    c2.tracker.spawn(async move {
                        c3.serve_client(svc3, tcp, peer).await;
                        drop(guard);
                    });
                },
            )
            .await;
        });
    }

    // Probes: an empty stream open on every session, so a session that answers pings but
    // not opens (wedged) is ejected before a client meets it.
    let c = cloud.clone();
    cloud.tracker.spawn(async move {
        let mut tick = tokio::time::interval(c.cfg.timers.probe);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = c.kill.cancelled() => return,
                _ = tick.tick() => {
                    let sessions: Vec<(SessionId, Arc<Session>)> =
                        lock(&c.sessions).iter().map(|(k, v)| (*k, v.clone())).collect();
                    for (sid, session) in sessions {
                        let c2 = c.clone();
                        c.tracker.spawn(async move { c2.probe(sid, session).await });
                    }
                }
            }
        }
    });

    // Debounced readiness falls due with time.
    let c = cloud.clone();
    cloud.tracker.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = c.kill.cancelled() => return,
                _ = tick.tick() => {
                    let actions = lock(&c.core).poll(Instant::now());
                    c.apply(actions);
                }
            }
        }
    });

    // Admin.
    let router = c_admin_router(&cloud);
    let kill = cloud.kill.clone();
    cloud.tracker.spawn(async move {
        if let Err(e) = tether_health::admin::serve(admin_listener, router, kill).await {
            warn!(error = %e, "admin server failed");
        }
    });

    // Drain on shutdown.
    let c = cloud.clone();
    cloud.tracker.spawn(async move {
        tokio::select! {
            _ = c.kill.cancelled() => {}
            _ = shutdown.cancelled() => c.drain().await,
        }
    });

    Ok(CloudHandle {
        session_addr,
        admin_addr,
        service_addrs,
        inner: cloud,
    })
}

fn c_admin_router(cloud: &Arc<Cloud>) -> axum::Router {
    let c = cloud.clone();
    let readiness: tether_health::admin::Readiness = Arc::new(move || {
        if c.draining.load(Ordering::SeqCst) {
            return Err("draining".to_string());
        }
        let missing: Vec<String> = c
            .cfg
            .reverse
            .iter()
            .map(|r| r.service.clone())
            .filter(|s| !c.service_ready(s))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("no capacity for {}", missing.join(", ")))
        }
    });
    let mine = axum::Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz/{service}", get(service_readyz))
        .with_state(cloud.clone());
    tether_health::admin::router(cloud.metrics.registry.clone(), readiness).merge(mine)
}

async fn service_readyz(
    State(c): State<Arc<Cloud>>,
    Path(service): Path<String>,
) -> (StatusCode, Json<serde_json::Value>) {
    let ready = c.service_ready(&service);
    let core = lock(&c.core);
    let known = core.services().any(|s| s == service);
    let (sessions, gateways) = core.capacity(&service);
    let body = serde_json::json!({
        "node_id": c.cfg.id,
        "boot_epoch": c.boot_epoch,
        "service": service,
        "known": known,
        "ready": ready,
        "sessions": sessions,
        "gateways": gateways,
        "draining": c.draining.load(Ordering::SeqCst),
    });
    let status = if ready {
        StatusCode::OK
    } else if known {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NOT_FOUND
    };
    (status, Json(body))
}

pub(crate) fn reject_label(code: RejectCode) -> &'static str {
    match code {
        RejectCode::Auth => "auth",
        RejectCode::Draining => "draining",
        RejectCode::Version => "version",
        RejectCode::OverQuota => "over_quota",
    }
}

fn handshake_reason(e: &std::io::Error) -> &'static str {
    use rustls::CertificateError as C;
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "io";
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "expired",
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => "unknown_ca",
        rustls::Error::InvalidCertificate(_) => "bad_certificate",
        rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => "incompatible",
        _ => "tls",
    }
}

impl Cloud {
    /// Ready as seen from outside: capacity, not draining, and the listener bound when the
    /// mode unbinds (so a balancer that saw 200 on /readyz finds the port listening).
    fn service_ready(&self, service: &str) -> bool {
        if self.draining.load(Ordering::SeqCst) || !lock(&self.core).is_ready(service) {
            return false;
        }
        match self.cfg.reverse.iter().find(|r| r.service == service) {
            Some(r) if r.when_not_ready == WhenNotReady::Unbind => {
                self.metrics
                    .listener_bound
                    .with_label_values(&[service])
                    .get()
                    == 1
            }
            Some(_) => true,
            None => false,
        }
    }

    fn apply(&self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Close { session, reason } => {
                    self.metrics.session_closed(reason.as_str());
                    let s = lock(&self.sessions).get(&session).cloned();
                    if let Some(s) = s {
                        info!(session, gateway = %s.gateway, reason = reason.as_str(), "closing session");
                        s.kill.cancel();
                    }
                }
                Action::Readiness { service, ready } => {
                    info!(node = %self.cfg.id, %service, ready, "service readiness");
                    self.metrics
                        .service_ready
                        .with_label_values(&[&service])
                        .set(i64::from(ready));
                    if let Some(tx) = self.ready.get(&service) {
                        tx.send_replace(ready);
                    }
                }
            }
        }
    }

    async fn reject(
        &self,
        wr: &mut (impl tokio::io::AsyncWrite + Unpin),
        code: RejectCode,
        message: String,
    ) {
        self.metrics.rejected(reject_label(code));
        let m = Control::Reject {
            code,
            message,
            retry_after_ms: if code == RejectCode::Draining {
                1000
            } else {
                5000
            },
            roster: self.roster.clone(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), m.write_to(wr)).await;
    }

    /// Refuses (and reports) a HELLO whose gateway id another live process holds
    /// ([`DuplicateIds`]); `true` when the session may register.
    async fn admit_id(
        &self,
        wr: &mut (impl tokio::io::AsyncWrite + Unpin),
        gateway_id: &str,
        epoch: u64,
        peer: SocketAddr,
    ) -> bool {
        let incumbent_epoch = lock(&self.core).epoch_of(gateway_id);
        let verdict =
            lock(&self.duplicates).admit(Instant::now(), gateway_id, epoch, incumbent_epoch);
        let Admission::Refuse { incumbent, first } = verdict else {
            return true;
        };
        self.metrics.auth_refused("duplicate_id");
        let held_by = lock(&self.sessions)
            .values()
            .find(|s| s.gateway == gateway_id)
            .map_or_else(|| "an earlier session".to_string(), |s| s.peer.to_string());
        if first {
            error!(
                gateway = %gateway_id, incumbent = %held_by, newcomer = %peer,
                "two on-prem gateways use the id {gateway_id:?} (from {held_by} and from {peer}): each would \
                 purge the other's sessions; keeping the one from {held_by} for {}s and refusing the other. \
                 Give every gateway its own id and certificate",
                duplicate::HOLD_DOWN.as_secs()
            );
        } else {
            debug!(gateway = %gateway_id, newcomer = %peer, "duplicate gateway id refused again");
        }
        self.reject(
            wr,
            RejectCode::Auth,
            format!(
                "gateway id {gateway_id:?} is in use by another process (epoch {incumbent:x}, \
                 connected from {held_by}); two gateways must not share an id"
            ),
        )
        .await;
        false
    }

    /// A session that failed before its HELLO was accepted: counted by `reason`, logged
    /// through a gate (at most one line per [`UNAUTHENTICATED_LOG_EVERY`]) because such
    /// peers need no credentials and could otherwise flood the log.
    fn unauthenticated(&self, peer: SocketAddr, reason: &str, what: &str) {
        self.metrics.handshake_failed(reason);
        if let Some(held) = lock(&self.unauth_log).pass(Instant::now()) {
            warn!(
                %peer, reason, suppressed = held,
                "{what} (such lines are logged at most every {}s; all are counted in \
                 tether_gateway_handshake_failures_total)",
                UNAUTHENTICATED_LOG_EVERY.as_secs()
            );
        }
    }

    async fn handle_session(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        common::session_socket_options(&tcp);
        let t = &self.cfg.timers;
        let tls = match tokio::time::timeout(t.handshake_timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let reason = handshake_reason(&e);
                self.unauthenticated(peer, reason, &format!("session TLS handshake refused: {e}"));
                return;
            }
            Err(_) => {
                self.unauthenticated(peer, "timeout", "session TLS handshake timed out");
                return;
            }
        };
        let cert: Option<CertificateDer<'static>> = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned();
        let Some(cert) = cert else {
            // The verifier requires one; keep the check anyway.
            self.unauthenticated(
                peer,
                "no_certificate",
                "session without a client certificate",
            );
            return;
        };
        // Authenticated by TLS, not yet by HELLO: what follows is still counted and gated,
        // as any holder of a certificate of the CA could send it.
        let (mux, mut inbound) =
            YamuxSession::spawn(tls, Side::Server, MuxTuning::new(&self.cfg.limits));
        let ctrl = match tokio::time::timeout(t.handshake_timeout, inbound.recv()).await {
            Ok(Some(s)) => s,
            _ => {
                self.unauthenticated(
                    peer,
                    "no_control_stream",
                    "no control stream; closing session",
                );
                mux.close();
                return;
            }
        };
        let (mut rd, mut wr) = split(ctrl);
        let hello =
            match tokio::time::timeout(t.handshake_timeout, Control::read_from(&mut rd)).await {
                Ok(Ok(Some(m))) => m,
                Ok(Err(_)) => {
                    self.unauthenticated(peer, "bad_hello", "malformed HELLO; closing session");
                    mux.close();
                    return;
                }
                _ => {
                    self.unauthenticated(peer, "no_hello", "no HELLO; closing session");
                    mux.close();
                    return;
                }
            };
        let Control::Hello {
            proto,
            gateway_id,
            boot_epoch,
            slot,
            exports,
            consumes,
            ..
        } = hello
        else {
            self.unauthenticated(
                peer,
                "not_hello",
                "first control message is not HELLO; closing session",
            );
            mux.close();
            return;
        };
        if proto != PROTO_VERSION {
            self.reject(
                &mut wr,
                RejectCode::Version,
                format!("protocol {proto} unsupported; this node speaks {PROTO_VERSION}"),
            )
            .await;
            mux.close();
            return;
        }
        if self.draining.load(Ordering::SeqCst) {
            self.reject(&mut wr, RejectCode::Draining, "node is draining".into())
                .await;
            mux.close();
            return;
        }
        if !tls::cert_has_identity(&cert, &gateway_id) {
            warn!(%peer, %gateway_id, "HELLO identity does not match the client certificate; refused");
            self.metrics.auth_refused("identity_mismatch");
            self.reject(
                &mut wr,
                RejectCode::Auth,
                format!("certificate is not valid for {gateway_id:?}"),
            )
            .await;
            mux.close();
            return;
        }
        let known = self
            .cfg
            .reverse
            .iter()
            .any(|r| r.allowed_exporters.contains(&gateway_id))
            || self
                .cfg
                .forward
                .iter()
                .any(|f| f.allowed_consumers.contains(&gateway_id));
        if !known {
            warn!(%peer, %gateway_id, "gateway is not allowed any service; refused");
            self.metrics.auth_refused("unknown_gateway");
            self.reject(
                &mut wr,
                RejectCode::Auth,
                format!("{gateway_id:?} is not allowed on this node"),
            )
            .await;
            mux.close();
            return;
        }
        let held = lock(&self.core).sessions_of_epoch(&gateway_id, boot_epoch);
        if held >= MAX_SESSIONS_PER_GATEWAY {
            warn!(%peer, %gateway_id, held, "too many sessions from one gateway; refused");
            self.metrics.auth_refused("over_quota");
            self.reject(
                &mut wr,
                RejectCode::OverQuota,
                format!("{gateway_id:?} already holds {held} sessions on this node"),
            )
            .await;
            mux.close();
            return;
        }
        if !self.admit_id(&mut wr, &gateway_id, boot_epoch, peer).await {
            mux.close();
            return;
        }
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        let mut export_map = BTreeMap::new();
        for ExportState { service, up } in exports {
            match self.cfg.reverse.iter().find(|r| r.service == service) {
                Some(r) if r.allowed_exporters.contains(&gateway_id) => {
                    accepted.push(service.clone());
                    export_map.insert(service, up);
                }
                found => {
                    let reason = if found.is_some() {
                        "unauthorized"
                    } else {
                        "unknown"
                    };
                    warn!(%gateway_id, %service, reason, "export refused");
                    self.metrics.auth_refused("export_not_allowed");
                    rejected.push(Refused {
                        service,
                        reason: reason.into(),
                    });
                }
            }
        }
        let mut consume_set = BTreeSet::new();
        for service in consumes {
            match self.cfg.forward.iter().find(|f| f.service == service) {
                Some(f) if f.allowed_consumers.contains(&gateway_id) => {
                    accepted.push(service.clone());
                    consume_set.insert(service);
                }
                found => {
                    let reason = if found.is_some() {
                        "unauthorized"
                    } else {
                        "unknown"
                    };
                    warn!(%gateway_id, %service, reason, "consume refused");
                    self.metrics.auth_refused("consume_not_allowed");
                    rejected.push(Refused {
                        service,
                        reason: reason.into(),
                    });
                }
            }
        }
        let ack = Control::HelloAck {
            node_id: self.cfg.id.clone(),
            boot_epoch: self.boot_epoch,
            roster: self.roster.clone(),
            accepted,
            rejected,
            ping_ms: u64::try_from(t.ping.as_millis()).unwrap_or(u64::MAX),
            dead_ms: u64::try_from(t.dead_after.as_millis()).unwrap_or(u64::MAX),
        };
        if tokio::time::timeout(t.handshake_timeout, ack.write_to(&mut wr))
            .await
            .is_err()
        {
            mux.close();
            return;
        }

        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (out_tx, out_rx) = mpsc::channel(16);
        let session = Arc::new(Session {
            gateway: gateway_id.clone(),
            peer,
            mux: mux.clone(),
            consumes: consume_set,
            control: out_tx,
            kill: self.kill.child_token(),
        });
        lock(&self.sessions).insert(id, session.clone());
        self.metrics
            .sessions
            .with_label_values(&[&gateway_id])
            .inc();
        info!(node = %self.cfg.id, session = id, gateway = %gateway_id, epoch = boot_epoch, slot, %peer, "session up");
        let actions = lock(&self.core).session_up(
            Instant::now(),
            id,
            SessionInfo {
                gateway: gateway_id.clone(),
                epoch: boot_epoch,
                slot,
                exports: export_map,
            },
        );
        self.apply(actions);
        if self.draining.load(Ordering::SeqCst) {
            // A drain began while this session was being set up.
            let _ = session.control.try_send(Control::Drain {
                deadline_ms: 0,
                reason: "draining".into(),
            });
        }

        let me = self.clone();
        let me2 = self.clone();
        let sess2 = session.clone();
        let end = common::session_loop(
            rd,
            wr,
            &mux,
            inbound,
            out_rx,
            t.ping,
            t.dead_after,
            session.kill.clone(),
            self.metrics.session_rtt_seconds.clone(),
            move |m| me.on_control(id, m),
            move |s| {
                let me3 = me2.clone();
                let sess3 = sess2.clone();
                me2.tracker
                    .spawn(async move { me3.serve_stream(sess3, s).await });
            },
        )
        .await;
        info!(node = %self.cfg.id, session = id, gateway = %gateway_id, reason = end.as_str(), "session down");
        if end != End::Killed {
            self.metrics.session_closed(end.as_str());
        }
        lock(&self.sessions).remove(&id);
        self.metrics
            .sessions
            .with_label_values(&[&gateway_id])
            .dec();
        let actions = lock(&self.core).session_down(Instant::now(), id);
        self.apply(actions);
        mux.close();
    }

    fn on_control(&self, id: SessionId, m: Control) {
        let now = Instant::now();
        let actions = match m {
            Control::ServiceState {
                service,
                up,
                reason,
            } => {
                debug!(session = id, %service, up, %reason, "service state");
                lock(&self.core).service_state(now, id, &service, up)
            }
            Control::Drain { reason, .. } => {
                info!(session = id, %reason, "peer drains session");
                lock(&self.core).session_draining(now, id)
            }
            other => {
                debug!(session = id, msg = ?other, "ignored control message");
                Vec::new()
            }
        };
        self.apply(actions);
    }

    /// A stream opened by on-prem: forward connect (or probe).
    async fn serve_stream(self: Arc<Self>, session: Arc<Session>, mut s: YamuxStream) {
        let t = &self.cfg.timers;
        let pre = match tokio::time::timeout(t.open_timeout, Preamble::read_from(&mut s)).await {
            Ok(Ok(p)) => p,
            _ => return,
        };
        if self.draining.load(Ordering::SeqCst) && pre.kind != StreamKind::Probe {
            let _ = s.write_all(&[Status::Draining as u8]).await;
            return;
        }
        match pre.kind {
            StreamKind::Probe => {
                let _ = s.write_all(&[Status::Ok as u8]).await;
            }
            StreamKind::Reverse => {
                let _ = s.write_all(&[Status::Unauthorized as u8]).await;
            }
            StreamKind::Forward => {
                let target = self.cfg.forward.iter().find(|f| f.service == pre.service);
                let Some(f) = target.filter(|_| session.consumes.contains(&pre.service)) else {
                    warn!(gateway = %session.gateway, service = %pre.service, "forward stream refused: not allowed");
                    self.metrics.auth_refused("consume_not_allowed");
                    let _ = s.write_all(&[Status::Unauthorized as u8]).await;
                    return;
                };
                let mut server = match common::connect_server(&f.connect, t.connect_timeout).await {
                    Ok(c) => c,
                    Err(st) => {
                        self.metrics
                            .streams
                            .with_label_values(&[&pre.service, "forward", st.as_str()])
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
                    .with_label_values(&[&pre.service, "forward", "ok"])
                    .inc();
                common::relay_counted(
                    &self.metrics,
                    &self.streams,
                    &self.kill,
                    &pre.service,
                    "forward",
                    &mut server,
                    common::TcpEnd::Server,
                    &mut s,
                )
                .await;
            }
        }
    }

    /// A client of a reverse service: open a stream on a session that can serve it, with a
    /// second open on another gateway's session when the first fails or is slow to answer
    /// ([`common::race_opens`]), and never wait longer than `accept_wait` for a session.
    async fn serve_client(
        self: Arc<Self>,
        svc: Arc<ReverseService>,
        mut client: TcpStream,
        peer: SocketAddr,
    ) {
        let service = svc.service.as_str();
        let Some(mut ready) = self.ready.get(service).map(watch::Sender::subscribe) else {
            return;
        };
        let reject = |reason: &str| {
            debug!(node = %self.cfg.id, service, client = %peer, reason, "client rejected");
            self.metrics
                .clients_rejected
                .with_label_values(&[service, reason])
                .inc();
        };
        let deadline = Instant::now() + svc.accept_wait;
        if !*ready.borrow() {
            match svc.when_not_ready {
                // Accepted just before the listener was unbound (a drain or the last session
                // lost): serve it if any capacity is left, within accept_wait.
                WhenNotReady::Unbind => {}
                WhenNotReady::Reject => {
                    reject("not_ready");
                    return;
                }
                WhenNotReady::Hold => {
                    if !common::wait_ready(&mut ready, svc.accept_wait).await {
                        reject("not_ready");
                        return;
                    }
                }
            }
        }
        let trace = common::trace_id();
        let preamble = Preamble {
            kind: StreamKind::Reverse,
            service: service.to_string(),
            client: Some(peer),
            trace_id: trace,
        };
        let mut tried: Vec<SessionId> = Vec::new();
        let mut avoid: BTreeSet<String> = BTreeSet::new();
        // Readiness can be debounced while no session is usable: wait, bounded.
        let first = loop {
            if let Some(p) = self.session_for(service, &mut tried, &avoid) {
                break p;
            }
            if Instant::now() >= deadline || self.kill.is_cancelled() {
                reject("no_stream");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let another = |(sid, session): &(SessionId, Arc<Session>), hedge: bool| {
            tried.push(*sid);
            avoid.insert(session.gateway.clone());
            let next = self.session_for(service, &mut tried, &avoid)?;
            if hedge && next.1.gateway == session.gateway {
                return None;
            }
            self.metrics
                .open_retries
                .with_label_values(&[service])
                .inc();
            Some(next)
        };
        let open = |(sid, session): (SessionId, Arc<Session>)| {
            let c = self.clone();
            let preamble = preamble.clone();
            async move {
                let stream = c.open_on(sid, &session, &preamble).await;
                ((sid, session), stream)
            }
        };
        let c = self.clone();
        let unused = move |(sid, _): (SessionId, Arc<Session>)| lock(&c.core).stream_ended(sid);
        let hedge = common::hedge_after(self.cfg.timers.open_timeout);
        let (won, leftover) = common::race_opens(first, another, open, hedge, unused).await;
        if let Some(rest) = leftover {
            self.tracker.spawn(rest);
        }
        let Some(((sid, session), mut stream)) = won else {
            reject("no_stream");
            return;
        };
        self.metrics
            .streams
            .with_label_values(&[service, "reverse", "ok"])
            .inc();
        debug!(trace = %common::hex(&trace), session = sid, gateway = %session.gateway, "reverse stream open");
        common::relay_counted(
            &self.metrics,
            &self.streams,
            &self.kill,
            service,
            "reverse",
            &mut client,
            common::TcpEnd::Client,
            &mut stream,
        )
        .await;
        lock(&self.core).stream_ended(sid);
    }

    /// A usable session for a new stream of `service` (see [`CloudCore::pick`]), with its
    /// handle. One that ended between the pick and the lookup goes to `tried`.
    fn session_for(
        &self,
        service: &str,
        tried: &mut Vec<SessionId>,
        avoid: &BTreeSet<String>,
    ) -> Option<(SessionId, Arc<Session>)> {
        loop {
            let sid = lock(&self.core).pick(service, tried, avoid)?;
            match lock(&self.sessions).get(&sid).cloned() {
                Some(session) => return Some((sid, session)),
                None => tried.push(sid),
            }
        }
    }

    /// One stream open on `session` for a reverse client: counts the stream on the
    /// session, and on failure logs why and applies what the failure says about the
    /// session (a silent one is ejected). `None` when it failed.
    async fn open_on(
        &self,
        sid: SessionId,
        session: &Session,
        preamble: &Preamble,
    ) -> Option<YamuxStream> {
        let service = preamble.service.as_str();
        lock(&self.core).stream_started(sid);
        let open_started = Instant::now();
        match common::open_stream(&session.mux, preamble, self.cfg.timers.open_timeout).await {
            Ok(stream) => {
                self.metrics
                    .stream_open_seconds
                    .with_label_values(&[service])
                    .observe(open_started.elapsed().as_secs_f64());
                lock(&self.core).open_answered(sid);
                Some(stream)
            }
            Err(e) => {
                warn!(trace = %common::hex(&preamble.trace_id), session = sid, gateway = %session.gateway, reason = e.as_str(), "reverse stream open failed");
                self.metrics
                    .stream_open_failures
                    .with_label_values(&[service, e.as_str()])
                    .inc();
                let actions = {
                    let mut core = lock(&self.core);
                    core.stream_ended(sid);
                    match e {
                        OpenError::Silent => core.open_silent(Instant::now(), sid),
                        OpenError::Status(_) => {
                            core.open_answered(sid);
                            Vec::new()
                        }
                        OpenError::Broken => Vec::new(),
                    }
                };
                self.apply(actions);
                None
            }
        }
    }

    async fn probe(&self, sid: SessionId, session: Arc<Session>) {
        let preamble = Preamble {
            kind: StreamKind::Probe,
            service: "-".into(),
            client: None,
            trace_id: common::trace_id(),
        };
        let result = tokio::select! {
            _ = self.kill.cancelled() => return,
            r = common::open_stream(&session.mux, &preamble, self.cfg.timers.open_timeout) => r,
        };
        let actions = match result {
            Ok(_) | Err(OpenError::Status(_)) => {
                lock(&self.core).open_answered(sid);
                Vec::new()
            }
            Err(OpenError::Silent) => {
                warn!(session = sid, gateway = %session.gateway, "probe unanswered");
                self.metrics
                    .stream_open_failures
                    .with_label_values(&["-", "probe_timeout"])
                    .inc();
                lock(&self.core).open_silent(Instant::now(), sid)
            }
            Err(OpenError::Broken) => Vec::new(),
        };
        self.apply(actions);
    }

    async fn drain(self: Arc<Self>) {
        info!(node = %self.cfg.id, "draining");
        self.draining.store(true, Ordering::SeqCst);
        let delay = self.cfg.timers.stop_delay;
        if !delay.is_zero() {
            // `/readyz` is 503 from now on; clients a balancer still sends here are served
            // until its checks have moved new clients away.
            info!(node = %self.cfg.id, ?delay, "not ready; still serving before the listeners close");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.kill.cancelled() => {}
            }
        }
        let actions = lock(&self.core).drain(Instant::now());
        self.apply(actions);
        let grace = self.cfg.timers.drain_grace;
        let sessions: Vec<Arc<Session>> = lock(&self.sessions).values().cloned().collect();
        for s in &sessions {
            let _ = s.control.try_send(Control::Drain {
                deadline_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                reason: "node draining".into(),
            });
        }
        let until = Instant::now() + grace;
        // Listeners close first (taking what their backlog holds), then the clients already
        // accepted and the streams in flight get the grace period.
        let unbound_by = Instant::now() + Duration::from_secs(1);
        while Instant::now() < unbound_by
            && self
                .cfg
                .reverse
                .iter()
                .filter(|r| r.when_not_ready == WhenNotReady::Unbind)
                .any(|r| {
                    self.metrics
                        .listener_bound
                        .with_label_values(&[&r.service])
                        .get()
                        != 0
                })
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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
