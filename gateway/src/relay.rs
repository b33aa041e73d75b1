//! Copying both ways between a TCP connection and a yamux stream, with buffers held only
//! while data is moving (as `tether lb` does).
//!
//! tokio's `copy_bidirectional` owns a buffer per direction for the life of the relay: two
//! 64 KiB buffers for every idle connection on each gateway, most of what 1,000 idle
//! connections cost (docs/gateway.md, "Memory per idle connection"). Here each direction
//! borrows a buffer from a per-thread pool only for a read, gives it back at once when the
//! read finds nothing, and otherwise when everything read has been written. A buffer given
//! back after an empty read was not written to, so an idle relay holds nothing but its
//! state. The read is the readiness wait: the stream side speaks futures-io through
//! tokio-util's compat, which has no readiness call of its own, so the buffer is lent for
//! the poll and the poll alone.
//!
//! The relay also notes when bytes last moved, for the stream idle timeout: one clock read
//! per poll that moved data, and a single timer per stream in [`crate::stream`] that looks
//! at it when it fires (as `tether lb`'s relay does), rather than a timer reset per read.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Size of one copy buffer: 64 KiB chunks (tokio's 8 KiB default costs measurable
/// throughput on a fast link).
const BUF_SIZE: usize = 64 * 1024;
/// Buffers kept per thread for reuse: what busy relays on one worker need at once, without
/// holding more than 4 MiB idle.
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

/// One direction of a relay: reads from a source, writes everything read to a sink, and
/// at the source's end of stream shuts the sink's sending direction.
#[derive(Default)]
struct Pump {
    /// Bytes read and not yet written (`buf[pos..len]`); `None` when nothing is pending.
    buf: Option<Box<[u8]>>,
    pos: usize,
    len: usize,
    /// The source reached its end; what remains is writing out and the shutdown.
    eof: bool,
    /// Bytes went to the sink since its last flush.
    need_flush: bool,
    /// Bytes moved so far.
    moved: u64,
    /// Bytes were read or written since the relay last looked.
    progress: bool,
}

impl Pump {
    /// Moves bytes until the source ends (`Ready(Ok)`, after the sink was shut down),
    /// either side fails, or nothing can move (`Pending`, holding a buffer only if the
    /// sink cannot take what was read).
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut src: Pin<&mut R>,
        mut dst: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if let Some(buf) = &self.buf {
                while self.pos < self.len {
                    let n = ready!(dst.as_mut().poll_write(cx, &buf[self.pos..self.len]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    self.pos += n;
                    self.moved += n as u64;
                    self.need_flush = true;
                    self.progress = true;
                }
                if let Some(b) = self.buf.take() {
                    give_buf(b);
                }
            }
            if self.eof {
                if self.need_flush {
                    ready!(dst.as_mut().poll_flush(cx))?;
                    self.need_flush = false;
                }
                return dst.as_mut().poll_shutdown(cx);
            }
            let mut buf = take_buf();
            let mut rb = ReadBuf::new(&mut buf);
            match src.as_mut().poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        give_buf(buf);
                        self.eof = true;
                    } else {
                        self.buf = Some(buf);
                        self.pos = 0;
                        self.len = n;
                        self.progress = true;
                    }
                }
                Poll::Ready(Err(e)) => {
                    give_buf(buf);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    // Nothing to read: the buffer goes back unused, and what was written
                    // is pushed out before the relay sleeps (a yamux stream sends on
                    // flush what its writes queued).
                    give_buf(buf);
                    if self.need_flush {
                        ready!(dst.as_mut().poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Copies both ways between `a` and `b` until both directions finished, propagating
/// half-close, holding a copy buffer only while data is moving. Resolves to the bytes
/// moved (a→b, b→a); a failure of either side ends both, with the bytes moved until then.
pub(crate) struct Relay<'a, A: ?Sized, B: ?Sized> {
    a: &'a mut A,
    b: &'a mut B,
    a_to_b: Pump,
    b_to_a: Pump,
    a_done: bool,
    b_done: bool,
    /// When a byte was last read or written either way (or the relay was made).
    last_active: Instant,
}

impl<'a, A, B> Relay<'a, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    /// A relay between `a` and `b`; nothing moves until it is polled.
    pub(crate) fn new(a: &'a mut A, b: &'a mut B) -> Self {
        Relay {
            a,
            b,
            a_to_b: Pump::default(),
            b_to_a: Pump::default(),
            a_done: false,
            b_done: false,
            last_active: Instant::now(),
        }
    }

    /// When a byte was last read or written in either direction (the relay's creation
    /// before any was): what the stream idle timeout measures from.
    pub(crate) fn last_active(&self) -> Instant {
        self.last_active
    }

    /// Copy buffers this relay holds now (0 to 2): one per direction whose sink has not
    /// yet taken all that was read. For the tests that guard what an idle relay holds.
    #[cfg(test)]
    pub(crate) fn buffers_held(&self) -> usize {
        usize::from(self.a_to_b.buf.is_some()) + usize::from(self.b_to_a.buf.is_some())
    }

    /// Bytes moved so far (a→b, b→a).
    pub(crate) fn moved(&self) -> (u64, u64) {
        (self.a_to_b.moved, self.b_to_a.moved)
    }
}

impl Drop for Pump {
    /// A relay that ends (or is dropped) with data in flight gives its buffer back.
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            give_buf(b);
        }
    }
}

impl<A, B> Future for Relay<'_, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    type Output = (u64, u64);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(u64, u64)> {
        let this = self.get_mut();
        let polled = this.poll_pumps(cx);
        if std::mem::take(&mut this.a_to_b.progress) | std::mem::take(&mut this.b_to_a.progress) {
            this.last_active = Instant::now();
        }
        polled
    }
}

impl<A, B> Relay<'_, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    fn poll_pumps(&mut self, cx: &mut Context<'_>) -> Poll<(u64, u64)> {
        let this = self;
        if !this.a_done {
            match this
                .a_to_b
                .poll_copy(cx, Pin::new(&mut *this.a), Pin::new(&mut *this.b))
            {
                Poll::Ready(Ok(())) => this.a_done = true,
                Poll::Ready(Err(_)) => return Poll::Ready(this.moved()),
                Poll::Pending => {}
            }
        }
        if !this.b_done {
            match this
                .b_to_a
                .poll_copy(cx, Pin::new(&mut *this.b), Pin::new(&mut *this.a))
            {
                Poll::Ready(Ok(())) => this.b_done = true,
                Poll::Ready(Err(_)) => return Poll::Ready(this.moved()),
                Poll::Pending => {}
            }
        }
        if this.a_done && this.b_done {
            Poll::Ready(this.moved())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests;
