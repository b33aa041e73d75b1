//! Stream multiplexing of a session, behind our own small [`Mux`] trait so the `yamux` crate
//! can be replaced by an in-house implementation of the same wire format without touching
//! the drivers.
//!
//! The yamux `Connection` makes progress only while it is polled, so one task owns it and
//! polls, in one `poll_fn`, the queue of open requests, `poll_new_outbound` and
//! `poll_next_inbound`; inbound streams are handed over on a bounded channel.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::FutureExt;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Errors of the multiplexer.
#[derive(Debug, Error, Clone)]
pub enum MuxError {
    /// The session is closed.
    #[error("session closed")]
    Closed,
    /// The session already carries its most concurrent streams.
    #[error("too many streams on the session")]
    TooManyStreams,
    /// The multiplexer failed.
    #[error("mux: {0}")]
    Failed(String),
}

/// A multiplexed session: open outbound streams, close the whole session.
pub trait Mux: Send + Sync + 'static {
    /// A stream of the session.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Opens a new outbound stream (costs no round trip: data follows the SYN at once,
    /// without waiting for the peer's ACK).
    fn open(&self) -> impl Future<Output = Result<Self::Stream, MuxError>> + Send;
    /// Closes the session (GoAway, then the connection).
    fn close(&self);
    /// Resolves when the session has ended, for whatever reason.
    fn closed(&self) -> impl Future<Output = ()> + Send;
}

/// Which side of the TCP connection we are (decides stream id parity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The dialer (on-prem): odd stream ids.
    Client,
    /// The acceptor (cloud): even stream ids.
    Server,
}

/// A yamux stream as a tokio stream that knows when its session has ended.
pub struct YamuxStream {
    inner: Compat<yamux::Stream>,
    session_done: CancellationToken,
    /// The session's count of live streams, one less when this one is dropped.
    live: Arc<AtomicUsize>,
}

impl Drop for YamuxStream {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl YamuxStream {
    fn new(
        stream: yamux::Stream,
        done: &CancellationToken,
        live: &Arc<AtomicUsize>,
    ) -> YamuxStream {
        live.fetch_add(1, Ordering::SeqCst);
        YamuxStream {
            inner: stream.compat(),
            session_done: done.clone(),
            live: live.clone(),
        }
    }

    /// Resolves when the stream's session has ended. A relay must wait on it besides the
    /// stream itself: one stuck writing to a TCP peer that does not read never polls the
    /// stream again, so it would never see the stream fail, and would hold its socket and
    /// the stream's buffered window until that peer closed.
    pub fn session_ended(&self) -> WaitForCancellationFutureOwned {
        self.session_done.clone().cancelled_owned()
    }
}

impl std::fmt::Debug for YamuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("YamuxStream")
            .field(self.inner.get_ref())
            .finish()
    }
}

impl AsyncRead for YamuxStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for YamuxStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

type OpenReply = oneshot::Sender<Result<YamuxStream, MuxError>>;

/// A session multiplexed with the `yamux` crate.
#[derive(Debug, Clone)]
pub struct YamuxSession {
    open_tx: mpsc::Sender<OpenReply>,
    close: CancellationToken,
    done: CancellationToken,
}

/// Tuning of the multiplexer.
#[derive(Debug, Clone, Copy)]
pub struct MuxTuning {
    /// Most concurrent streams per session, both directions together. A peer that opens
    /// one more has its session ended by yamux. Our own opens stop an eighth short of it
    /// and fail alone ([`MuxError::TooManyStreams`]), so two honest sides with the same
    /// cap never meet it.
    pub max_streams: usize,
    /// Receive window of the whole session, in bytes: the most the session buffers for
    /// streams whose local side does not read, whatever the peer does. yamux gives every
    /// stream the default 256 KiB window and lets a stream that is read quickly double its
    /// window per round trip, drawing on what the session has left beyond `max_streams` x
    /// 256 KiB; a window never shrinks while its stream lives. At least `max_streams` x
    /// 256 KiB (raised to that when lower).
    pub session_window: usize,
    /// Largest data frame payload.
    pub split_send_size: usize,
    /// Inbound streams queued before new ones are refused.
    pub inbound_queue: usize,
}

/// yamux's initial window of every stream, which the session window must cover for each.
pub const STREAM_MIN_WINDOW: usize = yamux::DEFAULT_CREDIT as usize;

impl Default for MuxTuning {
    fn default() -> Self {
        MuxTuning::new(&crate::config::Limits::default())
    }
}

impl MuxTuning {
    /// The tuning that applies `limits` (the `[limits]` section of the configuration).
    pub fn new(limits: &crate::config::Limits) -> MuxTuning {
        MuxTuning {
            max_streams: limits.max_streams,
            session_window: limits.session_window,
            split_send_size: 64 * 1024,
            inbound_queue: 256,
        }
    }
}

