//! Exports that follow DNS, as `tether lb`'s servers do: a real name server (dnsmasq from
//! Debian, on loopback) answers for the export's host name. A name that does not resolve
//! yet is reported down and retried; a name that moves is followed by the health check and
//! by new streams without a restart, while streams already relayed stay where they are; a
//! reload that names another host applies at once; a name server that dies leaves the last
//! address in use.

mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use harness::*;
use tether_gateway::config::{ReverseService, WhenNotReady};
use tether_gateway::metrics::Metrics;
use tether_lab::kit::Dnsmasq;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);

/// An echo server at `ip:port` that first says `banner`.
async fn echo_at(
    ip: &str,
    port: u16,
    banner: &str,
    stop: &CancellationToken,
) -> tether_health::tools::echo::Echo {
    tether_health::tools::echo::start(
        format!("{ip}:{port}").parse().expect("addr"),
        Some(banner.into()),
        stop.clone(),
    )
    .await
    .expect("echo")
}

/// A client of the cloud's service `addr`: which server answered (its banner), and the
/// connection, still open.
async fn reach(addr: SocketAddr) -> Result<(String, BufReader<TcpStream>), String> {
    let run = async {
        let s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut s = BufReader::new(s);
        let mut line = String::new();
        s.read_line(&mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if line.is_empty() {
            return Err("closed without a banner".to_string());
        }
        Ok((line.trim().to_string(), s))
    };
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// One line through an open client connection, echoed back.
async fn still_echoes(s: &mut BufReader<TcpStream>) {
    s.get_mut().write_all(b"still here\n").await.expect("write");
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_line(&mut line))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(line, "still here\n");
}

fn value(m: &Metrics, name: &str, service: &str) -> f64 {
    counter(m, name, &[("service", service)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_follows_its_name_without_a_restart() {
    let stop = CancellationToken::new();
    let _stop = CancelOnDrop(stop.clone());
    // Live servers at .6 and .7, all on one port; nothing listens at .8.
    let e6 = echo_at("127.0.0.6", 0, "e6", &stop).await.addr;
    let port = e6.port();
    let e7 = echo_at("127.0.0.7", port, "e7", &stop).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The name does not exist yet.
    let dns = Dnsmasq::start(dir.path(), "127.0.0.1", "");

    let certs = Certs::new();
    let mut cloud_cfg = single_node(cloud_config(&certs, "cloud1", WhenNotReady::Unbind, None));
    cloud_cfg.reverse.push(ReverseService {
        service: "svc-u".into(),
        listen: rebinding_port(),
        when_not_ready: WhenNotReady::Unbind,
        accept_wait: Duration::from_secs(1),
        allowed_exporters: ["onprem1".to_string()].into(),
    });
    let cloud = Cloud::start(cloud_cfg).await;
    let svc_a = cloud.svc_a();
    let mut cfg = onprem_config(&certs, "onprem1", cloud.handle.session_addr, e6, false);
    cfg.nameservers = vec![dns.addr];
    cfg.export[0].connect = format!("svc-a.test:{port}");
    cfg.export[0].resolve_interval = Duration::from_millis(100);
    // The same server without checks: up exactly while the name has an address.
    let mut unchecked = cfg.export[0].clone();
    unchecked.service = "svc-u".into();
    unchecked.health = None;
    cfg.export.push(unchecked);
    let onprem = Onprem::start(cfg).await;
    let m = onprem.handle.metrics().clone();
    let failures = |s: &str| value(&m, "tether_gateway_resolve_failures_total", s);
    let changes = |s: &str| value(&m, "tether_gateway_resolve_changes_total", s);
    let checks_failed = || {
        counter(
            &m,
            "tether_gateway_export_checks_total",
            &[("service", "svc-a"), ("result", "fail")],
        )
    };

    // Not resolvable: retried, counted, reported down; the gateway runs on.
    wait_for(T, "two failed lookups of the name", || {
        failures("svc-a") >= 2.0 && failures("svc-u") >= 2.0
    })
    .await;
    wait_for(T, "a failed check of svc-a", || checks_failed() >= 1.0).await;
    assert_eq!(value(&m, "tether_gateway_export_up", "svc-a"), 0.0);
    assert_eq!(value(&m, "tether_gateway_export_up", "svc-u"), 0.0);
    assert!(!cloud.handle.is_ready("svc-a") && !cloud.handle.is_ready("svc-u"));
    assert!(onprem.covered_one(), "sessions are up all along");

    // A dead address: resolved, checked there, still down.
    dns.answer("127.0.0.8 svc-a.test\n");
    wait_for(T, "the name resolved", || changes("svc-a") >= 1.0).await;
    let before = checks_failed();
    wait_for(T, "two failed checks at the dead address", || {
        checks_failed() >= before + 2.0
    })
    .await;
    assert!(!cloud.handle.is_ready("svc-a"));
    assert_eq!(value(&m, "tether_gateway_export_up", "svc-a"), 0.0);
    // Without checks, an address is enough to be reported up.
    wait_for(T, "svc-u up once it has an address", || {
        cloud.handle.is_ready("svc-u")
    })
    .await;

    // The live server: the check passes, and streams reach it.
    dns.answer("127.0.0.6 svc-a.test\n");
    wait_for(T, "svc-a ready at the live address", || {
        cloud.handle.is_ready("svc-a")
    })
    .await;
    let (first, mut held) = reach(svc_a).await.expect("through the gateway");
    assert_eq!(first, "e6");

    // The name moves: new streams and the check follow; the stream open stays on e6.
    let moved = changes("svc-a");
    dns.answer("127.0.0.7 svc-a.test\n");
    wait_for(T, "the move seen", || changes("svc-a") > moved).await;
    let (next, _s) = reach(svc_a).await.expect("through the gateway");
    assert_eq!(next, "e7", "a new stream goes to the new address");
    still_echoes(&mut held).await;
    // Besides that stream, two connects to e7: the check's.
    let accepted = || e7.stats.accepted.load(std::sync::atomic::Ordering::SeqCst);
    wait_for(T, "the check at the new address", || accepted() >= 3).await;

    // A reload names another host: looked up at once, new streams go there.
    dns.answer("127.0.0.7 svc-a.test\n127.0.0.6 svc-b.test\n");
    let mut renamed = (*onprem.handle.config()).clone();
    renamed.export[0].connect = format!("svc-b.test:{port}");
    let before = changes("svc-a");
    let plan = onprem
        .handle
        .reload(renamed)
        .expect("applied without a restart");
    assert_eq!(plan.services, ["export svc-a: connect"]);
    wait_for(T, "the new name resolved", || changes("svc-a") > before).await;
    let (renamed_to, _s) = reach(svc_a).await.expect("through the gateway");
    assert_eq!(renamed_to, "e6");

    // The name server dies: failures counted, the last address kept and served.
    drop(dns);
    let failed = failures("svc-a");
    // A lookup against a dead name server takes several seconds (the resolver's
    // timeout, for each query and transport).
    wait_for(Duration::from_secs(30), "a lookup failing", || {
        failures("svc-a") > failed
    })
    .await;
    assert!(cloud.handle.is_ready("svc-a"));
    let (again, _s) = reach(svc_a).await.expect("through the gateway");
    assert_eq!(again, "e6");
}
