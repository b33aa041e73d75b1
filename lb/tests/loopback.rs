//! The balancer in-process on loopback, in front of real echo servers.

mod common;

use std::time::Duration;

use common::*;
use tether_health::tools::echo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn round_robin_over_three_echo_servers() {
    let stop = CancellationToken::new();
    let mut servers = Vec::new();
    for n in ["a", "b", "c"] {
        servers.push((n, echo_server(n, &stop).await.addr));
    }
    let lb = Lb::start(&base(
        "",
        "balance = \"roundrobin\"",
        &servers_toml(&servers, ""),
    ))
    .await;
    lb.wait_ready().await;
    let mut seen = Vec::new();
    for _ in 0..30 {
        seen.push(exchange(lb.addr).await);
    }
    for n in ["a", "b", "c"] {
        assert_eq!(seen.iter().filter(|s| *s == n).count(), 10, "{seen:?}");
    }
    // Consecutive connections never hit the same server twice in a row with equal weights.
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "{seen:?}");
    stop.cancel();
}

#[tokio::test]
async fn killing_a_server_during_200_connections_loses_none() {
    let stop = CancellationToken::new();
    let victim_stop = CancellationToken::new();
    let a = echo_server("a", &stop).await;
    let b = echo_server("b", &victim_stop).await;
    let c = echo_server("c", &stop).await;
    let servers = [("a", a.addr), ("b", b.addr), ("c", c.addr)];
    let lb = Lb::start(&base(
        "",
        "[backend.health]\ninterval = \"100ms\"\nrise = 2\nfall = 2",
        &servers_toml(&servers, ""),
    ))
    .await;
    lb.wait_ready().await;
    let mut seen = Vec::new();
    for i in 0..200 {
        if i == 50 {
            victim_stop.cancel();
        }
        // `exchange` panics on any failed or short connection.
        seen.push(exchange(lb.addr).await);
    }
    assert!(
        seen[..50].iter().any(|s| s == "b"),
        "b served before it was killed"
    );
    assert!(
        seen[60..].iter().all(|s| s != "b"),
        "b served after it was killed"
    );
    let m = lb.get("/metrics").await.text();
    // The dead server's refused connects were retried elsewhere, invisible to clients.
    assert_eq!(
        metric(&m, "tether_lb_backend_no_server_total{backend=\"be\"}"),
        0.0
    );
    stop.cancel();
}

#[tokio::test]
async fn a_server_goes_down_after_fall_and_up_after_rise() {
    let stop = CancellationToken::new();
    let a = echo_server("a", &stop).await;
    let b_stop = CancellationToken::new();
    let b = echo_server("b", &b_stop).await;
    let servers = [("a", a.addr), ("b", b.addr)];
    let lb = Lb::start(&base(
        "",
        "[backend.health]\ninterval = \"50ms\"\ntimeout = \"200ms\"\nrise = 3\nfall = 2",
        &servers_toml(&servers, ""),
    ))
    .await;
    lb.wait_health("b", "up").await;
    b_stop.cancel();
    lb.wait_health("b", "down").await;
    let m = lb.get("/metrics").await.text();
    let fails = metric(
        &m,
        "tether_lb_server_checks_total{backend=\"be\",result=\"fail\",server=\"b\"}",
    );
    assert_eq!(fails, 2.0, "down after exactly fall=2 failed checks");
    // While down, every connection goes to a.
    for _ in 0..10 {
        assert_eq!(exchange(lb.addr).await, "a");
    }
    // Bring b back on the same port: up again after rise=3 passing checks.
    let b2 = echo::start(b.addr, Some("b".into()), stop.clone())
        .await
        .unwrap();
    lb.wait_health("b", "up").await;
    let m = lb.get("/metrics").await.text();
    let oks = metric(
        &m,
        "tether_lb_server_checks_total{backend=\"be\",result=\"ok\",server=\"b\"}",
    );
    assert!(oks >= 4.0, "1 before the failure and 3 to rise: {oks}");
    assert!(b2.stats.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 3);
    stop.cancel();
}

/// A server that reads each connection to its end, answers `reply(what it read)` and
/// closes; returns its address.
async fn read_all_then_reply(reply: fn(&[u8]) -> String) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                s.write_all(reply(&got).as_bytes()).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
    addr
}

