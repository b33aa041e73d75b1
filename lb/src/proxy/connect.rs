//! Connecting to a server: retries on another server after a failed connect, the local
//! errors that are not the server's fault, and the first bytes written before the relay.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::*;

/// Writes the PROXY header and replayed bytes before relaying.
pub(super) async fn write_first(
    stream: &TcpStream,
    mut bytes: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::timeout(timeout, stream.writable())
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Picks a server and connects, trying up to `retries` other servers after a failure.
pub(super) async fn connect_with_retries(
    backend: &Backend,
    peer: SocketAddr,
) -> Result<Connected, NoConnect> {
    let mut tried: Vec<usize> = Vec::new();
    let mut failures = 0u32;
    loop {
        let Some(idx) = backend.pick(peer.ip(), &tried) else {
            return Err(if failures > 0 {
                NoConnect::ConnectFailed
            } else {
                NoConnect::NoServer
            });
        };
        let server = backend.servers[idx].clone();
        let active = server.claim();
        let slot = match &server.slots {
            None => None,
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let Some(_queued) = server.enqueue() else {
                        // Its queue is full too: let another server take the client.
                        tried.push(idx);
                        continue;
                    };
                    match tokio::time::timeout(
                        backend.cfg.queue_timeout,
                        slots.clone().acquire_owned(),
                    )
                    .await
                    {
                        Ok(Ok(p)) => Some(p),
                        _ => {
                            server.m.queue_timeouts.inc();
                            return Err(NoConnect::QueueTimeout);
                        }
                    }
                }
            },
        };
        let t0 = Instant::now();
        match connect_within(server.addr, backend.cfg.connect_timeout).await {
            Ok(Ok(stream)) => {
                let connect_time = t0.elapsed();
                server.m.connect_seconds.observe(connect_time.as_secs_f64());
                server.count_connection();
                server.connect_succeeded();
                return Ok(Connected {
                    server,
                    stream,
                    _active: active,
                    _slot: slot,
                    connect_time,
                });
            }
            result => {
                server.m.connect_failures.inc();
                // Failed connects count toward `fall` like failed checks, so a server that
                // stops answering is out after a few clients rather than a few intervals;
                // connects that were in flight together count once (`passive.rs`).
                // Errors of our own (out of descriptors, buffers, ports) are not the
                // server's fault and do not count.
                let ours = matches!(&result, Ok(Err(e)) if is_local_error(e));
                if !ours && let Some(t) = server.connect_failed(t0) {
                    tracing::warn!(backend = %backend.cfg.name, server = %server.cfg.name, from = t.from.as_str(), "server down after failed connects");
                }
                let why = match result {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("timed out after {:?}", backend.cfg.connect_timeout),
                };
                tracing::debug!(backend = %backend.cfg.name, server = %server.cfg.name, error = %why, "connect failed");
                tried.push(idx);
                failures += 1;
                if failures > backend.cfg.retries {
                    return Err(NoConnect::ConnectFailed);
                }
                backend.retries.inc();
            }
        }
    }
}

/// An error from this host's resources rather than from the server.
pub(super) fn is_local_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// [`connect`], failing with `Err(Elapsed)` after `timeout`.
///
/// The timer is armed only if the connection is not up after one turn of the poller. On
/// loopback and most LANs it is up by then, and a timer that was never armed costs
/// nothing; arming one earlier than every other pending timer makes tokio interrupt its
/// own poller with an eventfd write, which under load was most connections.
pub(super) async fn connect_within(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<io::Result<TcpStream>, tokio::time::error::Elapsed> {
    let deadline = tokio::time::Instant::now() + timeout;
    let connecting = connect(addr);
    tokio::pin!(connecting);
    tokio::select! {
        biased;
        r = &mut connecting => return Ok(r),
        // Completes after the poller's next turn, without a timer.
        _ = tokio::task::yield_now() => {}
    }
    tokio::time::timeout_at(deadline, connecting).await
}

/// Opens a connection to `addr` with `TCP_NODELAY`.
///
/// Unlike `TcpStream::connect`, this asks the socket for its error (`getsockopt(SO_ERROR)`)
/// only when the readiness event says the handshake failed, not after every successful
/// one: a system call less per connection, as HAProxy does.
///
/// The handshake's final ACK goes out at once, not held back to ride on the first bytes
/// (`TCP_QUICKACK` off would save that packet): until the server's kernel has that ACK, the
/// connection sits half-open on the server's listener, and a listener closed meanwhile (a
/// server restarting or draining) resets a connection this side already counts as up.
pub(super) async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};

    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    sock.set_tcp_nodelay(true)?;
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(sock))?;
    let ready = stream
        .ready(tokio::io::Interest::WRITABLE | tokio::io::Interest::ERROR)
        .await?;
    if ready.is_error() || ready.is_write_closed() {
        return Err(stream
            .take_error()?
            .unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()));
    }
    Ok(stream)
}
