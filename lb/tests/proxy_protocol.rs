//! PROXY protocol: accepted strictly from a balancer in front, sent to servers behind,
//! and interoperating with HAProxy (from Debian) in both positions.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use tether_lb::config::ProxyVersion;
use tether_lb::inspect::{self, Inspect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// What a [`proxy_reading_server`] saw.
#[derive(Clone, Default)]
struct Seen {
    /// Connections with a `LOCAL` header: the balancer's health checks.
    locals: Arc<AtomicU64>,
    /// Connections with a client's address in their header: clients relayed to it.
    clients: Arc<AtomicU64>,
}

/// A server behind a PROXY-sending hop: reads the header strictly, answers
/// `src=<client>\n`, then echoes. Counts `LOCAL` headers (health checks) and the others.
async fn proxy_reading_server(stop: &CancellationToken) -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let l2 = seen.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tokio::select! {
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                _ = stop.cancelled() => return,
            };
            let seen = l2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                let (addrs, used) = loop {
                    match inspect::proxy_header(&buf) {
                        Inspect::Done { value, consumed } => break (value, consumed),
                        Inspect::Invalid(_) => return,
                        Inspect::NeedMore => {}
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let Some(src) = addrs.source else {
                    seen.locals.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                seen.clients.fetch_add(1, Ordering::Relaxed);
                if s.write_all(format!("src={src}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                if s.write_all(&buf[used..]).await.is_err() {
                    return;
                }
                loop {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&chunk[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Connects from `source_ip` (another loopback address), sends `preamble` and a line, and
/// returns what the far server said the client was.
async fn ask_source(
    target: SocketAddr,
    source_ip: &str,
    preamble: &[u8],
) -> Result<String, String> {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{source_ip}:0").parse().unwrap())
        .unwrap();
    let mut s = socket.connect(target).await.map_err(|e| e.to_string())?;
    s.write_all(preamble).await.map_err(|e| e.to_string())?;
    s.write_all(b"hi\n").await.map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    while !got.ends_with(b"hi\n") {
        let n = tokio::time::timeout(T, s.read(&mut chunk))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed after {:?}", String::from_utf8_lossy(&got)));
        }
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_string();
    Ok(text
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("src=")
        .to_string())
}

fn proxied_lb(server: SocketAddr, send: &str, accept: bool) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[frontend]]
name = "fe"
bind = ["127.0.0.1:0"]
backend = "be"
accept_proxy = {accept}
inspect_timeout = "500ms"
[[backend]]
name = "be"
send_proxy = "{send}"
[backend.health]
interval = "100ms"
[[backend.server]]
name = "s"
address = "{server}"
"#
    )
}

#[tokio::test]
async fn the_clients_address_travels_through_accept_and_send() {
    let stop = CancellationToken::new();
    let (server, behind) = proxy_reading_server(&stop).await;
    let lb = Lb::start(&proxied_lb(server, "v1", true)).await;
    lb.wait_ready().await;
    // A balancer in front says the client is 203.0.113.9:4242 (v2 binary header).
    let claimed: SocketAddr = "203.0.113.9:4242".parse().unwrap();
    let header = inspect::encode_proxy_header(ProxyVersion::V2, claimed, lb.addr);
    assert_eq!(
        ask_source(lb.addr, "127.0.0.1", &header).await.unwrap(),
        "203.0.113.9:4242"
    );
    // The same in v1 text, and an IPv6 client.
    let claimed6: SocketAddr = "[2001:db8::9]:4343".parse().unwrap();
    let header = inspect::encode_proxy_header(
        ProxyVersion::V1,
        claimed6,
        "[2001:db8::1]:443".parse().unwrap(),
    );
    assert_eq!(
        ask_source(lb.addr, "127.0.0.1", &header).await.unwrap(),
        "[2001:db8::9]:4343"
    );
    // LOCAL (a health check of the balancer in front): the connection's own address.
    let local = inspect::encode_local_header(ProxyVersion::V2);
    let seen = ask_source(lb.addr, "127.0.0.4", &local).await.unwrap();
    assert!(seen.starts_with("127.0.0.4:"), "{seen}");
    // The backend's health checks sent LOCAL headers too.
    assert!(behind.locals.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn a_plain_frontend_sends_the_header_then_the_first_bytes() {
    // No PROXY header from the client: the balancer writes its own, then what the client
    // had sent by then (often the whole request, taken before the server connect).
    let stop = CancellationToken::new();
    let (server, _) = proxy_reading_server(&stop).await;
    for version in ["v1", "v2"] {
        let lb = Lb::start(&proxied_lb(server, version, false)).await;
        lb.wait_ready().await;
        for _ in 0..20 {
            let seen = ask_source(lb.addr, "127.0.0.5", b"").await.unwrap();
            assert!(seen.starts_with("127.0.0.5:"), "{version}: {seen}");
        }
    }
    stop.cancel();
}

#[tokio::test]
async fn a_bad_or_missing_header_closes_only_that_connection() {
    let stop = CancellationToken::new();
    let (server, _) = proxy_reading_server(&stop).await;
    let lb = Lb::start(&proxied_lb(server, "v2", true)).await;
    lb.wait_ready().await;
    // No header at all: the client's own bytes are not a header.
    assert!(ask_source(lb.addr, "127.0.0.1", b"").await.is_err());
    // A malformed one.
    assert!(
        ask_source(
            lb.addr,
            "127.0.0.1",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"
        )
        .await
        .is_err()
    );
    // Silence: closed after inspect_timeout, not left hanging.
    let mut silent = TcpStream::connect(lb.addr).await.unwrap();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(T, silent.read_to_end(&mut rest))
        .await
        .expect("left hanging");
    assert!(r.is_err() || rest.is_empty());
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "tether_lb_frontend_inspect_errors_total{frontend=\"fe\",reason=\"bad_proxy_header\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "tether_lb_frontend_inspect_errors_total{frontend=\"fe\",reason=\"timeout\"}"
        ),
        1.0
    );
    // Everyone else is still served.
    let header = inspect::encode_proxy_header(
        ProxyVersion::V1,
        "198.51.100.1:1000".parse().unwrap(),
        lb.addr,
    );
    assert_eq!(
        ask_source(lb.addr, "127.0.0.1", &header).await.unwrap(),
        "198.51.100.1:1000"
    );
}

/// How a check's connection ends after its PROXY header.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// Closes its sending side (FIN) and waits for the balancer to close.
    Close,
    /// Resets (`SO_LINGER` 0), as HAProxy's checks do.
    Reset,
}

/// Connects to `target`, sends `bytes`, then closes or resets, as a balancer's check does.
async fn check(target: SocketAddr, bytes: &[u8], then: Then) {
    let mut c = TcpStream::connect(target).await.unwrap();
    c.write_all(bytes).await.unwrap();
    match then {
        Then::Close => {
            c.shutdown().await.unwrap();
            let mut rest = Vec::new();
            // Closed by the balancer (or reset, after an error): not left hanging.
            let r = tokio::time::timeout(T, c.read_to_end(&mut rest))
                .await
                .expect("left hanging");
            assert!(
                r.is_ok()
                    || r.as_ref()
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
                "{r:?}"
            );
            assert!(rest.is_empty(), "answered: {rest:?}");
        }
        Then::Reset => {
            socket2::SockRef::from(&c)
                .set_linger(Some(std::time::Duration::ZERO))
                .unwrap();
        }
    }
}

/// The checks of a balancer in front: each PROXY header then a close or a reset.
fn checks(lb: SocketAddr) -> Vec<(&'static str, Vec<u8>, Then)> {
    let client: SocketAddr = "198.51.100.1:1000".parse().unwrap();
    vec![
        (
            "v2 LOCAL",
            inspect::encode_local_header(ProxyVersion::V2),
            Then::Close,
        ),
        (
            "v1 TCP4",
            inspect::encode_proxy_header(ProxyVersion::V1, client, lb),
            Then::Reset,
        ),
        (
            "v2 PROXY",
            inspect::encode_proxy_header(ProxyVersion::V2, client, lb),
            Then::Reset,
        ),
        (
            "v1 UNKNOWN",
            inspect::encode_local_header(ProxyVersion::V1),
            Then::Close,
        ),
    ]
}

/// Asserts that the `n` checks sent to `lb` ended as `proxy_check` and nothing else, and
/// that `server` never saw a client.
async fn only_checks(lb: &Lb, seen: &Seen, n: f64) {
    lb.wait_metric(
        "tether_lb_connections_ended_total{end=\"proxy_check\",frontend=\"fe\"}",
        n,
    )
    .await;
    let m = lb.metrics().await;
    for series in [
        "tether_lb_server_connections_total{backend=\"be\",server=\"s\"}",
        "tether_lb_connections_ended_total{end=\"client_error\",frontend=\"fe\"}",
        "tether_lb_connections_ended_total{end=\"client_gone\",frontend=\"fe\"}",
        "tether_lb_connections_ended_total{end=\"inspect_failed\",frontend=\"fe\"}",
    ] {
        assert_eq!(metric(&m, series), 0.0, "{series}\n{m}");
    }
    assert_eq!(
        seen.clients.load(Ordering::Relaxed),
        0,
        "the server saw a client"
    );
}

#[tokio::test]
async fn a_header_then_a_close_or_reset_is_a_check_and_opens_no_server_connection() {
    let stop = CancellationToken::new();
    let (server, seen) = proxy_reading_server(&stop).await;
    let lb = Lb::start(&proxied_lb(server, "v2", true)).await;
    lb.wait_ready().await;
    // There from the start, so that a rate() over them is 0 rather than no data.
    let m = lb.metrics().await;
    for series in [
        "tether_lb_connections_ended_total{end=\"proxy_check\",frontend=\"fe\"}",
        "tether_lb_frontend_inspect_errors_total{frontend=\"fe\",reason=\"bad_proxy_header\"}",
    ] {
        assert_eq!(metric(&m, series), 0.0, "{series}");
    }
    let all = checks(lb.addr);
    for (what, header, then) in &all {
        eprintln!("{what}, then {then:?}");
        check(lb.addr, header, *then).await;
    }
    only_checks(&lb, &seen, all.len() as f64).await;
    // A client that sends its request after the header is still served.
    let header = inspect::encode_proxy_header(
        ProxyVersion::V1,
        "198.51.100.1:1000".parse().unwrap(),
        lb.addr,
    );
    assert_eq!(
        ask_source(lb.addr, "127.0.0.1", &header).await.unwrap(),
        "198.51.100.1:1000"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_check_of_a_frontend_that_routes_by_name_is_a_check_too() {
    // With SNI routes the balancer waits for a ClientHello after the header: a close or a
    // reset there, with nothing after the header, is a check as well; with part of a hello
    // read, a client that gave up.
    let stop = CancellationToken::new();
    let (server, seen) = proxy_reading_server(&stop).await;
    let toml = proxied_lb(server, "v2", true).replace(
        "[[backend]]",
        "[[frontend.route]]\nsni = \"a.example.com\"\nbackend = \"be\"\n[[backend]]",
    );
    let lb = Lb::start(&toml).await;
    lb.wait_ready().await;
    let m = lb.metrics().await;
    for series in [
        "tether_lb_frontend_sni_routed_total{backend=\"be\",frontend=\"fe\"}",
        "tether_lb_frontend_inspect_errors_total{frontend=\"fe\",reason=\"not_tls\"}",
    ] {
        assert_eq!(metric(&m, series), 0.0, "{series}");
    }
    let all = checks(lb.addr);
    for (what, header, then) in &all {
        eprintln!("{what}, then {then:?}");
        check(lb.addr, header, *then).await;
    }
    only_checks(&lb, &seen, all.len() as f64).await;
    let mut partial = inspect::encode_local_header(ProxyVersion::V2);
    partial.extend_from_slice(&[0x16, 3, 1]);
    check(lb.addr, &partial, Then::Close).await;
    lb.wait_metric(
        "tether_lb_frontend_inspect_errors_total{frontend=\"fe\",reason=\"closed\"}",
        1.0,
    )
    .await;
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "tether_lb_connections_ended_total{end=\"proxy_check\",frontend=\"fe\"}"
        ),
        all.len() as f64
    );
    stop.cancel();
}

#[tokio::test]
async fn a_reset_that_comes_after_the_server_connection_still_counts_as_a_check() {
    // When the reset arrives only after the balancer has asked the socket, the server
    // connection is open already. Nothing moved either way, so it is still a check, not a
    // client error. The server here says nothing and takes no health checks, so the test
    // knows when the balancer connected for the client.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let toml = proxied_lb(server, "v2", true)
        .replace("send_proxy = \"v2\"\n", "")
        .replace("interval = \"100ms\"", "kind = \"none\"");
    let lb = Lb::start(&toml).await;
    let mut c = TcpStream::connect(lb.addr).await.unwrap();
    c.write_all(&inspect::encode_local_header(ProxyVersion::V2))
        .await
        .unwrap();
    let (mut s, _) = tokio::time::timeout(T, listener.accept())
        .await
        .expect("the balancer did not connect for the client")
        .unwrap();
    socket2::SockRef::from(&c)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(c);
    // The balancer closes the server's side once it has counted the connection.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut rest))
        .await
        .expect("the server's side left open");
    assert!(rest.is_empty(), "{rest:?}");
    let m = lb.metrics().await;
    for (end, want) in [("proxy_check", 1.0), ("client_error", 0.0)] {
        assert_eq!(
            metric(
                &m,
                &format!("tether_lb_connections_ended_total{{end=\"{end}\",frontend=\"fe\"}}")
            ),
            want,
            "{end}\n{m}"
        );
    }
}

fn haproxy_config(bind: SocketAddr, accept_proxy: bool, server: SocketAddr, send: &str) -> String {
    format!(
        "global\n  maxconn 100\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend f\n  bind {bind}{}\n  default_backend b\n\
         backend b\n  server s {server} {send}\n",
        if accept_proxy { " accept-proxy" } else { "" }
    )
}

async fn run_haproxy(dir: &TempDir, config: &str, bind: SocketAddr) -> Child {
    let haproxy = require("haproxy", "haproxy");
    let path = dir.path.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let check = std::process::Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Child(
        std::process::Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(bind).await;
    child
}

#[tokio::test]
async fn haproxy_in_front_sends_proxy_v2_and_the_server_sees_the_client() {
    let stop = CancellationToken::new();
    let (server, _) = proxy_reading_server(&stop).await;
    let lb = Lb::start(&proxied_lb(server, "v1", true)).await;
    lb.wait_ready().await;
    let dir = TempDir::new("haproxy-front");
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let _haproxy = run_haproxy(
        &dir,
        &haproxy_config(bind, false, lb.addr, "send-proxy-v2"),
        bind,
    )
    .await;
    // client 127.0.0.2 -> HAProxy -(PROXY v2)-> tether lb -(PROXY v1)-> server
    let seen = ask_source(bind, "127.0.0.2", b"").await.unwrap();
    assert!(seen.starts_with("127.0.0.2:"), "{seen}");
}

#[tokio::test]
async fn haproxy_behind_accepts_our_proxy_v2_and_the_server_sees_the_client() {
    let stop = CancellationToken::new();
    let (server, _) = proxy_reading_server(&stop).await;
    let dir = TempDir::new("haproxy-back");
    let hbind: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let _haproxy = run_haproxy(
        &dir,
        &haproxy_config(hbind, true, server, "send-proxy"),
        hbind,
    )
    .await;
    // Health checks of HAProxy's accept-proxy port must carry a header too; kind = "tcp"
    // only connects, so it is accepted either way.
    let lb = Lb::start(&proxied_lb(hbind, "v2", false)).await;
    lb.wait_ready().await;
    // client 127.0.0.3 -> tether lb -(PROXY v2)-> HAProxy accept-proxy -(PROXY v1)-> server
    let seen = ask_source(lb.addr, "127.0.0.3", b"").await.unwrap();
    assert!(seen.starts_with("127.0.0.3:"), "{seen}");
}

#[tokio::test]
async fn haproxy_health_checks_with_a_proxy_header_count_as_checks_and_reach_no_server() {
    // HAProxy checks a send-proxy-v2 server with a PROXY header (LOCAL) and then a reset:
    // the checks of the issue that showed up as client_error.
    let stop = CancellationToken::new();
    let (server, seen) = proxy_reading_server(&stop).await;
    let lb = Lb::start(&proxied_lb(server, "v2", true)).await;
    lb.wait_ready().await;
    let dir = TempDir::new("haproxy-checks");
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let _haproxy = run_haproxy(
        &dir,
        &haproxy_config(bind, false, lb.addr, "send-proxy-v2 check inter 20ms"),
        bind,
    )
    .await;
    let series =
        |end: &str| format!("tether_lb_connections_ended_total{{end=\"{end}\",frontend=\"fe\"}}");
    lb.wait_metric_at_least(&series("proxy_check"), 100.0).await;
    let m = lb.metrics().await;
    for end in ["client_error", "client_gone", "inspect_failed", "done"] {
        assert_eq!(metric(&m, &series(end)), 0.0, "{end}\n{m}");
    }
    assert_eq!(
        metric(
            &m,
            "tether_lb_server_connections_total{backend=\"be\",server=\"s\"}"
        ),
        0.0,
        "{m}"
    );
    assert_eq!(
        seen.clients.load(Ordering::Relaxed),
        0,
        "the server saw a client"
    );
}
