//! Prometheus metrics of one gateway (per-daemon registry, names `tether_gateway_*`).

use std::sync::Arc;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use tokio::sync::watch;

/// All metrics of a gateway process, registered in its own [`Registry`].
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` serves.
    pub registry: Registry,
    /// Live sessions per peer node or gateway.
    pub sessions: IntGaugeVec,
    /// Sessions closed, by reason.
    pub sessions_closed: IntCounterVec,
    /// Session handshakes refused before HELLO (TLS failures), by reason.
    pub handshake_failures: IntCounterVec,
    /// Authorization refusals (identity mismatch, service not allowed), by reason.
    pub auth_refusals: IntCounterVec,
    /// REJECTs sent to gateways, by code (auth, draining, version, over_quota).
    pub rejects: IntCounterVec,
    /// 1 while a service is ready.
    pub service_ready: IntGaugeVec,
    /// 1 while a service listener is bound.
    pub listener_bound: IntGaugeVec,
    /// Streams in flight.
    pub streams_active: IntGaugeVec,
    /// Streams opened, by service, direction and result.
    pub streams: IntCounterVec,
    /// Stream opens that failed, by reason.
    pub stream_open_failures: IntCounterVec,
    /// Stream opens retried on another session.
    pub open_retries: IntCounterVec,
    /// Clients closed without a stream, by reason.
    pub clients_rejected: IntCounterVec,
    /// Bytes relayed, by service and direction (`to_server`, `to_client`).
    pub bytes: IntCounterVec,
    /// Relayed streams that ended, by service and how (`done`, `idle_timeout`,
    /// `session_ended`, `killed`).
    pub streams_closed: IntCounterVec,
    /// Session dials, by node and result (on-prem).
    pub dials: IntCounterVec,
    /// Missing sessions per roster node (on-prem).
    pub coverage_deficit: IntGaugeVec,
    /// Time from opening a stream to its status byte, by service.
    pub stream_open_seconds: HistogramVec,
    /// Round-trip time of control-stream pings.
    pub session_rtt_seconds: Histogram,
    /// Seconds until each loaded certificate expires (computed at scrape time).
    pub cert_expiry: crate::expiry::ExpiryCollector,
    /// Configuration reloads (SIGHUP), by result (`ok`, `failed`).
    pub reloads: IntCounterVec,
    /// Bumped after every change recorded through the methods below.
    changes: Arc<watch::Sender<u64>>,
}

/// Every value of the `reason` label of `tether_gateway_handshake_failures_total`.
const HANDSHAKE_FAILURES: &[&str] = &[
    "io",
    "no_certificate",
    "expired",
    "unknown_ca",
    "bad_certificate",
    "incompatible",
    "tls",
    "timeout",
    "no_control_stream",
    "no_hello",
    "bad_hello",
    "not_hello",
];
/// Every value of the `reason` label of `tether_gateway_auth_refusals_total`.
const AUTH_REFUSALS: &[&str] = &[
    "identity_mismatch",
    "unknown_gateway",
    "over_quota",
    "export_not_allowed",
    "consume_not_allowed",
    "duplicate_id",
];
/// Every value of the `code` label of `tether_gateway_rejects_total`.
const REJECT_CODES: &[&str] = &["auth", "draining", "version", "over_quota"];
/// Every value of the `reason` label of `tether_gateway_sessions_closed_total`: how a
/// session loop ended, or why the cloud core closed it.
const SESSION_ENDS: &[&str] = &[
    "peer_closed",
    "dead",
    "killed",
    "mux_closed",
    "protocol",
    "stale_epoch",
    "replaced",
    "silent",
    "revoked",
    "max_age",
];
/// Every value of the `result` label of `tether_gateway_reloads_total`.
const RELOAD_RESULTS: &[&str] = &["ok", "failed"];
/// Results of a stream on the side that answers it (the status byte it sends).
const STREAM_RESULTS: &[&str] = &[
    "ok",
    "backend_refused",
    "backend_timeout",
    "unauthorized",
    "overloaded",
    "draining",
];
/// Every value of the `reason` label of `tether_gateway_stream_open_failures_total`.
const OPEN_FAILURES: &[&str] = &[
    "timeout",
    "broken",
    "backend_refused",
    "backend_timeout",
    "unauthorized",
    "overloaded",
    "draining",
];
/// Every value of the `reason` label of `tether_gateway_streams_closed_total`: how a relayed
/// stream ended (see [`StreamEnd`]).
const STREAM_ENDS: &[&str] = &["done", "idle_timeout", "session_ended", "killed"];
/// Every value of the `reason` label of `tether_gateway_clients_rejected_total`.
const CLIENT_REJECTS: &[&str] = &["not_ready", "no_stream"];

/// How a relayed stream ended (the `reason` of `tether_gateway_streams_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// Both directions finished, or one side failed.
    Done,
    /// No byte moved either way for `stream_idle_timeout`.
    IdleTimeout,
    /// Its session ended under it.
    SessionEnded,
    /// The gateway was stopped.
    Killed,
}

