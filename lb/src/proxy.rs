//! The data path: accept a client, pick a server (queueing at `maxconn`, retrying a failed
//! connect on another server), relay, and log one line when the connection ends.
//!
//! Modules: `read` (what the client sends before a server is chosen), `connect` (reaching
//! a server, with retries).

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
use crate::spread::{Assigned, Share, Spread};
use crate::state::{ActiveGuard, Backend, Frontend, Server, State};
use arc_swap::ArcSwap;

mod connect;
mod read;

use connect::*;
pub(crate) use read::inspect_reasons;
use read::*;

/// What every connection task needs besides its frontend.
pub struct Ctx {
    /// Tracks open connections so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled when the grace period is over: open connections are then closed.
    pub hard_stop: CancellationToken,
    /// The metrics.
    pub metrics: Metrics,
    /// The workers and the connections each holds.
    pub spread: Spread,
}

impl Ctx {
    /// A context with no connection open yet, for the workers whose runtimes are `workers`
    /// (worker 0 first; empty: one worker, the runtime the accept loops run on).
    pub fn new(metrics: Metrics, workers: Vec<tokio::runtime::Handle>) -> Self {
        let hard_stop = CancellationToken::new();
        Ctx {
            tracker: TaskTracker::new(),
            spread: Spread::new(workers, &metrics, &hard_stop),
            hard_stop,
            metrics,
        }
    }
}

/// Accepts on `listener` (configured as `bind`), worker `worker`'s socket, until `stop` is
/// cancelled. Each connection goes to the frontend that owns `bind` in the state live at
/// that moment, and stays on this worker unless it holds clearly more connections than
/// another (`spread.rs`). Errors (EMFILE, ENOBUFS, ...) are counted and backed off from,
/// never fatal.
///
/// The data path sees only the live state and the connection context, never the control
/// plane that replaces them (`runtime::Lb`).
pub async fn accept_loop(
    worker: usize,
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
                match ctx.spread.assign(worker) {
                    Assigned::Here(share) => {
                        ctx.tracker
                            .spawn(handle(stream, peer, fe, permit, share, ctx.clone()));
                    }
                    Assigned::Move(share, runtime) => {
                        hand_over(stream, peer, fe, permit, share, &ctx, &runtime);
                    }
                }
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

/// Runs a connection on another worker: its socket leaves this worker's poller and joins
/// that worker's, where its whole life is then spent.
fn hand_over(
    stream: TcpStream,
    peer: SocketAddr,
    fe: Arc<Frontend>,
    permit: OwnedSemaphorePermit,
    share: Share,
    ctx: &Arc<Ctx>,
    runtime: &tokio::runtime::Handle,
) {
    let socket = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            // Only a failed EPOLL_CTL_DEL gets here; the socket is closed with it.
            fe.accept_errors.inc();
            tracing::warn!(frontend = %fe.cfg.name, error = %e, "cannot hand a connection to another worker");
            return;
        }
    };
    let ctx2 = ctx.clone();
    ctx.tracker.spawn_on(
        async move {
            // Registered here, on the worker that takes it.
            match TcpStream::from_std(socket) {
                Ok(stream) => handle(stream, peer, fe, permit, share, ctx2).await,
                Err(e) => {
                    fe.accept_errors.inc();
                    tracing::warn!(frontend = %fe.cfg.name, error = %e, "cannot register a connection handed over from another worker");
                }
            }
        },
        runtime,
    );
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

async fn handle(
    client: TcpStream,
    peer: SocketAddr,
    fe: Arc<Frontend>,
    _permit: OwnedSemaphorePermit,
    share: Share,
    ctx: Arc<Ctx>,
) {
    let metrics = &ctx.metrics;
    let hard = ctx.spread.stop(share.worker);
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

#[cfg(test)]
mod tests;
