//! The cloud role's driver: accepts mTLS sessions from on-prem gateways (`session`,
//! authorized by the pure `admit`), feeds [`CloudCore`] and applies its actions
//! (readiness, listener gating, ejection), opens reverse streams for its clients and
//! answers forward streams to cloud-side servers (`streams`), runs each reverse service's
//! listener (`services`), applies reloads to the running node and its sessions
//! (`reconfigure`), serves its admin routes (`admin`) and drains.

mod admin;
mod admit;
mod reconfigure;
mod services;
mod session;
mod streams;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::base::{Base, Link, Role, lock};
use crate::common::{self, GatewayError};
use crate::config::{CloudConfig, WhenNotReady};
use crate::duplicate::{self, DuplicateIds};
use crate::loggate::LogGate;
use crate::metrics::{Metrics, ServiceSide};
use crate::mux::Mux;
use crate::readiness::{Action, CloudCore, SessionId};
use crate::reload::{Plan, ReloadError};
use crate::{expiry, tls};

#[cfg(test)]
pub(crate) use session::reject_label;

/// A registered session.
struct Session {
    gateway: String,
    /// The gateway's address, to name it when another process claims its id.
    peer: SocketAddr,
    link: Link,
    /// What it asked for and may carry: judged again on every reload and `SERVICES`.
    grant: Mutex<Grant>,
}

/// What a session asked for (its HELLO, as changed by `SERVICES` and server states since)
/// and what it was granted.
struct Grant {
    hello: admit::Hello,
    /// Accepted services, as last told to the gateway.
    accepted: Vec<String>,
    /// Accepted consumes: the forward streams it may open.
    consumes: BTreeSet<String>,
}

struct Cloud {
    /// The running configuration, swapped whole by a reload; read it with [`Cloud::cfg`].
    live: ArcSwap<CloudConfig>,
    /// Certificate, key and client CA, swapped by a reload; each handshake loads the
    /// current one, so sessions already up keep theirs.
    tls: ArcSwap<rustls::ServerConfig>,
    /// One reload at a time.
    reloading: Mutex<()>,
    base: Base,
    core: Mutex<CloudCore>,
    /// Bumped whenever the core changed in a way that can make a session usable (or its
    /// next timeout move): what a client waiting for a session and the readiness timer
    /// wait on.
    core_changed: watch::Sender<u64>,
    duplicates: Mutex<DuplicateIds>,
    unauth_log: Mutex<LogGate>,
    sessions: Mutex<BTreeMap<SessionId, Arc<Session>>>,
    /// Each reverse service's listener and readiness (`services.rs`).
    reverse: Mutex<BTreeMap<String, crate::listener::Gated>>,
    next_id: AtomicU64,
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
            .field("id", &self.inner.cfg().id)
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
        self.inner.reverse_ready(service)
    }

    /// Where reverse service `service` listens now (also one a reload added).
    pub fn service_addr(&self, service: &str) -> Option<SocketAddr> {
        lock(&self.inner.reverse).get(service).map(|e| e.addr)
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
        &self.inner.base.metrics
    }

    /// Stops at once, like a crash: sockets close without DRAIN. Resolves when every task
    /// has ended and every port is released.
    pub async fn kill(&self) {
        self.inner.base.kill().await;
    }

    /// Waits until the node has stopped (after a drain or a kill).
    pub async fn wait(&self) {
        self.inner.base.wait().await;
    }

    /// Applies a new configuration without a restart (what SIGHUP does): the TLS files
    /// are read again and new handshakes use them, sessions whose gateway lost a right
    /// they use are closed (counted as `revoked`), and timers, limits, the roster and
    /// forward services apply to what starts afterwards. A configuration that changes what
    /// only a restart applies (see [`reload::plan`]), or TLS files that do not load, are
    /// refused whole and the running configuration keeps serving. Counted in
    /// `tether_gateway_reloads_total`.
    pub fn reload(&self, new: CloudConfig) -> Result<Plan, ReloadError> {
        let result = self.inner.reload(new);
        self.inner.base.metrics.reloaded(match result {
            Ok(_) => "ok",
            Err(_) => "failed",
        });
        result
    }

    /// The configuration running now (the last one a reload applied).
    pub fn config(&self) -> Arc<CloudConfig> {
        self.inner.cfg()
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
    let metrics = Metrics::new()?;
    metrics
        .cert_expiry
        .set(expiry::load(&cfg.tls, tls::TlsKey::ClientCa)?);
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
    for svc in &cfg.reverse {
        let l = common::bind_now(format!("service {:?} listener", svc.service), svc.listen)?;
        service_listeners.push((svc.clone(), l));
    }
    let session_addr = session_listener.local_addr().unwrap_or(cfg.session_listen);
    let admin_addr = admin_listener.local_addr().unwrap_or(cfg.admin_listen);

    // Services join the core as their listeners start (`open_reverse`).
    let core = CloudCore::new(Vec::new(), cfg.timers.readiness_down, 1);
    let cloud = Arc::new(Cloud {
        base: Base::new(metrics),
        core: Mutex::new(core),
        core_changed: watch::Sender::new(0),
        duplicates: Mutex::new(DuplicateIds::new(duplicate::HOLD_DOWN)),
        unauth_log: Mutex::new(LogGate::new(session::UNAUTHENTICATED_LOG_EVERY)),
        sessions: Mutex::new(BTreeMap::new()),
        reverse: Mutex::new(BTreeMap::new()),
        next_id: AtomicU64::new(1),
        tls: ArcSwap::new(server_config),
        reloading: Mutex::new(()),
        live: ArcSwap::from_pointee(cfg),
    });
    info!(target: "tether_gateway::cloud", node = %cloud.cfg().id, %session_addr, %admin_addr, "cloud gateway started");
    let base = &cloud.base;

    // Sessions.
    let c = cloud.clone();
    base.tracker.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = c.base.kill.cancelled() => return,
                a = session_listener.accept() => a,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let c2 = c.clone();
                    c.base
                        .tracker
                        .spawn(async move { c2.handle_session(tcp, peer).await });
                }
                // EMFILE and friends: do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });

    // Service listeners.
    let mut service_addrs = BTreeMap::new();
    for (svc, l) in service_listeners {
        let service = svc.service.clone();
        service_addrs.insert(service, cloud.open_reverse(svc, l));
    }

    // Probes: an empty stream open on every session, so a session that answers pings but
    // not opens (wedged) is ejected before a client meets it. The interval is read on
    // every round, so a reload changes it from the next one.
    let c = cloud.clone();
    base.tracker.spawn(async move {
        loop {
            let every = c.cfg().timers.probe;
            tokio::select! {
                _ = c.base.kill.cancelled() => return,
                _ = tokio::time::sleep(every) => {
                    let sessions: Vec<(SessionId, Arc<Session>)> =
                        lock(&c.sessions).iter().map(|(k, v)| (*k, v.clone())).collect();
                    for (sid, session) in sessions {
                        let c2 = c.clone();
                        c.base.tracker.spawn(async move { c2.probe(sid, session).await });
                    }
                }
            }
        }
    });

    // Debounced readiness falls due at the core's next timeout, which moves only when the
    // core changes.
    let c = cloud.clone();
    base.tracker.spawn(async move {
        let mut changed = c.core_changed.subscribe();
        loop {
            changed.borrow_and_update();
            let next = lock(&c.core).next_deadline();
            let due = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = c.base.kill.cancelled() => return,
                _ = changed.changed() => {}
                _ = due => {
                    let actions = lock(&c.core).handle_timeout(Instant::now());
                    c.apply_actions(actions);
                }
            }
        }
    });

    base.spawn_admin(Role::Cloud, admin_listener, admin::router(&cloud));
    base.spawn_drain_on(shutdown, cloud.clone().drain());

    Ok(CloudHandle {
        session_addr,
        admin_addr,
        service_addrs,
        inner: cloud,
    })
}

