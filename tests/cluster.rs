//! A cluster that grows and shrinks without restarts, as root in network namespaces: in the
//! running reference scenario a third cloud node joins (started, then the balancers and
//! the other nodes reloaded), the on-prem gateways cover it from the pushed roster and
//! clients reach service A through it; then cloud2 leaves (balancers and nodes reloaded,
//! then stopped cleanly). Every path is probed every 20 ms throughout, and no probe may fail.
//! Both balancer modes: as proxies, and as the kernel forwarding tier (dr), which cannot
//! retry a connection a node refuses, so a node joining must take no flow before it serves.

mod support;

use std::time::Duration;

use support::{TETHER, probe};
use tether_lab::scenario::{Features, GW_ADMIN, LbMode, Scenario};

/// Streams `node`'s gateway has carried for service A so far (from its `/metrics`).
fn svc_a_streams(sc: &Scenario, node: &str) -> f64 {
    let (_, text) = sc.http_get(node, GW_ADMIN, "/metrics").unwrap_or_default();
    tether_lab::kit::metric_with(
        &text,
        "tether_gateway_streams_total",
        &[("service", "svc-a")],
    )
}

#[test]
fn a_cloud_node_joins_and_another_leaves_with_no_probe_failing() {
    if let Err(e) = tether_lab::available() {
        assert!(!nix::unistd::geteuid().is_root(), "root, but {e}");
        eprintln!("SKIP: {e}");
        return;
    }
    for mode in [LbMode::Proxy, LbMode::Dr] {
        grow_and_shrink(mode);
    }
}

fn grow_and_shrink(mode: LbMode) {
    eprintln!("{mode:?} mode");
    let features = Features {
        vrrp: true,
        gateway: true,
    };
    let prefix = tether_lab::Lab::unique_prefix("grow");
    let mut sc = Scenario::build(&prefix, TETHER.as_ref(), features, true).expect("lab");
    sc.lb_mode = mode;
    sc.start(Duration::from_secs(30)).expect("scenario up");

    // Long enough for both changes: the join takes a few reloads and a session dial, the
    // leave ends with cloud2's drain (up to its 2 s drain_grace).
    let probes: Vec<_> = sc
        .paths()
        .into_iter()
        .map(|p| {
            let run = probe(
                sc.lab.ns(&p.from),
                p.to.to_string(),
                Duration::from_secs(14),
                Duration::from_secs(1),
            );
            (p.name, run)
        })
        .collect();

    sc.add_cloud_node("cloud3").expect("cloud3 joins");
    // Covered by both gateways (two prepared sessions each), then judged ready by lb1.
    assert!(
        sc.lab
            .wait_log_count("cloud3-gw", "session up", 4, Duration::from_secs(10)),
        "cloud3 not covered by both gateways:\n{}",
        sc.status()
    );
    assert!(
        sc.lab.wait_log(
            "lb1-lb",
            "backend=svc-a server=cloud3 from=\"down\" to=\"up\"",
            Duration::from_secs(10)
        ),
        "lb1 never sent service A to cloud3:\n{}",
        sc.lab.log("lb1-lb")
    );

    sc.remove_cloud_node("cloud2").expect("cloud2 leaves");

    let mut failed = Vec::new();
    for (name, run) in probes {
        let r = run.join().expect("probe thread");
        assert!(r.get("error").is_none(), "{name}: {r}");
        let failures = r["failures"].as_u64().unwrap_or(u64::MAX);
        let attempts = r["attempts"].as_u64().unwrap_or(0);
        eprintln!("{name}: {attempts} probes, {failures} failed");
        assert!(attempts > 300, "{name}: only {attempts} probes: {r}");
        if failures > 0 {
            failed.push(format!("{name}: {failures} of {attempts} failed: {r}"));
        }
    }
    let st = sc.status();
    if !failed.is_empty() {
        // What the balancer did, and when, beside the failures' start times.
        let lb: Vec<String> = sc
            .lab
            .log("lb1-lb")
            .lines()
            .filter(|l| l.contains("reloaded") || l.contains("server"))
            .map(str::to_string)
            .collect();
        panic!("{}\n{st}\nlb1:\n{}", failed.join("\n"), lb.join("\n"));
    }
    assert!(
        svc_a_streams(&sc, "cloud3") > 0.0,
        "no client of service A went through cloud3:\n{st}"
    );
    for gw in ["onprem1", "onprem2"] {
        let (_, body) = sc.http_get(gw, GW_ADMIN, "/status").expect("status");
        let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
        assert_eq!(
            v["coverage"],
            serde_json::json!({ "cloud1": 2, "cloud3": 2 }),
            "{gw}: {body}"
        );
    }
}
