//! `tether demo` on loopback, for machines without network namespaces (not root, or a
//! container without the privilege): no VRRP and no firewall, just the balancer.
//!
//! Starts two `tether echo` processes and a balancer in front of them on loopback, prints
//! where to connect and how to watch a failover, reports every server state change, and
//! restarts an echo server a user killed so its return can be watched too.

use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use tether_health::config::Source;
use tether_lb::{Config, Options};
use tokio::process::{Child, Command};

/// The embedded default configuration.
const DEMO_LB: &str = include_str!("../../examples/demo-lb.toml");

struct Backend {
    name: &'static str,
    listen: &'static str,
    child: Option<Child>,
    died_at: Option<tokio::time::Instant>,
}

/// `name health` of each server of the first backend, from `/api/state`.
async fn server_health(admin: std::net::SocketAddr) -> Vec<String> {
    let Ok(r) =
        tether_health::http::get(admin, "localhost", "/api/state", Duration::from_millis(500))
            .await
    else {
        return vec!["(balancer not answering)".to_string()];
    };
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["backends"][0]["servers"]
        .as_array()
        .map(|servers| {
            servers
                .iter()
                .map(|s| {
                    format!(
                        "{} {}",
                        s["name"].as_str().unwrap_or("?"),
                        s["health"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn spawn_echo(name: &str, listen: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the tether executable")?;
    Command::new(exe)
        .args(["echo", "--listen", listen, "--banner", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting echo server {name}"))
}

pub fn main(restart_after: Duration) -> anyhow::Result<ExitCode> {
    let config = Config::from_source(&Source::from_text("embedded demo-lb.toml", DEMO_LB))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let shutdown = crate::signals::shutdown_on_signals()?;
        let mut backends = vec![
            Backend { name: "echo-1", listen: "127.0.0.1:7001", child: None, died_at: None },
            Backend { name: "echo-2", listen: "127.0.0.1:7002", child: None, died_at: None },
        ];
        for b in &mut backends {
            b.child = Some(spawn_echo(b.name, b.listen)?);
        }
        // Let the servers listen before the first health check, so the demo starts green.
        for b in &backends {
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(b.listen).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let opts = Options {
            workers: 1,
            ..Default::default()
        };
        let lb = tether_lb::start(config, opts, shutdown.clone())
            .await
            .context("starting the balancer (is another demo running?)")?;
        let fe = lb.frontend_addrs("echo");
        let admin = lb.admin_addr.map(|a| a.to_string()).unwrap_or_default();
        let pids: Vec<String> = backends
            .iter()
            .map(|b| format!("{} pid {}", b.name, b.child.as_ref().and_then(|c| c.id()).unwrap_or(0)))
            .collect();
        println!(
            "\nTether demo: a load balancer on {fe:?} in front of two echo servers ({}).\n\
             \n  Connect:         nc 127.0.0.1 5551          (type a line, it comes back after a banner)\
             \n  Probe:           tether probe --connect 127.0.0.1:5551 --every 20ms --for 30s\
             \n  Metrics:         curl http://{admin}/metrics\
             \n  State:           curl http://{admin}/api/state\
             \n  Watch failover:  start the probe, then `kill <pid>` one echo server: the balancer\
             \n                   marks it down after 2 failed checks, failed connects are retried\
             \n                   on the other, and the probe reports 0 failures. The demo starts\
             \n                   the server again after {:?}, and it rejoins by itself.\
             \n\nCtrl-C stops everything.\n",
            pids.join(", "),
            restart_after
        );
        let mut last: Vec<String> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            for b in &mut backends {
                if let Some(child) = &mut b.child
                    && let Ok(Some(status)) = child.try_wait()
                {
                    println!("{} exited ({status}); starting it again in {:?}", b.name, restart_after);
                    b.child = None;
                    b.died_at = Some(tokio::time::Instant::now());
                }
                if b.child.is_none() && b.died_at.is_some_and(|t| t.elapsed() >= restart_after) {
                    let child = spawn_echo(b.name, b.listen)?;
                    println!("{} started again, pid {}", b.name, child.id().unwrap_or(0));
                    b.child = Some(child);
                    b.died_at = None;
                }
            }
            // Read through the admin API (what a user would curl), not the balancer's internals.
            let now = match lb.admin_addr {
                Some(a) => server_health(a).await,
                None => Vec::new(),
            };
            if now != last {
                println!("servers: {}", now.join(", "));
                last = now;
            }
        }
        lb.wait().await;
        Ok(ExitCode::SUCCESS)
    })
}