impl Cloud {
    /// The running configuration.
    fn cfg(&self) -> Arc<CloudConfig> {
        self.live.load_full()
    }

    /// Ready as seen from outside: capacity, not draining, and the listener bound when the
    /// mode unbinds (so a balancer that saw 200 on /readyz finds the port listening).
    fn service_ready(&self, service: &str) -> bool {
        if self.base.draining() || !lock(&self.core).is_ready(service) {
            return false;
        }
        match self.cfg().reverse.iter().find(|r| r.service == service) {
            Some(r) if r.when_not_ready == WhenNotReady::Unbind => {
                self.reverse_bound(service).is_some_and(|b| *b.borrow())
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Applies what the core decided after a change, and tells who waits on the core.
    fn apply(&self, actions: Vec<Action>) {
        self.apply_actions(actions);
        self.core_changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn apply_actions(&self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Close { session, reason } => {
                    self.base.metrics.session_closed(reason.as_str());
                    let s = lock(&self.sessions).get(&session).cloned();
                    if let Some(s) = s {
                        info!(target: "tether_gateway::cloud", session, gateway = %s.gateway, reason = reason.as_str(), "closing session");
                        s.link.kill.cancel();
                    }
                }
                Action::Readiness { service, ready } => {
                    info!(target: "tether_gateway::cloud", node = %self.cfg().id, %service, ready, "service readiness");
                    if let Some(e) = lock(&self.reverse).get(&service) {
                        e.ready.send_replace(ready);
                    }
                    self.base.metrics.ready(&service, ready);
                }
            }
        }
    }

    async fn drain(self: Arc<Self>) {
        info!(target: "tether_gateway::cloud", node = %self.cfg().id, "draining");
        self.base.start_draining();
        let delay = self.cfg().timers.stop_delay;
        if !delay.is_zero() {
            // `/readyz` is 503 from now on; clients a balancer still sends here are served
            // until its checks have moved new clients away.
            info!(target: "tether_gateway::cloud", node = %self.cfg().id, ?delay, "not ready; still serving before the listeners close");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.base.kill.cancelled() => {}
            }
        }
        let actions = lock(&self.core).drain(Instant::now());
        self.apply(actions);
        let grace = self.cfg().timers.drain_grace;
        let sessions: Vec<Arc<Session>> = lock(&self.sessions).values().cloned().collect();
        for s in &sessions {
            s.link.send_drain(grace, "node draining");
        }
        let until = Instant::now() + grace;
        // Listeners close first (taking what their backlog holds; at most a second), then
        // the clients already accepted and the streams in flight get the grace period.
        let cfg = self.cfg();
        let unbound = cfg
            .reverse
            .iter()
            .filter(|r| r.when_not_ready == WhenNotReady::Unbind)
            .filter_map(|r| self.reverse_bound(&r.service));
        let all_unbound = futures::future::join_all(unbound.map(|mut b| async move {
            let _ = b.wait_for(|bound| !*bound).await;
        }));
        let _ = tokio::time::timeout(Duration::from_secs(1), all_unbound).await;
        self.base
            .work_done(until.saturating_duration_since(Instant::now()))
            .await;
        for s in lock(&self.sessions).values() {
            s.link.mux.close();
        }
        self.base.kill.cancel();
    }
}
