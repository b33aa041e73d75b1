//! Tests of [`super`].

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn streams_both_ways_and_close() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (client, mut client_in) = YamuxSession::spawn(a, Side::Client, MuxTuning::default());
    let (server, mut server_in) = YamuxSession::spawn(b, Side::Server, MuxTuning::default());

    let mut s = client.open().await.unwrap();
    s.write_all(b"hello").await.unwrap();
    s.flush().await.unwrap();
    let mut r = server_in.recv().await.unwrap();
    let mut buf = [0u8; 5];
    r.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");

    // The other direction, on a stream opened by the server side.
    let mut s2 = server.open().await.unwrap();
    s2.write_all(b"back").await.unwrap();
    s2.shutdown().await.unwrap();
    let mut r2 = client_in.recv().await.unwrap();
    let mut got = Vec::new();
    r2.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"back");

    // Half-close keeps the other direction open.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).await.unwrap();
    r.write_all(b"after fin").await.unwrap();
    r.shutdown().await.unwrap();
    let mut tail = Vec::new();
    s.read_to_end(&mut tail).await.unwrap();
    assert_eq!(tail, b"after fin");

    client.close();
    tokio::time::timeout(std::time::Duration::from_secs(5), server.closed())
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), client.closed())
        .await
        .unwrap();
    assert!(matches!(client.open().await, Err(MuxError::Closed)));
}

#[tokio::test]
async fn bulk_transfer_is_intact() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (client, _ci) = YamuxSession::spawn(a, Side::Client, MuxTuning::default());
    let (_server, mut server_in) = YamuxSession::spawn(b, Side::Server, MuxTuning::default());
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut s = client.open().await.unwrap();
    let send = data.clone();
    let writer = tokio::spawn(async move {
        s.write_all(&send).await.unwrap();
        s.shutdown().await.unwrap();
        s
    });
    let mut r = server_in.recv().await.unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    writer.await.unwrap();
}

/// The attack the bound is for: a peer opens every stream it may and writes without end,
/// while the node reads nothing more. Every stream was read fast first, so yamux had
/// reason to grow its window. What the peer gets accepted (and the node must buffer)
/// stays within the session window, never streams x window. The clock is paused: the
/// sleep ends only once no task can make progress, i.e. every writer has stalled.
#[tokio::test(start_paused = true)]
async fn a_session_buffers_at_most_its_window() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const STREAMS: usize = 8;
    let tuning = MuxTuning {
        max_streams: STREAMS,
        session_window: STREAMS * STREAM_MIN_WINDOW + (2 << 20),
        ..MuxTuning::default()
    };
    // The peer plays by its own rules: all the node's cap, and a window of its own.
    let peer_tuning = MuxTuning {
        max_streams: 64,
        session_window: 64 * STREAM_MIN_WINDOW,
        ..MuxTuning::default()
    };
    let (a, b) = tokio::io::duplex(1 << 16);
    let (peer, _peer_in) = YamuxSession::spawn(a, Side::Client, peer_tuning);
    let (_node, mut node_in) = YamuxSession::spawn(b, Side::Server, tuning);
    let mut pairs = Vec::new();
    for _ in 0..STREAMS {
        let mut s = peer.open().await.expect("open");
        s.write_all(b"p").await.expect("preamble");
        s.flush().await.expect("flush");
        let mut r = node_in.recv().await.expect("inbound");
        let mut one = [0u8; 1];
        r.read_exact(&mut one).await.expect("preamble");
        pairs.push((s, r));
    }
    // Phase 1: the node reads as fast as the peer writes (windows may grow).
    const WARM: usize = 4 << 20;
    let mut warm = Vec::new();
    for (mut s, mut r) in pairs {
        warm.push(tokio::spawn(async move {
            let send = async {
                s.write_all(&vec![1u8; WARM]).await.expect("write");
                s.flush().await.expect("flush");
            };
            let mut got = vec![0u8; WARM];
            let ((), read) = tokio::join!(send, r.read_exact(&mut got));
            read.expect("read");
            (s, r)
        }));
    }
    let mut held = Vec::new();
    let accepted = Arc::new(AtomicUsize::new(0));
    for w in warm {
        let (mut s, r) = w.await.expect("warm-up");
        held.push(r);
        // Phase 2: the node stops reading; the peer writes until yamux stops it.
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let chunk = vec![2u8; 16 * 1024];
            while let Ok(n) = s.write(&chunk).await {
                accepted.fetch_add(n, Ordering::SeqCst);
            }
        });
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let buffered = accepted.load(Ordering::SeqCst);
    assert!(
        buffered <= tuning.session_window,
        "{buffered} bytes buffered, over the session window of {}",
        tuning.session_window
    );
    // Each stream could still send at least half its window: the stall is the window,
    // not a broken session.
    assert!(
        buffered >= STREAMS * STREAM_MIN_WINDOW / 2,
        "only {buffered} bytes"
    );
    drop(held);
}

