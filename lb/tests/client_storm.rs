//! Clients that are gone before a server is chosen, and bursts of failed connects, must
//! not take a healthy server out.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A listener whose accept queue is full and never drained: connects to it time out, as to
/// a server swamped by a burst. Returns it and the connections that fill it.
fn swamped_server() -> (socket2::Socket, Vec<std::net::TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(c) => fill.push(c),
            Err(_) => return (s, fill),
        }
    }
    panic!("the accept queue of {addr} never filled");
}

/// A backend whose one server takes traffic on the swamped listener and is checked on a
/// healthy echo server's port.
async fn balancer(frontend_extra: &str, stop: &CancellationToken) -> (Lb, socket2::Socket) {
    let checked = echo_server("e", stop).await;
    let (swamped, fill) = swamped_server();
    std::mem::forget(fill); // kept open for the test's life: the queue stays full
    let addr = swamped.local_addr().unwrap().as_socket().unwrap();
    let toml = base(
        "",
        "retries = 0\n[backend.health]\ninterval = \"100ms\"\nfall = 3\nrise = 1000",
        &servers_toml(
            &[("s", addr)],
            &format!("check_port = {}", checked.addr.port()),
        ),
    )
    .replace(
        "backend = \"be\"\n",
        &format!("backend = \"be\"\n{frontend_extra}\n"),
    );
    let lb = Lb::start(&toml).await;
    lb.wait_health("s", "up").await;
    (lb, swamped)
}

#[tokio::test]
async fn clients_reset_in_the_backlog_get_no_server_connection() {
    let stop = CancellationToken::new();
    let (lb, _swamped) = balancer("maxconn = 1", &stop).await;
    // The one slot is taken by a client whose server connect times out (500 ms); meanwhile
    // 20 clients queue in the backlog and reset.
    let _first = TcpStream::connect(lb.addr).await.unwrap();
    for _ in 0..20 {
        let c = std::net::TcpStream::connect(lb.addr).unwrap();
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    lb.wait_metric(
        "tether_lb_connections_ended_total{end=\"client_gone\",frontend=\"fe\"}",
        20.0,
    )
    .await;
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "tether_lb_server_connect_failures_total{backend=\"be\",server=\"s\"}"
        ),
        1.0,
        "{m}"
    );
    lb.wait_health("s", "up").await;
}

#[tokio::test]
async fn a_burst_of_failed_connects_counts_once_toward_fall() {
    let stop = CancellationToken::new();
    let (lb, _swamped) = balancer("", &stop).await;
    let clients: Vec<_> = connect_many(lb.addr, 10).await;
    lb.wait_metric(
        "tether_lb_connections_ended_total{end=\"connect_failed\",frontend=\"fe\"}",
        10.0,
    )
    .await;
    drop(clients);
    let state = lb.state().await;
    let s = &state["backends"][0]["servers"][0];
    assert_eq!(s["health"], "up", "{s}");
}

async fn connect_many(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TcpStream::connect(addr).await.unwrap());
    }
    out
}
