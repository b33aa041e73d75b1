//! `tfloor`: the least a TCP relay can do per connection, as a yardstick for the benchmark.
//!
//! Not a proxy anyone should run: no timeouts, no health checks, no limits, no metrics, no
//! logs, one backend per listener. It makes only the system calls that relaying one connection needs
//! (accept, socket, connect, the reads and writes, one `epoll_ctl` per socket, close), with
//! every trick Tether's relay uses (`TCP_NODELAY` inherited from the listener, a close that
//! carries the FIN when the other direction has ended, data and FIN in one segment when the
//! FIN is already known). What the kernel spends on a connection through it is what any
//! proxy with the same behaviour on the wire spends at the least, so a proxy's CPU per
//! connection divided by this one's says how much there is left to win. It is a floor for
//! connections and small requests only: bulk goes through a 64 KiB buffer, not `splice(2)`.
//!
//! Usage: `tfloor --listen IP:PORT --to IP:PORT [--listen IP:PORT --to IP:PORT ...]`: each
//! listener relays to the backend named after it. Runs until killed; a failure of any one
//! connection closes that connection only.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::process::ExitCode;

const BUF: usize = 64 * 1024;
/// Listener `i` has token `LISTENER - i` in epoll's user data; connections use
/// `slot * 2 + side`.
const LISTENER: u64 = u64::MAX;

/// A listening socket and the backend its clients are relayed to.
struct Listener {
    fd: RawFd,
    to: (libc::sockaddr_storage, libc::socklen_t),
    family: libc::c_int,
}

/// One proxied connection: `fd[0]` the client, `fd[1]` the server. Direction `d` reads
/// `fd[d]` and writes `fd[1 - d]`.
struct Conn {
    fd: [RawFd; 2],
    /// Bytes read but not yet written, per direction (only when a write was short).
    pending: [Vec<u8>; 2],
    /// Whether direction `d` has seen its source's end of stream.
    ended: [bool; 2],
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tfloor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `(listen, to)` pairs of the command line.
fn args() -> Result<Vec<(SocketAddr, SocketAddr)>, String> {
    const USAGE: &str =
        "usage: tfloor --listen IP:PORT --to IP:PORT [--listen IP:PORT --to IP:PORT ...]";
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() || !argv.len().is_multiple_of(4) {
        return Err(USAGE.into());
    }
    let addr = |v: &str| {
        v.parse::<SocketAddr>()
            .map_err(|_| format!("not IP:PORT: {v}"))
    };
    argv.chunks(4)
        .map(|c| match c {
            [l, a, t, b] if l == "--listen" && t == "--to" => Ok((addr(a)?, addr(b)?)),
            _ => Err(USAGE.into()),
        })
        .collect()
}

fn check(r: libc::c_int, what: &str) -> Result<libc::c_int, String> {
    if r < 0 {
        Err(format!("{what}: {}", io::Error::last_os_error()))
    } else {
        Ok(r)
    }
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn family(a: SocketAddr) -> libc::c_int {
    if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

fn set_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> libc::c_int {
    // SAFETY: a valid pointer to an int of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &v as *const _ as *const libc::c_void,
            mem::size_of::<libc::c_int>() as u32,
        )
    }
}

fn run() -> Result<(), String> {
    // SAFETY (all the libc calls below): plain system calls on descriptors this process
    // owns, with pointers to live, correctly sized buffers.
    let ep = check(
        unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
        "epoll_create1",
    )?;
    let mut listeners = Vec::new();
    for (i, (listen, to)) in args()?.into_iter().enumerate() {
        let lfd = check(
            unsafe {
                libc::socket(
                    family(listen),
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    0,
                )
            },
            "socket",
        )?;
        check(
            set_int(lfd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1),
            "SO_REUSEADDR",
        )?;
        // Accepted sockets inherit it: no setsockopt per client.
        check(
            set_int(lfd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1),
            "TCP_NODELAY",
        )?;
        let (ls, llen) = sockaddr(listen);
        check(
            unsafe { libc::bind(lfd, &ls as *const _ as *const libc::sockaddr, llen) },
            &format!("bind {listen}"),
        )?;
        check(unsafe { libc::listen(lfd, 4096) }, "listen")?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: LISTENER - i as u64,
        };
        check(
            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, lfd, &mut ev) },
            "epoll_ctl",
        )?;
        listeners.push(Listener {
            fd: lfd,
            to: sockaddr(to),
            family: family(to),
        });
    }

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; BUF];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {}", io::Error::last_os_error()));
        }
        for e in &events[..n as usize] {
            let (token, bits) = (e.u64, e.events);
            if token > LISTENER - listeners.len() as u64 {
                accept_all(
                    &listeners[(LISTENER - token) as usize],
                    ep,
                    &mut conns,
                    &mut free,
                );
                continue;
            }
            let slot = (token / 2) as usize;
            let side = (token % 2) as usize;
            let Some(Some(c)) = conns.get_mut(slot) else {
                continue;
            };
            // The peer's FIN, not a reset: a reset's bytes are not to be taken as complete.
            let rdhup = bits & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0
                && bits & libc::EPOLLERR as u32 == 0;
            let ok = service(c, side, rdhup, &mut buf);
            if (!ok || (c.ended[0] && c.ended[1] && c.pending.iter().all(Vec::is_empty)))
                && let Some(c) = conns[slot].take()
            {
                unsafe {
                    if !ok {
                        // A failed connection: reset both ends rather than linger.
                        let l = libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        };
                        for fd in c.fd {
                            libc::setsockopt(
                                fd,
                                libc::SOL_SOCKET,
                                libc::SO_LINGER,
                                &l as *const _ as *const libc::c_void,
                                mem::size_of::<libc::linger>() as u32,
                            );
                        }
                    }
                    // Closing removes the descriptors from epoll: no EPOLL_CTL_DEL.
                    libc::close(c.fd[0]);
                    libc::close(c.fd[1]);
                }
                free.push(slot);
            }
        }
    }
}