impl StreamEnd {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StreamEnd::Done => "done",
            StreamEnd::IdleTimeout => "idle_timeout",
            StreamEnd::SessionEnded => "session_ended",
            StreamEnd::Killed => "killed",
        }
    }
}

/// Which end of a service's streams this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceSide {
    /// Listens for the service's clients and opens streams (cloud reverse, on-prem consume).
    Clients,
    /// Answers streams and connects to the server (cloud forward, on-prem export).
    Server,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

/// Creates the series of `family` for each of `values` at 0, so that `rate()` and alerts
/// on it see 0 before the first event rather than no series at all.
fn zero(family: &IntCounterVec, values: &[&str]) {
    for v in values {
        family.with_label_values(&[v]);
    }
}

/// Sets the series `label` of `family` to `value`; `changed` runs only when that is a change
/// (placement reports every node's deficit on each of its steps).
fn set_gauge(family: &IntGaugeVec, label: &str, value: i64, changed: impl FnOnce()) {
    let g = family.with_label_values(&[label]);
    if g.get() != value {
        g.set(value);
        changed();
    }
}

/// Counts one event of `family` labelled `value`, which must be one of `known` (the
/// values [`Metrics::new`] created at 0); tests catch a new value missing there.
fn count(family: &IntCounterVec, known: &[&str], value: &str) {
    debug_assert!(known.contains(&value), "label value {value:?} not listed");
    family.with_label_values(&[value]).inc();
}

