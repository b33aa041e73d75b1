//! Listening sockets: `SO_REUSEPORT` so each worker has its own accept queue, `IP_FREEBIND`
//! so a VRRP backup can bind the VIP before it holds it, `IPV6_V6ONLY` so `[::]:p` and
//! `0.0.0.0:p` can both be bound.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Backlog of each listening socket.
const BACKLOG: i32 = 4096;

/// Binds `count` sockets on `addr` sharing the port (one per worker). With port 0, the
/// first socket's port is reused for the rest. They are non-blocking std sockets: each is
/// registered with tokio by the runtime of the worker that accepts on it.
pub fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let first = bind_one(addr)?;
    let actual = first.local_addr()?;
    let mut out = vec![first];
    for _ in 1..count.max(1) {
        out.push(bind_one(actual)?);
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
