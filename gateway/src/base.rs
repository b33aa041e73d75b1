//! What the driver of either role holds besides its own state: metrics, the kill switch,
//! its tasks, the work a drain waits for and the draining flag; and the handles of a
//! session that both roles keep.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::config::WhenNotReady;
use crate::listener::{self, Bound, Gated};
use crate::metrics::Metrics;
use crate::mux::YamuxSession;
use crate::proto::Control;

/// Locks a driver mutex. A panic while holding one would be a bug; the gateway keeps
/// serving with the data as it is rather than failing every later lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which role a driver plays.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    /// A cloud node.
    Cloud,
    /// An on-prem gateway.
    Onprem,
}

/// The state both drivers share.
pub(crate) struct Base {
    /// The gateway's metrics.
    pub(crate) metrics: Metrics,
    /// Random per start, announced to peers (a restarted process is a new incarnation).
    pub(crate) boot_epoch: u64,
    /// Cancelled to stop at once (a kill, or the end of a drain).
    pub(crate) kill: CancellationToken,
    /// Every task of the gateway: `kill` then waiting on it leaves nothing running.
    pub(crate) tracker: TaskTracker,
    /// Clients accepted and not finished, and streams being relayed: what a drain waits
    /// for. Each holds a token of it from accept (or relay start) to its end.
    pub(crate) work: TaskTracker,
    /// Set once a drain has begun.
    draining: AtomicBool,
}

impl Base {
    /// A base with a new boot epoch.
    pub(crate) fn new(metrics: Metrics) -> Base {
        Base {
            metrics,
            boot_epoch: rand::random(),
            kill: CancellationToken::new(),
            tracker: TaskTracker::new(),
            work: TaskTracker::new(),
            draining: AtomicBool::new(false),
        }
    }

    /// Whether a drain has begun.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Marks the drain begun.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Stops at once, like a crash; resolves when every task has ended.
    pub(crate) async fn kill(&self) {
        self.kill.cancel();
        self.wait().await;
    }

    /// Waits until the gateway has stopped (after a drain or a kill).
    pub(crate) async fn wait(&self) {
        self.kill.cancelled().await;
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Waits until the work in flight has finished, for at most `grace` and not past a
    /// kill. Work that starts meanwhile is waited for too.
    pub(crate) async fn work_done(&self, grace: Duration) {
        self.work.close();
        tokio::select! {
            _ = self.work.wait() => {}
            _ = tokio::time::sleep(grace) => {}
            _ = self.kill.cancelled() => {}
        }
    }

    /// Serves the admin routes until the gateway stops.
    pub(crate) fn spawn_admin(&self, role: Role, listener: TcpListener, router: axum::Router) {
        let kill = self.kill.clone();
        self.tracker.spawn(async move {
            if let Err(e) = tether_health::admin::serve(listener, router, kill).await {
                // Logged under the role's module, as every line of a role is.
                match role {
                    Role::Cloud => {
                        warn!(target: "tether_gateway::cloud", error = %e, "admin server failed")
                    }
                    Role::Onprem => {
                        warn!(target: "tether_gateway::onprem", error = %e, "admin server failed")
                    }
                }
            }
        });
    }

    /// Runs `drain` once `shutdown` is cancelled (unless the gateway was killed first).
    pub(crate) fn spawn_drain_on<Fut>(&self, shutdown: CancellationToken, drain: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let kill = self.kill.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = kill.cancelled() => {}
                _ = shutdown.cancelled() => drain.await,
            }
        });
    }

    /// Starts service `service`'s readiness-gated listener on `l` ([`listener::gated_accept`]),
    /// not ready, until the gateway is killed or [`Gated::close`]. Every client it accepts
    /// is work from the accept (counted before its task starts, so a drain cannot miss it)
    /// until `handler` has finished with it.
    pub(crate) fn open_gated<H, Fut>(
        &self,
        service: &str,
        l: TcpListener,
        mode: WhenNotReady,
        handler: H,
    ) -> Gated
    where
        H: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (addr, initial) = listener::initial_listener(l, mode);
        let bound = Bound::new(&self.metrics, service);
        let gated = Gated {
            ready: watch::Sender::new(false),
            bound: bound.subscribe(),
            addr,
            stop: self.kill.child_token(),
        };
        let (ready, kill) = (gated.ready.subscribe(), gated.stop.clone());
        let tracker = self.tracker.clone();
        let work = self.work.clone();
        self.tracker.spawn(async move {
            listener::gated_accept(addr, initial, mode, ready, kill, bound, move |tcp, peer| {
                let token = work.token();
                let client = handler(tcp, peer);
                tracker.spawn(async move {
                    client.await;
                    drop(token);
                });
            })
            .await;
        });
        gated
    }
}

/// The handles of a session both roles keep.
pub(crate) struct Link {
    /// Its multiplexer.
    pub(crate) mux: YamuxSession,
    /// Control messages to send on it.
    pub(crate) control: mpsc::Sender<Control>,
    /// Ends its session loop.
    pub(crate) kill: CancellationToken,
}

impl Link {
    /// Tells the peer we drain, with `grace` as its deadline (best effort: a full control
    /// queue drops the message, and the peer then learns it when the session closes).
    pub(crate) fn send_drain(&self, grace: Duration, reason: &str) {
        let _ = self.control.try_send(Control::Drain {
            deadline_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            reason: reason.into(),
        });
    }

    /// Queues a control message that must not be lost (a roster, the services): one
    /// that finds the queue full, which pings and server states share, waits its turn on a
    /// task of `base` rather than being dropped.
    pub(crate) fn send_control(&self, base: &Base, m: Control) {
        if self.kill.is_cancelled() {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(m)) = self.control.try_send(m) {
            let tx = self.control.clone();
            base.tracker.spawn(async move {
                let _ = tx.send(m).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn base() -> Arc<Base> {
        Arc::new(Base::new(Metrics::new().expect("metrics")))
    }

    /// A drain waits for the work in flight, also work that starts during the drain.
    #[tokio::test(start_paused = true)]
    async fn a_drain_waits_for_all_the_work() {
        use std::sync::atomic::AtomicBool;
        let b = base();
        let first = b.work.token();
        let finished = Arc::new(AtomicBool::new(false));
        let (w, f) = (b.clone(), finished.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            // Started during the drain: waited for too.
            let second = w.work.token();
            drop(first);
            tokio::time::sleep(Duration::from_secs(3)).await;
            f.store(true, Ordering::SeqCst);
            drop(second);
        });
        // Marks what happens well after the work, well before the grace.
        let late = Arc::new(AtomicBool::new(false));
        let l = late.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            l.store(true, Ordering::SeqCst);
        });
        b.work_done(Duration::from_secs(3600)).await;
        assert!(
            finished.load(Ordering::SeqCst),
            "the drain ended before its work"
        );
        assert!(!late.load(Ordering::SeqCst), "the drain outlasted its work");
    }

    /// Work that never ends holds a drain for its grace only, and a kill ends it at once.
    /// (Paused clock: the grace elapses as soon as everything waits.)
    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_at_its_grace_or_a_kill() {
        let stuck = base();
        let _held = stuck.work.token();
        stuck.work_done(Duration::from_secs(30)).await;
        assert_eq!(stuck.work.len(), 1);

        let killed = base();
        let _held = killed.work.token();
        let k = killed.kill.clone();
        tokio::spawn(async move { k.cancel() });
        killed.work_done(Duration::MAX).await;
        assert!(killed.kill.is_cancelled());
    }
}
