//! Export health checks beyond `tcp`, on loopback: an `http` check against a real HTTP
//! responder decides the service's readiness at the cloud as the responder's status flips;
//! a `tls` check against a rustls server passes with the right CA and name and fails with
//! another name or another CA. Waits are on the gateways' change signal.

mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use harness::*;
use tether_gateway::certs::Validity;
use tether_gateway::config::{ExportCheck, ReverseService, WhenNotReady};
use tether_gateway::tls::{self, TlsKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);

/// A tiny HTTP/1.1 server on loopback answering every request with `status` (changed by
/// the test as it goes) and counting the requests for `/health`.
struct Responder {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    health_requests: Arc<AtomicU64>,
    _stop: CancelOnDrop,
}

async fn responder() -> Responder {
    let listener = TcpListener::bind(any_port()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let status = Arc::new(AtomicU16::new(200));
    let health_requests = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let (s, h, st) = (status.clone(), health_requests.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let (mut c, _) = tokio::select! {
                a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                _ = st.cancelled() => return,
            };
            let (s, h) = (s.clone(), h.clone());
            tokio::spawn(async move {
                // One request per connection, its head at most 8 KiB.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"GET /health HTTP/1.1\r\n") {
                    h.fetch_add(1, Ordering::SeqCst);
                }
                let code = s.load(Ordering::SeqCst);
                let answer =
                    format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = c.write_all(answer.as_bytes()).await;
            });
        }
    });
    Responder {
        addr,
        status,
        health_requests,
        _stop: CancelOnDrop(stop),
    }
}

/// A TLS server on loopback presenting `name`'s certificate from `certs`' CA (valid for
/// `name`, `name.gw.example.com` and `gw.example.com`); it completes handshakes and closes.
async fn tls_server(certs: &Certs, name: &str) -> (SocketAddr, CancelOnDrop) {
    let pem = certs
        .ca
        .issue(name, DOMAIN, Validity::Current)
        .expect("issue");
    let (cert, key) = (
        certs.path(&format!("{name}.pem")),
        certs.path(&format!("{name}.key")),
    );
    std::fs::write(&cert, pem.cert).expect("write");
    std::fs::write(&key, pem.key).expect("write");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            tls::load_certs(TlsKey::Cert, &cert).expect("cert"),
            tls::load_key(&key).expect("key"),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(any_port()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let st = stop.clone();
    tokio::spawn(async move {
        loop {
            let (c, _) = tokio::select! {
                a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                _ = st.cancelled() => return,
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(c)).await;
            });
        }
    });
    (addr, CancelOnDrop(stop))
}

