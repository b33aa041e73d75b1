//! Reading what a client sends before a server is chosen: its PROXY header, its TLS
//! ClientHello or first bytes, bounded in size and time.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::*;

/// What was read from the client before a server was chosen.
pub(super) struct Inspected {
    /// The client as the server should see it (from a PROXY header, or the peer).
    pub(super) client: SocketAddr,
    /// The address the client connected to, when a PROXY header named it (otherwise
    /// asked of the socket only when a PROXY header is sent: a system call per connection).
    pub(super) local: Option<SocketAddr>,
    /// Bytes already read that the server must get first (a ClientHello, or with
    /// `send_proxy` what the client had sent by the poller's first turn).
    pub(super) replay: Vec<u8>,
    /// The backend chosen by SNI, or the frontend's default.
    pub(super) backend: Arc<Backend>,
}

/// Why no server was chosen for a client while its first bytes were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotInspected {
    /// Counted under this reason in `tether_lb_frontend_inspect_errors_total`; the
    /// connection ends as `inspect_failed`.
    Failed(&'static str),
    /// A PROXY header, then a close or reset where a ClientHello was awaited: a balancer's
    /// check ([`Verdict::ProxyCheck`]), not an error.
    ProxyCheck,
}

/// The reasons reading a client's first bytes stops for, besides the parsers' refusals:
/// [`read_until`] and [`ReadStop::reason`], [`read_ready`], and a hard stop.
pub(super) const READ_STOPS: &[&str] =
    &["too_large", "timeout", "closed", "read_error", "shutdown"];

/// Every reason a client of `fe` may be counted under in
/// `tether_lb_frontend_inspect_errors_total`; `sends_proxy`: its default backend sends a
/// PROXY header. Created at 0 with the frontend.
pub(crate) fn inspect_reasons(fe: &FrontendConfig, sends_proxy: bool) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    if fe.accept_proxy || !fe.routes.is_empty() {
        reasons.extend_from_slice(READ_STOPS);
    } else if sends_proxy {
        // Only what `read_ready` takes before the connect, or a hard stop meanwhile.
        reasons.extend_from_slice(&["read_error", "shutdown"]);
    }
    if fe.accept_proxy {
        reasons.extend_from_slice(inspect::PROXY_REFUSALS);
    }
    if !fe.routes.is_empty() {
        reasons.extend_from_slice(inspect::HELLO_REFUSALS);
    }
    reasons
}

/// Why [`read_until`] stopped without a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadStop {
    /// Invalid, too large, or too slow: the reason it is counted under.
    Failed(&'static str),
    /// The client closed (`Finished`) or its socket failed (`Gone`) first.
    Ended(Peer),
}

impl ReadStop {
    /// The reason counted in `tether_lb_frontend_inspect_errors_total`.
    pub(super) fn reason(self) -> &'static str {
        match self {
            ReadStop::Failed(r) => r,
            ReadStop::Ended(Peer::Gone) => "read_error",
            ReadStop::Ended(_) => "closed",
        }
    }
}

