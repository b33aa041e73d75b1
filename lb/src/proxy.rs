//! The data path: accept a client, pick a server (queueing at `maxconn`, retrying a failed
//! connect on another server), relay, and log one line when the connection ends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::FrontendConfig;
use crate::inspect::{self, Inspect, Verdict};
use crate::metrics::Metrics;
use crate::peer::{self, Peer};
use crate::relay::{self, End};
use crate::state::{ActiveGuard, Backend, Frontend, Server, State};
use arc_swap::ArcSwap;

/// What every connection task needs besides its frontend.
pub struct Ctx {
    /// Tracks open connections so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled when the grace period is over: open connections are then closed.
    pub hard_stop: CancellationToken,
    /// The metrics.
    pub metrics: Metrics,
}

impl Ctx {
    /// A context with no connection open yet.
    pub fn new(metrics: Metrics) -> Self {
        Ctx {
            tracker: TaskTracker::new(),
            hard_stop: CancellationToken::new(),
            metrics,
        }
    }
}

/// Accepts on `listener` (configured as `bind`) until `stop` is cancelled. Each connection
/// goes to the frontend that owns `bind` in the state live at that moment. Errors (EMFILE,
/// ENOBUFS, ...) are counted and backed off from, never fatal.
///
/// The data path sees only the live state and the connection context, never the control
/// plane that replaces them (`runtime::Lb`).
pub async fn accept_loop(
    listener: std::net::TcpListener,
    bind: SocketAddr,
    live: Arc<ArcSwap<State>>,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
) {
    // Registered here, with the reactor of the runtime this loop runs on, so that accepted
    // connections stay on this worker.
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(bind = %bind, error = %e, "cannot register the listening socket");
            return;
        }
    };
    let mut backoff = Duration::from_millis(5);
    let mut last_warn: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let state = live.load();
        let Some(fe) = state.frontend_for_bind(bind).cloned() else {
            // The bind was removed by a reload a moment ago.
            continue;
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                // Past maxconn, wait here: further clients stay in the kernel's backlog.
                let permit = tokio::select! {
                    p = fe.limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    _ = stop.cancelled() => return,
                };
                ctx.tracker
                    .spawn(handle(stream, peer, fe, permit, ctx.clone()));
            }
            Err(e) => {
                fe.accept_errors.inc();
                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(frontend = %fe.cfg.name, error = %e, "accept failed; backing off");
                    last_warn = Some(Instant::now());
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The `end` of a connection closed while its first bytes were read.
const INSPECT_FAILED: &str = "inspect_failed";

/// Why no server connection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoConnect {
    NoServer,
    QueueTimeout,
    ConnectFailed,
    Shutdown,
    /// The client reset or closed before a server was chosen.
    ClientGone,
    /// A PROXY header and then a close or reset: the health check of a balancer in front.
    ProxyCheck,
}

impl NoConnect {
    /// The `end` label and log field; each is in [`crate::metrics::CONNECTION_ENDS`].
    fn as_str(self) -> &'static str {
        match self {
            NoConnect::NoServer => "no_server",
            NoConnect::QueueTimeout => "queue_timeout",
            NoConnect::ConnectFailed => "connect_failed",
            NoConnect::Shutdown => "shutdown",
            NoConnect::ClientGone => "client_gone",
            NoConnect::ProxyCheck => "proxy_check",
        }
    }
}

struct Connected {
    server: Arc<Server>,
    stream: TcpStream,
    _active: ActiveGuard,
    _slot: Option<OwnedSemaphorePermit>,
    connect_time: Duration,
}

struct FrontendActive<'a>(&'a Frontend, &'a Metrics);

impl Drop for FrontendActive<'_> {
    fn drop(&mut self) {
        self.0.active.dec();
        self.1.active_total.dec();
    }
}

/// What was read from the client before a server was chosen.
struct Inspected {
    /// The client as the server should see it (from a PROXY header, or the peer).
    client: SocketAddr,
    /// The address the client connected to, when a PROXY header named it (otherwise
    /// asked of the socket only when a PROXY header is sent: a system call per connection).
    local: Option<SocketAddr>,
    /// Bytes already read that the server must get first (a ClientHello, or with
    /// `send_proxy` what the client had sent by the poller's first turn).
    replay: Vec<u8>,
    /// The backend chosen by SNI, or the frontend's default.
    backend: Arc<Backend>,
}

/// Why no server was chosen for a client while its first bytes were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotInspected {
    /// Counted under this reason in `tether_lb_frontend_inspect_errors_total`; the
    /// connection ends as `inspect_failed`.
    Failed(&'static str),
    /// A PROXY header, then a close or reset where a ClientHello was awaited: a balancer's
    /// check ([`Verdict::ProxyCheck`]), not an error.
    ProxyCheck,
}