impl Metrics {
    /// Creates and registers every metric in a new registry, the families whose labels
    /// are known in advance with each of their series at 0.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let m = Metrics::unset()?;
        zero(&m.sessions_closed, SESSION_ENDS);
        zero(&m.handshake_failures, HANDSHAKE_FAILURES);
        zero(&m.auth_refusals, AUTH_REFUSALS);
        zero(&m.rejects, REJECT_CODES);
        zero(&m.reloads, RELOAD_RESULTS);
        Ok(m)
    }

    /// Creates at 0 the series of a configured `service` whose streams go in `direction`
    /// (`forward` or `reverse`), as seen from `side`.
    pub(crate) fn service(&self, service: &str, direction: &str, side: ServiceSide) {
        for d in ["to_server", "to_client"] {
            self.bytes.with_label_values(&[service, d]);
        }
        for r in STREAM_ENDS {
            self.streams_closed.with_label_values(&[service, r]);
        }
        match side {
            ServiceSide::Server => {
                for r in STREAM_RESULTS {
                    self.streams.with_label_values(&[service, direction, r]);
                }
            }
            ServiceSide::Clients => {
                self.streams.with_label_values(&[service, direction, "ok"]);
                self.open_retries.with_label_values(&[service]);
                for r in OPEN_FAILURES {
                    self.stream_open_failures.with_label_values(&[service, r]);
                }
                for r in CLIENT_REJECTS {
                    self.clients_rejected.with_label_values(&[service, r]);
                }
            }
        }
    }

    /// A receiver that sees a new value after each change this gateway records through
    /// these methods: sessions up and down, readiness, coverage, streams, refusals, ping
    /// round trips. What a test (or anything that would otherwise poll `/metrics`) waits
    /// on before looking at the state again.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Counts a session that ended for `reason` (one of [`SESSION_ENDS`]).
    pub(crate) fn session_closed(&self, reason: &str) {
        count(&self.sessions_closed, SESSION_ENDS, reason);
        self.changed();
    }

    /// Counts a handshake that failed for `reason` (one of [`HANDSHAKE_FAILURES`]).
    pub(crate) fn handshake_failed(&self, reason: &str) {
        count(&self.handshake_failures, HANDSHAKE_FAILURES, reason);
        self.changed();
    }

    /// Counts an authorization refusal for `reason` (one of [`AUTH_REFUSALS`]).
    pub(crate) fn auth_refused(&self, reason: &str) {
        count(&self.auth_refusals, AUTH_REFUSALS, reason);
        self.changed();
    }

    /// Counts a REJECT sent with `code` (one of [`REJECT_CODES`]).
    pub(crate) fn rejected(&self, code: &str) {
        count(&self.rejects, REJECT_CODES, code);
        self.changed();
    }

    /// A session with `peer` is up (`true`) or has ended (`false`).
    pub(crate) fn session_up(&self, peer: &str, up: bool) {
        let g = self.sessions.with_label_values(&[peer]);
        if up {
            g.inc()
        } else {
            g.dec()
        }
        self.changed();
    }

    /// Whether `service` is ready.
    pub(crate) fn ready(&self, service: &str, ready: bool) {
        set_gauge(&self.service_ready, service, i64::from(ready), || {
            self.changed()
        });
    }

    /// Sessions missing to roster node `node` (on-prem).
    pub(crate) fn deficit(&self, node: &str, missing: usize) {
        let missing = i64::try_from(missing).unwrap_or(i64::MAX);
        set_gauge(&self.coverage_deficit, node, missing, || self.changed());
    }

    /// A node left the roster and holds no session: its deficit is no longer reported.
    pub(crate) fn forget_node(&self, node: &str) {
        let _ = self.coverage_deficit.remove_label_values(&[node]);
        self.changed();
    }

    /// Counts a stream of `service` going `direction` that ended its open with `result`.
    pub(crate) fn stream(&self, service: &str, direction: &str, result: &str) {
        self.streams
            .with_label_values(&[service, direction, result])
            .inc();
        self.changed();
    }

    /// Counts a relayed stream of `service` that ended as `end`.
    pub(crate) fn stream_closed(&self, service: &str, end: StreamEnd) {
        self.streams_closed
            .with_label_values(&[service, end.as_str()])
            .inc();
        self.changed();
    }

    /// A control-stream ping answered after `secs`.
    pub(crate) fn rtt(&self, secs: f64) {
        self.session_rtt_seconds.observe(secs);
        self.changed();
    }

    /// Counts a reload that ended with `result` (one of [`RELOAD_RESULTS`]).
    pub(crate) fn reloaded(&self, result: &str) {
        count(&self.reloads, RELOAD_RESULTS, result);
        self.changed();
    }

    fn unset() -> Result<Metrics, prometheus::Error> {
        let r = Registry::new();
        Ok(Metrics {
            sessions: gauge(
                &r,
                "tether_gateway_sessions",
                "Live sessions per peer.",
                &["peer"],
            )?,
            sessions_closed: counter(
                &r,
                "tether_gateway_sessions_closed_total",
                "Sessions closed, by reason.",
                &["reason"],
            )?,
            handshake_failures: counter(
                &r,
                "tether_gateway_handshake_failures_total",
                "Session handshakes that failed: TLS (wrong CA, no or expired certificate, timeout) or after it (no control stream, no HELLO, garbage).",
                &["reason"],
            )?,
            rejects: counter(
                &r,
                "tether_gateway_rejects_total",
                "REJECT answers sent to gateways' HELLOs, by code.",
                &["code"],
            )?,
            auth_refusals: counter(
                &r,
                "tether_gateway_auth_refusals_total",
                "HELLOs or services refused by authorization.",
                &["reason"],
            )?,
            service_ready: gauge(
                &r,
                "tether_gateway_service_ready",
                "1 while the service is ready.",
                &["service"],
            )?,
            listener_bound: gauge(
                &r,
                "tether_gateway_listener_bound",
                "1 while the service listener is bound.",
                &["service"],
            )?,
            streams_active: gauge(
                &r,
                "tether_gateway_streams_active",
                "Streams in flight.",
                &["service", "direction"],
            )?,
            streams: counter(
                &r,
                "tether_gateway_streams_total",
                "Streams handled.",
                &["service", "direction", "result"],
            )?,
            stream_open_failures: counter(
                &r,
                "tether_gateway_stream_open_failures_total",
                "Stream opens that failed.",
                &["service", "reason"],
            )?,
            open_retries: counter(
                &r,
                "tether_gateway_open_retries_total",
                "Second stream opens on another session, after a failed open or one unanswered for a quarter of open_timeout.",
                &["service"],
            )?,
            clients_rejected: counter(
                &r,
                "tether_gateway_clients_rejected_total",
                "Clients closed without a stream.",
                &["service", "reason"],
            )?,
            bytes: counter(
                &r,
                "tether_gateway_bytes_total",
                "Bytes relayed.",
                &["service", "direction"],
            )?,
            streams_closed: counter(
                &r,
                "tether_gateway_streams_closed_total",
                "Relayed streams that ended, by how: done (both directions finished, or a side failed), idle_timeout (nothing moved for stream_idle_timeout), session_ended, killed.",
                &["service", "reason"],
            )?,
            dials: counter(
                &r,
                "tether_gateway_dials_total",
                "Session dials.",
                &["node", "result"],
            )?,
            coverage_deficit: gauge(
                &r,
                "tether_gateway_coverage_deficit",
                "Missing sessions per cloud node.",
                &["node"],
            )?,
            stream_open_seconds: {
                let buckets = vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ];
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "tether_gateway_stream_open_seconds",
                        "Time from opening a stream to its status byte.",
                    )
                    .buckets(buckets),
                    &["service"],
                )?;
                r.register(Box::new(h.clone()))?;
                h
            },
            session_rtt_seconds: {
                let buckets = vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ];
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "tether_gateway_session_rtt_seconds",
                        "Round trips of control-stream pings.",
                    )
                    .buckets(buckets),
                )?;
                r.register(Box::new(h.clone()))?;
                h
            },
            cert_expiry: {
                let c = crate::expiry::ExpiryCollector::new()?;
                r.register(Box::new(c.clone()))?;
                c
            },
            reloads: counter(
                &r,
                "tether_gateway_reloads_total",
                "Configuration reloads (SIGHUP), by result; a failed one left the running configuration serving.",
                &["result"],
            )?,
            registry: r,
            changes: Arc::new(watch::Sender::new(0)),
        })
    }
}

#[cfg(test)]
mod tests;
