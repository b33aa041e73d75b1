//! Tests of [`super`].

use super::*;
use crate::mux::{MuxTuning, Side};

/// The attack from the issue: a peer fills a forward stream while the server does not
/// read, then its session dies. The relay is stuck writing to the server and never
/// polls the stream again; it must still end (dropping the server socket and the
/// stream's buffered window) as soon as the session ends. Paused clock: a timeout
/// elapses only once nothing can make progress.
#[tokio::test(start_paused = true)]
async fn a_relay_stuck_on_its_server_ends_with_its_session() {
    let tuning = MuxTuning::default();
    let (a, b) = tokio::io::duplex(1 << 16);
    let (peer, _peer_in) = YamuxSession::spawn(a, Side::Client, tuning);
    let (node, mut node_in) = YamuxSession::spawn(b, Side::Server, tuning);
    let mut sent = peer.open().await.expect("open");
    sent.write_all(b"p").await.expect("write");
    sent.flush().await.expect("flush");
    let mut stream = node_in.recv().await.expect("inbound");
    let mut one = [0u8; 1];
    stream.read_exact(&mut one).await.expect("preamble");
    // The "server": a small pipe whose far end never reads.
    let (mut server, _not_reading) = tokio::io::duplex(64 * 1024);
    let base = std::sync::Arc::new(Base::new(Metrics::new().expect("metrics")));
    let b = base.clone();
    let mut relay = tokio::spawn(async move {
        relay_counted(
            &b,
            "svc",
            "forward",
            &mut server,
            TcpEnd::Server,
            &mut stream,
            Duration::from_secs(3600),
        )
        .await;
    });
    let _pusher = tokio::spawn(async move { sent.write_all(&vec![7u8; 4 << 20]).await });
    let idle = Duration::from_secs(1);
    assert!(
        tokio::time::timeout(idle, &mut relay).await.is_err(),
        "the relay ended while its session was alive"
    );
    assert_eq!(base.work.len(), 1);
    node.close();
    tokio::time::timeout(Duration::from_secs(600), relay)
        .await
        .expect("the relay outlived its session")
        .expect("relay task");
    assert_eq!(base.work.len(), 0);
    assert_eq!(closed(&base, "session_ended"), 1);
    assert_eq!(closed(&base, "idle_timeout"), 0);
}

fn closed(base: &Base, reason: &str) -> u64 {
    base.metrics
        .streams_closed
        .with_label_values(&["svc", reason])
        .get()
}

/// A relayed stream with idle timeout `idle`, as on the side that answers streams:
/// returns the metrics, the peer's end of the stream, the far end of the TCP
/// connection (the server), the relay's task and the session.
async fn relayed(
    idle: Duration,
) -> (
    std::sync::Arc<Base>,
    YamuxStream,
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<()>,
    YamuxSession,
) {
    let tuning = MuxTuning::default();
    let (a, b) = tokio::io::duplex(1 << 16);
    let (peer, _peer_in) = YamuxSession::spawn(a, Side::Client, tuning);
    let (node, mut node_in) = YamuxSession::spawn(b, Side::Server, tuning);
    let mut sent = peer.open().await.expect("open");
    sent.write_all(b"p").await.expect("write");
    sent.flush().await.expect("flush");
    let mut stream = node_in.recv().await.expect("inbound");
    let mut one = [0u8; 1];
    stream.read_exact(&mut one).await.expect("preamble");
    let (mut server, far) = tokio::io::duplex(64 * 1024);
    let base = std::sync::Arc::new(Base::new(Metrics::new().expect("metrics")));
    base.metrics
        .service("svc", "forward", crate::metrics::ServiceSide::Server);
    let b = base.clone();
    let relay = tokio::spawn(async move {
        relay_counted(
            &b,
            "svc",
            "forward",
            &mut server,
            TcpEnd::Server,
            &mut stream,
            idle,
        )
        .await;
    });
    // The peer's session runs on without its handle.
    drop(peer);
    (base, sent, far, relay, node)
}

/// A stream on which nothing moves is closed at its idle timeout, on both of its
/// ends: the TCP end sees the end of its stream, and the peer's stream is reset (it
/// reads its end). Paused clock.
#[tokio::test(start_paused = true)]
async fn an_idle_stream_is_closed_at_its_timeout() {
    let idle = Duration::from_secs(10);
    let (base, mut peer, mut far, relay, _node) = relayed(idle).await;
    let started = tokio::time::Instant::now();
    relay.await.expect("relay task");
    let took = started.elapsed();
    assert!(
        took >= idle && took < idle + Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(closed(&base, "idle_timeout"), 1);
    assert_eq!(closed(&base, "done"), 0);
    assert_eq!(base.work.len(), 0);
    let mut rest = Vec::new();
    far.read_to_end(&mut rest)
        .await
        .expect("the TCP end is closed");
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), peer.read(&mut buf))
        .await
        .expect("the peer learns of the close");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

/// Bytes moving in either direction keep a stream open however long it lives; once
/// they stop, it is closed an idle timeout after the last one.
#[tokio::test(start_paused = true)]
async fn a_stream_moving_bytes_is_kept() {
    let idle = Duration::from_secs(10);
    let (base, mut peer, mut far, mut relay, _node) = relayed(idle).await;
    let mut buf = [0u8; 4];
    // A minute of traffic, alternating directions, 6 s apart (under the timeout,
    // and more than half of it, so the timer fires in between and is moved on).
    for i in 0..10 {
        tokio::time::sleep(Duration::from_secs(6)).await;
        if i % 2 == 0 {
            peer.write_all(b"ping").await.expect("write");
            peer.flush().await.expect("flush");
            far.read_exact(&mut buf).await.expect("read");
        } else {
            far.write_all(b"pong").await.expect("write");
            peer.read_exact(&mut buf).await.expect("read");
        }
        assert!(
            futures::poll!(&mut relay).is_pending(),
            "closed while moving bytes ({i})"
        );
    }
    let last = tokio::time::Instant::now();
    relay.await.expect("relay task");
    let after = last.elapsed();
    assert!(
        after >= idle && after < idle + Duration::from_secs(1),
        "{after:?}"
    );
    assert_eq!(closed(&base, "idle_timeout"), 1);
    let bytes = |d: &str| base.metrics.bytes.with_label_values(&["svc", d]).get();
    assert_eq!((bytes("to_server"), bytes("to_client")), (20, 20));
}
