use std::path::Path;
use std::time::Duration;

use tether_health::config::Source;

use super::*;
use crate::config::parse;

const CLOUD: &str = r#"
[node]
role = "cloud"
id = "cloud1"
session_listen = "0.0.0.0:8443"
admin_listen = "127.0.0.1:9100"
[cluster]
nodes = [ { id = "cloud1", sni = "cloud1.gw.example.com" } ]
[tls]
cert = "cloud1.pem"
key = "cloud1.key"
client_ca = "ca.pem"
[[reverse]]
service = "svc-a"
listen = "0.0.0.0:5551"
allowed_exporters = ["onprem1", "onprem2"]
[[forward]]
service = "svc-b"
connect = "server-b:6000"
allowed_consumers = ["onprem1"]
"#;

const ONPREM: &str = r#"
[node]
role = "onprem"
id = "onprem1"
cloud = "gw.example.com:8443"
prepared_connections = 2
admin_listen = "127.0.0.1:9101"
[tls]
cert = "onprem1.pem"
key = "onprem1.key"
ca = "ca.pem"
[[export]]
service = "svc-a"
connect = "server-a:5000"
[[export]]
service = "svc-c"
connect = "server-c:5000"
health = { kind = "tcp", interval = "2s", timeout = "1s", rise = 1, fall = 2 }
[[consume]]
service = "svc-b"
listen = "0.0.0.0:6661"
"#;

fn config(text: &str) -> GatewayConfig {
    match parse(
        &Source::from_text("gw.toml", text),
        Path::new("/etc/tether"),
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e}\n{text}"),
    }
}

/// The plan from `base` to `base` with `edits` (each `from -> to` replaced once) applied.
fn plan_of(base: &str, edits: &[(&str, &str)]) -> Plan {
    let mut text = base.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} not in the base text");
        text = text.replacen(from, to, 1);
    }
    plan(&config(base), &config(&text))
}

#[test]
fn the_same_file_changes_nothing() {
    for base in [CLOUD, ONPREM] {
        let p = plan_of(base, &[]);
        assert!(p.is_empty() && !p.needs_restart(), "{p:?}");
        assert_eq!(p.to_string(), "no setting changed (TLS files re-read)");
    }
}

