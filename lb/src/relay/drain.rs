//! Moving what is ready from one socket to the other: by copy through a pooled buffer, or
//! with `splice(2)` once a direction carries bulk; half-close detection.

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Waker};

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::*;

/// How a direction moves its bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Through a user-space buffer, always (splicing is off or failed).
    Copy,
    /// Through a buffer until one read fills it, then [`Mode::Splice`].
    CopyUntilBulk,
    /// With `splice(2)` through a pipe.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Splice,
}

pub(super) enum Drained {
    /// Reading would block now; `bulk` when some read filled the whole buffer.
    More {
        bulk: bool,
    },
    Eof,
}

pub(super) enum DrainError {
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
pub(super) async fn wait_writable(to: &TcpStream, state: &AtomicU8) -> Result<(), DrainError> {
    state.store(WRITING, Ordering::Relaxed);
    let r = to.writable().await;
    state.store(READING, Ordering::Relaxed);
    r.map_err(|_| DrainError::Write)
}

/// Reads what is ready and writes it all out, chunk by chunk, until reading would block.
pub(super) async fn drain(
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
pub(super) fn fin_reported(s: &TcpStream) -> bool {
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
pub(super) async fn drain_spliced(
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
