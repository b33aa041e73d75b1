//! Pieces both drivers share: the error type, the session loop (control messages, pings,
//! dead interval), readiness-gated listeners, the relay, and stream opening.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::WhenNotReady;
use crate::mux::{Mux, YamuxSession, YamuxStream};
use crate::proto::{Control, Preamble, ProtoError, Status};
use crate::tls::TlsError;

/// Errors starting a gateway.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A socket could not be bound (the cause is the source, printed once by the chain).
    #[error("cannot bind {what} on {addr}")]
    Bind {
        /// Which listener.
        what: String,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Metrics registration failed (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Binds a listener, naming it in the error.
pub(crate) async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind {
            what: what.to_string(),
            addr,
            source,
        })
}

/// Why a session loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer closed the control stream.
    PeerClosed,
    /// No inbound control message within the dead interval.
    Dead,
    /// We were told to stop.
    Killed,
    /// The multiplexer ended.
    MuxClosed,
    /// A malformed control message.
    Protocol(String),
}

impl End {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            End::PeerClosed => "peer_closed",
            End::Dead => "dead",
            End::Killed => "killed",
            End::MuxClosed => "mux_closed",
            End::Protocol(_) => "protocol",
        }
    }
}

/// Runs the control side of an established session until it ends: answers pings, sends a
/// ping every `ping`, declares the session dead after `dead` without any inbound message,
/// forwards other control messages and inbound data streams to the callbacks, and writes
/// what arrives on `out`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn session_loop<R, W>(
    rd: R,
    mut wr: W,
    mux: &YamuxSession,
    mut inbound: mpsc::Receiver<YamuxStream>,
    mut out: mpsc::Receiver<Control>,
    ping: Duration,
    dead: Duration,
    kill: CancellationToken,
    rtt: prometheus::Histogram,
    mut on_control: impl FnMut(Control),
    mut on_stream: impl FnMut(YamuxStream),
) -> End
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    // Reading a frame is not cancel-safe, so it runs in its own task.
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Result<Control, ProtoError>>(64);
    let reader = tokio::spawn(async move {
        let mut rd = rd;
        loop {
            match Control::read_from(&mut rd).await {
                Ok(Some(m)) => {
                    if ctl_tx.send(Ok(m)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = ctl_tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    let mut last_rx = Instant::now();
    // Check liveness more often than we ping, so detection is close to `dead`.
    let tick_every = ping.min(dead / 3).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ping = Instant::now();
    let mut seq = 0u64;
    let end = loop {
        tokio::select! {
            _ = kill.cancelled() => break End::Killed,
            _ = mux.closed() => break End::MuxClosed,
            msg = ctl_rx.recv() => match msg {
                Some(Ok(m)) => {
                    last_rx = Instant::now();
                    match m {
                        Control::Ping { seq } => {
                            if write_control(&mut wr, &Control::Pong { seq }, dead).await.is_err() {
                                break End::MuxClosed;
                            }
                        }
                        Control::Pong { seq: got } => {
                            if got == seq {
                                rtt.observe(last_ping.elapsed().as_secs_f64());
                            }
                        }
                        other => on_control(other),
                    }
                }
                Some(Err(e)) => break End::Protocol(e.to_string()),
                None => break End::PeerClosed,
            },
            Some(m) = out.recv() => {
                if write_control(&mut wr, &m, dead).await.is_err() {
                    break End::MuxClosed;
                }
            }
            Some(s) = inbound.recv() => on_stream(s),
            _ = tick.tick() => {
                if last_rx.elapsed() >= dead {
                    break End::Dead;
                }
                if last_ping.elapsed() >= ping {
                    last_ping = Instant::now();
                    seq += 1;
                    if write_control(&mut wr, &Control::Ping { seq }, dead).await.is_err() {
                        break End::MuxClosed;
                    }
                }
            }
        }
    };
    reader.abort();
    end
}

async fn write_control<W: AsyncWrite + Unpin>(
    wr: &mut W,
    m: &Control,
    limit: Duration,
) -> Result<(), ()> {
    match tokio::time::timeout(limit, m.write_to(wr)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Why opening a data stream failed.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// No status within `open_timeout`: the session is silent.
    Silent,
    /// The peer answered with a non-OK status.
    Status(Status),
    /// The session is gone or the stream broke.
    Broken,
}

impl OpenError {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            OpenError::Silent => "timeout",
            OpenError::Status(s) => s.as_str(),
            OpenError::Broken => "broken",
        }
    }
}

/// Opens a stream, sends the preamble and waits for the status byte within `open_timeout`.
pub(crate) async fn open_stream(
    mux: &YamuxSession,
    preamble: &Preamble,
    open_timeout: Duration,
) -> Result<YamuxStream, OpenError> {
    let bytes = preamble.encode().map_err(|_| OpenError::Broken)?;
    let attempt = async {
        let mut s = mux.open().await.map_err(|_| OpenError::Broken)?;
        s.write_all(&bytes).await.map_err(|_| OpenError::Broken)?;
        s.flush().await.map_err(|_| OpenError::Broken)?;
        let b = s.read_u8().await.map_err(|_| OpenError::Broken)?;
        match Status::from_u8(b) {
            Some(Status::Ok) => Ok(s),
            Some(st) => Err(OpenError::Status(st)),
            None => Err(OpenError::Broken),
        }
    };
    match tokio::time::timeout(open_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(OpenError::Silent),
    }
}

/// How long a stream open may go unanswered before a second one is raced against it on
/// another gateway's session: a quarter of `open_timeout`. A gateway that lost power
/// answers nothing, and its sessions look alive until `dead_after`; waiting the whole
/// `open_timeout` before trying elsewhere would outlast many clients' patience.
pub(crate) fn hedge_after(open_timeout: Duration) -> Duration {
    open_timeout / 4
}

/// Stream opens for one client, raced. The first goes to `first`. A second goes where
/// `another` says when the first fails (`hedge` false: any other session will do) or is
/// still unanswered after `hedge_after` (`hedge` true: only a session of another gateway,
/// since a silent gateway's other sessions are as silent). At most two per client, as
/// before hedging. `open` makes one attempt and keeps its session's books; it yields the
/// stream, or `None` when the attempt failed.
///
/// Returns the first stream opened, and the opens still pending then, to be run to their
/// end in the background: a silent session is still found silent and ejected, and a
/// stream opened after all is closed and handed to `unused` for the books.
pub(crate) async fn race_opens<K, Fut>(
    first: K,
    mut another: impl FnMut(&K, bool) -> Option<K>,
    open: impl Fn(K) -> Fut,
    hedge_after: Duration,
    unused: impl Fn(K) + Send + 'static,
) -> (
    Option<(K, YamuxStream)>,
    Option<impl std::future::Future<Output = ()> + Send + 'static>,
)
where
    K: Clone + Send + 'static,
    Fut: std::future::Future<Output = (K, Option<YamuxStream>)> + Send + 'static,
{
    use futures::stream::{FuturesUnordered, StreamExt};

    let mut opens = FuturesUnordered::new();
    opens.push(open(first.clone()));
    // A second open was made; the hedge timer fired (whether or not it found a session of
    // another gateway: a failure may still retry on the same gateway's other session).
    let (mut second, mut hedged) = (false, false);
    let hedge = tokio::time::sleep(hedge_after);
    tokio::pin!(hedge);
    let won = loop {
        tokio::select! {
            done = opens.next() => match done {
                Some((k, Some(stream))) => break Some((k, stream)),
                Some((k, None)) => {
                    if !second {
                        second = true;
                        if let Some(next) = another(&k, false) {
                            opens.push(open(next));
                        }
                    }
                    if opens.is_empty() {
                        break None;
                    }
                }
                None => break None,
            },
            () = &mut hedge, if !second && !hedged => {
                hedged = true;
                if let Some(next) = another(&first, true) {
                    second = true;
                    opens.push(open(next));
                }
            }
        }
    };
    let leftover = (!opens.is_empty()).then_some(async move {
        while let Some((k, stream)) = opens.next().await {
            if let Some(stream) = stream {
                drop(stream);
                unused(k);
            }
        }
    });
    (won, leftover)
}

/// Connects to a server (host:port, resolved now) within `limit`; maps failures to a status.
pub(crate) async fn connect_server(target: &str, limit: Duration) -> Result<TcpStream, Status> {
    match tokio::time::timeout(limit, TcpStream::connect(target)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(_)) => Err(Status::BackendRefused),
        Err(_) => Err(Status::BackendTimeout),
    }
}

/// Which end of a relayed stream the TCP connection is, for the byte counters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpEnd {
    /// The client: what it sends goes to the server.
    Client,
    /// The server: what it sends goes to the client.
    Server,
}

/// [`relay`] between a TCP connection and its stream until both directions finish, the
/// stream's session ends (a dead session ends all its streams at once) or `kill`,
/// counted: one more active stream in `streams` (a drain waits for it) and the
/// `streams_active` gauge while it runs, then its bytes in `bytes`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn relay_counted<T: AsyncRead + AsyncWrite + Unpin>(
    metrics: &crate::metrics::Metrics,
    streams: &std::sync::atomic::AtomicUsize,
    kill: &CancellationToken,
    service: &str,
    direction: &str,
    tcp: &mut T,
    end: TcpEnd,
    stream: &mut YamuxStream,
) {
    use std::sync::atomic::Ordering;

    let active = metrics
        .streams_active
        .with_label_values(&[service, direction]);
    active.inc();
    streams.fetch_add(1, Ordering::SeqCst);
    let session_ended = stream.session_ended();
    let (from_tcp, to_tcp) = tokio::select! {
        r = relay(tcp, stream) => r,
        _ = kill.cancelled() => (0, 0),
        _ = session_ended => (0, 0),
    };
    streams.fetch_sub(1, Ordering::SeqCst);
    active.dec();
    let (to_server, to_client) = match end {
        TcpEnd::Client => (from_tcp, to_tcp),
        TcpEnd::Server => (to_tcp, from_tcp),
    };
    metrics
        .bytes
        .with_label_values(&[service, "to_server"])
        .inc_by(to_server);
    metrics
        .bytes
        .with_label_values(&[service, "to_client"])
        .inc_by(to_client);
}

/// Copies both ways until both directions finished, propagating half-close. Returns bytes
/// (a→b, b→a).
pub(crate) async fn relay<A, B>(a: &mut A, b: &mut B) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, 64 * 1024, 64 * 1024)
        .await
        .unwrap_or((0, 0))
}

