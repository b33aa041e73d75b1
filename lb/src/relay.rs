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
//!
//! Modules: `activity` (the idle timer the two directions share), `drain` (moving what
//! is ready, by copy or splice).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

#[cfg(target_os = "linux")]
#[path = "splice.rs"]
mod splice;

mod activity;
mod drain;

use activity::*;
use drain::*;
pub(crate) use drain::{Got, read_once};

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

#[cfg(test)]
mod tests;
