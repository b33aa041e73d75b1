//! Tests of [`super`].

use super::*;

const CLOUD: &str = r#"
[node]
role = "cloud"
id = "cloud1"
session_listen = "0.0.0.0:8443"
admin_listen = "0.0.0.0:9100"
[cluster]
nodes = [ { id = "cloud1", sni = "cloud1.gw.example.com" },
      { id = "cloud2", sni = "cloud2.gw.example.com" } ]
[tls]
cert = "certs/cloud1.pem"
key = "certs/cloud1.key"
client_ca = "certs/ca.pem"
[[reverse]]
service = "svc-a"
listen = "0.0.0.0:5551"
when_not_ready = "unbind"
allowed_exporters = ["onprem1", "onprem2"]
[[forward]]
service = "svc-b"
connect = "server-b:6000"
allowed_consumers = ["onprem1", "onprem2"]
"#;

const ONPREM: &str = r#"
[node]
role = "onprem"
id = "onprem1"
cloud = "gw.example.com:443"
sni_pinning = true
prepared_connections = 2
admin_listen = "0.0.0.0:9101"
[tls]
cert = "certs/onprem1.pem"
key = "certs/onprem1.key"
ca = "certs/ca.pem"
[[export]]
service = "svc-a"
connect = "server-a:5000"
health = { kind = "tcp", interval = "2s" }
[[consume]]
service = "svc-b"
listen = "0.0.0.0:6661"
"#;

fn parse_text(text: &str) -> Result<GatewayConfig, ConfigErrors> {
    parse(
        &Source::from_text("gw.toml", text),
        Path::new("/etc/tether"),
    )
}

fn one_error(text: &str) -> String {
    match parse_text(text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => {
            assert_eq!(e.0.len(), 1, "{e}");
            e.to_string()
        }
    }
}

#[test]
fn issue_examples_parse() {
    let Ok(GatewayConfig::Cloud(c)) = parse_text(CLOUD) else {
        panic!("cloud")
    };
    assert_eq!(c.id, "cloud1");
    assert_eq!(c.roster.len(), 2);
    assert_eq!(c.reverse[0].when_not_ready, WhenNotReady::Unbind);
    assert_eq!(c.reverse[0].accept_wait, Duration::from_secs(2));
    assert_eq!(c.tls.ca, Path::new("/etc/tether/certs/ca.pem"));
    assert_eq!(c.timers, Timers::default());
    let Ok(GatewayConfig::Onprem(o)) = parse_text(ONPREM) else {
        panic!("onprem")
    };
    assert_eq!(o.server_name, "gw.example.com");
    assert!(o.sni_pinning);
    assert_eq!(o.prepared_connections, 2);
    assert_eq!(
        o.export[0].health.as_ref().map(|h| h.interval),
        Some(Duration::from_secs(2))
    );
    assert_eq!(o.consume[0].listen.port(), 6661);
}

#[test]
fn unknown_key_names_line_and_key() {
    let text = CLOUD.replace(
        "when_not_ready = \"unbind\"",
        "when_not_ready = \"unbind\"\nlisten_backlog = 5",
    );
    let e = one_error(&text);
    assert!(e.starts_with("gw.toml:18:"), "{e}");
    assert!(e.contains("listen_backlog"), "{e}");
}

#[test]
fn bad_enum_value_lists_allowed() {
    let e = one_error(&CLOUD.replace("\"unbind\"", "\"drop\""));
    assert!(e.starts_with("gw.toml:17:"), "{e}");
    assert!(e.contains("unbind") && e.contains("hold"), "{e}");
}

#[test]
fn bad_role() {
    let e = one_error(&CLOUD.replace("role = \"cloud\"", "role = \"edge\""));
    assert_eq!(
        e,
        "gw.toml:3: node.role: unknown role \"edge\"; allowed: \"cloud\", \"onprem\""
    );
}

#[test]
fn bad_listen_address() {
    let e = one_error(&CLOUD.replace("0.0.0.0:5551", "localhost:5551"));
    assert!(e.starts_with("gw.toml:16: reverse[0].listen:"), "{e}");
    assert!(e.contains("IP:port"), "{e}");
}

#[test]
fn role_specific_keys() {
    let e = one_error(&CLOUD.replace("id = \"cloud1\"\n", "id = \"cloud1\"\nsni_pinning = true\n"));
    assert!(
        e.contains("node.sni_pinning: not allowed for role = \"cloud\""),
        "{e}"
    );
    let e = one_error(&ONPREM.replace("cloud = \"gw.example.com:443\"\n", ""));
    assert!(
        e.contains("node.cloud: required for role = \"onprem\""),
        "{e}"
    );
    let Err(e) =
        parse_text(&ONPREM.replace("ca = \"certs/ca.pem\"", "client_ca = \"certs/ca.pem\""))
    else {
        panic!("client_ca on onprem must fail")
    };
    let e = e.to_string();
    assert!(
        e.contains("gw.toml:12: tls.client_ca: not allowed for role = \"onprem\""),
        "{e}"
    );
    assert!(e.contains("tls.ca: required for role = \"onprem\""), "{e}");
}

#[test]
fn range_checks() {
    let e = one_error(&ONPREM.replace("prepared_connections = 2", "prepared_connections = 0"));
    assert!(
        e.starts_with("gw.toml:7: node.prepared_connections: 0 out of range; allowed 1..=16"),
        "{e}"
    );
    let e = one_error(&format!(
        "{ONPREM}[timers]\nping = \"5s\"\ndead_after = \"2s\"\n"
    ));
    assert!(
        e.contains("timers.dead_after") && e.contains("longer than timers.ping"),
        "{e}"
    );
    let e = one_error(&CLOUD.replace(
        "allowed_exporters = [\"onprem1\", \"onprem2\"]",
        "allowed_exporters = []",
    ));
    assert!(
        e.contains("reverse[0].allowed_exporters: must name at least one"),
        "{e}"
    );
}

