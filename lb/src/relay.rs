//! Moving bytes between a client and a server: both directions at once, half-close
//! propagated, idle timeouts, and buffers held only while data is moving.
//!
//! The loops wait for readiness without a buffer and borrow one from a per-thread pool only
//! to drain what is ready, so ten thousand idle connections hold no buffers at all, while a
//! busy one copies in 64 KiB chunks (tokio's 8 KiB default costs measurable throughput).
//!
//! On Linux the bytes move with `splice(2)` through a pooled pipe instead of being copied
//! through user space (see `splice.rs`); the copy loop stays as the portable path and the
//! fallback when a socket cannot be spliced. [`set_splice`] turns splicing off (the
//! environment variable `TETHER_LB_SPLICE=off` does the same for a whole process).

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

#[cfg(target_os = "linux")]
#[path = "splice.rs"]
mod splice;

/// Whether relays splice: 0 = not decided yet (read the environment), 1 = on, 2 = off.
static SPLICE: AtomicU8 = AtomicU8::new(0);

/// Turns zero-copy forwarding with `splice(2)` on or off for relays started afterwards
/// (on by default where the platform has it: it moves bulk data with less CPU).
pub fn set_splice(on: bool) {
    SPLICE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether new relays splice: [`set_splice`] if it was called, else on unless the
/// environment variable `TETHER_LB_SPLICE` is `off`, `0` or `false`.
pub fn splice_enabled() -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    match SPLICE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = !matches!(
                std::env::var("TETHER_LB_SPLICE").as_deref(),
                Ok("off" | "0" | "false")
            );
            set_splice(on);
            on
        }
    }
}

/// Size of one copy buffer.
pub const BUF_SIZE: usize = 64 * 1024;
/// Buffers kept per thread for reuse.
const POOL_MAX: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buf() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

fn give_buf(b: Box<[u8]>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(b);
        }
    });
}

/// How a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// Both sides closed their sending direction.
    Done,
    /// The client sent nothing (and nothing moved) for `client_timeout`.
    ClientTimeout,
    /// The server sent nothing (and nothing moved) for `server_timeout`.
    ServerTimeout,
    /// The client's side failed (reset, broken pipe).
    ClientError,
    /// The server's side failed.
    ServerError,
    /// The balancer stopped before the connection finished.
    Shutdown,
}

impl End {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            End::Done => "done",
            End::ClientTimeout => "client_timeout",
            End::ServerTimeout => "server_timeout",
            End::ClientError => "client_error",
            End::ServerError => "server_error",
            End::Shutdown => "shutdown",
        }
    }
}

/// What a relay moved and how it ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Bytes client to server.
    pub up: u64,
    /// Bytes server to client.
    pub down: u64,
    /// How it ended.
    pub end: End,
}

/// Which side a pump reads from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// What a pump is doing, for deciding which side an idle timeout blames.
const READING: u8 = 0;
const WRITING: u8 = 1;

/// State the two pumps share with the relay's single idle timer. One timer per connection
/// (rather than one per wait) keeps the per-connection future small and spares every
/// wait a timer-wheel insert and removal.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    /// Whether the pumps may splice (see [`Mode`]).
    splice: bool,
    /// `READING` or `WRITING`, client to server and server to client.
    up_state: AtomicU8,
    down_state: AtomicU8,
    /// Bytes moved so far, client to server and server to client.
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
    /// Directions that have seen their source's end of stream.
    ended: AtomicU8,
}

