//! The on-prem role's driver: dials sessions as [`Placement`] says (`dial`), registers
//! exports and consumes in HELLO, follows each export's server (its address through DNS,
//! its health check: `exports`) and reports its state as SERVICE_STATE (`session`),
//! applies a reload's exports and consumes and announces them (`services`), answers
//! reverse streams to on-prem servers and carries local clients to the cloud on forward
//! streams (`streams`), serves its admin routes (`admin`) and drains.

mod admin;
mod dial;
mod exports;
mod services;
mod session;
mod streams;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::base::{Base, Link, Role, lock};
use crate::common::{self, GatewayError};
use crate::config::{GatewayConfig, OnpremConfig, WhenNotReady};
use crate::metrics::{Metrics, ServiceSide};
use crate::mux::Mux;
use crate::placement::Placement;
use crate::proto::Control;
use crate::reload::{self, Plan, ReloadError};
use crate::{expiry, tls};

/// A kept session to a cloud node.
struct OnSession {
    node: String,
    link: Link,
    /// What the cloud node accepted (HELLO_ACK, then ACCEPTED).
    accepted: Mutex<BTreeSet<String>>,
    /// The cloud node understands SERVICES.
    services_msgs: bool,
    /// The cloud node drains it: no new streams.
    draining: AtomicBool,
    /// Streams open on it (the least loaded session takes a new one).
    active: AtomicUsize,
    /// Placement recycles it (its maximum age): it drains, and its end is counted as
    /// `max_age`.
    recycling: AtomicBool,
}

impl OnSession {
    fn carries(&self, service: &str) -> bool {
        lock(&self.accepted).contains(service)
    }
}

