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
}

impl YamuxStream {
    fn new(stream: yamux::Stream, done: &CancellationToken) -> YamuxStream {
        YamuxStream {
            inner: stream.compat(),
            session_done: done.clone(),
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
    /// Most concurrent streams per session.
    pub max_streams: usize,
    /// Receive window of every stream, in bytes (at least 256 KiB, the yamux default).
    ///
    /// The whole window is granted when the stream opens (a window update carrying the
    /// SYN, or at the first read of an accepted stream), so one stream fills a link of up to
    /// this bandwidth-delay product from its first round trip instead of ramping up. It is
    /// also the most a stream buffers when its reader falls behind: memory per session is at
    /// most `max_streams` times this, reached only by streams whose local side stops reading.
    pub stream_window: u32,
    /// Largest data frame payload.
    pub split_send_size: usize,
    /// Inbound streams queued before new ones are refused.
    pub inbound_queue: usize,
}

impl Default for MuxTuning {
    fn default() -> Self {
        MuxTuning {
            max_streams: 1024,
            // yamux grants new credit only once half the window has been read, so a sender
            // keeps between half and all of it in flight: 32 MiB keeps a 1 Gbit/s x 100 ms
            // link (12.5 MB in flight) busy.
            stream_window: 32 * 1024 * 1024,
            split_send_size: 64 * 1024,
            inbound_queue: 256,
        }
    }
}

/// The yamux configuration for `tuning`, clamped to what yamux accepts.
fn yamux_config(tuning: &MuxTuning) -> yamux::Config {
    let mut cfg = yamux::Config::default();
    let window = tuning.stream_window.max(yamux::DEFAULT_CREDIT);
    let split = tuning.split_send_size.max(1024);
    cfg.set_max_num_streams(tuning.max_streams.max(1));
    cfg.set_receive_window(window);
    // Window updates only as the reader consumes data, so a stream never buffers more than
    // its window: that is the backpressure towards a sender faster than our reader.
    cfg.set_window_update_mode(yamux::WindowUpdateMode::OnRead);
    // yamux resets a stream whose buffer has reached this limit when a data frame arrives,
    // even the empty one carrying FIN: keep it above the window so a full, unread buffer
    // (the sender waiting on credit) followed by a half-close is not a reset.
    cfg.set_max_buffer_size(window as usize + split);
    cfg.set_split_send_size(split);
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
                    match conn.poll_new_outbound(cx) {
                        Poll::Ready(Ok(stream)) => {
                            let _ = reply.send(Ok(YamuxStream::new(stream, &done)));
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
                            let _ = in_tx.try_send(YamuxStream::new(stream, &done));
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

    /// One stream gets its whole configured window at once (no ramp-up), buffers no more
    /// than that window while its reader stalls, and still carries data both ways after a
    /// half-close that follows a window filled to the last byte. The clock is paused, so a
    /// timeout elapses only once every task is idle: "blocked" means no progress was possible.
    #[tokio::test(start_paused = true)]
    async fn whole_window_at_open_and_bounded_buffer() {
        const WINDOW: u32 = 1 << 20;
        let tuning = MuxTuning {
            stream_window: WINDOW,
            ..MuxTuning::default()
        };
        let idle = std::time::Duration::from_secs(1);
        let (a, b) = tokio::io::duplex(1 << 16);
        let (client, _ci) = YamuxSession::spawn(a, Side::Client, tuning);
        let (_server, mut server_in) = YamuxSession::spawn(b, Side::Server, tuning);

        // A one-byte preamble; the first read of the accepted stream grants the window.
        let mut s = client.open().await.unwrap();
        s.write_all(b"p").await.unwrap();
        s.flush().await.unwrap();
        let mut r = server_in.recv().await.unwrap();
        let mut one = [0u8; 1];
        r.read_exact(&mut one).await.unwrap();

        // Four times the 256 KiB default goes out while the reader reads nothing.
        let first: Vec<u8> = (0..WINDOW - 1).map(|i| (i % 251) as u8).collect();
        tokio::time::timeout(idle, s.write_all(&first))
            .await
            .expect("the whole window is granted at open")
            .unwrap();
        assert!(
            tokio::time::timeout(idle, s.write_all(b"x")).await.is_err(),
            "a stalled reader buffers at most its window"
        );

        // Reading it all (and then waiting for more) grants a whole window again; fill it to
        // the last byte, then half-close.
        let mut got = vec![0u8; first.len()];
        r.read_exact(&mut got).await.unwrap();
        assert!(got == first);
        assert!(tokio::time::timeout(idle, r.read(&mut one)).await.is_err());
        let second: Vec<u8> = (0..WINDOW).map(|i| (i % 241) as u8).collect();
        tokio::time::timeout(idle, s.write_all(&second))
            .await
            .expect("a whole window again once read")
            .unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert!(rest == second);
        // The half-closed stream still carries the answer back.
        r.write_all(b"done").await.unwrap();
        r.shutdown().await.unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"done");
    }
}
