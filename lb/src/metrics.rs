//! The balancer's Prometheus metrics, registered in a registry of its own so several
//! balancers can run in one process (tests) without clashing.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Every metric family of one balancer.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` serves.
    pub registry: Registry,
    /// Connections accepted, by frontend.
    pub fe_connections: IntCounterVec,
    /// Connections open, by frontend.
    pub fe_active: IntGaugeVec,
    /// Accept errors (EMFILE and the like), by frontend.
    pub fe_accept_errors: IntCounterVec,
    /// Bytes read from clients, by frontend.
    pub fe_bytes_in: IntCounterVec,
    /// Bytes written to clients, by frontend.
    pub fe_bytes_out: IntCounterVec,
    /// Connections established to a server.
    pub srv_connections: IntCounterVec,
    /// Connections open to a server.
    pub srv_active: IntGaugeVec,
    /// Bytes sent to a server.
    pub srv_bytes_in: IntCounterVec,
    /// Bytes received from a server.
    pub srv_bytes_out: IntCounterVec,
    /// Failed connects to a server.
    pub srv_connect_failures: IntCounterVec,
    /// 1 when a server is up (health and admin state), else 0.
    pub srv_up: IntGaugeVec,
    /// Health checks by result.
    pub srv_checks: IntCounterVec,
    /// Connections waiting for a full server.
    pub srv_queue: IntGaugeVec,
    /// Connections that gave up waiting in a queue.
    pub srv_queue_timeouts: IntCounterVec,
    /// Connect retries on another server, by backend.
    pub be_retries: IntCounterVec,
    /// Clients closed because no server could take them, by backend.
    pub be_no_server: IntCounterVec,
    /// Time to connect to a server.
    pub connect_seconds: HistogramVec,
    /// Connections finished, by how they ended.
    pub conn_ended: IntCounterVec,
    /// Configuration reloads.
    pub reloads: IntCounter,
    /// Connections open across all frontends.
    pub active_total: IntGauge,
    /// Duration of finished connections.
    pub conn_seconds: Histogram,
    /// Clients closed while their PROXY header or ClientHello was read, by reason.
    pub fe_inspect_errors: IntCounterVec,
    /// Connections routed by SNI, by frontend and backend.
    pub fe_routed: IntCounterVec,
    /// Failed host name resolutions.
    pub resolve_failures: IntCounter,
    /// Resolutions whose answer changed the servers.
    pub resolve_changes: IntCounter,
    /// Reloads refused because the new configuration was invalid.
    pub reload_failures: IntCounter,
    /// dr: packets the kernel forwarded to a server.
    pub dr_packets: IntCounterVec,
    /// dr: bytes the kernel forwarded to a server.
    pub dr_bytes: IntCounterVec,
    /// dr: flows a frontend's flow map holds for a server.
    pub dr_flows: IntGaugeVec,
    /// dr: slots of a frontend's table a server holds.
    pub dr_slots: IntGaugeVec,
    /// dr: forwarding table changes applied, by frontend.
    pub dr_table_changes: IntCounterVec,
    /// dr: forwarding table changes the kernel refused, by frontend.
    pub dr_apply_failures: IntCounterVec,
    /// dr: packets dropped because no server was live, by frontend.
    pub dr_no_server: IntCounterVec,
    /// Client connections open on each worker thread.
    pub worker_connections: IntGaugeVec,
    /// Connections handed from the worker that accepted them to a less loaded one.
    pub worker_handoffs: IntCounter,
}

pub(crate) fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let m = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