/// What each edit of a cloud node's file changes, and which need a restart.
#[test]
fn cloud_table() {
    struct Row {
        what: &'static str,
        edits: &'static [(&'static str, &'static str)],
        expect: fn(&Plan) -> bool,
        restart: bool,
    }
    let rows = [
        Row {
            what: "certificate path",
            edits: &[("cloud1.pem", "cloud1-2027.pem")],
            expect: |p| p.tls_paths && p.acl.is_empty(),
            restart: false,
        },
        Row {
            what: "client CA path",
            edits: &[("\"ca.pem\"", "\"ca-2027.pem\"")],
            expect: |p| p.tls_paths,
            restart: false,
        },
        Row {
            what: "an exporter removed",
            edits: &[("[\"onprem1\", \"onprem2\"]", "[\"onprem1\"]")],
            expect: |p| p.acl == ["reverse svc-a"],
            restart: false,
        },
        Row {
            what: "a consumer added",
            edits: &[(
                "allowed_consumers = [\"onprem1\"]",
                "allowed_consumers = [\"onprem1\", \"onprem2\"]",
            )],
            expect: |p| p.acl == ["forward svc-b"],
            restart: false,
        },
        Row {
            what: "timers",
            edits: &[("[tls]", "[timers]\nping = \"1s\"\nprobe = \"5s\"\n[tls]")],
            expect: |p| p.timers == ["ping", "probe"],
            restart: false,
        },
        Row {
            what: "limits",
            edits: &[("[tls]", "[limits]\nmax_streams = 256\n[tls]")],
            expect: |p| p.limits,
            restart: false,
        },
        Row {
            what: "roster",
            edits: &[(
                "nodes = [ { id = \"cloud1\", sni = \"cloud1.gw.example.com\" } ]",
                "nodes = [ { id = \"cloud1\", sni = \"cloud1.gw.example.com\" }, { id = \"cloud2\", sni = \"cloud2.gw.example.com\" } ]",
            )],
            expect: |p| p.roster,
            restart: false,
        },
        Row {
            what: "forward target",
            edits: &[("server-b:6000", "server-b2:6000")],
            expect: |p| p.services == ["forward svc-b: connect"],
            restart: false,
        },
        Row {
            what: "accept_wait",
            edits: &[(
                "listen = \"0.0.0.0:5551\"",
                "listen = \"0.0.0.0:5551\"\naccept_wait = \"5s\"",
            )],
            expect: |p| p.services == ["reverse svc-a: accept_wait"],
            restart: false,
        },
        Row {
            what: "a forward service added",
            edits: &[(
                "[[forward]]",
                "[[forward]]\nservice = \"svc-d\"\nconnect = \"d:1\"\nallowed_consumers = [\"onprem1\"]\n[[forward]]",
            )],
            expect: |p| p.added == ["forward svc-d"],
            restart: false,
        },
        Row {
            what: "a forward service removed",
            edits: &[(
                "[[forward]]\nservice = \"svc-b\"\nconnect = \"server-b:6000\"\nallowed_consumers = [\"onprem1\"]\n",
                "",
            )],
            expect: |p| p.removed == ["forward svc-b"],
            restart: false,
        },
        Row {
            what: "a reverse service added",
            edits: &[(
                "[[forward]]",
                "[[reverse]]\nservice = \"svc-e\"\nlisten = \"0.0.0.0:5552\"\nallowed_exporters = [\"onprem1\"]\n[[forward]]",
            )],
            expect: |p| p.added == ["reverse svc-e"],
            restart: false,
        },
        Row {
            what: "a reverse listener moved",
            edits: &[("0.0.0.0:5551", "0.0.0.0:5561")],
            expect: |p| p.restart == ["reverse svc-a: listen: 0.0.0.0:5551 -> 0.0.0.0:5561"],
            restart: true,
        },
        Row {
            what: "when_not_ready",
            edits: &[(
                "listen = \"0.0.0.0:5551\"",
                "listen = \"0.0.0.0:5551\"\nwhen_not_ready = \"hold\"",
            )],
            expect: |p| p.restart[0].starts_with("reverse svc-a: when_not_ready"),
            restart: true,
        },
        Row {
            what: "node id",
            edits: &[
                ("id = \"cloud1\"\n", "id = \"cloud9\"\n"),
                ("{ id = \"cloud1\"", "{ id = \"cloud9\""),
            ],
            expect: |p| p.restart == ["node.id: \"cloud1\" -> \"cloud9\""],
            restart: true,
        },
        Row {
            what: "session listener",
            edits: &[("0.0.0.0:8443", "0.0.0.0:9443")],
            expect: |p| p.restart[0].starts_with("node.session_listen"),
            restart: true,
        },
        Row {
            what: "admin listener",
            edits: &[("127.0.0.1:9100", "127.0.0.1:9200")],
            expect: |p| p.restart[0].starts_with("node.admin_listen"),
            restart: true,
        },
    ];
    for row in rows {
        let p = plan_of(CLOUD, row.edits);
        assert!((row.expect)(&p), "{}: {p:?}", row.what);
        assert_eq!(p.needs_restart(), row.restart, "{}: {p:?}", row.what);
        assert!(!p.is_empty(), "{}", row.what);
    }
}

