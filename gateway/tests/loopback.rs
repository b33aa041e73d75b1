//! Loopback integration tests of `tether gateway`: 2 cloud nodes, 2 on-prem gateways, echo
//! servers and a small balancer, all in-process on ports chosen by the OS. Every wait is on
//! a state (readiness, coverage, counters) with a bound, never a fixed sleep.

mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::*;
use tether_gateway::config::WhenNotReady;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

struct Scenario {
    _certs: Certs,
    a1: Echo,
    a2: Echo,
    b: Echo,
    cloud1: Cloud,
    cloud2: Cloud,
    lb: TestLb,
    onprem1: Onprem,
    onprem2: Onprem,
}

async fn scenario(mode: Mode) -> Scenario {
    let certs = Certs::new();
    let a1 = echo().await;
    let a2 = echo().await;
    let b = echo().await;
    let cloud1 = Cloud::start(cloud_config(
        &certs,
        "cloud1",
        WhenNotReady::Unbind,
        Some(b.addr),
    ))
    .await;
    let cloud2 = Cloud::start(cloud_config(
        &certs,
        "cloud2",
        WhenNotReady::Unbind,
        Some(b.addr),
    ))
    .await;
    let lb = TestLb::start(
        vec![cloud1.handle.session_addr, cloud2.handle.session_addr],
        mode,
    )
    .await;
    let onprem1 = Onprem::start(onprem_config(&certs, "onprem1", lb.addr, a1.addr, true)).await;
    let onprem2 = Onprem::start(onprem_config(&certs, "onprem2", lb.addr, a2.addr, true)).await;
    let s = Scenario {
        _certs: certs,
        a1,
        a2,
        b,
        cloud1,
        cloud2,
        lb,
        onprem1,
        onprem2,
    };
    wait_for(Duration::from_secs(20), "full coverage", || {
        s.onprem1.covered(2) && s.onprem2.covered(2)
    })
    .await;
    wait_for(Duration::from_secs(5), "svc-a ready on both nodes", || {
        s.cloud1.handle.is_ready("svc-a") && s.cloud2.handle.is_ready("svc-a")
    })
    .await;
    s
}

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
async fn blackholed_session_detected_traffic_continues() {
    let s = scenario(Mode::LeastConn).await;
    // Blackhole one session to cloud1 in the cloud -> on-prem direction.
    assert!(
        s.lb.blackhole_one_to_client(0),
        "a session to cloud1 exists"
    );
    let dead_before = counter(
        s.onprem1.handle.metrics(),
        "tether_gateway_sessions_closed_total",
        &[("reason", "dead")],
    ) + counter(
        s.onprem2.handle.metrics(),
        "tether_gateway_sessions_closed_total",
        &[("reason", "dead")],
    );
    let t = Instant::now();
    // Clients keep being served by cloud1 meanwhile (a stream opened on the blackholed
    // session is retried on another).
    let mut served = 0;
    while t.elapsed() < Duration::from_secs(2) && served < 40 {
        echo_once(s.cloud1.svc_a(), &format!("during blackhole {served}"))
            .await
            .expect("served during blackhole");
        served += 1;
    }
    let took = wait_for(
        Duration::from_secs(5),
        "the blackholed session declared dead",
        || {
            let dead = counter(
                s.onprem1.handle.metrics(),
                "tether_gateway_sessions_closed_total",
                &[("reason", "dead")],
            ) + counter(
                s.onprem2.handle.metrics(),
                "tether_gateway_sessions_closed_total",
                &[("reason", "dead")],
            );
            dead > dead_before
        },
    )
    .await;
    let detected = t.elapsed();
    eprintln!("blackholed session detected after {detected:?} (dead_after 1200ms)");
    assert!(
        detected <= Duration::from_millis(1200 + 2000),
        "detected after {detected:?}"
    );
    let _ = took;
    wait_for(Duration::from_secs(15), "coverage restored", || {
        s.onprem1.covered(2) && s.onprem2.covered(2)
    })
    .await;
    echo_once(s.cloud1.svc_a(), "after")
        .await
        .expect("served after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wedged_gateway_clients_served_through_retry() {
    let s = scenario(Mode::LeastConn).await;
    // onprem1 keeps answering pings but swallows stream opens, as a gateway that lost power
    // does until its sessions are found dead.
    s.onprem1.handle.set_wedged(true);
    let open_timeout = test_timers().open_timeout;
    for i in 0..12 {
        // Served by a second open raced on onprem2 before the first could time out.
        tokio::time::timeout(
            open_timeout,
            echo_once(s.cloud1.svc_a(), &format!("wedged {i}")),
        )
        .await
        .unwrap_or_else(|_| panic!("client {i} waited the whole open_timeout"))
        .expect("served via retry");
    }
    let m = s.cloud1.handle.metrics();
    let retries = counter(m, "tether_gateway_open_retries_total", &[]);
    assert!(retries >= 1.0, "no retry happened");
    // The open left unanswered runs on in the background: it times out and ejects.
    wait_for(Duration::from_secs(5), "the silent session ejected", || {
        counter(
            m,
            "tether_gateway_sessions_closed_total",
            &[("reason", "silent")],
        ) >= 1.0
            && counter(
                m,
                "tether_gateway_stream_open_failures_total",
                &[("reason", "timeout")],
            ) >= 1.0
    })
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_cloud1_during_connect_loop_zero_failures() {
    let s = scenario(Mode::LeastConn).await;
    let front = TestLb::start(vec![s.cloud1.svc_a(), s.cloud2.svc_a()], Mode::RoundRobin).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = front.addr;
    let st = stop.clone();
    let load = tokio::spawn(async move {
        let mut ok = 0u32;
        let mut failures = Vec::new();
        let t = Instant::now();
        while !st.load(std::sync::atomic::Ordering::SeqCst)
            && t.elapsed() < Duration::from_secs(20)
            && ok < 5000
        {
            match echo_once(addr, &format!("drain {ok}")).await {
                Ok(()) => ok += 1,
                Err(e) => failures.push(e),
            }
        }
        (ok, failures)
    });
    // Let the loop run on both nodes, then drain cloud1.
    wait_for(Duration::from_secs(10), "load on cloud1", || {
        counter(
            s.cloud1.handle.metrics(),
            "tether_gateway_streams_total",
            &[("result", "ok")],
        ) >= 20.0
    })
    .await;
    s.cloud1.shutdown.cancel();
    s.cloud1.handle.wait().await;
    let served_by_cloud2 = counter(
        s.cloud2.handle.metrics(),
        "tether_gateway_streams_total",
        &[("result", "ok")],
    );
    wait_for(Duration::from_secs(10), "load continues on cloud2", || {
        counter(
            s.cloud2.handle.metrics(),
            "tether_gateway_streams_total",
            &[("result", "ok")],
        ) >= served_by_cloud2 + 50.0
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failures) = load.await.expect("load task");
    eprintln!("drain: {ok} connects, {} failures", failures.len());
    assert!(
        failures.is_empty(),
        "failed connects during drain: {failures:?}"
    );
    assert!(ok >= 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refusals_are_counted_and_disturb_nothing() {
    let certs = Certs::new();
    let a1 = echo().await;
    let cloud = lone_cloud(&certs).await;
    let session = cloud.handle.session_addr;
    let good = Onprem::start(onprem_config(&certs, "onprem1", session, a1.addr, false)).await;
    wait_for(Duration::from_secs(10), "legit sessions", || {
        good.covered_one() && cloud.handle.is_ready("svc-a")
    })
    .await;
    let sessions_before = cloud.handle.session_count();
    let m = cloud.handle.metrics();
    let hs = |reason: &str| {
        counter(
            m,
            "tether_gateway_handshake_failures_total",
            &[("reason", reason)],
        )
    };
    let auth = |reason: &str| {
        counter(
            m,
            "tether_gateway_auth_refusals_total",
            &[("reason", reason)],
        )
    };

    // 1. A certificate from another CA.
    let mut cfg = onprem_config(&certs, "onprem1", session, a1.addr, false);
    cfg.tls.cert = certs.path("rogue.pem");
    cfg.tls.key = certs.path("rogue.key");
    let rogue = Onprem::start(cfg).await;
    wait_for(Duration::from_secs(10), "unknown CA refused", || {
        hs("unknown_ca") >= 1.0
    })
    .await;
    assert!(rogue.handle.coverage().values().all(|n| *n == 0));
    drop(rogue);

    // 1b. The other way round: a gateway that does not trust the cloud's CA refuses it.
    let mut cfg = onprem_config(&certs, "onprem1", session, a1.addr, false);
    cfg.tls.ca = certs.path("other-ca.pem");
    let distrustful = Onprem::start(cfg).await;
    wait_for(
        Duration::from_secs(10),
        "cloud certificate refused by on-prem",
        || {
            counter(
                distrustful.handle.metrics(),
                "tether_gateway_handshake_failures_total",
                &[("reason", "tls")],
            ) >= 1.0
        },
    )
    .await;
    assert!(distrustful.handle.coverage().values().all(|n| *n == 0));
    drop(distrustful);

    // 2. An expired certificate.
    let mut cfg = onprem_config(&certs, "onprem1", session, a1.addr, false);
    cfg.tls.cert = certs.path("expired.pem");
    cfg.tls.key = certs.path("expired.key");
    let expired = Onprem::start(cfg).await;
    wait_for(
        Duration::from_secs(10),
        "expired certificate refused",
        || hs("expired") >= 1.0,
    )
    .await;
    assert!(expired.handle.coverage().values().all(|n| *n == 0));
    drop(expired);

    // 3. No client certificate at all.
    if let Ok(mut tls) = tls_session(&certs, None, session).await {
        // TLS 1.3: the server's refusal arrives on the first read.
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .expect("refused promptly");
        assert!(!matches!(r, Ok(n) if n > 0));
    }
    wait_for(
        Duration::from_secs(5),
        "missing certificate refused",
        || hs("no_certificate") >= 1.0,
    )
    .await;

    // 4. A valid certificate claiming another identity.
    let mut cfg = onprem_config(&certs, "onprem2", session, a1.addr, false);
    cfg.tls = certs.files("onprem1");
    let liar = Onprem::start(cfg).await;
    wait_for(Duration::from_secs(10), "identity mismatch refused", || {
        auth("identity_mismatch") >= 1.0
    })
    .await;
    // The REJECT it got is counted by code.
    wait_for(Duration::from_secs(5), "REJECT counted", || {
        counter(m, "tether_gateway_rejects_total", &[("code", "auth")]) >= 1.0
    })
    .await;
    assert!(liar.handle.coverage().values().all(|n| *n == 0));
    drop(liar);

    // 5. A valid identity that may not export svc-a (and nothing else).
    let intruder = Onprem::start(onprem_config(&certs, "onprem3", session, a1.addr, false)).await;
    wait_for(
        Duration::from_secs(10),
        "unauthorized identity refused",
        || auth("unknown_gateway") >= 1.0,
    )
    .await;
    assert!(intruder.handle.coverage().values().all(|n| *n == 0));
    drop(intruder);

    // Nothing else was disturbed: the legitimate sessions stayed, the service stayed ready
    // and serves.
    assert!(cloud.handle.is_ready("svc-a"));
    assert_eq!(cloud.handle.session_count(), sessions_before);
    assert_eq!(
        cloud
            .handle
            .sessions_by_gateway()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["onprem1".to_string()]
    );
    echo_once(cloud.svc_a(), "still fine")
        .await
        .expect("still serves");
    assert!(good.covered_one());
    assert_eq!(
        counter(m, "tether_gateway_sessions_closed_total", &[]),
        0.0,
        "a legit session was lost"
    );
}

/// A cluster of one: the roster names only this node.
fn single_node(
    mut cfg: tether_gateway::config::CloudConfig,
) -> tether_gateway::config::CloudConfig {
    cfg.roster.retain(|n| n.id == cfg.id);
    cfg
}

/// cloud1 alone, serving svc-a from whichever gateway exports it.
async fn lone_cloud(certs: &Certs) -> Cloud {
    Cloud::start(single_node(cloud_config(
        certs,
        "cloud1",
        WhenNotReady::Unbind,
        None,
    )))
    .await
}

trait CoveredOne {
    fn covered_one(&self) -> bool;
}

impl CoveredOne for Onprem {
    fn covered_one(&self) -> bool {
        let c = self.handle.coverage();
        c.len() == 1 && c.get("cloud1").copied() == Some(2)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_not_allowed_is_refused_per_service() {
    let certs = Certs::new();
    let a1 = echo().await;
    let b = echo().await;
    // cloud allows onprem3 to consume svc-b but not to export svc-a.
    let mut cfg = single_node(cloud_config(
        &certs,
        "cloud1",
        WhenNotReady::Unbind,
        Some(b.addr),
    ));
    cfg.forward[0].allowed_consumers.insert("onprem3".into());
    let cloud = Cloud::start(cfg).await;
    let o3 = Onprem::start(onprem_config(
        &certs,
        "onprem3",
        cloud.handle.session_addr,
        a1.addr,
        true,
    ))
    .await;
    wait_for(Duration::from_secs(10), "onprem3 session", || {
        cloud.handle.session_count() >= 1
    })
    .await;
    wait_for(Duration::from_secs(5), "export refusal counted", || {
        counter(
            cloud.handle.metrics(),
            "tether_gateway_auth_refusals_total",
            &[("reason", "export_not_allowed")],
        ) >= 1.0
    })
    .await;
    assert!(
        !cloud.handle.is_ready("svc-a"),
        "svc-a must not become ready from an unauthorized exporter"
    );
    wait_for(Duration::from_secs(5), "svc-b consumable", || {
        o3.handle.is_ready("svc-b")
    })
    .await;
    echo_once(o3.handle.consume_addrs["svc-b"], "forward allowed")
        .await
        .expect("forward");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onprem_restart_new_epoch_purges_stale_sessions() {
    let certs = Certs::new();
    let a1 = echo().await;
    let mut cloud_cfg = single_node(cloud_config(&certs, "cloud1", WhenNotReady::Unbind, None));
    // Long enough that only the epoch, not the dead interval, can explain a purge.
    cloud_cfg.timers.ping = Duration::from_secs(1);
    cloud_cfg.timers.dead_after = Duration::from_secs(6);
    let cloud = Cloud::start(cloud_cfg).await;
    let lb = TestLb::start(vec![cloud.handle.session_addr], Mode::RoundRobin).await;
    let cfg = onprem_config(&certs, "onprem1", lb.addr, a1.addr, false);
    let first = Onprem::start(cfg).await;
    wait_for(Duration::from_secs(10), "first incarnation covered", || {
        first.covered_one()
    })
    .await;
    // The old incarnation vanishes without its connections closing (host frozen, path
    // black-holed): the cloud still holds its sessions.
    lb.blackhole_all();
    first.handle.kill().await;
    assert_eq!(
        cloud.handle.sessions_by_gateway().get("onprem1").copied(),
        Some(2)
    );
    let t = Instant::now();
    let second = Onprem::start(onprem_config(
        &certs,
        "onprem1",
        cloud.handle.session_addr,
        a1.addr,
        false,
    ))
    .await;
    wait_for(Duration::from_secs(5), "stale sessions purged", || {
        counter(
            cloud.handle.metrics(),
            "tether_gateway_sessions_closed_total",
            &[("reason", "stale_epoch")],
        ) >= 2.0
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "purged by epoch, not by the dead interval"
    );
    // The cloud closes a surplus dial of the new incarnation when it lands, so its count
    // settles at the quota just after on-prem sees itself covered.
    wait_for(Duration::from_secs(10), "new incarnation covered", || {
        second.covered_one()
            && cloud.handle.sessions_by_gateway().get("onprem1").copied() == Some(2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_onprem1_during_reverse_loop_zero_failures() {
    let s = scenario(Mode::LeastConn).await;
    let addr = s.cloud1.svc_a();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let load = tokio::spawn(async move {
        let (mut ok, mut failures) = (0u32, Vec::new());
        let t = Instant::now();
        while !st.load(std::sync::atomic::Ordering::SeqCst)
            && t.elapsed() < Duration::from_secs(20)
            && ok < 5000
        {
            match echo_once(addr, &format!("onprem drain {ok}")).await {
                Ok(()) => ok += 1,
                Err(e) => failures.push(e),
            }
        }
        (ok, failures)
    });
    let reverse_ok = |o: &Onprem| {
        counter(
            o.handle.metrics(),
            "tether_gateway_streams_total",
            &[("direction", "reverse"), ("result", "ok")],
        )
    };
    wait_for(Duration::from_secs(10), "load reaches onprem1", || {
        reverse_ok(&s.onprem1) >= 10.0
    })
    .await;
    s.onprem1.shutdown.cancel();
    s.onprem1.handle.wait().await;
    let before = reverse_ok(&s.onprem2);
    wait_for(Duration::from_secs(10), "load continues on onprem2", || {
        reverse_ok(&s.onprem2) >= before + 50.0
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failures) = load.await.expect("load task");
    eprintln!("on-prem drain: {ok} connects, {} failures", failures.len());
    assert!(
        failures.is_empty(),
        "failed connects during the on-prem drain: {failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wedged_session_ejected_by_probe_without_traffic() {
    let certs = Certs::new();
    let a1 = echo().await;
    let mut cfg = single_node(cloud_config(&certs, "cloud1", WhenNotReady::Unbind, None));
    cfg.timers.probe = Duration::from_millis(300);
    let cloud = Cloud::start(cfg).await;
    let o1 = Onprem::start(onprem_config(
        &certs,
        "onprem1",
        cloud.handle.session_addr,
        a1.addr,
        false,
    ))
    .await;
    wait_for(Duration::from_secs(10), "covered", || o1.covered_one()).await;
    // Healthy sessions answer probes: nothing is ejected.
    let m = cloud.handle.metrics();
    wait_for(Duration::from_secs(5), "probes answered", || {
        m.stream_open_failures
            .with_label_values(&["-", "probe_timeout"])
            .get()
            == 0
            && counter(o1.handle.metrics(), "tether_gateway_streams_total", &[]) == 0.0
            && m.session_rtt_seconds.get_sample_count() > 0
    })
    .await;
    assert_eq!(
        counter(
            m,
            "tether_gateway_sessions_closed_total",
            &[("reason", "silent")]
        ),
        0.0
    );
    // Wedged: no client anywhere, yet the silent sessions are found and ejected.
    o1.handle.set_wedged(true);
    wait_for(
        Duration::from_secs(10),
        "wedged sessions ejected by probes",
        || {
            counter(
                m,
                "tether_gateway_sessions_closed_total",
                &[("reason", "silent")],
            ) >= 2.0
        },
    )
    .await;
}

/// Two live on-prem processes configured with the same id used to purge each other's
/// sessions forever (each HELLO looked like a restart). The second process's first HELLO
/// still purges the first (indistinguishable from a restart), but when the first one's
/// old epoch comes back the cloud knows there are two: it keeps the incumbent, refuses
/// the other (counted as `duplicate_id`) and purges nothing more during the hold-down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_with_one_id_do_not_purge_each_other() {
    let certs = Certs::new();
    let a1 = echo().await;
    let cloud = lone_cloud(&certs).await;
    let cfg = || onprem_config(&certs, "onprem1", cloud.handle.session_addr, a1.addr, false);
    let first = Onprem::start(cfg()).await;
    wait_for(Duration::from_secs(10), "first gateway covered", || {
        first.covered_one()
    })
    .await;
    let _second = Onprem::start(cfg()).await;
    let closed = |reason: &str| {
        counter(
            cloud.handle.metrics(),
            "tether_gateway_sessions_closed_total",
            &[("reason", reason)],
        )
    };
    let refused = || {
        counter(
            cloud.handle.metrics(),
            "tether_gateway_auth_refusals_total",
            &[("reason", "duplicate_id")],
        )
    };
    wait_for(Duration::from_secs(15), "the duplicate id detected", || {
        refused() >= 1.0
    })
    .await;
    let purged = closed("stale_epoch");
    // Both prepared connections of the refused process are refused, then its redials
    // (after the REJECT back-off) again; meanwhile nothing else is purged.
    wait_for(Duration::from_secs(30), "refused redials", || {
        refused() >= 4.0
    })
    .await;
    assert_eq!(closed("stale_epoch"), purged, "sessions purged again");
    assert!(
        purged <= 2.0,
        "{purged} sessions purged before the detection"
    );
    assert_eq!(
        cloud.handle.sessions_by_gateway().get("onprem1").copied(),
        Some(2)
    );
}

/// A peer with a valid certificate that sends garbage instead of yamux after the TLS
/// handshake was not counted anywhere. It is now a handshake failure
/// (`no_control_stream`), and the legitimate session is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_handshake_is_counted() {
    use tokio::io::AsyncWriteExt;
    let certs = Certs::new();
    let cloud = lone_cloud(&certs).await;
    let mut tls = tls_session(&certs, Some("onprem1"), cloud.handle.session_addr)
        .await
        .expect("handshake");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nthis is not yamux at all")
        .await
        .expect("write");
    tls.flush().await.expect("flush");
    let m = cloud.handle.metrics();
    wait_for(Duration::from_secs(10), "garbage counted", || {
        counter(
            m,
            "tether_gateway_handshake_failures_total",
            &[("reason", "no_control_stream")],
        ) >= 1.0
    })
    .await;
    // The cloud closed it (yamux 0.13 may first send its own frames: an RTT ping, the
    // GoAway of the protocol error; the session ends either way).
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest))
        .await
        .expect("closed promptly");
    assert!(
        rest.len() < 1024,
        "{r:?}: {} bytes after garbage",
        rest.len()
    );
    assert_eq!(cloud.handle.session_count(), 0);
}
