//! Pieces both drivers share: the error type, binding, and the session loop (control
//! messages, pings, dead interval). Streams are in [`crate::stream`], listeners in
//! [`crate::listener`], what a driver holds in [`crate::base`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::mux::{Mux, YamuxSession, YamuxStream};
use crate::proto::{Control, ProtoError};
use crate::tls::TlsError;

/// Errors starting a gateway.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A socket could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Metrics registration failed (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A listener that could not be bound, named (the cause is the source, printed once by
/// the chain): at start, or for a service a reload adds.
#[derive(Debug, Error)]
#[error("cannot bind {what} on {addr}")]
pub struct BindError {
    /// Which listener.
    pub what: String,
    /// Where.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Binds a listener, naming it in the error.
pub(crate) async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(addr).await.map_err(|source| {
        GatewayError::Bind(BindError {
            what: what.to_string(),
            addr,
            source,
        })
    })
}

/// Binds listener `what` now, outside any await, so that a reload can bind every listener
/// it adds before it commits (a port in use refuses the reload whole).
pub(crate) fn bind_now(what: String, addr: SocketAddr) -> Result<TcpListener, BindError> {
    let bind = || {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        TcpListener::from_std(l)
    };
    bind().map_err(|source| BindError { what, addr, source })
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
    metrics: crate::metrics::Metrics,
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
                                metrics.rtt(last_ping.elapsed().as_secs_f64());
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
/// A random 16-byte trace id.
pub(crate) fn trace_id() -> [u8; 16] {
    rand::random()
}

/// Hex of a trace id, for logs.
pub(crate) fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
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