pub(crate) fn gauge(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let m = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

impl Metrics {
    /// Creates and registers every family in a new registry. Fails only on a bad or
    /// repeated definition, a programming error the unit tests would catch first.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        let fe = &["frontend"];
        let srv = &["backend", "server"];
        let be = &["backend"];
        let connect_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tether_lb_server_connect_seconds",
                "Time to establish a connection to a server.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            srv,
        )?;
        r.register(Box::new(connect_seconds.clone()))?;
        let conn_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tether_lb_connection_duration_seconds",
                "Lifetime of finished client connections.",
            )
            .buckets(vec![0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0]),
        )?;
        r.register(Box::new(conn_seconds.clone()))?;
        let reloads = IntCounter::new("tether_lb_reloads_total", "Configuration reloads applied.")?;
        r.register(Box::new(reloads.clone()))?;
        let active_total = IntGauge::new(
            "tether_lb_active_connections",
            "Client connections open, all frontends.",
        )?;
        r.register(Box::new(active_total.clone()))?;
        let plain = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Metrics {
            fe_inspect_errors: counter(
                &r,
                "tether_lb_frontend_inspect_errors_total",
                "Clients closed while reading their PROXY header, TLS ClientHello or first bytes, by reason.",
                &["frontend", "reason"],
            )?,
            fe_routed: counter(
                &r,
                "tether_lb_frontend_sni_routed_total",
                "Connections routed by TLS server name (backend is the default when none matched).",
                &["frontend", "backend"],
            )?,
            resolve_failures: plain(
                "tether_lb_resolve_failures_total",
                "Host name resolutions that failed (the last good answer is kept).",
            )?,
            resolve_changes: plain(
                "tether_lb_resolve_changes_total",
                "Resolutions whose answer changed the set of servers.",
            )?,
            reload_failures: plain(
                "tether_lb_reload_failures_total",
                "Reloads refused because the new configuration was invalid.",
            )?,
            fe_connections: counter(
                &r,
                "tether_lb_frontend_connections_total",
                "Client connections accepted.",
                fe,
            )?,
            fe_active: gauge(
                &r,
                "tether_lb_frontend_active_connections",
                "Client connections open.",
                fe,
            )?,
            fe_accept_errors: counter(
                &r,
                "tether_lb_frontend_accept_errors_total",
                "Errors from accept(2), e.g. EMFILE.",
                fe,
            )?,
            fe_bytes_in: counter(
                &r,
                "tether_lb_frontend_bytes_in_total",
                "Bytes received from clients.",
                fe,
            )?,
            fe_bytes_out: counter(
                &r,
                "tether_lb_frontend_bytes_out_total",
                "Bytes sent to clients.",
                fe,
            )?,
            srv_connections: counter(
                &r,
                "tether_lb_server_connections_total",
                "Connections established to the server.",
                srv,
            )?,
            srv_active: gauge(
                &r,
                "tether_lb_server_active_connections",
                "Connections open or opening to the server.",
                srv,
            )?,
            srv_bytes_in: counter(
                &r,
                "tether_lb_server_bytes_in_total",
                "Bytes sent to the server (client to server).",
                srv,
            )?,
            srv_bytes_out: counter(
                &r,
                "tether_lb_server_bytes_out_total",
                "Bytes received from the server (server to client).",
                srv,
            )?,
            srv_connect_failures: counter(
                &r,
                "tether_lb_server_connect_failures_total",
                "Failed or timed-out connects to the server.",
                srv,
            )?,
            srv_up: gauge(
                &r,
                "tether_lb_server_up",
                "1 when the server takes new connections (health up, state ready).",
                srv,
            )?,
            srv_checks: counter(
                &r,
                "tether_lb_server_checks_total",
                "Health checks run, by result (ok or fail).",
                &["backend", "server", "result"],
            )?,
            srv_queue: gauge(
                &r,
                "tether_lb_server_queue_length",
                "Connections waiting for the server (at maxconn).",
                srv,
            )?,
            srv_queue_timeouts: counter(
                &r,
                "tether_lb_server_queue_timeouts_total",
                "Connections that waited longer than queue_timeout.",
                srv,
            )?,
            be_retries: counter(
                &r,
                "tether_lb_backend_retries_total",
                "Connects retried on another server.",
                be,
            )?,
            be_no_server: counter(
                &r,
                "tether_lb_backend_no_server_total",
                "Client connections closed because no server could take them.",
                be,
            )?,
            connect_seconds,
            conn_ended: counter(
                &r,
                "tether_lb_connections_ended_total",
                "Finished client connections, by how they ended.",
                &["frontend", "end"],
            )?,
            dr_packets: counter(
                &r,
                "tether_lb_dr_forwarded_packets_total",
                "mode = dr: packets the kernel forwarded to the server (client to server only).",
                srv,
            )?,
            dr_bytes: counter(
                &r,
                "tether_lb_dr_forwarded_bytes_total",
                "mode = dr: bytes the kernel forwarded to the server (client to server only).",
                srv,
            )?,
            dr_flows: gauge(
                &r,
                "tether_lb_dr_flows",
                "mode = dr: flows the frontend's flow map holds for the server.",
                &["frontend", "backend", "server"],
            )?,
            dr_slots: gauge(
                &r,
                "tether_lb_dr_slots",
                "mode = dr: slots of the frontend's consistent table the server holds (new flows).",
                &["frontend", "backend", "server"],
            )?,
            dr_table_changes: counter(
                &r,
                "tether_lb_dr_table_changes_total",
                "mode = dr: forwarding rule changes applied to the kernel.",
                fe,
            )?,
            dr_apply_failures: counter(
                &r,
                "tether_lb_dr_apply_failures_total",
                "mode = dr: forwarding rule changes the kernel refused (the previous rules keep serving).",
                fe,
            )?,
            dr_no_server: counter(
                &r,
                "tether_lb_dr_no_server_packets_total",
                "mode = dr: packets dropped because no server was live.",
                fe,
            )?,
            worker_connections: gauge(
                &r,
                "tether_lb_worker_connections",
                "Client connections open on each worker thread.",
                &["worker"],
            )?,
            worker_handoffs: plain(
                "tether_lb_worker_handoffs_total",
                "Connections handed from the worker that accepted them to a less loaded one.",
            )?,
            reloads,
            active_total,
            conn_seconds,
            registry: r,
        })
    }
}

