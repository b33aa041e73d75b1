//! TLS passthrough routed by SNI, with real TLS on both ends: a rustls client and
//! `openssl s_client` reach the server their name routes to and verify its certificate.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tokio_util::sync::CancellationToken;

struct Setup {
    ca: TestCa,
    lb: Lb,
    _stop: CancellationToken,
}

async fn setup() -> Setup {
    let stop = CancellationToken::new();
    let ca = TestCa::new();
    let cloud1 = tls_echo(&ca, &["cloud1.gw.example.com"], "cloud1", &stop).await;
    let api = tls_echo(&ca, &["*.api.example.com"], "api", &stop).await;
    let default = tls_echo(&ca, &["www.example.com"], "default", &stop).await;
    let toml = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[frontend]]
name = "gateways"
bind = ["127.0.0.1:0"]
backend = "all"
inspect_timeout = "300ms"

[[frontend.route]]
sni = "cloud1.gw.example.com"
backend = "cloud1-only"

[[frontend.route]]
sni = "*.api.example.com"
backend = "api"

[[backend]]
name = "all"
[[backend.server]]
name = "default"
address = "{default}"

[[backend]]
name = "cloud1-only"
[[backend.server]]
name = "cloud1"
address = "{cloud1}"

[[backend]]
name = "api"
[[backend.server]]
name = "api"
address = "{api}"
"#
    );
    let lb = Lb::start(&toml).await;
    lb.wait_ready().await;
    Setup {
        ca,
        lb,
        _stop: stop,
    }
}

#[tokio::test]
async fn rustls_clients_reach_the_server_their_name_routes_to() {
    let s = setup().await;
    let r = |name: &'static str, sni: bool| tls_exchange(&s.ca, s.lb.addr, name, sni);
    assert_eq!(r("cloud1.gw.example.com", true).await.unwrap(), "cloud1");
    assert_eq!(r("x.api.example.com", true).await.unwrap(), "api");
    assert_eq!(r("Y.API.example.com", true).await.unwrap(), "api");
    // No route matches: the default backend.
    assert_eq!(r("www.example.com", true).await.unwrap(), "default");
    // No SNI at all: the default backend too.
    assert_eq!(r("www.example.com", false).await.unwrap(), "default");
    // One label only: a.b.api.example.com does not match *.api.example.com, so it lands
    // on the default server, whose certificate does not cover it: verification fails.
    let err = r("a.b.api.example.com", true).await.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    let m = s.lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "tether_lb_frontend_sni_routed_total{backend=\"api\",frontend=\"gateways\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn a_client_hello_written_one_byte_at_a_time_still_routes() {
    let s = setup().await;
    let addr = s.lb.addr;
    let config = s.ca.client_config(true);
    let banner = tokio::task::spawn_blocking(move || {
        let name = rustls_pki_types::ServerName::try_from("cloud1.gw.example.com").unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(T)).unwrap();
        for b in &hello {
            tcp.write_all(std::slice::from_ref(b)).unwrap();
            // Pace the bytes so they arrive as separate segments, not to wait for anything.
            std::thread::sleep(Duration::from_micros(300));
        }
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        tls.write_all(b"ping\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(b"ping\n") {
            let n = tls.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got)
            .lines()
            .next()
            .unwrap()
            .to_string()
    })
    .await
    .unwrap();
    assert_eq!(banner, "cloud1");
}

#[tokio::test]
async fn garbage_too_little_and_too_much_are_closed_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup().await;
    let closed = |mut c: tokio::net::TcpStream| async move {
        let mut rest = Vec::new();
        let r = tokio::time::timeout(T, c.read_to_end(&mut rest))
            .await
            .expect("left hanging");
        assert!(r.is_err() || rest.is_empty(), "got data: {rest:?}");
    };
    // Garbage: an HTTP request on a TLS port.
    let mut c = tokio::net::TcpStream::connect(s.lb.addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed(c).await;
    // Too little: half a record header, then silence until inspect_timeout.
    let mut c = tokio::net::TcpStream::connect(s.lb.addr).await.unwrap();
    c.write_all(&[0x16, 3]).await.unwrap();
    let started = tokio::time::Instant::now();
    closed(c).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Too much: a handshake that claims to be 16 MiB.
    let mut c = tokio::net::TcpStream::connect(s.lb.addr).await.unwrap();
    c.write_all(&[0x16, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    closed(c).await;
    let m = s.lb.metrics().await;
    for reason in ["not_tls", "timeout", "hello_too_large"] {
        let series = format!(
            "tether_lb_frontend_inspect_errors_total{{frontend=\"gateways\",reason=\"{reason}\"}}"
        );
        assert_eq!(metric(&m, &series), 1.0, "{reason}");
    }
    // And everyone else is still served.
    assert_eq!(
        tls_exchange(&s.ca, s.lb.addr, "cloud1.gw.example.com", true)
            .await
            .unwrap(),
        "cloud1"
    );
}

#[tokio::test]
async fn openssl_s_client_reaches_the_routed_server_and_verifies_it() {
    let openssl = require("openssl", "openssl");
    let s = setup().await;
    let dir = TempDir::new("sni");
    let ca = dir.path.join("ca.pem");
    std::fs::write(&ca, &s.ca.pem).unwrap();
    for (name, want) in [
        ("cloud1.gw.example.com", "cloud1"),
        ("z.api.example.com", "api"),
    ] {
        let addr = s.lb.addr;
        let openssl = openssl.clone();
        let ca = ca.clone();
        let out = tokio::task::spawn_blocking(move || {
            let child = Command::new(&openssl)
                .args([
                    "s_client",
                    "-connect",
                    &addr.to_string(),
                    "-servername",
                    name,
                ])
                .arg("-CAfile")
                .arg(&ca)
                .args(["-verify_return_error", "-verify_hostname", name])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut child = Child(child);
            let mut stdin = child.0.stdin.take().unwrap();
            stdin.write_all(b"ping-from-openssl\n").unwrap();
            // Read until the echo comes back (bounded by the line count), keeping stdin open
            // so s_client does not close before the answer.
            let stdout = child.0.stdout.take().unwrap();
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().take(400) {
                let line = line.unwrap();
                let done = line.contains("ping-from-openssl");
                lines.push(line);
                if done {
                    break;
                }
            }
            drop(stdin);
            lines
        })
        .await
        .unwrap();
        let text = out.join("\n");
        assert!(
            text.contains("Verify return code: 0 (ok)"),
            "{name}: {text}"
        );
        assert!(
            out.iter().any(|l| l == want),
            "{name} answered by the wrong server: {text}"
        );
        assert!(text.contains("ping-from-openssl"), "{text}");
    }
}
