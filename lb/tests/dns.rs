//! Servers that follow DNS: a real name server (dnsmasq from Debian) on loopback answers for
//! a host name; when its answer changes, servers come and go without a reload, and when it
//! stops answering, the last good answer is kept and the failures counted.

mod common;

use std::time::Duration;

use common::*;
use tether_lab::kit::Dnsmasq;
use tokio_util::sync::CancellationToken;

/// Waits (bounded) until the backend's servers are exactly `want` (name and address).
async fn wait_servers(lb: &Lb, want: &[(&str, &str)]) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let state = lb.state().await;
        let now: Vec<(String, String)> = state["backends"][0]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    s["resolved"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want_owned: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        if now == want_owned {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "servers {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn servers_follow_the_dns_answer_without_a_reload() {
    let stop = CancellationToken::new();
    // Two echo servers on the same port at two loopback addresses.
    let e2 = tether_health::tools::echo::start(
        "127.0.0.2:0".parse().unwrap(),
        Some("e2".into()),
        stop.clone(),
    )
    .await
    .unwrap();
    let port = e2.addr.port();
    tether_health::tools::echo::start(
        format!("127.0.0.3:{port}").parse().unwrap(),
        Some("e3".into()),
        stop.clone(),
    )
    .await
    .unwrap();
    let dir = TempDir::new("dns");
    let dns = Dnsmasq::start(&dir.path, "127.0.0.1", "127.0.0.2 svc.test\n");
    let dns_addr = dns.addr;
    let lb = Lb::start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[resolver]
nameservers = ["{dns_addr}"]
[[frontend]]
name = "fe"
bind = ["127.0.0.1:0"]
backend = "be"
[[backend]]
name = "be"
resolve_interval = "100ms"
[backend.health]
kind = "none"
[[backend.server]]
name = "web"
address = "svc.test:{port}"
"#
    ))
    .await;
    let a2 = format!("127.0.0.2:{port}");
    let a3 = format!("127.0.0.3:{port}");
    wait_servers(&lb, &[("web", &a2)]).await;
    assert_eq!(exchange(lb.addr).await, "e2");

    // A second address appears: two servers, named by address.
    dns.answer("127.0.0.2 svc.test\n127.0.0.3 svc.test\n");
    wait_servers(&lb, &[("web@127.0.0.2", &a2), ("web@127.0.0.3", &a3)]).await;
    let seen: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(exchange(lb.addr).await);
        }
        v
    };
    assert!(
        seen.contains(&"e2".to_string()) && seen.contains(&"e3".to_string()),
        "{seen:?}"
    );

    // The first one goes away.
    dns.answer("127.0.0.3 svc.test\n");
    wait_servers(&lb, &[("web", &a3)]).await;
    for _ in 0..3 {
        assert_eq!(exchange(lb.addr).await, "e3");
    }
    let m = lb.metrics().await;
    assert!(metric(&m, "tether_lb_resolve_changes_total") >= 2.0);

    // The name server dies: failures are counted, the last answer is kept.
    drop(dns);
    lb.wait_metric_at_least("tether_lb_resolve_failures_total", 1.0)
        .await;
    wait_servers(&lb, &[("web", &a3)]).await;
    assert_eq!(exchange(lb.addr).await, "e3");
    assert_eq!(metric(&lb.metrics().await, "tether_lb_reloads_total"), 0.0);
}
