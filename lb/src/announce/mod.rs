//! Offering the dr VIPs to the routers (`[announce]`): a route per VIP that a routing
//! daemon (BIRD) learns from the kernel and announces over BGP, present only while this
//! balancer forwards the VIP.
//!
//! - [`config`]: the `[announce]` section.
//! - [`core`]: which VIPs to announce, and the route changes that get there (sans-IO).
//! - [`device`]: the TUN device whose life is the process's, and the routes through it.
//! - [`bird`]: BIRD's session states, for metrics and the API.
//! - this module: the task that follows the installed forwarding program.

pub mod bird;
pub mod config;
pub mod core;
pub mod device;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use self::config::AnnounceConfig;
use self::core::{Announcer, DrFrontend, RouteOp, Verdict};
use self::device::Device;
use crate::runtime::Lb;

/// How soon a route change the kernel refused is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The announcement's status and metrics, shared by the task, `/metrics` and the API.
pub struct Announce {
    config: Mutex<Option<AnnounceConfig>>,
    view: Mutex<Vec<VipView>>,
    state: IntGaugeVec,
    changes: IntCounterVec,
    last_change: IntGaugeVec,
    failures: IntCounter,
    bird_up: IntGauge,
    bird_protocol_up: IntGaugeVec,
}

/// A VIP in `/api/state`.
#[derive(Debug, Clone, Serialize)]
pub struct VipView {
    /// A dr frontend's bind address, offered as a /32 or /128 route.
    pub vip: IpAddr,
    /// `announced`, `degraded` or `withdrawn`.
    pub state: Verdict,
    /// Why it is not announced (empty when it is).
    pub reason: String,
    /// Seconds since the state last changed.
    pub since_seconds: f64,
}

/// `announce` in `/api/state`.
#[derive(Debug, Clone, Serialize)]
pub struct AnnounceView {
    /// The device the routes point at.
    pub device: String,
    /// The kernel table the routes are in.
    pub table: u32,
    /// Every dr VIP.
    pub vips: Vec<VipView>,
    /// BIRD's protocols, when `bird_socket` is set and BIRD answered.
    pub bird: Option<Vec<bird::Protocol>>,
    /// Why BIRD could not be read.
    pub bird_error: Option<String>,
}

impl Announce {
    /// Registers the announcement's metric families in `r`.
    pub fn new(r: &Registry) -> Result<Announce, prometheus::Error> {
        use crate::metrics::{counter, gauge};
        let failures = IntCounter::new(
            "tether_lb_announce_route_failures_total",
            "Route changes for announced VIPs the kernel refused (retried every second).",
        )?;
        let bird_up = IntGauge::new(
            "tether_lb_bird_up",
            "1 when BIRD's control socket (announce.bird_socket) answered the last scrape.",
        )?;
        r.register(Box::new(failures.clone()))?;
        Ok(Announce {
            config: Mutex::new(None),
            view: Mutex::new(Vec::new()),
            state: gauge(
                r,
                "tether_lb_announce_state",
                "1 for the announcement state a VIP is in (announced, degraded, withdrawn), 0 for the others.",
                &["vip", "state"],
            )?,
            changes: counter(
                r,
                "tether_lb_announce_changes_total",
                "Changes of a VIP's announcement state.",
                &["vip"],
            )?,
            last_change: gauge(
                r,
                "tether_lb_announce_last_change_timestamp_seconds",
                "When a VIP's announcement state last changed (Unix time).",
                &["vip"],
            )?,
            failures,
            bird_up,
            bird_protocol_up: gauge(
                r,
                "tether_lb_bird_protocol_up",
                "1 when a BIRD protocol (a BGP session, BFD, the kernel table) is up, read on each scrape.",
                &["protocol", "kind"],
            )?,
        })
    }

    fn publish(&self, core: &Announcer, now: Instant) {
        let mut view = Vec::new();
        for (vip, h) in core.held() {
            let v = vip.to_string();
            for s in Verdict::ALL {
                self.state
                    .with_label_values(&[v.as_str(), s.as_str()])
                    .set(i64::from(h.verdict == s));
            }
            view.push(VipView {
                vip: *vip,
                state: h.verdict,
                reason: h.reason.clone(),
                since_seconds: now.saturating_duration_since(h.since).as_secs_f64(),
            });
        }
        if let Ok(mut g) = self.view.lock() {
            // A VIP no frontend forwards any more leaves no series behind.
            for gone in g.iter().filter(|v| !core.held().contains_key(&v.vip)) {
                let v = gone.vip.to_string();
                for s in Verdict::ALL {
                    let _ = self.state.remove_label_values(&[v.as_str(), s.as_str()]);
                }
                let _ = self.last_change.remove_label_values(&[v.as_str()]);
                let _ = self.changes.remove_label_values(&[v.as_str()]);
            }
            *g = view;
        }
    }

