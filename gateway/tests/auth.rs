//! Who may hold a session and carry which service: mutual-TLS refusals, per-service
//! rights, and garbage after the handshake, each counted and disturbing nothing else.

mod harness;

use std::time::Duration;

use harness::*;
use tether_gateway::config::WhenNotReady;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refusals_are_counted_and_disturb_nothing() {
    let certs = Certs::new();
    let a1 = echo().await;
    let cloud = lone_cloud(&certs).await;
    let session = cloud.handle.session_addr;
    let good = Onprem::start(onprem_config(&certs, "onprem1", session, a1.addr, false)).await;
    // The cloud registers a session just after on-prem counts it: wait for both views.
    wait_for(Duration::from_secs(10), "legit sessions", || {
        good.covered_one() && cloud.handle.is_ready("svc-a") && cloud.handle.session_count() == 2
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