/// Reads the PROXY header (when required) and the ClientHello (when the frontend has SNI
/// routes), bounded by `inspect_timeout` and a size cap. On a plain frontend whose backend
/// sends a PROXY header, takes what the client has already sent ([`read_ready`]).
pub(super) async fn inspect_client(
    client: &TcpStream,
    peer: SocketAddr,
    fe: &Frontend,
) -> Result<Inspected, NotInspected> {
    let mut out = Inspected {
        client: peer,
        local: None,
        replay: Vec::new(),
        backend: fe.backend.clone(),
    };
    if !fe.cfg.accept_proxy && fe.routes.is_empty() {
        if fe.backend.cfg.send_proxy.is_some() {
            out.replay = read_ready(client).await.map_err(NotInspected::Failed)?;
        }
        return Ok(out);
    }
    let deadline = tokio::time::Instant::now() + fe.cfg.inspect_timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    if fe.cfg.accept_proxy {
        let (addrs, consumed) = read_until(
            client,
            &mut buf,
            deadline,
            inspect::MAX_PROXY_HEADER,
            inspect::proxy_header,
        )
        .await
        .map_err(|e| NotInspected::Failed(e.reason()))?;
        if let Some(src) = addrs.source {
            out.client = src;
        }
        out.local = addrs.destination;
        buf.drain(..consumed);
    }
    if !fe.routes.is_empty() {
        let hello = read_until(
            client,
            &mut buf,
            deadline,
            inspect::MAX_HELLO,
            inspect::client_hello_sni,
        )
        .await;
        let (sni, _) = match hello {
            Ok(found) => found,
            Err(ReadStop::Ended(seen))
                if inspect::verdict(fe.cfg.accept_proxy, buf.len(), seen)
                    == Verdict::ProxyCheck =>
            {
                return Err(NotInspected::ProxyCheck);
            }
            Err(e) => return Err(NotInspected::Failed(e.reason())),
        };
        if let Some(name) = sni
            && let Some((_, backend)) = fe.routes.iter().find(|(p, _)| p.matches(&name))
        {
            out.backend = backend.clone();
        }
    }
    out.replay = buf;
    Ok(out)
}

/// Takes what the client has sent by the poller's next turn, without waiting longer:
/// usually the whole first request, since a client writes right after its handshake.
/// Having it before the server connection is opened, it goes out in one write with the
/// PROXY header, one packet rather than two. Only then: taking it costs a poller turn
/// before the connect starts, which on plain frontends measured no gain. Nothing yet (a
/// server-speaks-first protocol, or a slow client) is not an error: the relay reads it
/// when it comes.
pub(super) async fn read_ready(client: &TcpStream) -> Result<Vec<u8>, &'static str> {
    // A socket accepted a moment ago has no readiness in tokio yet; after one turn of the
    // poller it has, so the read below is made only when there is something to read. A
    // short read clears that readiness, as the relay's own reads do, so the relay does not
    // spend a read on EAGAIN.
    tokio::task::yield_now().await;
    let mut buf = [0u8; 16 * 1024];
    match relay::read_once(client, &mut buf) {
        Ok(relay::Got::Data { n, .. }) => Ok(buf[..n].to_vec()),
        Ok(relay::Got::Eof | relay::Got::WouldBlock) => Ok(Vec::new()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Vec::new()),
        Err(_) => Err("read_error"),
    }
}

/// Reads into `buf` until `parse` is done or invalid, the deadline passes, `cap` bytes
/// were read without a result, or the client closes or fails.
pub(super) async fn read_until<T>(
    client: &TcpStream,
    buf: &mut Vec<u8>,
    deadline: tokio::time::Instant,
    cap: usize,
    parse: impl Fn(&[u8]) -> Inspect<T>,
) -> Result<(T, usize), ReadStop> {
    loop {
        match parse(buf) {
            Inspect::Done { value, consumed } => return Ok((value, consumed)),
            Inspect::Invalid(reason) => return Err(ReadStop::Failed(reason)),
            Inspect::NeedMore if buf.len() >= cap => return Err(ReadStop::Failed("too_large")),
            Inspect::NeedMore => {}
        }
        match tokio::time::timeout_at(deadline, client.readable()).await {
            Err(_) => return Err(ReadStop::Failed("timeout")),
            Ok(Err(_)) => return Err(ReadStop::Ended(Peer::Gone)),
            Ok(Ok(())) => {}
        }
        let start = buf.len();
        // Never read past the cap: what follows belongs to the server.
        buf.resize((start + 16 * 1024).min(cap.max(start + 1)), 0);
        match client.try_read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                return Err(ReadStop::Ended(Peer::Finished));
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => buf.truncate(start),
            Err(_) => {
                buf.truncate(start);
                return Err(ReadStop::Ended(Peer::Gone));
            }
        }
    }
}
