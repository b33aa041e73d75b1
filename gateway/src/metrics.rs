//! Prometheus metrics of one gateway (per-daemon registry, names `tether_gateway_*`).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

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
    /// Session dials, by node and result (on-prem).
    pub dials: IntCounterVec,
    /// Missing sessions per roster node (on-prem).
    pub coverage_deficit: IntGaugeVec,
    /// Time from opening a stream to its status byte, by service.
    pub stream_open_seconds: HistogramVec,
    /// Round-trip time of control-stream pings.
    pub session_rtt_seconds: Histogram,
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

impl Metrics {
    /// Creates and registers every metric in a new registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
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
            registry: r,
        })
    }
}
