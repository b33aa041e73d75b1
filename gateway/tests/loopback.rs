//! Loopback integration tests of `tether gateway`: the paths through 2 cloud nodes and 2
//! on-prem gateways, and a cloud node's restart. Everything runs in-process on ports chosen
//! by the OS (see `harness`); every wait is on a state with a bound, never a fixed sleep.
//! Faults, drains and authentication have files of their own (`faults.rs`, `drain.rs`,
//! `auth.rs`), and reload `reload.rs`.

mod harness;

use std::time::{Duration, Instant};

use harness::*;
use tether_gateway::config::WhenNotReady;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The reference-scenario regression: cloud1 dies and comes back with no client traffic
/// anywhere; it must report ready within 3 s and serve the very first client.
async fn cloud1_restart(mode: Mode) {
    let mut s = scenario(mode).await;
    s.cloud1.handle.kill().await;
    // While cloud1 is down nothing listens on its service port.
    assert!(TcpStream::connect(s.cloud1.svc_a()).await.is_err());
    wait_for(
        Duration::from_secs(5),
        "on-prem notices cloud1 is gone",
        || {
            s.onprem1.handle.coverage().get("cloud1").copied() == Some(0)
                && s.onprem2.handle.coverage().get("cloud1").copied() == Some(0)
        },
    )
    .await;
    // Meanwhile cloud2 serves.
    echo_once(s.cloud2.svc_a(), "cloud2 while cloud1 is down")
        .await
        .expect("cloud2 serves");

    let config = s.cloud1.config.clone();
    let restarted = Cloud::start(config).await;
    let started = Instant::now();
    let took = wait_for(
        Duration::from_secs(3),
        "cloud1 ready again within 3 s",
        || restarted.handle.is_ready("svc-a"),
    )
    .await;
    eprintln!("{mode:?}: cloud1 ready {took:?} after restart");
    // The very first client sent to cloud1 gets its echo.
    echo_once(restarted.svc_a(), "first client on restarted cloud1")
        .await
        .expect("first client after restart");
    // And the admin endpoint agrees.
    let r = tether_health::http::get(
        restarted.handle.admin_addr,
        "x",
        "/readyz/svc-a",
        Duration::from_secs(2),
    )
    .await
    .expect("readyz");
    assert_eq!(r.status, 200, "{}", r.text());
    s.cloud1 = restarted;
    // Coverage converges back to 2 per node on both gateways (VIP-only dialing).
    let cov = wait_for(Duration::from_secs(20), "coverage restored", || {
        s.onprem1.covered(2) && s.onprem2.covered(2)
    })
    .await;
    eprintln!(
        "{mode:?}: coverage restored {:?} after restart",
        started.elapsed().max(cov)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud1_restart_ready_without_traffic_least_conn() {
    cloud1_restart(Mode::LeastConn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud1_restart_ready_without_traffic_round_robin() {
    cloud1_restart(Mode::RoundRobin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_and_forward_echo_through_every_path() {
    let s = scenario(Mode::LeastConn).await;
    // Reverse: each cloud node, and through it each on-prem gateway (server A1 sits behind
    // onprem1, A2 behind onprem2).
    for (name, cloud) in [("cloud1", &s.cloud1), ("cloud2", &s.cloud2)] {
        let (a1, a2) = (s.a1.accepted(), s.a2.accepted());
        for i in 0..16 {
            echo_once(cloud.svc_a(), &format!("{name} reverse {i}"))
                .await
                .expect("reverse echo");
        }
        assert!(s.a1.accepted() > a1, "{name} never used onprem1");
        assert!(s.a2.accepted() > a2, "{name} never used onprem2");
    }
    // Forward: from each on-prem gateway to server B, through both cloud nodes.
    for (name, gw) in [("onprem1", &s.onprem1), ("onprem2", &s.onprem2)] {
        let addr = gw.handle.consume_addrs["svc-b"];
        wait_for(Duration::from_secs(5), "svc-b consumable", || {
            gw.handle.is_ready("svc-b")
        })
        .await;
        for i in 0..16 {
            echo_once(addr, &format!("{name} forward {i}"))
                .await
                .expect("forward echo");
        }
    }
    let fwd = |c: &Cloud| {
        counter(
            c.handle.metrics(),
            "tether_gateway_streams_total",
            &[("direction", "forward"), ("result", "ok")],
        )
    };
    let m = s.cloud1.handle.metrics();
    assert!(
        m.stream_open_seconds
            .with_label_values(&["svc-a"])
            .get_sample_count()
            >= 16
    );
    wait_for(Duration::from_secs(3), "ping round trips measured", || {
        m.session_rtt_seconds.get_sample_count() > 0
            && s.onprem1
                .handle
                .metrics()
                .session_rtt_seconds
                .get_sample_count()
                > 0
    })
    .await;
    assert!(fwd(&s.cloud1) > 0.0, "cloud1 carried no forward stream");
    assert!(fwd(&s.cloud2) > 0.0, "cloud2 carried no forward stream");
    assert_eq!(s.b.accepted(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_onprem_running_clients_refused_or_closed_never_hang() {
    let certs = Certs::new();
    // unbind: nothing listens.
    let unbind = Cloud::start(cloud_config(&certs, "cloud1", WhenNotReady::Unbind, None)).await;
    let err = TcpStream::connect(unbind.svc_a()).await;
    assert!(
        err.is_err(),
        "unbind: a connect to a not-ready node must be refused"
    );
    let r = tether_health::http::get(
        unbind.handle.admin_addr,
        "x",
        "/readyz/svc-a",
        Duration::from_secs(2),
    )
    .await
    .expect("readyz");
    assert_eq!(r.status, 503);
    let r = tether_health::http::get(
        unbind.handle.admin_addr,
        "x",
        "/readyz",
        Duration::from_secs(2),
    )
    .await
    .expect("readyz");
    assert_eq!(r.status, 503);
    let r = tether_health::http::get(
        unbind.handle.admin_addr,
        "x",
        "/livez",
        Duration::from_secs(2),
    )
    .await
    .expect("livez");
    assert_eq!(r.status, 200);

    // hold: accepted, closed within accept_wait (1 s here).
    let hold = Cloud::start(cloud_config(&certs, "cloud2", WhenNotReady::Hold, None)).await;
    let mut c = TcpStream::connect(hold.svc_a())
        .await
        .expect("hold accepts");
    let t = Instant::now();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .expect("closed, not hanging");
    assert!(matches!(n, Ok(0) | Err(_)), "no data expected");
    let waited = t.elapsed();
    assert!(
        waited <= Duration::from_millis(2000),
        "held {waited:?}, accept_wait is 1s"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before accept_wait"
    );

    // reject: accepted and closed at once.
    let mut cfg = cloud_config(&certs, "cloud1", WhenNotReady::Reject, None);
    cfg.id = "cloud1".into();
    let reject = Cloud::start(cfg).await;
    let mut c = TcpStream::connect(reject.svc_a())
        .await
        .expect("reject accepts");
    let t = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .expect("closed, not hanging");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "reject must close at once"
    );
    assert_eq!(
        counter(
            reject.handle.metrics(),
            "tether_gateway_clients_rejected_total",
            &[("reason", "not_ready")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_behind_onprem1_all_streams_through_onprem2() {
    let s = scenario(Mode::LeastConn).await;
    s.a1.stop.cancel();
    // The health check reports it; the cloud nodes stop counting onprem1 as capacity.
    for c in [&s.cloud1, &s.cloud2] {
        let admin = c.handle.admin_addr;
        let mut gateways = 0;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            let r = tether_health::http::get(admin, "x", "/readyz/svc-a", Duration::from_secs(2))
                .await
                .expect("readyz");
            let v: serde_json::Value = serde_json::from_str(&r.text()).expect("json");
            gateways = v["gateways"].as_u64().unwrap_or(0);
            if gateways == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(gateways, 1, "only onprem2 should provide svc-a");
    }
    let reverse_ok = |o: &Onprem| {
        counter(
            o.handle.metrics(),
            "tether_gateway_streams_total",
            &[("direction", "reverse"), ("result", "ok")],
        )
    };
    let (before1, before2) = (reverse_ok(&s.onprem1), reverse_ok(&s.onprem2));
    for (i, c) in [&s.cloud1, &s.cloud2].iter().cycle().take(20).enumerate() {
        echo_once(c.svc_a(), &format!("a1 down {i}"))
            .await
            .expect("served by onprem2");
    }
    assert_eq!(reverse_ok(&s.onprem2) - before2, 20.0);
    assert_eq!(reverse_ok(&s.onprem1) - before1, 0.0);
    let refused = counter(
        s.cloud1.handle.metrics(),
        "tether_gateway_stream_open_failures_total",
        &[],
    ) + counter(
        s.cloud2.handle.metrics(),
        "tether_gateway_stream_open_failures_total",
        &[],
    );
    assert_eq!(refused, 0.0, "streams were still sent to onprem1");
}