/// Every value of the `end` label of `tether_lb_connections_ended_total`: how the relay
/// ended (`relay::End`), why no server connection was made, or `inspect_failed`. Each
/// proxy frontend has all of them from the start ([`Metrics::frontend`]).
pub const CONNECTION_ENDS: &[&str] = &[
    "done",
    "client_timeout",
    "server_timeout",
    "client_error",
    "server_error",
    "shutdown",
    "no_server",
    "connect_failed",
    "queue_timeout",
    "inspect_failed",
    "client_gone",
    "proxy_check",
];

impl Metrics {
    /// Creates at 0 the series of a proxy frontend whose label values are known (every
    /// `end`, the `inspect_reasons` its clients may be refused for, and `routed_to`: the
    /// backends of its SNI routes and its default, none without routes), so that `rate()`
    /// and alerts on them see 0 before the first event rather than no series.
    pub fn frontend(&self, frontend: &str, inspect_reasons: &[&str], routed_to: &[&str]) {
        for end in CONNECTION_ENDS {
            self.conn_ended.with_label_values(&[frontend, end]);
        }
        for reason in inspect_reasons {
            self.fe_inspect_errors
                .with_label_values(&[frontend, reason]);
        }
        for backend in routed_to {
            self.fe_routed.with_label_values(&[frontend, backend]);
        }
    }

    /// Creates at 0 the counters of a `mode = "dr"` frontend, as [`Metrics::frontend`]
    /// does for a proxy one.
    pub fn dr_frontend(&self, frontend: &str) {
        self.dr_table_changes.with_label_values(&[frontend]);
        self.dr_apply_failures.with_label_values(&[frontend]);
        self.dr_no_server.with_label_values(&[frontend]);
    }

    /// Drops the series of a server that is gone, so it does not linger in `/metrics`.
    pub fn forget_server(&self, backend: &str, server: &str) {
        let l = &[backend, server];
        let _ = self.srv_connections.remove_label_values(l);
        let _ = self.srv_active.remove_label_values(l);
        let _ = self.srv_bytes_in.remove_label_values(l);
        let _ = self.srv_bytes_out.remove_label_values(l);
        let _ = self.srv_connect_failures.remove_label_values(l);
        let _ = self.srv_up.remove_label_values(l);
        let _ = self.srv_queue.remove_label_values(l);
        let _ = self.srv_queue_timeouts.remove_label_values(l);
        let _ = self.connect_seconds.remove_label_values(l);
        let _ = self.dr_packets.remove_label_values(l);
        let _ = self.dr_bytes.remove_label_values(l);
        for result in ["ok", "fail"] {
            let _ = self
                .srv_checks
                .remove_label_values(&[backend, server, result]);
        }
    }
}
