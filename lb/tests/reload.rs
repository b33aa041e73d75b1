//! Reload without loss: listeners keep their sockets, open connections are never cut,
//! health carries over, and an invalid file is refused while the old config serves on.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

fn config(servers: &[(&str, SocketAddr)], extra_server: &str, retries: u32) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[defaults]
retries = {retries}

[[frontend]]
name = "fe"
bind = ["127.0.0.1:0"]
backend = "be"

[[backend]]
name = "be"
[backend.health]
interval = "100ms"
{}
"#,
        servers_toml(servers, extra_server)
    )
}

async fn reload(lb: &Lb) -> serde_json::Value {
    let r = lb
        .post("/api/reload", &[("x-tether-request", "1")], "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
async fn a_stream_and_a_connect_loop_lose_nothing_across_20_reloads() {
    let stop = CancellationToken::new();
    let a = echo_server("a", &stop).await;
    let b = echo_server("b", &stop).await;
    let c = echo_server("c", &stop).await;
    let lb = Lb::start_file(&config(&[("a", a.addr), ("b", b.addr)], "", 2)).await;
    lb.wait_ready().await;
    let addr = lb.addr;

    // A client streaming 16 MiB through the balancer and checking every byte it gets back.
    const TOTAL: usize = 16 << 20;
    let streaming = tokio::spawn(async move {
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            let mut sent = 0usize;
            let mut chunk = vec![0u8; 32 * 1024];
            while sent < TOTAL {
                for (i, b) in chunk.iter_mut().enumerate() {
                    *b = ((sent + i) % 251) as u8;
                }
                w.write_all(&chunk).await.unwrap();
                sent += chunk.len();
                tokio::task::yield_now().await;
            }
            w.shutdown().await.unwrap();
        });
        // Skip the banner line, then check the echo.
        let mut banner = [0u8; 2];
        r.read_exact(&mut banner).await.unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::time::timeout(T, r.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, ((got + i) % 251) as u8, "corrupt at byte {}", got + i);
            }
            got += n;
        }
        writer.await.unwrap();
        got
    });

    // A connect loop: every connection must succeed.
    let done = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let (d, m) = (done.clone(), made.clone());
    let looping = tokio::spawn(async move {
        let mut failures = Vec::new();
        for _ in 0..100_000 {
            if d.load(Ordering::Relaxed) {
                break;
            }
            match tokio::time::timeout(T, try_exchange(addr)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e),
                Err(_) => failures.push("timed out".into()),
            }
            m.fetch_add(1, Ordering::Relaxed);
        }
        failures
    });

    let variants = [
        config(&[("a", a.addr), ("b", b.addr)], "", 2),
        config(&[("a", a.addr), ("b", b.addr), ("c", c.addr)], "", 2),
        config(&[("a", a.addr), ("c", c.addr)], "weight = 2", 1),
        config(&[("b", b.addr), ("c", c.addr)], "", 3),
    ];
    for i in 0..20 {
        lb.write_config(&variants[i % variants.len()]);
        reload(&lb).await;
        // Let some connections through between reloads (a signal, not a sleep).
        let before = made.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + T;
        while made.load(Ordering::Relaxed) < before + 10 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "connect loop stalled"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    done.store(true, Ordering::Relaxed);
    let failures = looping.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed connects: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(made.load(Ordering::Relaxed) >= 200);
    let echoed = streaming.await.unwrap();
    println!(
        "across 20 reloads: {} bytes streamed and checked, {} connects, {} failed",
        echoed,
        made.load(Ordering::Relaxed),
        failures.len()
    );
    assert_eq!(echoed, TOTAL);
    let m = lb.metrics().await;
    assert_eq!(metric(&m, "tether_lb_reloads_total"), 20.0);
}

async fn try_exchange(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(b"x\n").await.map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"x\n") || got.len() < 4 {
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed after {:?}", String::from_utf8_lossy(&got)));
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// A balancer started from a file, ready, with one echo server `a` (stopped by `stop`);
/// returns it and the file's text.
async fn one_server(stop: &CancellationToken) -> (Lb, String) {
    let a = echo_server("a", stop).await;
    let good = config(&[("a", a.addr)], "", 2);
    let lb = Lb::start_file(&good).await;
    lb.wait_ready().await;
    (lb, good)
}

#[tokio::test]
async fn an_invalid_file_is_refused_and_the_running_config_serves_on() {
    let stop = CancellationToken::new();
    let (lb, good) = one_server(&stop).await;
    lb.write_config(&good.replace("name = \"a\"", "name = \"a\"\nweight = 0"));
    let r = lb
        .post("/api/reload", &[("x-tether-request", "1")], "")
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("lb.toml:19: backend[0].server[0].weight"),
        "{}",
        r.text()
    );
    assert_eq!(exchange(lb.addr).await, "a");
    let m = lb.metrics().await;
    assert_eq!(metric(&m, "tether_lb_reload_failures_total"), 1.0);
    assert_eq!(metric(&m, "tether_lb_reloads_total"), 0.0);
}