/// Connects to `addr`, sends `data`, half-closes and reads the reply to its end.
async fn send_all_then_read_reply(addr: std::net::SocketAddr, data: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(data).await.unwrap();
    c.shutdown().await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(T, c.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    reply
}

#[tokio::test]
async fn half_close_propagates_both_ways() {
    // A server that reads until EOF, then answers, then closes: the client's half-close
    // must reach it while the other direction stays open.
    let saddr = read_all_then_reply(|got| format!("got {} bytes", got.len())).await;
    let lb = Lb::start(&base(
        "",
        "[backend.health]\nkind = \"none\"",
        &servers_toml(&[("s", saddr)], ""),
    ))
    .await;
    let reply = send_all_then_read_reply(lb.addr, &[7u8; 100_000]).await;
    assert_eq!(reply, "got 100000 bytes");

    // The other way: the server closes its side first, the client keeps sending.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let saddr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"bye").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let _ = tx.send(got);
    });
    let lb2 = Lb::start(&base(
        "",
        "[backend.health]\nkind = \"none\"",
        &servers_toml(&[("s", saddr)], ""),
    ))
    .await;
    let mut c = TcpStream::connect(lb2.addr).await.unwrap();
    let mut first = Vec::new();
    tokio::time::timeout(T, c.read_to_end(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, b"bye");
    c.write_all(b"still here").await.unwrap();
    c.shutdown().await.unwrap();
    let got = tokio::time::timeout(T, rx).await.unwrap().unwrap();
    assert_eq!(got, b"still here");
    drop(lb);
}

#[tokio::test]
async fn first_bytes_sent_with_a_fin_reach_the_server_whole() {
    // Sizes around the balancer's 16 KiB reads, each sent with the client's FIN right
    // behind (often before the server connection is up), must arrive whole and the FIN
    // after them.
    let saddr = read_all_then_reply(|got| {
        let sum: u64 = got.iter().map(|b| u64::from(*b)).sum();
        format!("{} {sum}", got.len())
    })
    .await;
    let lb = Lb::start(&base(
        "",
        "[backend.health]\nkind = \"none\"",
        &servers_toml(&[("s", saddr)], ""),
    ))
    .await;
    for len in [1usize, 98, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 40_000] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let sum: u64 = data.iter().map(|b| u64::from(*b)).sum();
        let reply = send_all_then_read_reply(lb.addr, &data).await;
        assert_eq!(reply, format!("{len} {sum}"));
    }
}

