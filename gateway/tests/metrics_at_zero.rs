//! A fresh gateway's `/metrics` already holds every series of its labelled counters whose
//! label values are known (reasons, codes, configured services) at 0, so `rate()` alerts
//! see 0 rather than no data, and `tether_log_lines_dropped_total`.

mod harness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use harness::*;
use tether_gateway::config::WhenNotReady;

/// `(name, labels)` of every series on `/metrics` at `admin`, with its value.
async fn scrape(admin: SocketAddr) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let r = tether_health::http::get(admin, "a", "/metrics", Duration::from_secs(10))
        .await
        .expect("GET /metrics");
    assert_eq!(r.status, 200);
    let mut out = BTreeMap::new();
    for line in r.text().lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').expect("label=value");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.insert((name.to_string(), labels), value.parse().expect("a value"));
    }
    out
}

/// Asserts that `family` has a series at 0 for each of `values` of its labels `keys`.
fn at_zero(
    m: &BTreeMap<(String, BTreeMap<String, String>), f64>,
    family: &str,
    keys: &[&str],
    values: &[&[&str]],
) {
    for v in values {
        let labels = keys
            .iter()
            .zip(v.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let got = m.get(&(family.to_string(), labels));
        assert_eq!(got, Some(&0.0), "{family} {v:?}: {got:?}");
    }
}

fn rows<'a, const N: usize>(v: &'a [[&'a str; N]]) -> Vec<&'a [&'a str]> {
    v.iter().map(|r| &r[..]).collect()
}

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
const AUTH_REFUSALS: &[&str] = &[
    "identity_mismatch",
    "unknown_gateway",
    "over_quota",
    "export_not_allowed",
    "consume_not_allowed",
    "duplicate_id",
];
const REJECT_CODES: &[&str] = &["auth", "draining", "version", "over_quota"];
const ANSWERS: &[&str] = &[
    "ok",
    "backend_refused",
    "backend_timeout",
    "unauthorized",
    "overloaded",
    "draining",
];

/// The families every gateway, cloud or on-prem, has at 0 from the start.
fn common_at_zero(m: &BTreeMap<(String, BTreeMap<String, String>), f64>) {
    for (family, key, values) in [
        (
            "tether_gateway_sessions_closed_total",
            "reason",
            SESSION_ENDS,
        ),
        (
            "tether_gateway_handshake_failures_total",
            "reason",
            HANDSHAKE_FAILURES,
        ),
        (
            "tether_gateway_auth_refusals_total",
            "reason",
            AUTH_REFUSALS,
        ),
        ("tether_gateway_rejects_total", "code", REJECT_CODES),
        ("tether_gateway_reloads_total", "result", &["ok", "failed"]),
    ] {
        let v: Vec<[&str; 1]> = values.iter().map(|v| [*v]).collect();
        at_zero(m, family, &[key], &rows(&v));
    }
    assert_eq!(
        m.get(&("tether_log_lines_dropped_total".into(), BTreeMap::new())),
        Some(&0.0)
    );
}

/// The series of a service on the node that takes its clients and opens its streams.
fn clients_side_at_zero(
    m: &BTreeMap<(String, BTreeMap<String, String>), f64>,
    service: &str,
    direction: &str,
) {
    let s = ["direction", "result", "service"];
    at_zero(
        m,
        "tether_gateway_streams_total",
        &s,
        &[&[direction, "ok", service]],
    );
    at_zero(
        m,
        "tether_gateway_open_retries_total",
        &["service"],
        &[&[service]],
    );
    let reasons: Vec<[&str; 2]> = ["timeout", "broken"]
        .iter()
        .chain(&ANSWERS[1..])
        .map(|r| [*r, service])
        .collect();
    at_zero(
        m,
        "tether_gateway_stream_open_failures_total",
        &["reason", "service"],
        &rows(&reasons),
    );
    at_zero(
        m,
        "tether_gateway_clients_rejected_total",
        &["reason", "service"],
        &[&["not_ready", service], &["no_stream", service]],
    );
    bytes_at_zero(m, service);
}

/// The series of a service on the node that answers its streams.
fn server_side_at_zero(
    m: &BTreeMap<(String, BTreeMap<String, String>), f64>,
    service: &str,
    direction: &str,
) {
    let answers: Vec<[&str; 3]> = ANSWERS.iter().map(|a| [direction, a, service]).collect();
    at_zero(
        m,
        "tether_gateway_streams_total",
        &["direction", "result", "service"],
        &rows(&answers),
    );
    bytes_at_zero(m, service);
}

/// The series both ends of a service's streams have: bytes relayed, and how streams ended.
fn bytes_at_zero(m: &BTreeMap<(String, BTreeMap<String, String>), f64>, service: &str) {
    at_zero(
        m,
        "tether_gateway_bytes_total",
        &["direction", "service"],
        &[&["to_server", service], &["to_client", service]],
    );
    let ends: Vec<[&str; 2]> = ["done", "idle_timeout", "session_ended", "killed"]
        .iter()
        .map(|r| [*r, service])
        .collect();
    at_zero(
        m,
        "tether_gateway_streams_closed_total",
        &["reason", "service"],
        &rows(&ends),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_gateway_has_its_labelled_counters_at_zero() {
    let certs = Certs::new();
    let b = echo().await;
    let cloud = Cloud::start(cloud_config(
        &certs,
        "cloud1",
        WhenNotReady::Unbind,
        Some(b.addr),
    ))
    .await;
    let m = scrape(cloud.handle.admin_addr).await;
    common_at_zero(&m);
    clients_side_at_zero(&m, "svc-a", "reverse");
    server_side_at_zero(&m, "svc-b", "forward");
    at_zero(
        &m,
        "tether_gateway_stream_open_failures_total",
        &["reason", "service"],
        &[&["probe_timeout", "-"]],
    );

    // An on-prem gateway whose cloud refuses every dial: what it counts then goes to
    // dials_total only, so the families below are still untouched when scraped.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port to close");
    let a = echo().await;
    let onprem = Onprem::start(onprem_config(&certs, "onprem1", refused, a.addr, true)).await;
    let m = scrape(onprem.handle.admin_addr).await;
    common_at_zero(&m);
    server_side_at_zero(&m, "svc-a", "reverse");
    clients_side_at_zero(&m, "svc-b", "forward");
    // Its export: by address (nothing to look up), its server up (no failed check).
    for family in [
        "tether_gateway_resolve_failures_total",
        "tether_gateway_resolve_changes_total",
    ] {
        at_zero(&m, family, &["service"], &[&["svc-a"]]);
    }
    at_zero(
        &m,
        "tether_gateway_export_checks_total",
        &["result", "service"],
        &[&["fail", "svc-a"]],
    );
}