impl Activity {
    fn new(splice: bool) -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            splice,
            up_state: AtomicU8::new(READING),
            down_state: AtomicU8::new(READING),
            up_bytes: AtomicU64::new(0),
            down_bytes: AtomicU64::new(0),
            ended: AtomicU8::new(0),
        }
    }
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
    fn state(&self, side: Side) -> &AtomicU8 {
        match side {
            Side::Client => &self.up_state,
            Side::Server => &self.down_state,
        }
    }
    fn moved(&self, side: Side, n: u64) {
        let c = match side {
            Side::Client => &self.up_bytes,
            Side::Server => &self.down_bytes,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }
    /// Whom an idle spell blames, given which directions are still open: a direction
    /// waiting to read blames its source, one stuck writing blames its destination. Returns
    /// the end if some applicable timeout has passed, else how long until the next one.
    fn check_idle(
        &self,
        up_open: bool,
        down_open: bool,
        client_timeout: Duration,
        server_timeout: Duration,
    ) -> Result<End, Duration> {
        let idle = self.idle_for();
        let mut candidates: [Option<(Duration, End)>; 2] = [None, None];
        for (i, (open, side)) in [(up_open, Side::Client), (down_open, Side::Server)]
            .into_iter()
            .enumerate()
        {
            if !open {
                continue;
            }
            let blames_client = match side {
                Side::Client => self.up_state.load(Ordering::Relaxed) == READING,
                Side::Server => self.down_state.load(Ordering::Relaxed) == WRITING,
            };
            candidates[i] = Some(if blames_client {
                (client_timeout, End::ClientTimeout)
            } else {
                (server_timeout, End::ServerTimeout)
            });
        }
        let first = candidates.into_iter().flatten().min_by_key(|(t, _)| *t);
        match first {
            Some((t, end)) if idle >= t => Ok(end),
            Some((t, _)) => Err(t - idle),
            // Nothing open: the relay is finishing anyway.
            None => Err(client_timeout.min(server_timeout)),
        }
    }
}

/// Relays until both directions are closed, one side fails, a side is idle too long, or
/// `stop` is cancelled. `count_up` and `count_down` see every chunk as it moves. `splice`:
/// bulk may move with `splice(2)` (when [`splice_enabled`] too).
#[allow(clippy::too_many_arguments)]
pub async fn relay(
    client: &TcpStream,
    server: &TcpStream,
    client_timeout: Duration,
    server_timeout: Duration,
    count_up: &(dyn Fn(u64) + Sync),
    count_down: &(dyn Fn(u64) + Sync),
    stop: &CancellationToken,
    splice: bool,
) -> Outcome {
    relay_with(
        client,
        server,
        client_timeout,
        server_timeout,
        count_up,
        count_down,
        stop,
        splice && splice_enabled(),
    )
    .await
}

/// [`relay`], with splicing chosen by the caller (tests take both paths in one process).
#[allow(clippy::too_many_arguments)]
async fn relay_with(
    client: &TcpStream,
    server: &TcpStream,
    client_timeout: Duration,
    server_timeout: Duration,
    count_up: &(dyn Fn(u64) + Sync),
    count_down: &(dyn Fn(u64) + Sync),
    stop: &CancellationToken,
    splice: bool,
) -> Outcome {
    let activity = Activity::new(splice);
    let up = pump(client, server, Side::Client, count_up, &activity);
    let down = pump(server, client, Side::Server, count_down, &activity);
    let idle = tokio::time::sleep(client_timeout.min(server_timeout));
    tokio::pin!(up, down, idle);
    let (mut up_done, mut down_done) = (false, false);
    let end = loop {
        if up_done && down_done {
            break End::Done;
        }
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(end) => break end,
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(end) => break end,
            },
            _ = &mut idle => {
                match activity.check_idle(!up_done, !down_done, client_timeout, server_timeout) {
                    Ok(end) => break end,
                    Err(left) => idle.as_mut().reset(tokio::time::Instant::now() + left),
                }
            }
            _ = stop.cancelled() => break End::Shutdown,
        }
    };
    Outcome {
        up: activity.up_bytes.load(Ordering::Relaxed),
        down: activity.down_bytes.load(Ordering::Relaxed),
        end,
    }
}

