//! Faults a gateway must survive without a client noticing: a blackholed or wedged session,
//! a restarted on-prem gateway whose old sessions linger, two processes with one id.

mod harness;

use std::time::{Duration, Instant};

use harness::*;
use tether_gateway::config::WhenNotReady;

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