#[tokio::test]
async fn maxconn_queues_and_times_out() {
    let stop = CancellationToken::new();
    let a = echo_server("a", &stop).await;
    let lb = Lb::start(&base(
        "",
        "queue_timeout = \"300ms\"\n[backend.health]\nkind = \"none\"",
        &servers_toml(&[("a", a.addr)], "maxconn = 1\nmaxqueue = 1"),
    ))
    .await;
    // The first client holds the only slot.
    let mut first = TcpStream::connect(lb.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = first.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"a\n");
    // The second waits in the queue and is served as soon as the first leaves.
    let second = tokio::spawn(exchange(lb.addr));
    lb.wait_metric(
        "tether_lb_server_queue_length{backend=\"be\",server=\"a\"}",
        1.0,
    )
    .await;
    drop(first);
    assert_eq!(tokio::time::timeout(T, second).await.unwrap().unwrap(), "a");
    // Now hold the slot and let a queued client time out: it is closed, not left hanging.
    let mut holder = TcpStream::connect(lb.addr).await.unwrap();
    let _ = holder.read(&mut buf).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut late = TcpStream::connect(lb.addr).await.unwrap();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(T, late.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(
        r.is_err() || rest.is_empty(),
        "queued client got data: {rest:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let m = lb.get("/metrics").await.text();
    assert_eq!(
        metric(
            &m,
            "tether_lb_server_queue_timeouts_total{backend=\"be\",server=\"a\"}"
        ),
        1.0
    );
    drop(holder);
    stop.cancel();
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_open_connections_finish() {
    let stop = CancellationToken::new();
    let a = echo_server("a", &stop).await;
    let mut lb = Lb::start(&base(
        "",
        "[backend.health]\nkind = \"none\"",
        &servers_toml(&[("a", a.addr)], ""),
    ))
    .await;
    let mut open = TcpStream::connect(lb.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = open.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"a\n");
    lb.stop.cancel();
    // New connections are refused once the listener is gone.
    let deadline = tokio::time::Instant::now() + T;
    while TcpStream::connect(lb.addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lb.get("/readyz").await.status, 503);
    // The open one still works.
    open.write_all(b"during drain\n").await.unwrap();
    let n = tokio::time::timeout(T, open.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"during drain\n");
    let running = lb.running.take().unwrap();
    let waiter = tokio::spawn(running.wait());
    assert!(!waiter.is_finished());
    drop(open);
    tokio::time::timeout(T, waiter).await.unwrap().unwrap();
    stop.cancel();
}

#[tokio::test]
async fn metrics_count_what_the_test_did() {
    let stop = CancellationToken::new();
    let a = echo_server("a", &stop).await;
    let b = echo_server("b", &stop).await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let servers = [("a", a.addr), ("b", b.addr), ("dead", dead_addr)];
    // No health checks: the dead server stays in rotation, so its connects fail and retry.
    let lb = Lb::start(&base(
        "",
        "[backend.health]\nkind = \"none\"",
        &servers_toml(&servers, ""),
    ))
    .await;
    for _ in 0..9 {
        exchange(lb.addr).await;
    }
    // Connections close asynchronously in the balancer; wait for the last to be counted.
    lb.wait_metric(
        "tether_lb_frontend_active_connections{frontend=\"fe\"}",
        0.0,
    )
    .await;
    let m = lb.get("/metrics").await.text();
    assert_eq!(
        metric(&m, "tether_lb_frontend_connections_total{frontend=\"fe\"}"),
        9.0
    );
    let to_a = metric(
        &m,
        "tether_lb_server_connections_total{backend=\"be\",server=\"a\"}",
    );
    let to_b = metric(
        &m,
        "tether_lb_server_connections_total{backend=\"be\",server=\"b\"}",
    );
    assert_eq!(to_a + to_b, 9.0);
    let failures = metric(
        &m,
        "tether_lb_server_connect_failures_total{backend=\"be\",server=\"dead\"}",
    );
    assert_eq!(
        failures, 3.0,
        "round robin sends every third pick to the dead server"
    );
    assert_eq!(
        metric(&m, "tether_lb_backend_retries_total{backend=\"be\"}"),
        3.0
    );
    // "hello\n" each way per connection, plus the 2-byte banner from the server.
    assert_eq!(
        metric(&m, "tether_lb_frontend_bytes_in_total{frontend=\"fe\"}"),
        9.0 * 6.0
    );
    assert_eq!(
        metric(&m, "tether_lb_frontend_bytes_out_total{frontend=\"fe\"}"),
        9.0 * 8.0
    );
    assert_eq!(
        metric(
            &m,
            "tether_lb_connections_ended_total{end=\"done\",frontend=\"fe\"}"
        ),
        9.0
    );
    stop.cancel();
}

#[tokio::test]
async fn one_frontend_listens_on_ipv4_and_ipv6_and_binds_an_address_it_does_not_hold() {
    let stop = CancellationToken::new();
    let a = echo_server("a", &stop).await;
    // 203.0.113.77 is on no interface here: IP_FREEBIND lets the bind succeed anyway, as a
    // VRRP backup pre-binds the VIP. No traffic is sent to it.
    let toml = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[frontend]]
name = "fe"
bind = ["127.0.0.1:0", "[::1]:0", "203.0.113.77:0"]
backend = "be"
[[backend]]
name = "be"
[backend.health]
kind = "none"
{}"#,
        servers_toml(&[("a", a.addr)], "")
    );
    let lb = Lb::start(&toml).await;
    let bound = lb.running.as_ref().unwrap().frontend_addrs("fe");
    assert_eq!(bound.len(), 3, "{bound:?}");
    assert!(bound[1].is_ipv6() && bound[1].port() != 0);
    assert_eq!(bound[2].ip().to_string(), "203.0.113.77");
    assert_eq!(exchange(bound[0]).await, "a");
    assert_eq!(exchange(bound[1]).await, "a");
}

#[tokio::test]
async fn failed_connects_take_a_server_out_before_its_next_check() {
    let stop = CancellationToken::new();
    let a = echo_server("a", &stop).await;
    let b_stop = CancellationToken::new();
    let b = echo_server("b", &b_stop).await;
    // Checks every 60 s: only the data path can notice b's death within this test.
    let lb = Lb::start(&base(
        "",
        "[backend.health]\ninterval = \"60s\"\nrise = 2\nfall = 2",
        &servers_toml(&[("a", a.addr), ("b", b.addr)], ""),
    ))
    .await;
    lb.wait_health("b", "up").await;
    b_stop.cancel();
    wait_refused(b.addr).await;
    for _ in 0..10 {
        assert_eq!(exchange(lb.addr).await, "a");
    }
    lb.wait_health("b", "down").await;
    let m = lb.metrics().await;
    // Exactly `fall` connects were wasted on it; after that it got no more.
    assert_eq!(
        metric(
            &m,
            "tether_lb_server_connect_failures_total{backend=\"be\",server=\"b\"}"
        ),
        2.0
    );
}

async fn wait_refused(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + T;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} still accepts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
