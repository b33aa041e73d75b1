//! The servers behind exports: where each export's `connect` points now and whether that
//! server is up.
//!
//! A `connect` given by host name is followed as `tether lb` follows its servers: looked up
//! at start and again every `resolve_interval` with tether-health's resolver, the last good
//! address kept through failed lookups ([`Follow`]). Both the health check and new reverse
//! streams use the address it holds, so they agree; streams already relayed keep their
//! connection. A name that has not resolved yet is reported down (its checks fail as
//! `not resolved`; an export without checks is reported down until it has an address) and
//! is retried every interval, counted in `tether_gateway_resolve_failures_total`.
//!
//! A reload that changes `connect` re-targets the follower at once; the health monitor
//! follows the new address, so `connect` applies without a restart whether or not the
//! export is checked. A reload that adds an export starts its follower and monitor, one
//! that removes it stops them, and one that changes its `health` makes its monitor again
//! ([`start_one`], [`stop_one`]; `services.rs` decides which).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tether_health::check::{
    CheckKind, Checker, Health, MonitorSpec, Target, spawn_following_monitor, tls,
};
use tether_health::resolve::{self, Follow, HostPort, Resolver, Step};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Onprem;
use crate::base::lock;
use crate::config::{Export, ExportCheck, ExportHealth, OnpremConfig};
use crate::metrics::Metrics;

/// Each export's target: its `connect` as configured now, and the address that holds.
pub(super) struct Exports {
    targets: Mutex<BTreeMap<String, Arc<ExportTarget>>>,
    metrics: ExportMetrics,
    /// Where host names are resolved (`[resolver] nameservers`, fixed at start).
    nameservers: Vec<SocketAddr>,
    /// Built at the first host name to resolve (also one a reload brings), so a host
    /// without `/etc/resolv.conf` runs exports by address as before.
    resolver: OnceLock<Result<Arc<Resolver>, String>>,
}

struct ExportTarget {
    /// `connect` as the running configuration has it; a reload sends the new one.
    connect: watch::Sender<String>,
    /// The address to check and connect, or why there is none.
    address: watch::Sender<Target>,
    /// Stops its follower and its monitor (the export was removed or is made again).
    stop: CancellationToken,
}

/// The on-prem's export metrics, registered next to the gateway's own.
struct ExportMetrics {
    up: IntGaugeVec,
    checks: IntCounterVec,
    resolve_failures: IntCounterVec,
    resolve_changes: IntCounterVec,
}

impl ExportMetrics {
    fn new(metrics: &Metrics) -> Result<ExportMetrics, prometheus::Error> {
        let r = &metrics.registry;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let up = IntGaugeVec::new(
            Opts::new(
                "tether_gateway_export_up",
                "1 while the server behind the export is reported up to the cloud.",
            ),
            &["service"],
        )?;
        r.register(Box::new(up.clone()))?;
        Ok(ExportMetrics {
            up,
            checks: counter(
                "tether_gateway_export_checks_total",
                "Health checks of the servers behind exports, by result (ok, fail).",
                &["service", "result"],
            )?,
            resolve_failures: counter(
                "tether_gateway_resolve_failures_total",
                "Failed lookups of an export's connect host name (the last good address is kept).",
                &["service"],
            )?,
            resolve_changes: counter(
                "tether_gateway_resolve_changes_total",
                "Lookups that moved an export to another address.",
                &["service"],
            )?,
        })
    }
}

/// The address `connect` starts with: an IP address at once, a host name once it resolves.
fn initial(connect: &str) -> Target {
    match HostPort::parse(connect) {
        Ok(HostPort::Addr(a)) => Ok(a),
        Ok(HostPort::Name(..)) => Err("not looked up yet".into()),
        Err(e) => Err(e),
    }
}

impl Exports {
    /// No exports yet ([`start_one`] adds them), the metrics registered.
    pub(super) fn new(metrics: &Metrics) -> Result<Exports, prometheus::Error> {
        Ok(Exports {
            targets: Mutex::new(BTreeMap::new()),
            metrics: ExportMetrics::new(metrics)?,
            nameservers: Vec::new(),
            resolver: OnceLock::new(),
        })
    }

    /// The name servers host names are looked up with (fixed at start).
    pub(super) fn with_nameservers(mut self, nameservers: Vec<SocketAddr>) -> Exports {
        self.nameservers = nameservers;
        self
    }

    /// `service`'s metric series at 0.
    fn series(&self, service: &str) {
        let m = &self.metrics;
        m.up.with_label_values(&[service]);
        for result in ["ok", "fail"] {
            m.checks.with_label_values(&[service, result]);
        }
        m.resolve_failures.with_label_values(&[service]);
        m.resolve_changes.with_label_values(&[service]);
    }

