//! Zero-copy forwarding with `splice(2)` through a pipe (Linux).
//!
//! `splice` moves socket pages into a pipe and from the pipe into the other socket without
//! copying them through user space, which halves the proxy's memory traffic on bulk
//! transfers. Pipes come from a per-thread pool and are held only while bytes are in flight
//! (exactly like the copy loop's buffers), so an idle connection holds no pipe: ten thousand
//! idle connections cost no extra descriptors or kernel pipe buffers.
//!
//! Everything here is a thin wrapper over the system calls; the relay decides when to call
//! them and handles readiness, timeouts and errors.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Capacity asked of each pipe: a larger pipe moves more per system call on bulk transfers
/// (the kernel default is 64 KiB). If the kernel refuses, the default is kept.
const PIPE_SIZE: usize = 256 * 1024;
/// Empty pipes kept per thread for reuse.
const POOL_MAX: usize = 64;

/// A pipe and how many bytes it currently holds.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes spliced in and not yet spliced out.
    pub(crate) len: usize,
    /// What one splice into the pipe may move.
    pub(crate) cap: usize,
}

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// Takes an empty pipe from this thread's pool, or creates one.
pub(crate) fn take_pipe() -> io::Result<Pipe> {
    if let Some(p) = POOL.with(|p| p.borrow_mut().pop()) {
        return Ok(p);
    }
    new_pipe()
}

/// Returns a pipe to the pool. A pipe still holding bytes is closed instead: its bytes
/// belong to a connection that failed, and must never reach another one.
pub(crate) fn give_pipe(p: Pipe) {
    if p.len != 0 {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_MAX {
            pool.push(p);
        }
    });
}

fn new_pipe() -> io::Result<Pipe> {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ on a pipe descriptor we own; failure leaves the default size.
    let size = unsafe {
        libc::fcntl(
            write.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            PIPE_SIZE as libc::c_int,
        )
    };
    let cap = if size > 0 { size as usize } else { 64 * 1024 };
    Ok(Pipe {
        read,
        write,
        len: 0,
        cap,
    })
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain system call on descriptors the caller keeps open for its duration;
    // null offsets are required for sockets and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Moves what the socket has ready (up to the pipe's free space) into the pipe.
/// `Ok(0)` is end of stream.
pub(crate) fn socket_to_pipe(socket: RawFd, pipe: &mut Pipe) -> io::Result<usize> {
    let n = splice(socket, pipe.write.as_raw_fd(), pipe.cap - pipe.len)?;
    pipe.len += n;
    Ok(n)
}

/// Moves what the socket accepts of the pipe's bytes into the socket.
pub(crate) fn pipe_to_socket(pipe: &mut Pipe, socket: RawFd) -> io::Result<usize> {
    let n = splice(pipe.read.as_raw_fd(), socket, pipe.len)?;
    pipe.len -= n;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn moves_bytes_between_sockets_and_reports_eof() {
        let (mut client, proxy_in) = pair();
        let (proxy_out, mut server) = pair();
        let mut pipe = take_pipe().unwrap();
        assert!(pipe.cap >= 64 * 1024);
        client.write_all(b"hello through a pipe").unwrap();
        // Blocking sockets: splice waits for the bytes.
        let n = socket_to_pipe(proxy_in.as_raw_fd(), &mut pipe).unwrap();
        assert_eq!(n, 20);
        assert_eq!(pipe.len, 20);
        assert_eq!(
            pipe_to_socket(&mut pipe, proxy_out.as_raw_fd()).unwrap(),
            20
        );
        assert_eq!(pipe.len, 0);
        let mut got = [0u8; 20];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello through a pipe");
        drop(client);
        assert_eq!(socket_to_pipe(proxy_in.as_raw_fd(), &mut pipe).unwrap(), 0);
        give_pipe(pipe);
        assert_eq!(POOL.with(|p| p.borrow().len()), 1);
    }

    #[test]
    fn a_pipe_holding_bytes_is_not_reused() {
        let mut p = take_pipe().unwrap();
        p.len = 3;
        give_pipe(p);
        assert_eq!(POOL.with(|p| p.borrow().len()), 0);
    }
}
