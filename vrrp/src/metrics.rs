//! Prometheus metrics of `tether vrrp`, on a per-daemon registry so several daemons can
//! run in one test process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::fsm::State;
use crate::packet::DropReason;

/// Every metric the daemon exports.
#[derive(Clone)]
pub struct Metrics {
    /// The registry served on `/metrics`.
    pub registry: Registry,
    /// 1 for the current state of each instance, 0 for the others.
    pub state: IntGaugeVec,
    /// State transitions by instance, from, to.
    pub transitions: IntCounterVec,
    /// Adverts sent.
    pub adverts_sent: IntCounterVec,
    /// Adverts received and accepted.
    pub adverts_received: IntCounterVec,
    /// Received packets dropped, by reason.
    pub drops: IntCounterVec,
    /// Accepted v3/IPv4 adverts by checksum convention.
    pub checksum: IntCounterVec,
    /// Effective priority (0 in fault).
    pub priority: IntGaugeVec,
    /// Configured VIPs found on the interface at start (left by a crash).
    pub stale_vips: IntCounterVec,
    /// Whether the instance's interface exists (0 while it is missing and retried).
    pub interface_present: IntGaugeVec,
    /// Notify commands that failed or were killed after their timeout.
    pub notify_failures: IntCounterVec,
    /// Unix time of the last transition.
    pub last_transition: GaugeVec,
    /// Reloads by result (`ok`, `failed`), both from 0 at start.
    pub reloads: IntCounterVec,
    /// Unix time of the last reload tried (0 before any).
    pub last_reload_timestamp: Gauge,
    /// 1 when the last reload was applied (or none was tried), 0 when it was refused.
    pub last_reload_success: IntGauge,
    since: Arc<Mutex<HashMap<String, Instant>>>,
}

struct SinceCollector {
    desc: Desc,
    since: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Collector for SinceCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }
    fn collect(&self) -> Vec<MetricFamily> {
        // Computed at scrape time so the value is current without a ticking task.
        let g = GaugeVec::new(
            Opts::new(
                "tether_vrrp_time_since_transition_seconds",
                "Seconds since the instance last changed state.",
            ),
            &["instance"],
        );
        let Ok(g) = g else { return Vec::new() };
        if let Ok(m) = self.since.lock() {
            for (name, t) in m.iter() {
                g.with_label_values(&[name.as_str()])
                    .set(t.elapsed().as_secs_f64());
            }
        }
        g.collect()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let ig = |n: &str, h: &str, l: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let m = IntGaugeVec::new(Opts::new(n, h), l)?;
            registry.register(Box::new(m.clone()))?;
            Ok(m)
        };
        let ic = |n: &str, h: &str, l: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let m = IntCounterVec::new(Opts::new(n, h), l)?;
            registry.register(Box::new(m.clone()))?;
            Ok(m)
        };
        let state = ig(
            "tether_vrrp_state",
            "1 for the instance's current state.",
            &["instance", "state"],
        )?;
        let transitions = ic(
            "tether_vrrp_transitions_total",
            "State transitions.",
            &["instance", "from", "to"],
        )?;
        let adverts_sent = ic(
            "tether_vrrp_adverts_sent_total",
            "Adverts sent.",
            &["instance"],
        )?;
        let adverts_received = ic(
            "tether_vrrp_adverts_received_total",
            "Adverts received and accepted.",
            &["instance"],
        )?;
        let drops = ic(
            "tether_vrrp_dropped_packets_total",
            "Received protocol-112 packets dropped, by reason.",
            &["instance", "reason"],
        )?;
        let checksum = ic(
            "tether_vrrp_checksum_convention_total",
            "Accepted adverts by checksum convention (v3/IPv4 has two).",
            &["instance", "convention"],
        )?;
        let priority = ig(
            "tether_vrrp_effective_priority",
            "Effective priority after tracking (0 in fault).",
            &["instance"],
        )?;
        let stale_vips = ic(
            "tether_vrrp_stale_vips_removed_total",
            "Configured VIPs found on the interface at start, left by a crash, and removed.",
            &["instance"],
        )?;
        let interface_present = ig(
            "tether_vrrp_interface_present",
            "1 when the instance's interface exists.",
            &["instance"],
        )?;
        let notify_failures = ic(
            "tether_vrrp_notify_failures_total",
            "Notify commands that failed or timed out.",
            &["instance"],
        )?;
        let last_transition = GaugeVec::new(
            Opts::new(
                "tether_vrrp_last_transition_timestamp_seconds",
                "Unix time of the last state change.",
            ),
            &["instance"],
        )?;
        registry.register(Box::new(last_transition.clone()))?;
        let reloads = ic(
            "tether_vrrp_reloads_total",
            "Configuration reloads (SIGHUP) by result: ok (applied) or failed (refused, the running configuration kept).",
            &["result"],
        )?;
        for r in ["ok", "failed"] {
            reloads.with_label_values(&[r]);
        }
        let last_reload_timestamp = Gauge::new(
            "tether_vrrp_last_reload_timestamp_seconds",
            "Unix time of the last reload tried (0 before any).",
        )?;
        registry.register(Box::new(last_reload_timestamp.clone()))?;
        let last_reload_success = IntGauge::new(
            "tether_vrrp_last_reload_success",
            "1 when the last reload was applied (or none was tried), 0 when it was refused.",
        )?;
        last_reload_success.set(1);
        registry.register(Box::new(last_reload_success.clone()))?;
        let since = Arc::new(Mutex::new(HashMap::new()));
        registry.register(Box::new(SinceCollector {
            desc: Desc::new(
                "tether_vrrp_time_since_transition_seconds".into(),
                "Seconds since the instance last changed state.".into(),
                vec!["instance".into()],
                HashMap::new(),
            )?,
            since: since.clone(),
        }))?;
        Ok(Metrics {
            registry,
            state,
            transitions,
            adverts_sent,
            adverts_received,
            drops,
            checksum,
            priority,
            stale_vips,
            interface_present,
            notify_failures,
            last_transition,
            reloads,
            last_reload_timestamp,
            last_reload_success,
            since,
        })
    }

    /// Pre-creates an instance's series so dashboards see zeros, not gaps.
    pub fn init_instance(&self, name: &str) {
        for s in State::ALL {
            self.state
                .with_label_values(&[name, s.label()])
                .set(i64::from(s == State::Initialize));
        }
        for r in DropReason::ALL {
            self.drops.with_label_values(&[name, r.label()]);
        }
        self.adverts_sent.with_label_values(&[name]);
        self.adverts_received.with_label_values(&[name]);
        self.stale_vips.with_label_values(&[name]);
        self.notify_failures.with_label_values(&[name]);
        self.set_transition(name);
    }

    /// Records a transition.
    pub fn transition(&self, name: &str, from: State, to: State) {
        self.transitions
            .with_label_values(&[name, from.label(), to.label()])
            .inc();
        for s in State::ALL {
            self.state
                .with_label_values(&[name, s.label()])
                .set(i64::from(s == to));
        }
        self.set_transition(name);
    }

    fn set_transition(&self, name: &str) {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_transition.with_label_values(&[name]).set(unix);
        if let Ok(mut m) = self.since.lock() {
            m.insert(name.to_string(), Instant::now());
        }
    }
}