/// A peer that opens more streams than the cap loses its session (yamux ends it),
/// instead of making the node hold one more window.
#[tokio::test(start_paused = true)]
async fn a_peer_past_the_stream_cap_loses_its_session() {
    let node_tuning = MuxTuning {
        max_streams: 4,
        session_window: 4 * STREAM_MIN_WINDOW,
        ..MuxTuning::default()
    };
    let peer_tuning = MuxTuning {
        max_streams: 16,
        session_window: 16 * STREAM_MIN_WINDOW,
        ..MuxTuning::default()
    };
    let (a, b) = tokio::io::duplex(1 << 16);
    let (peer, _peer_in) = YamuxSession::spawn(a, Side::Client, peer_tuning);
    // The inbound streams stay queued, so all of them count against the cap.
    let (node, _node_in) = YamuxSession::spawn(b, Side::Server, node_tuning);
    let mut opened = Vec::new();
    for _ in 0..5 {
        let Ok(mut s) = peer.open().await else { break };
        if s.write_all(b"p").await.is_err() || s.flush().await.is_err() {
            break;
        }
        opened.push(s);
    }
    tokio::time::timeout(std::time::Duration::from_secs(600), node.closed())
        .await
        .expect("the session outlived a fifth stream");
    tokio::time::timeout(std::time::Duration::from_secs(600), peer.closed())
        .await
        .expect("the peer saw its session end");
}

/// Our own open an eighth short of the cap fails, and the session and its streams
/// carry on (yamux would end the session on an open that meets its cap).
#[tokio::test(start_paused = true)]
async fn our_open_short_of_the_cap_fails_alone() {
    let tuning = MuxTuning {
        max_streams: 8,
        session_window: 8 * STREAM_MIN_WINDOW,
        ..MuxTuning::default()
    };
    let (a, b) = tokio::io::duplex(1 << 16);
    let (client, _ci) = YamuxSession::spawn(a, Side::Client, tuning);
    let (_server, mut server_in) = YamuxSession::spawn(b, Side::Server, tuning);
    let mut held = Vec::new();
    for _ in 0..7 {
        held.push(client.open().await.expect("open"));
    }
    assert!(matches!(client.open().await, Err(MuxError::TooManyStreams)));
    let first = held.first_mut().expect("held");
    first.write_all(b"still").await.expect("write");
    first.flush().await.expect("flush");
    let mut r = server_in.recv().await.expect("inbound");
    let mut buf = [0u8; 5];
    r.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"still");
    // A stream given back makes room again.
    held.pop();
    let mut again = client.open().await.expect("open after a drop");
    again.write_all(b"x").await.expect("write");
}

/// A stream whose reader stalled until the sender ran out of window, then half-closed,
/// delivers everything and still carries the answer back (no reset on the FIN that
/// follows a full window). Paused clock: the sleep ends once the writer has stalled.
#[tokio::test(start_paused = true)]
async fn half_close_after_a_full_window_is_no_reset() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (client, _ci) = YamuxSession::spawn(a, Side::Client, MuxTuning::default());
    let (_server, mut server_in) = YamuxSession::spawn(b, Side::Server, MuxTuning::default());
    let mut s = client.open().await.expect("open");
    s.write_all(b"p").await.expect("write");
    s.flush().await.expect("flush");
    let mut r = server_in.recv().await.expect("inbound");
    let mut one = [0u8; 1];
    r.read_exact(&mut one).await.expect("preamble");
    let data: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 251) as u8).collect();
    let send = data.clone();
    let writer = tokio::spawn(async move {
        s.write_all(&send).await.expect("write");
        s.shutdown().await.expect("shutdown");
        s
    });
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(!writer.is_finished(), "2 MiB went out with nobody reading");
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.expect("read");
    assert!(got == data);
    let mut s = writer.await.expect("writer");
    r.write_all(b"done").await.expect("answer");
    r.shutdown().await.expect("shutdown");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.expect("read answer");
    assert_eq!(answer, b"done");
}

/// A session being retired waits on `streams_at_most`: it resolves when the last stream
/// above the count is dropped, opened by either side, and at once when none is left.
#[tokio::test]
async fn streams_at_most_wakes_on_the_last_drop() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (client, mut client_in) = YamuxSession::spawn(a, Side::Client, MuxTuning::default());
    let (server, _server_in) = YamuxSession::spawn(b, Side::Server, MuxTuning::default());
    let ctrl = client.open().await.unwrap();
    let out = client.open().await.unwrap();
    let mut opened = server.open().await.unwrap();
    opened.write_all(b"y").await.unwrap();
    opened.flush().await.unwrap();
    let from_server = client_in.recv().await.unwrap();
    assert_eq!(client.live_streams(), 3);
    let limit = std::time::Duration::from_secs(5);
    let mut wait = Box::pin(client.streams_at_most(1));
    assert!(futures::poll!(&mut wait).is_pending());
    drop(out);
    assert!(
        futures::poll!(&mut wait).is_pending(),
        "one data stream left"
    );
    drop(from_server);
    tokio::time::timeout(limit, wait)
        .await
        .expect("resolves once only the control stream is left");
    assert_eq!(client.live_streams(), 1);
    tokio::time::timeout(limit, client.streams_at_most(1))
        .await
        .expect("at once");
    drop(ctrl);
}
