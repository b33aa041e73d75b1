use super::*;
use crate::metrics::CONNECTION_ENDS;

/// Every `end` a connection can be counted under exists at 0 from the start.
#[test]
fn every_end_label_is_created_at_zero() {
    let no_connect = [
        NoConnect::NoServer,
        NoConnect::QueueTimeout,
        NoConnect::ConnectFailed,
        NoConnect::Shutdown,
        NoConnect::ClientGone,
        NoConnect::ProxyCheck,
    ];
    let relay = [
        End::Done,
        End::ClientTimeout,
        End::ServerTimeout,
        End::ClientError,
        End::ServerError,
        End::Shutdown,
    ];
    let all = no_connect
        .iter()
        .map(|n| n.as_str())
        .chain(relay.iter().map(|e| e.as_str()))
        .chain([INSPECT_FAILED]);
    for end in all {
        assert!(CONNECTION_ENDS.contains(&end), "{end} is not created at 0");
    }
}

#[test]
fn a_reset_after_a_header_and_nothing_else_is_a_late_check() {
    let o = |up, down, end| relay::Outcome { up, down, end };
    assert!(late_check(true, &o(0, 0, End::ClientError)));
    // Payload, an answer, another end, or no PROXY header: not a check.
    assert!(!late_check(true, &o(1, 0, End::ClientError)));
    assert!(!late_check(true, &o(0, 1, End::ClientError)));
    assert!(!late_check(true, &o(0, 0, End::Done)));
    assert!(!late_check(true, &o(0, 0, End::ServerError)));
    assert!(!late_check(true, &o(0, 0, End::ClientTimeout)));
    assert!(!late_check(false, &o(0, 0, End::ClientError)));
}

async fn pair() -> (std::net::TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().await.unwrap();
    (c, s)
}

#[tokio::test]
async fn first_event_waits_out_a_silent_client_despite_the_header_read() {
    use std::io::Write;
    let (mut c, s) = pair().await;
    c.write_all(b"PROXY UNKNOWN\r\n").unwrap();
    s.readable().await.unwrap();
    let mut buf = [0u8; 64];
    // A read that returns bytes leaves tokio's readiness set.
    assert!(s.try_read(&mut buf).unwrap() > 0);
    let grace = Duration::from_millis(100);
    let t0 = Instant::now();
    first_event(&s, grace).await;
    assert!(t0.elapsed() >= grace, "returned after {:?}", t0.elapsed());
}

#[tokio::test]
async fn first_event_ends_at_a_reset() {
    let (c, s) = pair().await;
    let reset = tokio::spawn(async move {
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c);
    });
    let t0 = Instant::now();
    first_event(&s, Duration::from_secs(30)).await;
    assert!(t0.elapsed() < Duration::from_secs(10));
    reset.await.unwrap();
    assert_eq!(peer::peer_state(&s), Peer::Gone);
}

#[test]
fn a_read_that_ends_is_counted_as_closed_or_read_error() {
    assert_eq!(ReadStop::Ended(Peer::Finished).reason(), "closed");
    assert_eq!(ReadStop::Ended(Peer::Gone).reason(), "read_error");
    assert_eq!(ReadStop::Failed("timeout").reason(), "timeout");
    for r in [Peer::Finished, Peer::Gone].map(|p| ReadStop::Ended(p).reason()) {
        assert!(READ_STOPS.contains(&r), "{r}");
    }
}

#[test]
fn the_inspect_reasons_created_at_zero_follow_what_the_frontend_reads() {
    let cfg = crate::Config::from_source(&tether_health::config::Source::from_text(
        "t.toml",
        r#"
[[frontend]]
name = "plain"
bind = ["127.0.0.1:0"]
backend = "b"
[[frontend]]
name = "both"
bind = ["127.0.0.2:0"]
backend = "b"
accept_proxy = true
[[frontend.route]]
sni = "a.example.com"
backend = "b"
[[backend]]
name = "b"
[[backend.server]]
name = "s"
address = "127.0.0.1:1"
"#,
    ))
    .unwrap();
    let (plain, both) = (&cfg.frontends[0], &cfg.frontends[1]);
    assert!(inspect_reasons(plain, false).is_empty());
    assert_eq!(inspect_reasons(plain, true), ["read_error", "shutdown"]);
    let all = inspect_reasons(both, false);
    for r in READ_STOPS
        .iter()
        .chain(inspect::PROXY_REFUSALS)
        .chain(inspect::HELLO_REFUSALS)
    {
        assert!(all.contains(r), "{r}");
    }
}
