use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::*;

/// The point of the module: once a message has gone each way and nothing more is
/// ready, the relay holds no copy buffer (an idle connection costs its state only).
#[tokio::test]
async fn an_idle_relay_holds_no_buffer() {
    let (mut a, mut client) = duplex(1 << 16);
    let (mut b, mut server) = duplex(1 << 16);
    let mut relay = Relay::new(&mut a, &mut b);
    assert!(futures::poll!(&mut relay).is_pending());
    assert_eq!(relay.buffers_held(), 0, "a relay that never moved data");

    client.write_all(b"ping").await.expect("write");
    assert!(futures::poll!(&mut relay).is_pending());
    assert_eq!(relay.buffers_held(), 0, "after a message to the server");
    let mut got = [0u8; 4];
    server.read_exact(&mut got).await.expect("read");
    assert_eq!(&got, b"ping");

    server.write_all(b"pong").await.expect("write");
    assert!(futures::poll!(&mut relay).is_pending());
    assert_eq!(relay.buffers_held(), 0, "after the answer");
    client.read_exact(&mut got).await.expect("read");
    assert_eq!(&got, b"pong");
}

/// A sink that cannot take what was read keeps the buffer (the data is in it) until it
/// has taken all of it, then the buffer goes back.
#[tokio::test]
async fn a_blocked_sink_holds_one_buffer_until_drained() {
    let (mut a, mut client) = duplex(1 << 16);
    let (mut b, mut server) = duplex(16);
    let mut relay = Relay::new(&mut a, &mut b);
    let sent: Vec<u8> = (0..64u8).collect();
    client.write_all(&sent).await.expect("write");
    assert!(futures::poll!(&mut relay).is_pending());
    assert_eq!(relay.buffers_held(), 1, "64 bytes read, 16 written");

    let mut got = Vec::new();
    while got.len() < sent.len() {
        let mut chunk = [0u8; 16];
        let n = server.read(&mut chunk).await.expect("read");
        got.extend_from_slice(&chunk[..n]);
        assert!(futures::poll!(&mut relay).is_pending());
    }
    assert_eq!(got, sent);
    assert_eq!(relay.buffers_held(), 0, "everything written");
}

/// Half-close goes through in each direction on its own, and the relay ends, with the
/// bytes moved each way, once both directions ended.
#[tokio::test]
async fn half_close_propagates_and_counts_bytes() {
    let (mut a, mut client) = duplex(1 << 16);
    let (mut b, mut server) = duplex(1 << 16);
    let relay = tokio::spawn(async move { Relay::new(&mut a, &mut b).await });

    client.write_all(b"request").await.expect("write");
    client.shutdown().await.expect("shutdown");
    let mut req = Vec::new();
    server.read_to_end(&mut req).await.expect("read to the end");
    assert_eq!(req, b"request");

    // The server still answers after the client's half-close.
    server.write_all(b"answer!!").await.expect("write");
    server.shutdown().await.expect("shutdown");
    let mut ans = Vec::new();
    client.read_to_end(&mut ans).await.expect("read to the end");
    assert_eq!(ans, b"answer!!");

    assert_eq!(relay.await.expect("relay task"), (7, 8));
}

/// A side that goes away ends the relay with what moved until then.
#[tokio::test]
async fn a_vanished_peer_ends_the_relay() {
    let (mut a, client) = duplex(1 << 16);
    let (mut b, mut server) = duplex(1 << 16);
    let relay = tokio::spawn(async move { Relay::new(&mut a, &mut b).await });
    server.write_all(b"hello").await.expect("write");
    drop(client);
    let (up, _down) = relay.await.expect("relay task");
    assert_eq!(up, 0);
}

/// The idle timeout measures from `last_active`: it moves when bytes move, either way,
/// and not when the relay is merely polled. Paused clock.
#[tokio::test(start_paused = true)]
async fn last_active_follows_bytes_not_polls() {
    let (mut a, mut client) = duplex(1 << 16);
    let (mut b, mut server) = duplex(1 << 16);
    let mut relay = Relay::new(&mut a, &mut b);
    let made = relay.last_active();
    tokio::time::advance(std::time::Duration::from_secs(5)).await;
    assert!(futures::poll!(&mut relay).is_pending());
    assert_eq!(relay.last_active(), made, "a poll that moved nothing");

    server.write_all(b"hi").await.expect("write");
    assert!(futures::poll!(&mut relay).is_pending());
    let moved = relay.last_active();
    assert_eq!(moved, tokio::time::Instant::now(), "server to client");
    let mut got = [0u8; 2];
    client.read_exact(&mut got).await.expect("read");

    tokio::time::advance(std::time::Duration::from_secs(5)).await;
    client.write_all(b"yo").await.expect("write");
    assert!(futures::poll!(&mut relay).is_pending());
    assert_eq!(
        relay.last_active(),
        moved + std::time::Duration::from_secs(5)
    );
    assert_eq!(relay.moved(), (2, 2));
}
