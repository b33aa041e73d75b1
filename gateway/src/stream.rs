//! Data streams, the same for both roles: opening one (preamble, status byte, timing and
//! failure metrics), answering one (connect the server, status byte, relay), carrying an
//! accepted client over raced opens, and counting the relay (`relay.rs`).

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::debug;

use crate::base::Base;
use crate::config::{Timers, WhenNotReady};
use crate::metrics::{Metrics, StreamEnd};
use crate::mux::{Mux, YamuxSession, YamuxStream};
use crate::proto::{Preamble, Status, StreamKind};
pub(crate) use crate::race::race_opens;
use crate::relay::Relay;

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

/// [`Relay`] between a TCP connection and its stream until both directions finish, the
/// stream's session ends (a dead session ends all its streams at once), the gateway is
/// killed, or no byte moves either way for `idle` (`stream_idle_timeout`), counted: work a
/// drain waits for and the `streams_active` gauge while it runs, then its bytes in `bytes`
/// and how it ended in `streams_closed`.
///
/// An idle stream is closed on both sides: the caller drops the TCP connection (a FIN to
/// its end) and the stream, which yamux resets; the peer's relay reads the reset as the
/// end of the stream, half-closes towards its own TCP end, and ends when that end closes
/// or, at the latest, at its own idle timeout.
pub(crate) async fn relay_counted<T: AsyncRead + AsyncWrite + Unpin>(
    base: &Base,
    service: &str,
    direction: &str,
    tcp: &mut T,
    end: TcpEnd,
    stream: &mut YamuxStream,
    idle: Duration,
) {
    let metrics = &base.metrics;
    let active = metrics
        .streams_active
        .with_label_values(&[service, direction]);
    active.inc();
    let work = base.work.token();
    let session_ended = stream.session_ended();
    tokio::pin!(session_ended);
    let relay = Relay::new(tcp, stream);
    tokio::pin!(relay);
    // One timer per stream, armed for the idle timeout and, when it fires, moved to what
    // is left of it since bytes last moved: no timer work per read.
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    let (how, (from_tcp, to_tcp)) = loop {
        tokio::select! {
            // The relay first: data ready when the timer fires counts as activity.
            biased;
            moved = &mut relay => break (StreamEnd::Done, moved),
            _ = &mut session_ended => break (StreamEnd::SessionEnded, relay.moved()),
            _ = base.kill.cancelled() => break (StreamEnd::Killed, relay.moved()),
            _ = &mut idle_timer => {
                let due = relay.last_active() + idle;
                if tokio::time::Instant::now() >= due {
                    break (StreamEnd::IdleTimeout, relay.moved());
                }
                idle_timer.as_mut().reset(due);
            }
        }
    };
    drop(work);
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
    if how == StreamEnd::IdleTimeout {
        debug!(target: "tether_gateway", %service, %direction, idle = ?idle, "stream closed: idle timeout");
    }
    metrics.stream_closed(service, how);
}