/// What each edit of an on-prem gateway's file changes, and which need a restart.
#[test]
fn onprem_table() {
    /// What, the edits, what the plan must show, whether it needs a restart.
    type Row = (
        &'static str,
        &'static [(&'static str, &'static str)],
        fn(&Plan) -> bool,
        bool,
    );
    let rows: &[Row] = &[
        (
            "CA path",
            &[("\"ca.pem\"", "\"ca-2027.pem\"")],
            |p| p.tls_paths,
            false,
        ),
        (
            "VIP",
            &[("gw.example.com:8443", "gw2.example.com:8443")],
            |p| p.dial_target,
            false,
        ),
        (
            "backoff cap",
            &[("[tls]", "[timers]\nbackoff_cap = \"5s\"\n[tls]")],
            |p| p.timers == ["backoff_cap"],
            false,
        ),
        (
            "session hygiene",
            &[(
                "[tls]",
                "[timers]\nstream_idle_timeout = \"10m\"\nmax_session_age = \"24h\"\n[tls]",
            )],
            |p| p.timers == ["stream_idle_timeout", "max_session_age"],
            false,
        ),
        (
            "unchecked export target",
            &[("server-a:5000", "server-a2:5000")],
            |p| p.services == ["export svc-a: connect"],
            false,
        ),
        (
            "checked export target",
            &[("server-c:5000", "server-c2:5000")],
            |p| p.services == ["export svc-c: connect"],
            false,
        ),
        (
            "export resolve interval",
            &[(
                "server-c:5000\"",
                "server-c:5000\"\nresolve_interval = \"1s\"",
            )],
            |p| p.services == ["export svc-c: resolve_interval"],
            false,
        ),
        (
            "name servers",
            &[(
                "[tls]",
                "[resolver]\nnameservers = [\"127.0.0.1:53\"]\n[tls]",
            )],
            |p| p.restart[0].starts_with("resolver.nameservers"),
            true,
        ),
        (
            "kind of check",
            &[("kind = \"tcp\"", "kind = \"http\"")],
            |p| p.services == ["export svc-c: health"],
            false,
        ),
        (
            "health check",
            &[("fall = 2", "fall = 3")],
            |p| p.services == ["export svc-c: health"],
            false,
        ),
        (
            "an export removed",
            &[(
                "[[export]]\nservice = \"svc-a\"\nconnect = \"server-a:5000\"\n",
                "",
            )],
            |p| p.removed == ["export svc-a"],
            false,
        ),
        (
            "a consume added",
            &[(
                "[[consume]]",
                "[[consume]]\nservice = \"svc-f\"\nlisten = \"0.0.0.0:6662\"\n[[consume]]",
            )],
            |p| p.added == ["consume svc-f"],
            false,
        ),
        (
            "consume listener",
            &[("0.0.0.0:6661", "0.0.0.0:6671")],
            |p| p.restart[0].starts_with("consume svc-b: listen"),
            true,
        ),
        (
            "quota",
            &[("prepared_connections = 2", "prepared_connections = 3")],
            |p| p.restart[0].starts_with("node.prepared_connections"),
            true,
        ),
        (
            "id",
            &[("id = \"onprem1\"", "id = \"onprem2\"")],
            |p| p.restart[0].starts_with("node.id"),
            true,
        ),
    ];
    for (what, edits, expect, restart) in rows {
        let p = plan_of(ONPREM, edits);
        assert!(expect(&p), "{what}: {p:?}");
        assert_eq!(p.needs_restart(), *restart, "{what}: {p:?}");
    }
}

#[test]
fn another_role_needs_a_restart() {
    let p = plan(&config(CLOUD), &config(ONPREM));
    assert_eq!(p.restart, ["node.role: was \"cloud\""]);
    let e = ReloadError::NeedsRestart(p.restart);
    assert_eq!(
        e.to_string(),
        "needs a restart (the running configuration keeps serving): node.role: was \"cloud\""
    );
}

#[test]
fn every_timer_is_compared() {
    let GatewayConfig::Cloud(old) = config(CLOUD) else {
        unreachable!()
    };
    let mut new = old.clone();
    let t = &mut new.timers;
    for d in [
        &mut t.ping,
        &mut t.dead_after,
        &mut t.open_timeout,
        &mut t.connect_timeout,
        &mut t.handshake_timeout,
        &mut t.readiness_down,
        &mut t.drain_grace,
        &mut t.stop_delay,
        &mut t.backoff_cap,
        &mut t.probe,
        &mut t.stream_idle_timeout,
    ] {
        *d += Duration::from_millis(1);
    }
    t.max_session_age = Some(Duration::from_secs(3600));
    let p = plan(&GatewayConfig::Cloud(old), &GatewayConfig::Cloud(new));
    assert_eq!(p.timers.len(), 12, "{p:?}");
    assert!(!p.needs_restart());
}