fn accept_all(l: &Listener, ep: RawFd, conns: &mut Vec<Option<Conn>>, free: &mut Vec<usize>) {
    let (lfd, fam, (to, to_len)) = (l.fd, l.family, &l.to);
    loop {
        // SAFETY: see `run`.
        let cfd = unsafe {
            libc::accept4(
                lfd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if cfd < 0 {
            return; // EAGAIN, or an error to try again on the next event
        }
        let sfd = unsafe {
            libc::socket(
                fam,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if sfd < 0 {
            unsafe { libc::close(cfd) };
            continue;
        }
        set_int(sfd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        let r = unsafe { libc::connect(sfd, to as *const _ as *const libc::sockaddr, *to_len) };
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
            unsafe {
                libc::close(sfd);
                libc::close(cfd);
            }
            continue;
        }
        let slot = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        conns[slot] = Some(Conn {
            fd: [cfd, sfd],
            pending: [Vec::new(), Vec::new()],
            ended: [false, false],
        });
        for (side, fd) in [cfd, sfd].into_iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
                u64: (slot * 2 + side) as u64,
            };
            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        }
    }
}

/// Moves what an event on `fd[side]` allows: flush what waited for that side to become
/// writable, then read that side dry. Returns false when the connection failed.
fn service(c: &mut Conn, side: usize, rdhup: bool, buf: &mut [u8]) -> bool {
    let other = 1 - side;
    // Direction `other` writes to `side`: it may have been waiting for room, and once its
    // bytes are out it reads on (edge-triggered epoll will not report them again).
    if !c.pending[other].is_empty() {
        match flush(c, other) {
            None => return false,
            Some(false) => {}
            Some(true) if c.ended[other] => {}
            Some(true) => {
                if !pump(c, other, false, buf) {
                    return false;
                }
            }
        }
    }
    if !c.pending[side].is_empty() || c.ended[side] {
        // Waiting for room on the other side; its writable event resumes this direction.
        return true;
    }
    pump(c, side, rdhup, buf)
}

/// Writes direction `dir`'s pending bytes. `Some(true)`: all out (and the FIN sent if the
/// direction had ended); `Some(false)`: the destination is full again; `None`: failed.
fn flush(c: &mut Conn, dir: usize) -> Option<bool> {
    let dst = c.fd[1 - dir];
    while !c.pending[dir].is_empty() {
        let p = &c.pending[dir];
        // SAFETY: see `run`.
        let w = unsafe {
            libc::send(
                dst,
                p.as_ptr() as *const libc::c_void,
                p.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if w < 0 {
            return (io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock)
                .then_some(false);
        }
        c.pending[dir].drain(..w as usize);
    }
    if c.ended[dir] {
        half_close(c, dir);
    }
    Some(true)
}

/// Reads `fd[dir]` until it would block, writing each chunk to the other side.
fn pump(c: &mut Conn, dir: usize, rdhup: bool, buf: &mut [u8]) -> bool {
    let (src, dst) = (c.fd[dir], c.fd[1 - dir]);
    loop {
        // SAFETY: see `run`.
        let n = unsafe { libc::recv(src, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            return io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock;
        }
        let n = n as usize;
        // A short read after the peer's FIN was reported means the FIN is next: send the
        // bytes with MSG_MORE so the FIN joins them, and skip the read that returns 0.
        let eof = n == 0 || (rdhup && n < buf.len());
        if n > 0 {
            let flags = libc::MSG_NOSIGNAL | if eof { libc::MSG_MORE } else { 0 };
            let w = unsafe { libc::send(dst, buf.as_ptr() as *const libc::c_void, n, flags) };
            let w = if w < 0 {
                if io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                    return false;
                }
                0
            } else {
                w as usize
            };
            if w < n {
                c.pending[dir].extend_from_slice(&buf[w..n]);
                c.ended[dir] = eof;
                return true;
            }
        }
        if eof {
            c.ended[dir] = true;
            half_close(c, dir);
            return true;
        }
        if n < buf.len() {
            return true;
        }
    }
}

/// Direction `dir` has ended and its bytes are out: send the FIN, unless the other
/// direction has ended too (the close that follows sends it then).
fn half_close(c: &Conn, dir: usize) {
    if !c.ended[1 - dir] {
        // SAFETY: see `run`.
        unsafe { libc::shutdown(c.fd[1 - dir], libc::SHUT_WR) };
    }
}
