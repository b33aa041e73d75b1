//! Service listeners gated by readiness: bound while the service can be served (or always,
//! by mode), with the connections already in a closing listener's backlog taken first.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::WhenNotReady;
use crate::metrics::Metrics;

/// Whether a gated listener is bound: its `listener_bound` gauge for operators, and a watch
/// for what must wait on it (readiness of an unbinding service, a drain closing listeners).
pub(crate) struct Bound {
    gauge: IntGauge,
    tx: watch::Sender<bool>,
    metrics: Metrics,
}

impl Bound {
    /// Starts unbound; the `listener_bound` gauge of `service` follows.
    pub(crate) fn new(metrics: &Metrics, service: &str) -> Bound {
        let gauge = metrics.listener_bound.with_label_values(&[service]);
        gauge.set(0);
        Bound {
            gauge,
            tx: watch::Sender::new(false),
            metrics: metrics.clone(),
        }
    }

    /// Follows the state.
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    fn set(&self, bound: bool) {
        self.gauge.set(i64::from(bound));
        self.tx.send_replace(bound);
        self.metrics.changed();
    }
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

/// A readiness-gated service listener (a cloud reverse service, an on-prem consume) that
/// a reload can add or remove ([`crate::base::Base::open_gated`]): its readiness, set by the
/// driver; whether it is bound; where it listens; and what stops it.
pub(crate) struct Gated {
    /// Whether a session can carry the service.
    pub(crate) ready: watch::Sender<bool>,
    /// Whether the listener is bound.
    pub(crate) bound: watch::Receiver<bool>,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    pub(crate) stop: CancellationToken,
}

impl Gated {
    /// Stops the listener (the service was removed); clients it accepted finish.
    pub(crate) fn close(&self) {
        self.stop.cancel();
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
    bound: Bound,
    on_accept: impl Fn(TcpStream, SocketAddr),
) {
    let mut listener = initial;
    loop {
        if mode == WhenNotReady::Unbind && !*ready.borrow() {
            listener = None;
        }
        match listener.take() {
            Some(l) => {
                bound.set(true);
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
                bound.set(false);
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
                            tracing::warn!(target: "tether_gateway::common", %addr, error = %e, "cannot re-bind service listener; retrying");
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
            tracing::warn!(target: "tether_gateway::common", error = %e, "cannot take the backlog of a closing listener");
            return;
        }
    };
    if let Err(e) = stop_handshakes(&listener) {
        tracing::warn!(target: "tether_gateway::common", error = %e, "cannot stop handshakes on a closing listener");
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
                        tracing::warn!(target: "tether_gateway::common", %peer, error = %e, "cannot register a backlog connection")
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

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
}