    /// Counts and logs a change of the route in the kernel, when it happens.
    fn changed(&self, vip: IpAddr, verdict: Verdict, reason: &str) {
        let v = vip.to_string();
        self.changes.with_label_values(&[v.as_str()]).inc();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_change
            .with_label_values(&[v.as_str()])
            .set(wall.as_secs() as i64);
        match verdict {
            Verdict::Announced => tracing::info!(%vip, "VIP announced"),
            Verdict::Degraded => tracing::warn!(%vip, reason, "VIP announced as degraded"),
            Verdict::Withdrawn => tracing::warn!(%vip, reason, "VIP withdrawn"),
        }
    }

    /// Reads BIRD's protocol states into the metrics (on every scrape).
    pub async fn refresh_stats(&self) {
        let Some(socket) = self.bird_socket() else {
            return;
        };
        match bird::protocols(&socket).await {
            Ok(list) => {
                self.bird_up.set(1);
                self.bird_protocol_up.reset();
                for p in list {
                    self.bird_protocol_up
                        .with_label_values(&[p.name.as_str(), p.proto.as_str()])
                        .set(i64::from(p.state == "up"));
                }
            }
            Err(e) => {
                self.bird_up.set(0);
                // What BIRD said last is no longer known: no protocol is reported up.
                self.bird_protocol_up.reset();
                tracing::debug!(error = %e, "reading BIRD's protocols");
            }
        }
    }

    fn bird_socket(&self) -> Option<std::path::PathBuf> {
        self.config.lock().ok()?.as_ref()?.bird_socket.clone()
    }

    /// The `/api/state` view, `None` without `[announce]`.
    pub async fn view(&self) -> Option<AnnounceView> {
        let cfg = self.config.lock().ok()?.clone()?;
        let vips = self.view.lock().map(|v| v.clone()).unwrap_or_default();
        let (bird, bird_error) = match &cfg.bird_socket {
            None => (None, None),
            Some(s) => match bird::protocols(s).await {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        Some(AnnounceView {
            device: cfg.device,
            table: cfg.table,
            vips,
            bird,
            bird_error,
        })
    }
}

/// Makes the device; what `start` does before it reports the balancer started, so a name
/// in use or missing rights fail the start.
pub(crate) async fn prepare(lb: &Lb, cfg: &AnnounceConfig) -> Result<Device, device::DeviceError> {
    let dev = Device::create(&cfg.device, cfg.table).await?;
    if let Ok(mut c) = lb.announce.config.lock() {
        *c = Some(cfg.clone());
    }
    if cfg.bird_socket.is_some() {
        // Only a balancer told where BIRD is says whether BIRD answers.
        let _ = lb
            .metrics
            .registry
            .register(Box::new(lb.announce.bird_up.clone()));
    }
    tracing::info!(
        device = dev.name(),
        table = cfg.table,
        "announce device ready"
    );
    Ok(dev)
}

/// Keeps a route per ready VIP until `stop`, then withdraws every VIP and returns (the
/// device goes when `dev` is dropped).
pub(crate) async fn run(lb: Arc<Lb>, cfg: AnnounceConfig, dev: Device, stop: CancellationToken) {
    let mut installed = lb.dr.subscribe();
    let mut core = Announcer::new();
    loop {
        let stopping = stop.is_cancelled();
        let state = lb.state();
        let frontends: Vec<DrFrontend<'_>> = state
            .frontends
            .iter()
            .filter(|f| f.cfg.dr.is_some())
            .map(|f| DrFrontend {
                name: &f.cfg.name,
                vips: f.cfg.binds.iter().map(|b| b.ip()).collect(),
                server_up: f.backend.any_up(),
            })
            .collect();
        let desired = installed.borrow_and_update().clone();
        let wanted = core::assess(&frontends, desired.as_ref(), cfg.degraded, stopping);
        for op in core.update(Instant::now(), &wanted) {
            let (vip, result) = match op {
                RouteOp::Set { vip, degraded } => (vip, dev.set(vip, degraded).await),
                RouteOp::Remove { vip } => (vip, dev.remove(vip).await),
            };
            if let Err(e) = &result {
                lb.announce.failures.inc();
                tracing::error!(error = %e, %vip, "changing the announcement failed; retrying");
            }
            let reason = core
                .held()
                .get(&vip)
                .map(|h| h.reason.clone())
                .unwrap_or_default();
            if let Some(v) = core.applied(Instant::now(), vip, result.is_ok()) {
                lb.announce.changed(vip, v, &reason);
            }
        }
        lb.announce.publish(&core, Instant::now());
        if stopping {
            break;
        }
        let retry = core.has_pending();
        tokio::select! {
            r = installed.changed() => {
                if r.is_err() {
                    // The forwarding task is gone: nothing this balancer forwards is ready.
                    stop.cancel();
                }
            }
            _ = tokio::time::sleep(RETRY), if retry => {}
            _ = stop.cancelled() => {}
        }
    }
}