#[tokio::test]
async fn a_reload_whose_tls_check_cannot_start_is_refused() {
    let stop = CancellationToken::new();
    let (lb, good) = one_server(&stop).await;
    let missing = lb.dir.as_ref().unwrap().path.join("missing-ca.pem");
    lb.write_config(&good.replace(
        "interval = \"100ms\"",
        &format!(
            "interval = \"100ms\"\nkind = \"tls\"\nca = \"{}\"",
            missing.display()
        ),
    ));
    let r = lb
        .post("/api/reload", &[("x-tether-request", "1")], "")
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("backend[0].health.ca"), "{}", r.text());
    // The TCP check of the running configuration goes on: the server stays up and serves.
    let m = lb.metrics().await;
    let ok = "tether_lb_server_checks_total{backend=\"be\",result=\"ok\",server=\"a\"}";
    lb.wait_metric_at_least(ok, metric(&m, ok) + 2.0).await;
    lb.wait_health("a", "up").await;
    assert_eq!(exchange(lb.addr).await, "a");
    assert_eq!(metric(&lb.metrics().await, "tether_lb_reloads_total"), 0.0);
}

#[tokio::test]
async fn a_config_path_that_became_a_fifo_is_refused_without_freezing_anything() {
    let stop = CancellationToken::new();
    let (lb, _) = one_server(&stop).await;
    let path = lb.dir.as_ref().unwrap().path.join("lb.toml");
    std::fs::remove_file(&path).unwrap();
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // Opening a FIFO nobody writes to blocks: this reload used to never answer.
    let r = lb
        .post("/api/reload", &[("x-tether-request", "1")], "")
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("is not a regular file (a FIFO)"),
        "{}",
        r.text()
    );
    assert_eq!(lb.get("/healthz").await.status, 200);
    assert_eq!(exchange(lb.addr).await, "a");
}

#[tokio::test]
async fn a_changed_admin_listen_is_reported_as_needing_a_restart() {
    let stop = CancellationToken::new();
    let (lb, good) = one_server(&stop).await;
    let port = free_port("127.0.0.1");
    lb.write_config(&good.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    ));
    for _ in 0..2 {
        let report = reload(&lb).await;
        assert_eq!(
            report["needs_restart"],
            serde_json::json!([format!(
                "admin.listen changed from 127.0.0.1:0 to 127.0.0.1:{port}: needs a restart"
            )])
        );
    }
    // The admin API is still where it was.
    assert_eq!(lb.get("/healthz").await.status, 200);
    lb.write_config(&good);
    assert_eq!(reload(&lb).await["needs_restart"], serde_json::json!([]));
}

#[tokio::test]
async fn health_carries_over_and_removed_servers_finish_their_connections() {
    let stop = CancellationToken::new();
    let a = echo_server("a", &stop).await;
    let b = echo_server("b", &stop).await;
    let lb = Lb::start_file(&config(&[("a", a.addr), ("b", b.addr)], "", 2)).await;
    lb.wait_health("a", "up").await;
    lb.wait_health("b", "up").await;
    let before = lb.state().await;

    // An unrelated change: same servers, same objects, nothing flaps.
    lb.write_config(&config(&[("a", a.addr), ("b", b.addr)], "", 1));
    let report = reload(&lb).await;
    assert_eq!(report["servers_kept"], 2);
    assert_eq!(report["listeners_kept"], 1);
    assert_eq!(report["listeners_added"].as_array().unwrap().len(), 0);
    let after = lb.state().await;
    for i in 0..2 {
        let (x, y) = (
            &before["backends"][0]["servers"][i],
            &after["backends"][0]["servers"][i],
        );
        assert_eq!(x["last_change_unix"], y["last_change_unix"]);
        assert_eq!(y["health"], "up");
    }
    // A weight change makes a new server object, which keeps the health it had.
    lb.write_config(&config(&[("a", a.addr), ("b", b.addr)], "weight = 5", 1));
    reload(&lb).await;
    let state = lb.state().await;
    assert_eq!(state["backends"][0]["servers"][0]["health"], "up");
    assert_eq!(state["backends"][0]["servers"][0]["weight"], 5);
    assert_eq!(lb.get("/readyz").await.status, 200);

    // Open a connection to a, then remove a: the connection finishes normally.
    let mut open = loop {
        let mut s = TcpStream::connect(lb.addr).await.unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).await.unwrap();
        if &buf == b"a\n" {
            break s;
        }
    };
    lb.write_config(&config(&[("b", b.addr)], "", 1));
    let report = reload(&lb).await;
    assert_eq!(report["servers_removed"], serde_json::json!(["be/a"]));
    for _ in 0..5 {
        assert_eq!(exchange(lb.addr).await, "b");
    }
    open.write_all(b"after removal\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(T, open.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"after removal\n");
    // Its series are gone from /metrics.
    let m = lb.metrics().await;
    assert!(!m.contains("server=\"a\""), "{m}");
}
