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

use crate::metrics::Metrics;
use crate::relay::{self, End};
use crate::state::{ActiveGuard, Frontend, Server};

/// What every connection task needs besides its frontend.
pub struct Ctx {
    /// Tracks open connections so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled when the grace period is over: open connections are then closed.
    pub hard_stop: CancellationToken,
    /// The metrics.
    pub metrics: Metrics,
}

/// Accepts on `listener` until `stop` is cancelled. Errors (EMFILE, ENOBUFS, ...) are
/// counted and backed off from, never fatal.
pub async fn accept_loop(
    listener: TcpListener,
    fe: Arc<Frontend>,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(5);
    let mut last_warn: Option<Instant> = None;
    loop {
        // Take a maxconn slot before accepting: past the limit clients wait in the backlog.
        let permit = tokio::select! {
            p = fe.limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let fe = fe.clone();
                let hard = ctx.hard_stop.clone();
                let metrics = ctx.metrics.clone();
                ctx.tracker
                    .spawn(handle(stream, peer, fe, permit, metrics, hard));
            }
            Err(e) => {
                fe.accept_errors.inc();
                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(frontend = %fe.cfg.name, error = %e, "accept failed; backing off");
                    last_warn = Some(Instant::now());
                }
                drop(permit);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Why no server connection was made.
#[derive(Debug, Clone, Copy)]
enum NoConnect {
    NoServer,
    QueueTimeout,
    ConnectFailed,
    Shutdown,
}

impl NoConnect {
    fn as_str(self) -> &'static str {
        match self {
            NoConnect::NoServer => "no_server",
            NoConnect::QueueTimeout => "queue_timeout",
            NoConnect::ConnectFailed => "connect_failed",
            NoConnect::Shutdown => "shutdown",
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
    metrics: Metrics,
    hard: CancellationToken,
) {
    let started = Instant::now();
    fe.connections.inc();
    fe.active.inc();
    metrics.active_total.inc();
    let _active = FrontendActive(&fe, &metrics);
    let _ = client.set_nodelay(true);
    let backend = &fe.backend;

    let connected = tokio::select! {
        c = connect_with_retries(&fe, peer) => c,
        _ = hard.cancelled() => Err(NoConnect::Shutdown),
    };
    match connected {
        Err(why) => {
            if !matches!(why, NoConnect::Shutdown) {
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
                client = %peer,
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
            let outcome = relay::relay(
                &client,
                &c.stream,
                fe.cfg.client_timeout,
                backend.cfg.server_timeout,
                &up,
                &down,
                &hard,
            )
            .await;
            if outcome.end != End::Done {
                // Errors and timeouts: reset rather than leave the peer half-open.
                let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
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
                client = %peer,
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

/// Picks a server and connects, trying up to `retries` other servers after a failure.
async fn connect_with_retries(fe: &Frontend, peer: SocketAddr) -> Result<Connected, NoConnect> {
    let backend = &fe.backend;
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
        match tokio::time::timeout(backend.cfg.connect_timeout, connect(server.addr)).await {
            Ok(Ok(stream)) => {
                let connect_time = t0.elapsed();
                server.m.connect_seconds.observe(connect_time.as_secs_f64());
                server.count_connection();
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

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
