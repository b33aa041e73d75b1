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
use tokio::sync::{Notify, mpsc, oneshot};
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
    live: Arc<Live>,
}

/// A session's live streams (both directions, the control stream included), and a signal
/// each time one is dropped, so a session being retired can wait for its streams to end.
#[derive(Debug, Default)]
struct Live {
    n: AtomicUsize,
    dropped: Notify,
}

impl Drop for YamuxStream {
    fn drop(&mut self) {
        self.live.n.fetch_sub(1, Ordering::SeqCst);
        self.live.dropped.notify_waiters();
    }
}

impl YamuxStream {
    fn new(stream: yamux::Stream, done: &CancellationToken, live: &Arc<Live>) -> YamuxStream {
        live.n.fetch_add(1, Ordering::SeqCst);
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
    live: Arc<Live>,
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
        let live = Arc::new(Live::default());
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
            live: live.clone(),
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
                    if live.n.load(Ordering::SeqCst) >= open_limit {
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

    /// Streams of the session alive now, both directions, the control stream included.
    pub fn live_streams(&self) -> usize {
        self.live.n.load(Ordering::SeqCst)
    }

    /// Resolves once at most `n` streams of the session are alive (a session being
    /// retired waits for its data streams, `n` = 1 for its control stream).
    pub async fn streams_at_most(&self, n: usize) {
        loop {
            let dropped = self.live.dropped.notified();
            tokio::pin!(dropped);
            // Registered before the look, so a drop in between is not missed.
            dropped.as_mut().enable();
            if self.live.n.load(Ordering::SeqCst) <= n {
                return;
            }
            dropped.await;
        }
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
mod tests;