/// Copies `from` to `to` until `from` closes, then half-closes `to`. Idle timeouts are
/// the relay's: a pump only records what it is waiting for.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    side: Side,
    count: &(dyn Fn(u64) + Sync),
    activity: &Activity,
) -> Result<(), End> {
    let (read_fail, write_fail) = match side {
        Side::Client => (End::ClientError, End::ServerError),
        Side::Server => (End::ServerError, End::ClientError),
    };
    // Small messages are copied: for them a splice costs as many system calls as a copy,
    // plus a page for the pipe. A direction switches to splicing once one read fills a
    // whole buffer, the sign of a bulk transfer (HAProxy's `splice-auto` does the same).
    let mut mode = if activity.splice {
        Mode::CopyUntilBulk
    } else {
        Mode::Copy
    };
    let count = |n: u64| {
        count(n);
        activity.moved(side, n);
        activity.touch();
    };
    let state = activity.state(side);
    loop {
        // Wait for data without holding a buffer.
        if from.readable().await.is_err() {
            return Err(read_fail);
        }
        let mut result = None;
        #[cfg(target_os = "linux")]
        if mode == Mode::Splice {
            // Out of descriptors for a pipe: copy this round, splice again later.
            if let Ok(mut pipe) = splice::take_pipe() {
                let r = drain_spliced(from, to, &mut pipe, &count, state).await;
                splice::give_pipe(pipe);
                match r {
                    // This pair of sockets cannot be spliced: copy from now on.
                    Err(DrainError::Unsupported) => mode = Mode::Copy,
                    r => result = Some(r),
                }
            }
        }
        let result = match result {
            Some(r) => r,
            None => {
                let mut buf = take_buf();
                let r = drain(from, to, &mut buf, &count, state).await;
                give_buf(buf);
                r
            }
        };
        match result {
            Ok(Drained::More { bulk }) => {
                if bulk && mode == Mode::CopyUntilBulk {
                    mode = Mode::Splice;
                }
            }
            Ok(Drained::Eof) => {
                // Half-close: tell the other side we are done sending, keep reading it.
                // When the other direction has ended already, the relay is over and the
                // close that follows sends this FIN: one system call less per connection.
                if activity.ended.fetch_add(1, Ordering::Relaxed) == 0 {
                    let _ = socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
                }
                return Ok(());
            }
            Err(DrainError::Read) => return Err(read_fail),
            Err(DrainError::Write) => return Err(write_fail),
            Err(DrainError::Unsupported) => return Err(read_fail),
        }
    }
}

/// How a direction moves its bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Through a user-space buffer, always (splicing is off or failed).
    Copy,
    /// Through a buffer until one read fills it, then [`Mode::Splice`].
    CopyUntilBulk,
    /// With `splice(2)` through a pipe.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Splice,
}

enum Drained {
    /// Reading would block now; `bulk` when some read filled the whole buffer.
    More {
        bulk: bool,
    },
    Eof,
}

enum DrainError {
    Read,
    Write,
    /// `splice` refused these sockets before anything moved (only from `drain_spliced`).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Unsupported,
}

/// What one read found.
pub(crate) enum Got {
    /// Bytes; `drained` when the read was short, so the socket had nothing more.
    Data {
        n: usize,
        drained: bool,
    },
    Eof,
    WouldBlock,
}