/// Waits until `ready` is true, for at most `limit`. Returns the final state.
pub(crate) async fn wait_ready(ready: &mut watch::Receiver<bool>, limit: Duration) -> bool {
    tokio::time::timeout(limit, ready.wait_for(|r| *r))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// What becomes of a stream the peer opened, once its preamble is read.
pub(crate) enum Verdict {
    /// Connect this server (`host:port`) and relay.
    Connect(String),
    /// Answer this status and close.
    Refuse(Status),
}

/// Answers a data stream the peer opened: reads its preamble within `open_timeout`,
/// answers a probe at once, else asks `decide` (the role's authorization and drain rules);
/// then connects the server, answers the status byte and relays. Counted in `streams_total`
/// and the relay metrics under `direction`.
pub(crate) async fn answer(
    base: &Base,
    timers: &Timers,
    direction: &str,
    mut s: YamuxStream,
    decide: impl FnOnce(&Preamble) -> Verdict,
) {
    let pre = match tokio::time::timeout(timers.open_timeout, Preamble::read_from(&mut s)).await {
        Ok(Ok(p)) => p,
        _ => return,
    };
    if pre.kind == StreamKind::Probe {
        let _ = s.write_all(&[Status::Ok as u8]).await;
        return;
    }
    let target = match decide(&pre) {
        Verdict::Connect(target) => target,
        Verdict::Refuse(status) => {
            let _ = s.write_all(&[status as u8]).await;
            return;
        }
    };
    let mut server = match connect_server(&target, timers.connect_timeout).await {
        Ok(c) => c,
        Err(st) => {
            base.metrics.stream(&pre.service, direction, st.as_str());
            let _ = s.write_all(&[st as u8]).await;
            return;
        }
    };
    if s.write_all(&[Status::Ok as u8]).await.is_err() {
        return;
    }
    base.metrics.stream(&pre.service, direction, "ok");
    relay_counted(
        base,
        &pre.service,
        direction,
        &mut server,
        TcpEnd::Server,
        &mut s,
        timers.stream_idle_timeout,
    )
    .await;
}

/// Whether a client accepted while its service is not ready goes on: with `unbind` it was
/// accepted just before the listener closed (a drain, or the last capacity lost) and is
/// served if any is left; `reject` refuses it; `hold` waits up to `accept_wait`.
pub(crate) async fn may_proceed(
    ready: &mut watch::Receiver<bool>,
    mode: WhenNotReady,
    accept_wait: Duration,
) -> bool {
    if *ready.borrow() {
        return true;
    }
    match mode {
        WhenNotReady::Unbind => true,
        WhenNotReady::Reject => false,
        WhenNotReady::Hold => wait_ready(ready, accept_wait).await,
    }
}

/// Carries an accepted client over the first stream that [`race_opens`] opens, starting
/// with `first` (see there for `another` and `open`). `release` gives back a session's
/// count of a stream: one opened too late, and the client's own once relayed. Opens still
/// pending run on in the background. `opened` sees the winner before the relay (for a
/// log line); `idle` is the stream idle timeout. `false` when no stream opened: the caller
/// rejects the client.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn carry<K, Fut>(
    base: &Base,
    service: &str,
    direction: &str,
    client: &mut TcpStream,
    first: K,
    another: impl FnMut(&K, bool) -> Option<K>,
    open: impl Fn(K) -> Fut,
    hedge: Duration,
    release: impl Fn(K) + Clone + Send + 'static,
    opened: impl FnOnce(&K),
    idle: Duration,
) -> bool
where
    K: Clone + Send + 'static,
    Fut: std::future::Future<Output = (K, Option<YamuxStream>)> + Send + 'static,
{
    let (won, leftover) = race_opens(first, another, open, hedge, release.clone()).await;
    if let Some(rest) = leftover {
        base.tracker.spawn(rest);
    }
    let Some((k, mut stream)) = won else {
        return false;
    };
    base.metrics.stream(service, direction, "ok");
    opened(&k);
    relay_counted(
        base,
        service,
        direction,
        client,
        TcpEnd::Client,
        &mut stream,
        idle,
    )
    .await;
    release(k);
    true
}

/// One stream open on `mux` for a client, with its time to answer (or its failure)
/// counted for `preamble.service`. The caller logs a failure and keeps its books.
pub(crate) async fn open_counted(
    metrics: &Metrics,
    mux: &YamuxSession,
    preamble: &Preamble,
    open_timeout: Duration,
) -> Result<YamuxStream, OpenError> {
    let service = preamble.service.as_str();
    let started = Instant::now();
    match open_stream(mux, preamble, open_timeout).await {
        Ok(stream) => {
            metrics
                .stream_open_seconds
                .with_label_values(&[service])
                .observe(started.elapsed().as_secs_f64());
            Ok(stream)
        }
        Err(e) => {
            metrics
                .stream_open_failures
                .with_label_values(&[service, e.as_str()])
                .inc();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