struct Onprem {
    /// The running configuration, swapped whole by a reload; read it with [`Onprem::cfg`].
    live: ArcSwap<OnpremConfig>,
    /// Client certificate, key and the CA cloud certificates chain to, swapped by a
    /// reload; each dial loads the current one, so sessions already up keep theirs.
    tls: ArcSwap<rustls::ClientConfig>,
    /// One reload at a time.
    reloading: Mutex<()>,
    base: Base,
    placement: Mutex<Placement>,
    sessions: Mutex<BTreeMap<u64, Arc<OnSession>>>,
    /// Each export's server state, as reported to the cloud.
    export_up: Mutex<BTreeMap<String, bool>>,
    /// Each export's target and health, followed through DNS.
    exports: exports::Exports,
    /// Each consume's listener and readiness.
    consumes: Mutex<BTreeMap<String, crate::listener::Gated>>,
    /// Wakes the placement loop when a dial or a session ended.
    wake: Notify,
    next_session: AtomicU64,
    wedged: AtomicBool,
    rr: AtomicUsize,
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
            .field("id", &self.inner.cfg().id)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl OnpremHandle {
    /// Where consume `service` listens now (also one a reload added).
    pub fn consume_addr(&self, service: &str) -> Option<SocketAddr> {
        lock(&self.inner.consumes).get(service).map(|c| c.addr)
    }

    /// Kept sessions per cloud node.
    pub fn coverage(&self) -> BTreeMap<String, usize> {
        lock(&self.inner.placement).coverage()
    }

    /// Whether a consumed service can be carried to the cloud now (and, with `unbind`, its
    /// listener is bound, so a client sent now finds the port listening).
    pub fn is_ready(&self, service: &str) -> bool {
        self.inner.consume_service_ready(service)
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.base.metrics
    }

    /// Fault injection for tests and drills: while wedged, reverse stream opens are held
    /// unanswered while pings still flow (a tunnel that looks alive and carries nothing).
    pub fn set_wedged(&self, wedged: bool) {
        self.inner.wedged.store(wedged, Ordering::SeqCst);
    }

    /// Stops at once, like a crash. Resolves when every task has ended.
    pub async fn kill(&self) {
        self.inner.base.kill().await;
    }

    /// Waits until the gateway has stopped.
    pub async fn wait(&self) {
        self.inner.base.wait().await;
    }

    /// Applies a new configuration without a restart (what SIGHUP does): the TLS files
    /// are read again and new dials use them while sessions already up stay; timers,
    /// limits, the VIP and export targets apply to what starts afterwards. A configuration
    /// that changes what only a restart applies (see [`reload::plan`]), or TLS files that
    /// do not load, are refused whole and the running configuration keeps serving. Counted
    /// in `tether_gateway_reloads_total`.
    pub fn reload(&self, new: OnpremConfig) -> Result<Plan, ReloadError> {
        let result = self.inner.reload(new);
        self.inner.base.metrics.reloaded(match result {
            Ok(_) => "ok",
            Err(_) => "failed",
        });
        result
    }

    /// The configuration running now (the last one a reload applied).
    pub fn config(&self) -> Arc<OnpremConfig> {
        self.inner.cfg()
    }
}

/// Starts an on-prem gateway. When `shutdown` is cancelled it drains: consume listeners
/// unbound, DRAIN sent on every session so cloud nodes stop opening streams on them,
/// streams given `timers.drain_grace`; then it stops.
pub async fn start(
    cfg: OnpremConfig,
    shutdown: CancellationToken,
) -> Result<OnpremHandle, GatewayError> {
    let client_config = tls::client_config(&cfg.tls)?;
    let metrics = Metrics::new()?;
    metrics
        .cert_expiry
        .set(expiry::load(&cfg.tls, tls::TlsKey::Ca)?);
    for e in &cfg.export {
        metrics.service(&e.service, "reverse", ServiceSide::Server);
    }
    for c in &cfg.consume {
        metrics.service(&c.service, "forward", ServiceSide::Clients);
    }
    let admin_listener = common::bind("admin listener", cfg.admin_listen).await?;
    let admin_addr = admin_listener.local_addr().unwrap_or(cfg.admin_listen);
    let mut consume_listeners = Vec::new();
    for c in &cfg.consume {
        let l = common::bind_now(format!("consume {:?} listener", c.service), c.listen)?;
        consume_listeners.push((c.clone(), l));
    }
    let exports = exports::Exports::new(&metrics)?.with_nameservers(cfg.nameservers.clone());
    let mut placement = Placement::new(
        cfg.prepared_connections,
        cfg.sni_pinning,
        cfg.timers.backoff_cap,
    );
    placement.set_max_session_age(
        cfg.timers.max_session_age,
        std::time::Instant::now(),
        &mut rand::rng(),
    );
    let gw = Arc::new(Onprem {
        base: Base::new(metrics),
        placement: Mutex::new(placement),
        sessions: Mutex::new(BTreeMap::new()),
        export_up: Mutex::new(BTreeMap::new()),
        exports,
        consumes: Mutex::new(BTreeMap::new()),
        wake: Notify::new(),
        next_session: AtomicU64::new(1),
        wedged: AtomicBool::new(false),
        rr: AtomicUsize::new(0),
        tls: ArcSwap::new(client_config),
        reloading: Mutex::new(()),
        live: ArcSwap::from_pointee(cfg),
    });
    let cfg = gw.cfg();
    info!(target: "tether_gateway::onprem", gateway = %cfg.id, cloud = %cfg.cloud, "on-prem gateway started");
    let base = &gw.base;

    // Where exported servers are and their health, reported to every session.
    exports::start(&gw);

    let mut consume_addrs = BTreeMap::new();
    for (c, l) in consume_listeners {
        let service = c.service.clone();
        consume_addrs.insert(service, gw.open_consume(c, l));
    }

    // Placement loop.
    let g = gw.clone();
    base.tracker.spawn(async move { g.placement_loop().await });

    base.spawn_admin(Role::Onprem, admin_listener, admin::router(&gw));
    base.spawn_drain_on(shutdown, gw.clone().drain());

    Ok(OnpremHandle {
        admin_addr,
        consume_addrs,
        inner: gw,
    })
}

impl Onprem {
    /// The running configuration.
    fn cfg(&self) -> Arc<OnpremConfig> {
        self.live.load_full()
    }