/// The reasons reading a client's first bytes stops for, besides the parsers' refusals:
/// [`read_until`] and [`ReadStop::reason`], [`read_ready`], and a hard stop.
const READ_STOPS: &[&str] = &["too_large", "timeout", "closed", "read_error", "shutdown"];

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
enum ReadStop {
    /// Invalid, too large, or too slow: the reason it is counted under.
    Failed(&'static str),
    /// The client closed (`Finished`) or its socket failed (`Gone`) first.
    Ended(Peer),
}

impl ReadStop {
    /// The reason counted in `tether_lb_frontend_inspect_errors_total`.
    fn reason(self) -> &'static str {
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
async fn inspect_client(
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
async fn read_ready(client: &TcpStream) -> Result<Vec<u8>, &'static str> {
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
async fn read_until<T>(
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

async fn handle(
    client: TcpStream,
    peer: SocketAddr,
    fe: Arc<Frontend>,
    _permit: OwnedSemaphorePermit,
    ctx: Arc<Ctx>,
) {
    let metrics = &ctx.metrics;
    let hard = &ctx.hard_stop;
    let started = Instant::now();
    fe.connections.inc();
    fe.active.inc();
    metrics.active_total.inc();
    let _active = FrontendActive(&fe, metrics);
    // TCP_NODELAY comes from the listening socket: Linux copies it to accepted sockets,
    // which saves a setsockopt per connection.

    let inspected = tokio::select! {
        r = inspect_client(&client, peer, &fe) => r,
        _ = hard.cancelled() => Err(NotInspected::Failed("shutdown")),
    };
    let inspected = match inspected {
        Ok(i) => i,
        Err(NotInspected::ProxyCheck) => {
            proxy_check(metrics, &fe, peer, started);
            return;
        }
        Err(NotInspected::Failed(reason)) => {
            metrics
                .fe_inspect_errors
                .with_label_values(&[fe.cfg.name.as_str(), reason])
                .inc();
            metrics
                .conn_ended
                .with_label_values(&[fe.cfg.name.as_str(), INSPECT_FAILED])
                .inc();
            tracing::info!(
                target: "tether_lb::conn",
                client = %peer,
                frontend = %fe.cfg.name,
                end = INSPECT_FAILED,
                reason,
                duration_ms = started.elapsed().as_millis() as u64,
                "connection"
            );
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
            return;
        }
    };
    if !fe.routes.is_empty() {
        metrics
            .fe_routed
            .with_label_values(&[fe.cfg.name.as_str(), inspected.backend.cfg.name.as_str()])
            .inc();
    }
    let backend = &inspected.backend;
    let client_addr = inspected.client;

    let connected = match not_worth_connecting(&client, &fe, &inspected.replay).await {
        Some(why) => Err(why),
        None => tokio::select! {
            c = connect_with_retries(backend, client_addr) => c,
            _ = hard.cancelled() => Err(NoConnect::Shutdown),
        },
    };
    match connected {
        Err(NoConnect::ProxyCheck) => proxy_check(metrics, &fe, peer, started),
        Err(why) => {
            if matches!(
                why,
                NoConnect::NoServer | NoConnect::QueueTimeout | NoConnect::ConnectFailed
            ) {
                backend.no_server.inc();
            }
            metrics
                .conn_ended
                .with_label_values(&[fe.cfg.name.as_str(), why.as_str()])
                .inc();
            metrics
                .conn_seconds
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(
                target: "tether_lb::conn",
                client = %client_addr,
                frontend = %fe.cfg.name,
                backend = %backend.cfg.name,
                server = "-",
                connect_ms = -1i64,
                duration_ms = started.elapsed().as_millis() as u64,
                bytes_in = 0u64,
                bytes_out = 0u64,
                end = why.as_str(),
                "connection"
            );
        }
        Ok(c) => {
            let srv = &c.server;
            let up = |n| {
                fe.bytes_in.inc_by(n);
                srv.add_bytes_in(n);
            };
            let down = |n| {
                fe.bytes_out.inc_by(n);
                srv.add_bytes_out(n);
            };
            let replayed = inspected.replay.len() as u64;
            let first = match backend.cfg.send_proxy {
                Some(version) => {
                    let local = inspected
                        .local
                        .unwrap_or_else(|| client.local_addr().unwrap_or(peer));
                    let mut header = inspect::encode_proxy_header(version, client_addr, local);
                    header.extend_from_slice(&inspected.replay);
                    header
                }
                None => inspected.replay,
            };
            let outcome = if write_first(&c.stream, &first, backend.cfg.server_timeout)
                .await
                .is_err()
            {
                relay::Outcome {
                    up: 0,
                    down: 0,
                    end: End::ServerError,
                }
            } else {
                up(replayed);
                let mut o = relay::relay(
                    &client,
                    &c.stream,
                    fe.cfg.client_timeout,
                    backend.cfg.server_timeout,
                    &up,
                    &down,
                    hard,
                    backend.cfg.splice,
                )
                .await;
                o.up += replayed;
                o
            };
            if outcome.end != End::Done {
                // Errors and timeouts: reset rather than leave the peer half-open.
                let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
            }
            if late_check(fe.cfg.accept_proxy, &outcome) {
                proxy_check(metrics, &fe, peer, started);
                return;
            }
            metrics
                .conn_ended
                .with_label_values(&[fe.cfg.name.as_str(), outcome.end.as_str()])
                .inc();
            metrics
                .conn_seconds
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(
                target: "tether_lb::conn",
                client = %client_addr,
                frontend = %fe.cfg.name,
                backend = %backend.cfg.name,
                server = %srv.cfg.name,
                connect_ms = c.connect_time.as_secs_f64() * 1000.0,
                duration_ms = started.elapsed().as_millis() as u64,
                bytes_in = outcome.up,
                bytes_out = outcome.down,
                end = outcome.end.as_str(),
                "connection"
            );
        }
    }
}

/// Counts and logs a balancer's check ([`Verdict::ProxyCheck`]): no server connection, or
/// (a [`late_check`]) one through which nothing moved. At debug level: a balancer in front checks every few seconds, and at info
/// its checks would crowd out the lines of real clients (as HAProxy's `option dontlognull`
/// keeps them out of its log). `client` is the connection's peer: the balancer that checked.
fn proxy_check(metrics: &Metrics, fe: &Frontend, client: SocketAddr, started: Instant) {
    metrics
        .conn_ended
        .with_label_values(&[fe.cfg.name.as_str(), NoConnect::ProxyCheck.as_str()])
        .inc();
    metrics
        .conn_seconds
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(
        target: "tether_lb::conn",
        client = %client,
        frontend = %fe.cfg.name,
        duration_ms = started.elapsed().as_millis() as u64,
        end = NoConnect::ProxyCheck.as_str(),
        "connection"
    );
}

/// Whether a relayed connection was a balancer's check after all: its reset came only after
/// the server connection was opened (the socket showed nothing yet when it was asked), and
/// nothing moved either way. Counting it as `client_error` would put every such check into
/// error-rate alerts.
fn late_check(accept_proxy: bool, outcome: &relay::Outcome) -> bool {
    let payload = usize::try_from(outcome.up).unwrap_or(usize::MAX);
    outcome.end == End::ClientError
        && outcome.down == 0
        && inspect::verdict(accept_proxy, payload, Peer::Gone) == Verdict::ProxyCheck
}

/// How long a client that sent a PROXY header and nothing else is given to send, close or
/// reset before a server connection is opened for it. HAProxy 2.6's checks (`check
/// send-proxy-v2`) reset 13 µs after their header arrives (median; 112 µs at most in 200, on
/// loopback), and one poller turn (what this was before) missed 1 to 3 checks in 50, which
/// then opened a server connection. What it costs: a protocol whose server speaks first
/// (SMTP, MySQL), behind a balancer that sends PROXY headers, sees its server connection
/// opened up to this much later; a client that speaks first ends the wait as its bytes
/// arrive.
const PROXY_CHECK_GRACE: Duration = Duration::from_millis(1);

/// Why a client that is gone, or only a balancer's check, gets no server connection; `None`
/// to connect. The socket is asked without waiting ([`peer::peer_state`]);
/// [`inspect::verdict`] decides. After a PROXY header and nothing else, the client is first
/// given [`PROXY_CHECK_GRACE`] to show what it is.
async fn not_worth_connecting(
    client: &TcpStream,
    fe: &Frontend,
    replay: &[u8],
) -> Option<NoConnect> {
    if fe.cfg.accept_proxy && replay.is_empty() {
        first_event(client, PROXY_CHECK_GRACE).await;
    }
    match inspect::verdict(fe.cfg.accept_proxy, replay.len(), peer::peer_state(client)) {
        Verdict::Connect => None,
        Verdict::ProxyCheck => Some(NoConnect::ProxyCheck),
        Verdict::ClientGone => Some(NoConnect::ClientGone),
    }
}

/// Waits until the client sends, closes or resets, for `grace` at most.
async fn first_event(client: &TcpStream, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    while !peer::pending(client) {
        // tokio may still hold the readiness of the read that took the header (it clears
        // readiness only on EAGAIN): clear it, so that `readable` waits for a new event.
        // An event that came since `pending` looked is still in the poller, not yet lost.
        let _ = client.try_io(tokio::io::Interest::READABLE, || {
            Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
        });
        if tokio::time::timeout_at(deadline, client.readable())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Writes the PROXY header and replayed bytes before relaying.
async fn write_first(stream: &TcpStream, mut bytes: &[u8], timeout: Duration) -> io::Result<()> {
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
async fn connect_with_retries(backend: &Backend, peer: SocketAddr) -> Result<Connected, NoConnect> {
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
fn is_local_error(e: &io::Error) -> bool {
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
async fn connect_within(
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
async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CONNECTION_ENDS;

    /// Every `end` a connection can be counted under exists at 0 from the start.
    #[test]
    fn every_end_label_is_created_at_zero() {
        let no_connect = [
            NoConnect::NoServer,
            NoConnect::QueueTimeout,
            NoConnect::ConnectFailed,
            NoConnect::Shutdown,
            NoConnect::ClientGone,
            NoConnect::ProxyCheck,
        ];
        let relay = [
            End::Done,
            End::ClientTimeout,
            End::ServerTimeout,
            End::ClientError,
            End::ServerError,
            End::Shutdown,
        ];
        let all = no_connect
            .iter()
            .map(|n| n.as_str())
            .chain(relay.iter().map(|e| e.as_str()))
            .chain([INSPECT_FAILED]);
        for end in all {
            assert!(CONNECTION_ENDS.contains(&end), "{end} is not created at 0");
        }
    }

    #[test]
    fn a_reset_after_a_header_and_nothing_else_is_a_late_check() {
        let o = |up, down, end| relay::Outcome { up, down, end };
        assert!(late_check(true, &o(0, 0, End::ClientError)));
        // Payload, an answer, another end, or no PROXY header: not a check.
        assert!(!late_check(true, &o(1, 0, End::ClientError)));
        assert!(!late_check(true, &o(0, 1, End::ClientError)));
        assert!(!late_check(true, &o(0, 0, End::Done)));
        assert!(!late_check(true, &o(0, 0, End::ServerError)));
        assert!(!late_check(true, &o(0, 0, End::ClientTimeout)));
        assert!(!late_check(false, &o(0, 0, End::ClientError)));
    }

    async fn pair() -> (std::net::TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn first_event_waits_out_a_silent_client_despite_the_header_read() {
        use std::io::Write;
        let (mut c, s) = pair().await;
        c.write_all(b"PROXY UNKNOWN\r\n").unwrap();
        s.readable().await.unwrap();
        let mut buf = [0u8; 64];
        // A read that returns bytes leaves tokio's readiness set.
        assert!(s.try_read(&mut buf).unwrap() > 0);
        let grace = Duration::from_millis(100);
        let t0 = Instant::now();
        first_event(&s, grace).await;
        assert!(t0.elapsed() >= grace, "returned after {:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn first_event_ends_at_a_reset() {
        let (c, s) = pair().await;
        let reset = tokio::spawn(async move {
            socket2::SockRef::from(&c)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(c);
        });
        let t0 = Instant::now();
        first_event(&s, Duration::from_secs(30)).await;
        assert!(t0.elapsed() < Duration::from_secs(10));
        reset.await.unwrap();
        assert_eq!(peer::peer_state(&s), Peer::Gone);
    }

    #[test]
    fn a_read_that_ends_is_counted_as_closed_or_read_error() {
        assert_eq!(ReadStop::Ended(Peer::Finished).reason(), "closed");
        assert_eq!(ReadStop::Ended(Peer::Gone).reason(), "read_error");
        assert_eq!(ReadStop::Failed("timeout").reason(), "timeout");
        for r in [Peer::Finished, Peer::Gone].map(|p| ReadStop::Ended(p).reason()) {
            assert!(READ_STOPS.contains(&r), "{r}");
        }
    }

    #[test]
    fn the_inspect_reasons_created_at_zero_follow_what_the_frontend_reads() {
        let cfg = crate::Config::from_source(&tether_health::config::Source::from_text(
            "t.toml",
            r#"
[[frontend]]
name = "plain"
bind = ["127.0.0.1:0"]
backend = "b"
[[frontend]]
name = "both"
bind = ["127.0.0.2:0"]
backend = "b"
accept_proxy = true
[[frontend.route]]
sni = "a.example.com"
backend = "b"
[[backend]]
name = "b"
[[backend.server]]
name = "s"
address = "127.0.0.1:1"
"#,
        ))
        .unwrap();
        let (plain, both) = (&cfg.frontends[0], &cfg.frontends[1]);
        assert!(inspect_reasons(plain, false).is_empty());
        assert_eq!(inspect_reasons(plain, true), ["read_error", "shutdown"]);
        let all = inspect_reasons(both, false);
        for r in READ_STOPS
            .iter()
            .chain(inspect::PROXY_REFUSALS)
            .chain(inspect::HELLO_REFUSALS)
        {
            assert!(all.contains(r), "{r}");
        }
    }
}
