//! Stream multiplexing of a session, behind our own small [`Mux`] trait so the `yamux` crate
//! can be replaced by an in-house implementation of the same wire format without touching
//! the drivers.
//!
//! The yamux `Connection` makes progress only while it is polled, so one task owns it and
//! polls, in one `poll_fn`, the queue of open requests, `poll_new_outbound` and
//! `poll_next_inbound`; inbound streams are handed over on a bounded channel.

use std::future::Future;
use std::task::Poll;

use futures::FutureExt;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;

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
    /// Opens a new outbound stream (costs no round trip: the SYN rides the first data).
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

/// A yamux stream as a tokio stream.
pub type YamuxStream = Compat<yamux::Stream>;

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
    /// Upper bound of the receive windows of all streams of a session together. Stream
    /// windows start at 256 KiB and grow with the measured bandwidth-delay product up to
    /// this, so one stream can fill a long fat WAN link.
    pub max_connection_window: usize,
    /// Largest data frame payload.
    pub split_send_size: usize,
    /// Inbound streams queued before new ones are refused.
    pub inbound_queue: usize,
}

impl Default for MuxTuning {
    fn default() -> Self {
        MuxTuning {
            max_streams: 1024,
            max_connection_window: 1 << 30,
            split_send_size: 64 * 1024,
            inbound_queue: 256,
        }
    }
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
        let mut cfg = yamux::Config::default();
        let streams = tuning.max_streams.max(1);
        // yamux asserts window >= 256 KiB x streams; keep the pair consistent whatever the
        // caller asked for.
        let window = tuning.max_connection_window.max(streams * 256 * 1024);
        // Lower the stream count first: each setter asserts the pair against the other.
        cfg.set_max_num_streams(1);
        cfg.set_max_connection_receive_window(Some(window));
        cfg.set_max_num_streams(streams);
        cfg.set_split_send_size(tuning.split_send_size.max(1024));
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
                            let _ = reply.send(Ok(stream.compat()));
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
                            let _ = in_tx.try_send(stream.compat());
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
}