/// Reads once. A short read on a TCP socket means its receive queue was empty, so this
/// also clears the socket's readiness then: the next wait sleeps until new bytes arrive
/// (edge-triggered epoll reports them) instead of spending a system call on a read that
/// can only say `EAGAIN`. Every small message saves that call in each direction.
pub(crate) fn read_once(from: &TcpStream, buf: &mut [u8]) -> io::Result<Got> {
    use std::io::Read;

    let sock = socket2::SockRef::from(from);
    let mut short = None;
    let r = from.try_io(Interest::READABLE, || {
        let n = (&*sock).read(buf)?;
        if n > 0 && n < buf.len() {
            short = Some(n);
            // Reported as WouldBlock only so tokio clears the readiness; the bytes are
            // returned through `short`. A later arrival sets it again (new epoll edge,
            // and tokio's tick check keeps a newer event from being cleared).
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (r, short) {
        (_, Some(n)) => Ok(Got::Data { n, drained: true }),
        (Ok(0), None) => Ok(Got::Eof),
        (Ok(n), None) => Ok(Got::Data { n, drained: false }),
        (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => Ok(Got::WouldBlock),
        (Err(e), None) => Err(e),
    }
}

/// Waits until `to` accepts more bytes, marking the direction as stuck on its
/// destination meanwhile (so an idle timeout blames that side).
async fn wait_writable(to: &TcpStream, state: &AtomicU8) -> Result<(), DrainError> {
    state.store(WRITING, Ordering::Relaxed);
    let r = to.writable().await;
    state.store(READING, Ordering::Relaxed);
    r.map_err(|_| DrainError::Write)
}

/// Reads what is ready and writes it all out, chunk by chunk, until reading would block.
async fn drain(
    from: &TcpStream,
    to: &TcpStream,
    buf: &mut [u8],
    count: &(dyn Fn(u64) + Sync),
    state: &AtomicU8,
) -> Result<Drained, DrainError> {
    let mut bulk = false;
    // Asked once, before the first read: a FIN reported by then lies behind every byte of
    // the receive queue, so any short read of this wake-up has taken the last of them. (A
    // FIN reported only later is read as an end on the next wake-up.)
    let fin_before = fin_reported(from);
    // A bounded number of chunks per wake-up keeps one fast sender from starving the others
    // on this worker thread.
    for _ in 0..16 {
        let (n, drained) = match read_once(from, buf) {
            Ok(Got::Data { n, drained }) => (n, drained),
            Ok(Got::Eof) => return Ok(Drained::Eof),
            Ok(Got::WouldBlock) => return Ok(Drained::More { bulk }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(DrainError::Read),
        };
        bulk |= n == buf.len();
        // The peer's FIN was known before a read that emptied the queue (a request or a
        // response followed by a close): the end needs no read of its own (HAProxy skips it
        // too), and the bytes go out with MSG_MORE so that the half-close that follows adds
        // the FIN to the same segment, one packet instead of two.
        let eof = drained && fin_before;
        let flags = libc::MSG_NOSIGNAL | if eof { libc::MSG_MORE } else { 0 };
        let sock = socket2::SockRef::from(to);
        let mut off = 0;
        while off < n {
            match to.try_io(Interest::WRITABLE, || {
                sock.send_with_flags(&buf[off..n], flags)
            }) {
                Ok(w) => off += w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(to, state).await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(DrainError::Write),
            }
        }
        count(n as u64);
        if eof {
            return Ok(Drained::Eof);
        }
        if drained {
            return Ok(Drained::More { bulk });
        }
    }
    Ok(Drained::More { bulk })
}

/// Whether the readiness events already received report the peer's FIN, and no error (a
/// reset's bytes are not a complete stream). No system call.
fn fin_reported(s: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let ready = std::pin::pin!(s.ready(Interest::READABLE | Interest::ERROR));
    // Readiness to read is what woke the caller, so this is ready at once; were it not, the
    // future would only unregister its no-op waker when dropped.
    match ready.poll(&mut cx) {
        Poll::Ready(Ok(r)) => r.is_read_closed() && !r.is_error(),
        _ => false,
    }
}

/// [`drain`] without the copy: splices what is ready into `pipe`, and from the pipe into
/// `to`, until reading would block. The pipe is empty again when this returns `Ok`.
#[cfg(target_os = "linux")]
async fn drain_spliced(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &mut splice::Pipe,
    count: &(dyn Fn(u64) + Sync),
    state: &AtomicU8,
) -> Result<Drained, DrainError> {
    use std::os::fd::AsRawFd;

    let (from_fd, to_fd) = (from.as_raw_fd(), to.as_raw_fd());
    let mut first = true;
    // Same fairness bound as the copy loop; each round moves up to a pipe's capacity.
    for _ in 0..16 {
        // `try_io` clears tokio's readiness when the call would block, so the next wait
        // really waits. (A short splice does not prove the socket empty, unlike a short
        // read: the pipe may have run out of slots first.)
        let n = match from.try_io(Interest::READABLE, || splice::socket_to_pipe(from_fd, pipe)) {
            Ok(0) => return Ok(Drained::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(Drained::More { bulk: true });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if first && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                return Err(DrainError::Unsupported);
            }
            Err(_) => return Err(DrainError::Read),
        };
        first = false;
        while pipe.len > 0 {
            match to.try_io(Interest::WRITABLE, || splice::pipe_to_socket(pipe, to_fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(to, state).await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(DrainError::Write),
            }
        }
        count(n as u64);
    }
    Ok(Drained::More { bulk: true })
}

#[cfg(test)]
mod tests;