/// Live streams (both directions) at which our own opens stop: an eighth below the cap,
/// since yamux ends the session on an open that meets its cap and on a peer's open past
/// it. The margin absorbs what the two sides' counts differ by: opens crossing on the
/// wire, and streams dropped here that the connection task has not yet removed.
fn open_limit(max_streams: usize) -> usize {
    let max = max_streams.max(1);
    max - max / 8
}

/// The yamux configuration for `tuning`, clamped to what yamux accepts (it panics on a
/// session window below `max_streams` x 256 KiB).
fn yamux_config(tuning: &MuxTuning) -> yamux::Config {
    let mut cfg = yamux::Config::default();
    let streams = tuning.max_streams.max(1);
    let window = tuning
        .session_window
        .max(streams.saturating_mul(STREAM_MIN_WINDOW));
    // Lift the window first: either order of the two setters asserts the invariant.
    cfg.set_max_connection_receive_window(None);
    cfg.set_max_num_streams(streams);
    cfg.set_max_connection_receive_window(Some(window));
    cfg.set_split_send_size(tuning.split_send_size.max(1024));
    cfg
}

impl YamuxSession {
    /// Starts driving a session over `io`; returns the handle and the inbound streams.
    pub fn spawn<T>(
        io: T,
        side: Side,
        tuning: MuxTuning,
    ) -> (YamuxSession, mpsc::Receiver<YamuxStream>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let cfg = yamux_config(&tuning);
        let open_limit = open_limit(tuning.max_streams);
        let live = Arc::new(AtomicUsize::new(0));
        let mode = match side {
            Side::Client => yamux::Mode::Client,
            Side::Server => yamux::Mode::Server,
        };
        let mut conn = yamux::Connection::new(io.compat(), cfg, mode);
        let (open_tx, mut open_rx) = mpsc::channel::<OpenReply>(64);
        let (in_tx, in_rx) = mpsc::channel(tuning.inbound_queue.max(1));
        let close = CancellationToken::new();
        let done = CancellationToken::new();
        let session = YamuxSession {
            open_tx,
            close: close.clone(),
            done: done.clone(),
        };
        tokio::spawn(async move {
            let mut pending: Option<OpenReply> = None;
            let mut close_requested = Box::pin(close.cancelled_owned());
            let outcome = futures::future::poll_fn(|cx| {
                if close_requested.poll_unpin(cx).is_ready() {
                    return Poll::Ready(Ok(true));
                }
                loop {
                    if pending.is_none() {
                        match open_rx.poll_recv(cx) {
                            Poll::Ready(Some(reply)) => pending = Some(reply),
                            Poll::Ready(None) | Poll::Pending => {}
                        }
                    }
                    let Some(reply) = pending.take() else { break };
                    // yamux ends the whole session when an open meets its cap, so ours
                    // stops short of it (see `open_limit`).
                    if live.load(Ordering::SeqCst) >= open_limit {
                        let _ = reply.send(Err(MuxError::TooManyStreams));
                        continue;
                    }
                    match conn.poll_new_outbound(cx) {
                        Poll::Ready(Ok(stream)) => {
                            let _ = reply.send(Ok(YamuxStream::new(stream, &done, &live)));
                        }
                        Poll::Ready(Err(e)) => {
                            let _ = reply.send(Err(MuxError::Failed(e.to_string())));
                            return Poll::Ready(Err(e));
                        }
                        Poll::Pending => {
                            pending = Some(reply);
                            break;
                        }
                    }
                }
                loop {
                    match conn.poll_next_inbound(cx) {
                        Poll::Ready(Some(Ok(stream))) => {
                            // A full queue means the owner is not keeping up: dropping the
                            // stream resets it, and the opener retries elsewhere.
                            let _ = in_tx.try_send(YamuxStream::new(stream, &done, &live));
                        }
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                        Poll::Ready(None) => return Poll::Ready(Ok(false)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            })
            .await;
            if let Some(reply) = pending.take() {
                let _ = reply.send(Err(MuxError::Closed));
            }
            if matches!(outcome, Ok(true)) {
                // Orderly close: GoAway and flush, bounded.
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    futures::future::poll_fn(|cx| conn.poll_close(cx)),
                )
                .await;
            }
            drop(conn);
            done.cancel();
        });
        (session, in_rx)
    }
}

impl Mux for YamuxSession {
    type Stream = YamuxStream;

    fn open(&self) -> impl Future<Output = Result<YamuxStream, MuxError>> + Send {
        let tx = self.open_tx.clone();
        async move {
            let (reply, rx) = oneshot::channel();
            tx.send(reply).await.map_err(|_| MuxError::Closed)?;
            rx.await.map_err(|_| MuxError::Closed)?
        }
    }

    fn close(&self) {
        self.close.cancel();
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        let done = self.done.clone();
        async move { done.cancelled().await }
    }
}

#[cfg(test)]
mod tests {
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

    /// The attack of issue 13: a peer opens every stream it may and writes without end,
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
}