/// `/readyz/{service}` on the cloud node's admin port: its status.
async fn readyz(cloud: &Cloud, service: &str) -> u16 {
    tether_health::http::get(
        cloud.handle.admin_addr,
        "x",
        &format!("/readyz/{service}"),
        Duration::from_secs(2),
    )
    .await
    .expect("readyz")
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_decides_readiness_at_the_cloud() {
    let certs = Certs::new();
    let server = responder().await;
    let cloud = lone_cloud(&certs).await;
    let mut cfg = onprem_config(
        &certs,
        "onprem1",
        cloud.handle.session_addr,
        server.addr,
        false,
    );
    if let Some(h) = cfg.export[0].health.as_mut() {
        h.check = ExportCheck::Http {
            path: "/health".into(),
            host: None,
            expect_status: 200,
        };
    }
    let onprem = Onprem::start(cfg).await;
    let metrics = onprem.handle.metrics().clone();
    let up = || {
        counter(
            &metrics,
            "tether_gateway_export_up",
            &[("service", "svc-a")],
        )
    };

    wait_for(T, "svc-a ready at the cloud", || {
        cloud.handle.is_ready("svc-a")
    })
    .await;
    assert_eq!(readyz(&cloud, "svc-a").await, 200);
    assert_eq!(up(), 1.0);
    assert!(
        server.health_requests.load(Ordering::SeqCst) >= 1,
        "the check asks for its path"
    );

    // The server answers 503: the service goes down at the cloud.
    server.status.store(503, Ordering::SeqCst);
    wait_for(T, "svc-a not ready once the server answers 503", || {
        !cloud.handle.is_ready("svc-a")
    })
    .await;
    assert_eq!(readyz(&cloud, "svc-a").await, 503);
    assert_eq!(up(), 0.0);
    assert!(
        counter(
            &metrics,
            "tether_gateway_export_checks_total",
            &[("service", "svc-a"), ("result", "fail")]
        ) >= 1.0
    );

    // 200 again: back up, without a restart.
    server.status.store(200, Ordering::SeqCst);
    wait_for(T, "svc-a ready again at 200", || {
        cloud.handle.is_ready("svc-a")
    })
    .await;
    assert_eq!(readyz(&cloud, "svc-a").await, 200);
    assert_eq!(up(), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_check_verifies_the_name_and_the_ca() {
    let certs = Certs::new();
    let (server, _stop) = tls_server(&certs, "server-a").await;
    // One node serving three services, all exported by onprem1 from the same TLS server
    // and checked with the same settings but for one key each.
    let mut cloud_cfg =
        harness::single_node(cloud_config(&certs, "cloud1", WhenNotReady::Unbind, None));
    for service in ["svc-name", "svc-ca"] {
        cloud_cfg.reverse.push(ReverseService {
            service: service.into(),
            listen: rebinding_port(),
            when_not_ready: WhenNotReady::Unbind,
            accept_wait: Duration::from_secs(1),
            allowed_exporters: ["onprem1".to_string()].into(),
        });
    }
    let cloud = Cloud::start(cloud_cfg).await;
    let mut cfg = onprem_config(&certs, "onprem1", cloud.handle.session_addr, server, false);
    let good = cfg.export[0].clone();
    let tls_check = |name: &str, ca: &str| ExportCheck::Tls {
        server_name: name.into(),
        ca: Some(certs.path(ca)),
    };
    cfg.export.clear();
    for (service, check) in [
        ("svc-a", tls_check("server-a.gw.example.com", "ca.pem")),
        ("svc-name", tls_check("wrong.example.org", "ca.pem")),
        (
            "svc-ca",
            tls_check("server-a.gw.example.com", "other-ca.pem"),
        ),
    ] {
        let mut e = good.clone();
        e.service = service.into();
        if let Some(h) = e.health.as_mut() {
            h.check = check;
        }
        cfg.export.push(e);
    }
    let onprem = Onprem::start(cfg).await;
    let metrics = onprem.handle.metrics().clone();
    let checks = |service: &str, result: &str| {
        counter(
            &metrics,
            "tether_gateway_export_checks_total",
            &[("service", service), ("result", result)],
        )
    };

    wait_for(T, "svc-a ready with the right name and CA", || {
        cloud.handle.is_ready("svc-a")
    })
    .await;
    // Each of the others failed twice while svc-a passed: they are down, not late.
    wait_for(T, "two failed checks of each wrong check", || {
        checks("svc-name", "fail") >= 2.0 && checks("svc-ca", "fail") >= 2.0
    })
    .await;
    assert_eq!(checks("svc-name", "ok"), 0.0);
    assert_eq!(checks("svc-ca", "ok"), 0.0);
    assert_eq!(readyz(&cloud, "svc-a").await, 200);
    for service in ["svc-name", "svc-ca"] {
        assert!(!cloud.handle.is_ready(service), "{service}");
        assert_eq!(readyz(&cloud, service).await, 503, "{service}");
        assert_eq!(
            counter(
                &metrics,
                "tether_gateway_export_up",
                &[("service", service)]
            ),
            0.0,
            "{service}"
        );
    }
}

/// A reload that points a checked export at another server applies without a restart: the
/// check follows at once and the service's state with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_a_checked_export_to_another_server() {
    let certs = Certs::new();
    let failing = responder().await;
    failing.status.store(503, Ordering::SeqCst);
    let healthy = responder().await;
    let cloud = lone_cloud(&certs).await;
    let mut cfg = onprem_config(
        &certs,
        "onprem1",
        cloud.handle.session_addr,
        failing.addr,
        false,
    );
    if let Some(h) = cfg.export[0].health.as_mut() {
        h.check = ExportCheck::Http {
            path: "/health".into(),
            host: None,
            expect_status: 200,
        };
    }
    let onprem = Onprem::start(cfg.clone()).await;
    let metrics = onprem.handle.metrics().clone();
    let failed = || {
        counter(
            &metrics,
            "tether_gateway_export_checks_total",
            &[("service", "svc-a"), ("result", "fail")],
        )
    };
    wait_for(T, "a failed check at the 503 server", || failed() >= 1.0).await;
    assert!(!cloud.handle.is_ready("svc-a"));

    cfg.export[0].connect = healthy.addr.to_string();
    let plan = onprem
        .handle
        .reload(cfg)
        .expect("applied without a restart");
    assert_eq!(plan.services, ["export svc-a: connect"]);
    wait_for(T, "svc-a ready at the new server", || {
        cloud.handle.is_ready("svc-a")
    })
    .await;
    assert!(healthy.health_requests.load(Ordering::SeqCst) >= 1);
}