/// Waits until `ready` is true, for at most `limit`. Returns the final state.
pub(crate) async fn wait_ready(ready: &mut watch::Receiver<bool>, limit: Duration) -> bool {
    tokio::time::timeout(limit, ready.wait_for(|r| *r))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// The socket a gated listener starts with: bound once at start so the port is checked
/// (and resolved when 0), but with `unbind` closed again before `start` returns, since
/// nothing is ready yet.
pub(crate) fn initial_listener(
    l: TcpListener,
    mode: WhenNotReady,
) -> (SocketAddr, Option<TcpListener>) {
    let addr = l.local_addr().ok();
    match (addr, mode) {
        (Some(a), WhenNotReady::Unbind) => (a, None),
        (Some(a), _) => (a, Some(l)),
        // No address to re-bind later: keep the socket whatever the mode.
        (None, _) => (SocketAddr::from(([0, 0, 0, 0], 0)), Some(l)),
    }
}

/// Accept loop of a service listener gated by readiness.
///
/// `unbind`: the socket exists only while ready (re-bound on the same port when readiness
/// returns), so connects to a node that cannot serve are refused and a balancer retries
/// elsewhere. `reject` and `hold`: always bound; the per-client handler decides.
pub(crate) async fn gated_accept(
    addr: SocketAddr,
    initial: Option<TcpListener>,
    mode: WhenNotReady,
    mut ready: watch::Receiver<bool>,
    kill: CancellationToken,
    bound: IntGauge,
    on_accept: impl Fn(TcpStream, SocketAddr),
) {
    let mut listener = initial;
    loop {
        if mode == WhenNotReady::Unbind && !*ready.borrow() {
            listener = None;
        }
        match listener.take() {
            Some(l) => {
                bound.set(1);
                // true: readiness was lost (unbind, then wait for it); false: stop.
                let unbind = loop {
                    tokio::select! {
                        _ = kill.cancelled() => break false,
                        changed = ready.changed(), if mode == WhenNotReady::Unbind => {
                            if changed.is_err() { break false; }
                            if !*ready.borrow() {
                                break true;
                            }
                        }
                        accepted = l.accept() => match accepted {
                            Ok((s, peer)) => {
                                let _ = s.set_nodelay(true);
                                on_accept(s, peer);
                            }
                            // EMFILE and friends: do not spin.
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        },
                    }
                };
                if unbind {
                    take_backlog(l, &on_accept);
                } else {
                    drop(l);
                }
                bound.set(0);
                if !unbind {
                    return;
                }
            }
            None => {
                // Wait for readiness, then bind again on the same address.
                tokio::select! {
                    _ = kill.cancelled() => return,
                    r = ready.wait_for(|r| *r) => if r.is_err() { return },
                }
                loop {
                    match TcpListener::bind(addr).await {
                        Ok(l) => {
                            listener = Some(l);
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(%addr, error = %e, "cannot re-bind service listener; retrying");
                            tokio::select! {
                                _ = kill.cancelled() => return,
                                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Accepts what the listener's backlog holds, then closes it.
///
/// Closing a listener resets the connections still in its backlog, which the kernel already
/// accepted (their clients think they are connected): they are taken first so they are
/// served, or closed within accept_wait. So that the backlog cannot fill again between the
/// last `accept` and the close (a window as long as this thread is preempted), the
/// listener first stops completing handshakes ([`stop_handshakes`]): a client that sends
/// its SYN from then on meets a closed port when it retransmits it, and a balancer in
/// front tries another server, instead of a reset after it thought it was connected. A
/// handshake half done at that instant (its final ACK on the way) is still lost: on
/// loopback none is, the handshake completing within the client's `connect`; across a
/// network the window is half a round trip.
///
/// The backlog is read with `accept(2)` until `EAGAIN`, not through tokio, whose cached
/// readiness would miss a connection that came in since the poller's last turn.
fn take_backlog(listener: TcpListener, on_accept: &impl Fn(TcpStream, SocketAddr)) {
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the backlog of a closing listener");
            return;
        }
    };
    if let Err(e) = stop_handshakes(&listener) {
        tracing::warn!(error = %e, "cannot stop handshakes on a closing listener");
    }
    loop {
        match listener.accept() {
            Ok((s, peer)) => {
                let s = s
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(s));
                match s {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        on_accept(s, peer);
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cannot register a backlog connection")
                    }
                }
            }
            // What accept(2) reports for one connection (aborted, or a network error of
            // its own): the rest of the backlog is still there.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::NetworkDown
                        | std::io::ErrorKind::NetworkUnreachable
                        | std::io::ErrorKind::HostUnreachable
                ) => {}
            // EAGAIN (the backlog is empty) or an error that a retry would meet again.
            Err(_) => return,
        }
    }
}

/// Makes a listening socket drop every packet that reaches it, so no handshake completes
/// and its backlog only shrinks. A classic BPF program of one instruction, `ret #0`;
/// connections already accepted are sockets of their own, without the filter.
fn stop_handshakes(listener: &std::net::TcpListener) -> std::io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        const BPF_RET_K: u16 = 0x06;
        socket2::SockRef::from(listener)
            .attach_filter(&[socket2::SockFilter::new(BPF_RET_K, 0, 0, 0)])
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = listener;
        Ok(())
    }
}

/// A random 16-byte trace id.
pub(crate) fn trace_id() -> [u8; 16] {
    rand::random()
}

/// Hex of a trace id, for logs.
pub(crate) fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts one unit of work in flight for as long as it lives.
pub(crate) struct Inflight(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Inflight {
    pub(crate) fn new(counter: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Inflight(counter)
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Socket options of a session connection: no Nagle delay, TCP keepalive (idle 10 s, every
/// 5 s, 3 probes) and, on Linux, `TCP_USER_TIMEOUT` 10 s so unacknowledged writes on a
/// half-open path fail fast. The pings of the control stream remain the main detector;
/// these catch a dead path even while the process is too busy to ping.
pub(crate) fn session_socket_options(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let sock = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    let _ = sock.set_tcp_keepalive(&keepalive);
    #[cfg(target_os = "linux")]
    let _ = sock.set_tcp_user_timeout(Some(Duration::from_secs(10)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[tokio::test]
    async fn the_backlog_is_taken_whole_before_the_poller_has_seen_it() {
        let listener = TcpListener::bind(loopback()).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Handshakes completed by the kernel; tokio has never polled the listener.
        let clients: Vec<std::net::TcpStream> = (0..5)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let taken = Mutex::new(Vec::new());
        take_backlog(listener, &|_s, peer| {
            taken.lock().expect("lock").push(peer);
        });
        let mut taken = taken.into_inner().expect("lock");
        let mut expected: Vec<SocketAddr> = clients
            .iter()
            .map(|c| c.local_addr().expect("addr"))
            .collect();
        taken.sort();
        expected.sort();
        assert_eq!(taken, expected);
        let refused = std::net::TcpStream::connect(addr).expect_err("closed");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn a_listener_that_stopped_handshakes_completes_none() {
        let listener = std::net::TcpListener::bind(loopback()).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        stop_handshakes(&listener).expect("filter");
        // The SYN is dropped: the client is still waiting to retransmit it (after 1 s).
        let connect = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        assert!(connect.is_err(), "a handshake completed: {connect:?}");
        let accepted = listener.accept().map(|(_, peer)| peer);
        assert_eq!(
            accepted.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock)
        );
    }

    /// A mux whose streams open at once, for opens that succeed; the accepting side is
    /// kept alive (and drained) by the returned handles.
    fn mux() -> (YamuxSession, YamuxSession, mpsc::Receiver<YamuxStream>) {
        use crate::mux::{MuxTuning, Side};
        let (a, b) = tokio::io::duplex(1 << 16);
        let (client, _) = YamuxSession::spawn(a, Side::Client, MuxTuning::default());
        let (server, inbound) = YamuxSession::spawn(b, Side::Server, MuxTuning::default());
        (client, server, inbound)
    }

    /// An open that answers after `after`, with a stream when `ok`.
    fn fake_open(
        mux: &YamuxSession,
        plan: &'static [(&'static str, u64, bool)],
    ) -> impl Fn(&'static str) -> futures::future::BoxFuture<'static, (&'static str, Option<YamuxStream>)>
    {
        let mux = mux.clone();
        move |k| {
            let mux = mux.clone();
            let (_, ms, ok) = plan.iter().copied().find(|p| p.0 == k).expect("planned");
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let stream = if ok { mux.open().await.ok() } else { None };
                (k, stream)
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_open_is_raced_on_another_gateway_and_still_runs_to_its_end() {
        let (client, _server, _inbound) = mux();
        // "dead" never answers within the test; "alive" answers at once.
        let open = fake_open(&client, &[("dead", 60_000, false), ("alive", 1, true)]);
        let t = tokio::time::Instant::now();
        let unused = Arc::new(Mutex::new(Vec::new()));
        let u = unused.clone();
        let (won, leftover) = race_opens(
            "dead",
            |_, hedge| hedge.then_some("alive"),
            open,
            Duration::from_millis(250),
            move |k| u.lock().expect("lock").push(k),
        )
        .await;
        assert_eq!(won.map(|(k, _)| k), Some("alive"));
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        leftover.expect("the silent open runs on").await;
        assert!(unused.lock().expect("lock").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_answered_late_is_handed_back_unused() {
        let (client, _server, _inbound) = mux();
        let open = fake_open(&client, &[("slow", 500, true), ("fast", 1, true)]);
        let unused = Arc::new(Mutex::new(Vec::new()));
        let u = unused.clone();
        let (won, leftover) = race_opens(
            "slow",
            |_, _| Some("fast"),
            open,
            Duration::from_millis(100),
            move |k| u.lock().expect("lock").push(k),
        )
        .await;
        assert_eq!(won.map(|(k, _)| k), Some("fast"));
        leftover.expect("the slow open runs on").await;
        assert_eq!(*unused.lock().expect("lock"), vec!["slow"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hedge_with_no_other_gateway_leaves_the_retry_after_a_failure() {
        let (client, _server, _inbound) = mux();
        // One gateway only: the hedge finds nobody; the first open then fails, and the
        // retry on the same gateway's other session serves the client.
        let open = fake_open(&client, &[("first", 400, false), ("same-gw", 1, true)]);
        let (won, leftover) = race_opens(
            "first",
            |_, hedge| (!hedge).then_some("same-gw"),
            open,
            Duration::from_millis(100),
            |_| {},
        )
        .await;
        assert_eq!(won.map(|(k, _)| k), Some("same-gw"));
        assert!(leftover.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn two_failures_leave_the_client_without_a_stream() {
        let (client, _server, _inbound) = mux();
        let open = fake_open(&client, &[("a", 1, false), ("b", 1, false)]);
        let mut asked = 0;
        let (won, leftover) = race_opens(
            "a",
            |_, _| {
                asked += 1;
                Some("b")
            },
            open,
            Duration::from_millis(100),
            |_| {},
        )
        .await;
        assert!(won.is_none());
        assert!(leftover.is_none());
        assert_eq!(asked, 1, "at most two opens per client");
    }

    /// The attack from the issue: a peer fills a forward stream while the server does not
    /// read, then its session dies. The relay is stuck writing to the server and never
    /// polls the stream again; it must still end (dropping the server socket and the
    /// stream's buffered window) as soon as the session ends. Paused clock: a timeout
    /// elapses only once nothing can make progress.
    #[tokio::test(start_paused = true)]
    async fn a_relay_stuck_on_its_server_ends_with_its_session() {
        use crate::mux::{MuxTuning, Side};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let tuning = MuxTuning::default();
        let (a, b) = tokio::io::duplex(1 << 16);
        let (peer, _peer_in) = YamuxSession::spawn(a, Side::Client, tuning);
        let (node, mut node_in) = YamuxSession::spawn(b, Side::Server, tuning);
        let mut sent = peer.open().await.expect("open");
        sent.write_all(b"p").await.expect("write");
        sent.flush().await.expect("flush");
        let mut stream = node_in.recv().await.expect("inbound");
        let mut one = [0u8; 1];
        stream.read_exact(&mut one).await.expect("preamble");
        // The "server": a small pipe whose far end never reads.
        let (mut server, _not_reading) = tokio::io::duplex(64 * 1024);
        let metrics = crate::metrics::Metrics::new().expect("metrics");
        let streams = Arc::new(AtomicUsize::new(0));
        let kill = CancellationToken::new();
        let active = streams.clone();
        let mut relay = tokio::spawn(async move {
            relay_counted(
                &metrics,
                &active,
                &kill,
                "svc",
                "forward",
                &mut server,
                TcpEnd::Server,
                &mut stream,
            )
            .await;
        });
        let _pusher = tokio::spawn(async move { sent.write_all(&vec![7u8; 4 << 20]).await });
        let idle = Duration::from_secs(1);
        assert!(
            tokio::time::timeout(idle, &mut relay).await.is_err(),
            "the relay ended while its session was alive"
        );
        assert_eq!(streams.load(Ordering::SeqCst), 1);
        node.close();
        tokio::time::timeout(Duration::from_secs(600), relay)
            .await
            .expect("the relay outlived its session")
            .expect("relay task");
        assert_eq!(streams.load(Ordering::SeqCst), 0);
    }
}