    fn target(&self, service: &str) -> Option<Arc<ExportTarget>> {
        lock(&self.targets).get(service).cloned()
    }

    /// Where a new stream of `service` connects: `None` for a service not exported.
    pub(super) fn address(&self, service: &str) -> Option<Target> {
        self.target(service).map(|t| t.address.borrow().clone())
    }

    /// Points each export at its `connect` in `cfg` (a reload); a changed one is looked up
    /// at once.
    pub(super) fn retarget(&self, cfg: &OnpremConfig) {
        for e in &cfg.export {
            if let Some(t) = self.target(&e.service) {
                t.connect.send_if_modified(|c| {
                    let changed = *c != e.connect;
                    if changed {
                        c.clone_from(&e.connect);
                    }
                    changed
                });
            }
        }
    }

    /// The resolver, built on first use; why there is none if it cannot be.
    fn resolver(&self) -> Result<&Resolver, String> {
        let built = self.resolver.get_or_init(|| {
            resolve::resolver(&self.nameservers)
                .map(Arc::new)
                .inspect_err(|e| {
                    warn!(target: "tether_gateway::onprem", error = %e, "no DNS resolver; exports given by host name stay down");
                })
        });
        match built {
            Ok(r) => Ok(r),
            Err(e) => Err(format!("no DNS resolver: {e}")),
        }
    }

    fn report(&self, gw: &Onprem, service: &str, up: bool, reason: Option<String>) {
        self.metrics
            .up
            .with_label_values(&[service])
            .set(i64::from(up));
        gw.set_export_state(service, up, reason);
        gw.base.metrics.changed();
    }
}

/// Starts every export of the running configuration.
pub(super) fn start(gw: &Arc<Onprem>) {
    for e in &gw.cfg().export {
        start_one(gw, e);
    }
}

/// Starts export `e`'s follower of its `connect` and, if it is checked, its health
/// monitor, replacing those it had; they end when it is stopped or the gateway is killed.
/// Until its first verdict it is reported down, or up at once if it is unchecked and its
/// `connect` is an address.
pub(super) fn start_one(gw: &Arc<Onprem>, e: &Export) {
    let exports = &gw.exports;
    exports.series(&e.service);
    let target = Arc::new(ExportTarget {
        connect: watch::Sender::new(e.connect.clone()),
        address: watch::Sender::new(initial(&e.connect)),
        stop: gw.base.kill.child_token(),
    });
    if let Some(old) = lock(&exports.targets).insert(e.service.clone(), target.clone()) {
        old.stop.cancel();
    }
    let up = e.health.is_none() && target.address.borrow().is_ok();
    exports
        .metrics
        .up
        .with_label_values(&[e.service.as_str()])
        .set(i64::from(up));
    lock(&gw.export_up).insert(e.service.clone(), up);
    let g = gw.clone();
    let service = e.service.clone();
    let (connect, t) = (target.connect.subscribe(), target.clone());
    gw.base
        .tracker
        .spawn(async move { follow(g, service, t, connect).await });
    if let Some(h) = &e.health {
        monitor(gw, e, h, target.address.subscribe(), target.stop.clone());
    }
}

/// Stops export `service`'s follower and monitor and forgets its state (a reload removed
/// it); streams already relayed keep their connection.
pub(super) fn stop_one(gw: &Onprem, service: &str) {
    if let Some(t) = lock(&gw.exports.targets).remove(service) {
        t.stop.cancel();
    }
    lock(&gw.export_up).remove(service);
}

