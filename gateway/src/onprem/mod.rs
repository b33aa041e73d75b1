//! The on-prem role's driver: dials sessions as [`Placement`] says (`dial`), registers
//! exports and consumes in HELLO, reports its servers' health as SERVICE_STATE
//! (`session`), answers reverse streams to on-prem servers and carries local clients to
//! the cloud on forward streams (`streams`), serves its admin routes (`admin`) and
//! drains.

mod admin;
mod dial;
mod session;
mod streams;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tether_health::check::{CheckKind, Checker, Health, MonitorSpec, spawn_monitor};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::base::{Base, Link, Role, lock};
use crate::common::{self, GatewayError};
use crate::config::{GatewayConfig, OnpremConfig, WhenNotReady};
use crate::listener::{self, Bound};
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
    accepted: BTreeSet<String>,
    /// The cloud node drains it: no new streams.
    draining: AtomicBool,
    /// Streams open on it (the least loaded session takes a new one).
    active: AtomicUsize,
    /// Placement recycles it (its maximum age): it drains, and its end is counted as
    /// `max_age`.
    recycling: AtomicBool,
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
    export_up: Mutex<BTreeMap<String, bool>>,
    consume_ready: BTreeMap<String, watch::Sender<bool>>,
    /// Whether each consume listener is bound.
    bound: BTreeMap<String, watch::Receiver<bool>>,
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
    let mut consume_addrs = BTreeMap::new();
    let mut bound = BTreeMap::new();
    for c in &cfg.consume {
        let l = common::bind(&format!("consume {:?} listener", c.service), c.listen).await?;
        consume_addrs.insert(c.service.clone(), l.local_addr().unwrap_or(c.listen));
        let (addr, initial) = listener::initial_listener(l, c.when_not_ready);
        let flag = Bound::new(&metrics, &c.service);
        bound.insert(c.service.clone(), flag.subscribe());
        consume_listeners.push((c.clone(), addr, initial, flag));
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
        export_up: Mutex::new(export_up),
        consume_ready,
        bound,
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

    // Health of exported servers, reported to every session.
    for e in cfg.export.clone() {
        let Some(h) = e.health.clone() else { continue };
        let target = match tokio::net::lookup_host(e.connect.as_str())
            .await
            .map(|mut a| a.next())
        {
            Ok(Some(a)) => a,
            _ => {
                warn!(target: "tether_gateway::onprem", service = %e.service, connect = %e.connect, "cannot resolve server; reported down");
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
            fast_interval: h.fast_interval,
            down_interval: h.down_interval,
            rise: h.rise,
            fall: h.fall,
            initial: Health::Unknown,
        };
        let g = gw.clone();
        let service = e.service.clone();
        let _monitor = spawn_monitor(spec, base.kill.clone(), move |ev| {
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
    base.tracker.spawn(async move { g.placement_loop().await });

    // Consume listeners.
    for (c, addr, initial, flag) in consume_listeners {
        let Some(rx) = gw
            .consume_ready
            .get(&c.service)
            .map(watch::Sender::subscribe)
        else {
            continue;
        };
        let g = gw.clone();
        let c = Arc::new(c);
        let mode = c.when_not_ready;
        base.spawn_listener(addr, initial, mode, rx, flag, move |tcp, peer| {
            g.clone().serve_consumer(c.clone(), tcp, peer)
        });
    }

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

    fn reload(&self, new: OnpremConfig) -> Result<Plan, ReloadError> {
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
        self.live.store(Arc::new(new));
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
        if self.base.draining() || !self.consume_ready.get(service).is_some_and(|t| *t.borrow()) {
            return false;
        }
        match self.cfg().consume.iter().find(|c| c.service == service) {
            Some(c) if c.when_not_ready == WhenNotReady::Unbind => {
                self.bound.get(service).is_some_and(|b| *b.borrow())
            }
            Some(_) => true,
            None => false,
        }
    }

    fn refresh_consume_ready(&self) {
        let sessions = lock(&self.sessions);
        let draining = self.base.draining();
        for (service, tx) in &self.consume_ready {
            let ready = !draining
                && sessions
                    .values()
                    .any(|s| !s.draining.load(Ordering::SeqCst) && s.accepted.contains(service));
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