    fn reload(self: &Arc<Self>, new: OnpremConfig) -> Result<Plan, ReloadError> {
        let _one = lock(&self.reloading);
        let old = self.cfg();
        let plan = reload::plan(
            &GatewayConfig::Onprem((*old).clone()),
            &GatewayConfig::Onprem(new.clone()),
        );
        let refused = |e: ReloadError| {
            warn!(target: "tether_gateway::onprem", gateway = %old.id, error = %e, "reload refused; the running configuration keeps serving");
            e
        };
        if plan.needs_restart() {
            return Err(refused(ReloadError::NeedsRestart(plan.restart)));
        }
        // Everything that can fail comes before anything is changed.
        let client_config = tls::client_config(&new.tls).map_err(|e| refused(e.into()))?;
        // As `--check` does: a certificate not valid for the id would have every session
        // refused by the cloud.
        let chain =
            tls::load_certs(tls::TlsKey::Cert, &new.tls.cert).map_err(|e| refused(e.into()))?;
        if !chain
            .first()
            .is_some_and(|c| tls::cert_has_identity(c, &new.id))
        {
            return Err(refused(ReloadError::Tls(tls::TlsError::File {
                key: tls::TlsKey::Cert,
                path: new.tls.cert.display().to_string(),
                message: format!(
                    "is not valid for the gateway id {:?}; the cloud would refuse every session",
                    new.id
                ),
            })));
        }
        let certificates =
            expiry::load(&new.tls, tls::TlsKey::Ca).map_err(|e| refused(e.into()))?;
        let mut bound = Vec::new();
        for c in &new.consume {
            if old.consume.iter().any(|o| o.service == c.service) {
                continue;
            }
            let l = common::bind_now(format!("consume {:?} listener", c.service), c.listen)
                .map_err(|e| refused(e.into()))?;
            bound.push((c.clone(), l));
        }
        lock(&self.placement).set_backoff_cap(new.timers.backoff_cap);
        if old.timers.max_session_age != new.timers.max_session_age {
            lock(&self.placement).set_max_session_age(
                new.timers.max_session_age,
                std::time::Instant::now(),
                &mut rand::rng(),
            );
        }
        self.tls.store(client_config);
        self.base.metrics.cert_expiry.set(certificates);
        info!(target: "tether_gateway::onprem", gateway = %new.id, changes = %plan, "configuration reloaded");
        let new = Arc::new(new);
        // Stored first: a reverse stream for an export added looks it up there.
        self.live.store(new.clone());
        self.apply_services(&old, &new, bound);
        // A shorter backoff or age may make a dial due earlier.
        self.wake.notify_one();
        Ok(plan)
    }

    fn set_export_state(&self, service: &str, up: bool, reason: Option<String>) {
        info!(target: "tether_gateway::onprem", gateway = %self.cfg().id, %service, up, "exported server state");
        lock(&self.export_up).insert(service.to_string(), up);
        let msg = Control::ServiceState {
            service: service.to_string(),
            up,
            reason: reason.unwrap_or_default(),
        };
        for s in lock(&self.sessions).values() {
            let _ = s.link.control.try_send(msg.clone());
        }
    }

    /// Ready as seen from outside: a session carries it, not draining, and the listener
    /// bound when the mode unbinds.
    fn consume_service_ready(&self, service: &str) -> bool {
        if self.base.draining() {
            return false;
        }
        let (ready, bound) = match lock(&self.consumes).get(service) {
            Some(c) => (*c.ready.borrow(), *c.bound.borrow()),
            None => return false,
        };
        match self.cfg().consume.iter().find(|c| c.service == service) {
            Some(c) if c.when_not_ready == WhenNotReady::Unbind => ready && bound,
            Some(_) => ready,
            None => false,
        }
    }

    /// A consume's readiness, to wait on (`None` for a service not consumed).
    fn consume_ready(&self, service: &str) -> Option<watch::Receiver<bool>> {
        lock(&self.consumes)
            .get(service)
            .map(|c| c.ready.subscribe())
    }

    fn refresh_consume_ready(&self) {
        let sessions = lock(&self.sessions);
        let draining = self.base.draining();
        let consumes = lock(&self.consumes);
        for (service, c) in consumes.iter() {
            let tx = &c.ready;
            let ready = !draining
                && sessions
                    .values()
                    .any(|s| !s.draining.load(Ordering::SeqCst) && s.carries(service));
            if *tx.borrow() != ready {
                info!(target: "tether_gateway::onprem", gateway = %self.cfg().id, %service, ready, "consume readiness");
                tx.send_replace(ready);
                self.base.metrics.ready(service, ready);
            }
        }
    }

    async fn drain(self: Arc<Self>) {
        info!(target: "tether_gateway::onprem", gateway = %self.cfg().id, "draining");
        self.base.start_draining();
        self.refresh_consume_ready();
        let grace = self.cfg().timers.drain_grace;
        let sessions: Vec<Arc<OnSession>> = lock(&self.sessions).values().cloned().collect();
        for s in &sessions {
            s.link.send_drain(grace, "gateway draining");
        }
        self.base.work_done(grace).await;
        for s in lock(&self.sessions).values() {
            s.link.mux.close();
        }
        self.base.kill.cancel();
    }
}