/// Follows `service`'s `connect` until the gateway is killed: an address is used as it is;
/// a host name is looked up now and every `resolve_interval` (read from the running
/// configuration, so a reload changes it from the next round), or at once when a reload
/// changes `connect`.
async fn follow(
    gw: Arc<Onprem>,
    service: String,
    target: Arc<ExportTarget>,
    mut connect: watch::Receiver<String>,
) {
    let exports = &gw.exports;
    let target = &*target;
    let kill = target.stop.clone();
    loop {
        let text = connect.borrow_and_update().clone();
        let (host, port) = match HostPort::parse(&text) {
            Ok(HostPort::Name(host, port)) => (host, port),
            other => {
                let now = other.map(|_| initial(&text)).unwrap_or_else(Err);
                set_address(&gw, &service, target, now);
                tokio::select! {
                    r = connect.changed() => if r.is_err() { return },
                    _ = kill.cancelled() => return,
                }
                continue;
            }
        };
        // A new name (at start, or from a reload): the address in use, if any, stays until
        // its first lookup ends, which replaces it either way.
        let mut name = Follow::new();
        let mut last_error: Option<String> = None;
        loop {
            let answer = match exports.resolver() {
                Ok(r) => tokio::select! {
                    a = resolve::lookup(r, &host, port) => a,
                    _ = kill.cancelled() => return,
                },
                Err(e) => Err(e),
            };
            match name.observe(answer) {
                Step::Changed(addr) => {
                    last_error = None;
                    info!(target: "tether_gateway::onprem", %service, connect = %text, address = %addr, "export resolved");
                    // In place before it is counted: whoever sees the count finds it used.
                    set_address(&gw, &service, target, Ok(addr));
                    exports
                        .metrics
                        .resolve_changes
                        .with_label_values(&[&service])
                        .inc();
                    gw.base.metrics.changed();
                }
                Step::Same => last_error = None,
                Step::Failed { kept } => {
                    exports
                        .metrics
                        .resolve_failures
                        .with_label_values(&[&service])
                        .inc();
                    let why = name.last_error().unwrap_or_default().to_string();
                    // One line per change of what is wrong, not one per round.
                    if last_error.as_deref() != Some(why.as_str()) {
                        warn!(target: "tether_gateway::onprem", %service, connect = %text, error = %why, kept_last_address = kept, "export lookup failed; retried every resolve_interval");
                    }
                    last_error = Some(why);
                    if !kept {
                        set_address(&gw, &service, target, name.target());
                    }
                    gw.base.metrics.changed();
                }
            }
            let every = gw
                .cfg()
                .export
                .iter()
                .find(|e| e.service == service)
                .map_or(std::time::Duration::from_secs(10), |e| e.resolve_interval);
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                r = connect.changed() => {
                    if r.is_err() {
                        return;
                    }
                    break;
                }
                _ = kill.cancelled() => return,
            }
        }
    }
}

/// Publishes `service`'s address; an export without checks is reported up exactly while
/// it has one.
fn set_address(gw: &Onprem, service: &str, target: &ExportTarget, now: Target) {
    let mut was_up = false;
    target.address.send_if_modified(|a| {
        was_up = a.is_ok();
        let changed = *a != now;
        if changed {
            a.clone_from(&now);
        }
        changed
    });
    let unchecked = gw
        .cfg()
        .export
        .iter()
        .any(|e| e.service == service && e.health.is_none());
    // Another reason to be down (a lookup's error after "not looked up yet") is no news
    // for the cloud.
    if unchecked && was_up != now.is_ok() {
        let reason = now.as_ref().err().map(|e| format!("not resolved: {e}"));
        gw.exports.report(gw, service, now.is_ok(), reason);
    }
}

/// What a check of `h` does; `connect`'s address comes from the follower.
fn check_kind(h: &ExportHealth) -> Result<CheckKind, tls::TlsCheckError> {
    Ok(match &h.check {
        ExportCheck::Tcp => CheckKind::Tcp,
        ExportCheck::Http {
            path,
            host,
            expect_status,
        } => CheckKind::Http {
            path: path.clone(),
            host: host.clone(),
            expect_status: *expect_status,
        },
        ExportCheck::Tls { server_name, ca } => tls::check_kind(server_name, ca.as_deref())?,
    })
}

/// Starts the health monitor of export `e`, checking the address `address` holds; its
/// verdict is sent to every cloud node as SERVICE_STATE.
fn monitor(
    gw: &Arc<Onprem>,
    e: &Export,
    h: &ExportHealth,
    address: watch::Receiver<Target>,
    stop: CancellationToken,
) {
    let kind = match check_kind(h) {
        Ok(k) => k,
        Err(err) => {
            // Validation loaded the same CA, so only a file changed since start gets here.
            warn!(target: "tether_gateway::onprem", service = %e.service, error = %err, "cannot build the health check; the export is reported down");
            return;
        }
    };
    let spec = MonitorSpec {
        checker: Checker {
            kind,
            // Replaced at each check by the follower's address.
            target: SocketAddr::from(([0, 0, 0, 0], 0)),
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
    let _monitor = spawn_following_monitor(spec, address, stop, move |ev| {
        let result = if ev.result.is_ok() { "ok" } else { "fail" };
        g.exports
            .metrics
            .checks
            .with_label_values(&[&service, result])
            .inc();
        if ev.transition.is_some() {
            g.exports.report(
                &g,
                &service,
                ev.state == Health::Up,
                ev.result.as_ref().err().map(|e| e.to_string()),
            );
        } else {
            g.base.metrics.changed();
        }
    });
}
