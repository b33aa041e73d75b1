//! Connections spread over the worker threads: a worker that accepts while it holds clearly
//! more connections than another hands the new one over, and it relays from there.

mod common;

use common::*;
use tether_health::config::Source;
use tether_lb::{Config, Options};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

#[test]
fn connections_one_worker_accepts_are_spread_over_both() {
    let pool = tether_lb::workers::Pool::start(2).unwrap();
    pool.main.block_on(async {
        let stop = CancellationToken::new();
        let echo = echo_server("a", &stop).await;
        let toml = base(
            "",
            "[backend.health]\nkind = \"none\"",
            &servers_toml(&[("a", echo.addr)], ""),
        );
        let cfg = Config::from_source(&Source::from_text("test.toml", &toml)).unwrap();
        let shutdown = CancellationToken::new();
        // One listening socket, on worker 0: every connection is accepted there, the most
        // uneven split the kernel's SO_REUSEPORT hash could make.
        let opts = Options {
            workers: 1,
            runtimes: pool.handles.clone(),
            ..Default::default()
        };
        let running = tether_lb::start(cfg, opts, shutdown.clone()).await.unwrap();
        let addr = running.lb.state().frontends[0].bound[0];
        let metrics = running.lb.metrics.clone();
        let open = |w: &str| metrics.worker_connections.with_label_values(&[w]).get();

        // Kept open, like a client's connection pool. A round trip through the balancer
        // means the connection was accepted and placed.
        let mut clients = Vec::new();
        for _ in 0..24 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            round_trip(&mut s).await;
            clients.push(s);
        }
        let (w0, w1) = (open("0"), open("1"));
        assert_eq!(w0 + w1, 24);
        // The margin at 12 connections is 2.
        assert!((w0 - w1).abs() <= 2, "worker 0 holds {w0}, worker 1 {w1}");
        assert!(metrics.worker_handoffs.get() >= 10);

        // The connections handed over relay like the others.
        for s in &mut clients {
            round_trip(s).await;
        }
        drop(clients);
        shutdown.cancel();
        running.wait().await;
        assert_eq!((open("0"), open("1")), (0, 0));
        stop.cancel();
    });
}