#[test]
fn duplicates_and_roster() {
    let e = one_error(&CLOUD.replace("service = \"svc-b\"", "service = \"svc-a\""));
    assert!(
        e.contains("forward[0].service: service \"svc-a\" is defined twice"),
        "{e}"
    );
    let e = one_error(&CLOUD.replace("{ id = \"cloud1\", sni = \"cloud1.gw.example.com\" },", ""));
    assert!(e.contains("the roster must list this node"), "{e}");
}

#[test]
fn bad_duration() {
    let e = one_error(&format!("{CLOUD}[timers]\nping = \"fast\"\n"));
    assert!(
        e.starts_with("gw.toml:24:") && e.contains("expected a duration"),
        "{e}"
    );
}

#[test]
fn several_errors_reported_together() {
    let text = CLOUD
        .replace("0.0.0.0:5551", "nowhere")
        .replace("server-b:6000", "server-b");
    let Err(e) = parse_text(&text) else {
        panic!("expected errors")
    };
    assert_eq!(e.0.len(), 2, "{e}");
}

/// `[export.health]` is the shared health-check table: its defaults here, its errors at
/// their key.
#[test]
fn export_health_is_the_shared_check_table() {
    let Ok(GatewayConfig::Onprem(o)) = parse_text(ONPREM) else {
        panic!("onprem")
    };
    assert_eq!(
        o.export[0].health,
        Some(ExportHealth {
            check: ExportCheck::Tcp,
            interval: Duration::from_secs(2),
            fast_interval: Duration::from_secs(2),
            down_interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 2,
        })
    );
    let e = one_error(&ONPREM.replace(
        "health = { kind = \"tcp\", interval = \"2s\" }",
        "health = { kind = \"exec\", interval = \"2s\" }",
    ));
    assert_eq!(
        e,
        "gw.toml:16: export[0].health.kind: \"exec\" is not supported here; kind must be tcp, http or tls"
    );
    let e = one_error(&ONPREM.replace("interval = \"2s\"", "interval = \"2s\", fall = 0"));
    assert_eq!(
        e,
        "gw.toml:16: export[0].health.fall: fall is 0; fall must be 1..=1000"
    );
}

/// The session hygiene timers: defaults, values, ranges, and `max_session_age` on-prem
/// only.
#[test]
fn hygiene_timers() {
    let d = Timers::default();
    assert_eq!(d.stream_idle_timeout, Duration::from_secs(3600));
    assert_eq!(d.max_session_age, None);
    let text =
        format!("{ONPREM}[timers]\nstream_idle_timeout = \"15m\"\nmax_session_age = \"24h\"\n");
    let Ok(GatewayConfig::Onprem(o)) = parse_text(&text) else {
        panic!("onprem with hygiene timers")
    };
    assert_eq!(o.timers.stream_idle_timeout, Duration::from_secs(900));
    assert_eq!(o.timers.max_session_age, Some(Duration::from_secs(86400)));
    let Ok(GatewayConfig::Cloud(c)) =
        parse_text(&format!("{CLOUD}[timers]\nstream_idle_timeout = \"2h\"\n"))
    else {
        panic!("cloud with an idle timeout")
    };
    assert_eq!(c.timers.stream_idle_timeout, Duration::from_secs(7200));

    for (value, line) in [("\"50ms\"", 21), ("\"31days\"", 21)] {
        let e = one_error(&format!(
            "{ONPREM}[timers]\nstream_idle_timeout = {value}\n"
        ));
        assert!(
            e.starts_with(&format!("gw.toml:{line}: timers.stream_idle_timeout:"))
                && e.contains("out of range; allowed 100ms..=30days"),
            "{e}"
        );
    }
    let e = one_error(&format!("{ONPREM}[timers]\nmax_session_age = \"0s\"\n"));
    assert!(
        e.starts_with("gw.toml:21: timers.max_session_age: 0ns out of range; allowed 1s..=30days")
            && e.contains("leave it out"),
        "{e}"
    );
    let e = one_error(&format!("{CLOUD}[timers]\nmax_session_age = \"24h\"\n"));
    assert!(
        e.contains("timers.max_session_age: not allowed for role = \"cloud\""),
        "{e}"
    );
}

/// The example configurations in `examples/` parse (their TLS files are not read), so they
/// cannot rot as keys come and go.
#[test]
fn the_examples_parse() {
    for (name, text) in [
        (
            "gateway-cloud.toml",
            include_str!("../../../examples/gateway-cloud.toml"),
        ),
        (
            "gateway-onprem.toml",
            include_str!("../../../examples/gateway-onprem.toml"),
        ),
    ] {
        let parsed = parse(&Source::from_text(name, text), Path::new("/etc/tether"));
        assert!(
            parsed.is_ok(),
            "{name}: {:?}",
            parsed.err().map(|e| e.to_string())
        );
    }
    // And the commented-out age is valid where it is suggested.
    let onprem = include_str!("../../../examples/gateway-onprem.toml")
        .replace("# max_session_age = \"24h\"", "max_session_age = \"24h\"");
    let Ok(GatewayConfig::Onprem(o)) = parse_text(&onprem) else {
        panic!("the on-prem example with max_session_age")
    };
    assert_eq!(o.timers.max_session_age, Some(Duration::from_secs(86400)));
}
