//! A kept session's lifecycle on on-prem: registration, the server states sent at once and
//! then repeated every ping interval, the session loop, the cloud node's DRAIN, and its end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::dial::Established;
use super::{OnSession, Onprem};
use crate::base::{Link, lock};
use crate::common::{self, End};
use crate::mux::Mux;
use crate::proto::Control;

/// The `reason` a recycled session's end is counted under in
/// `tether_gateway_sessions_closed_total`.
const MAX_AGE: &str = "max_age";

impl Onprem {
    /// Registers a session placement keeps (its accepted services are taken from `est`):
    /// from here it carries new streams. Returns it with the queue of control messages
    /// that [`Onprem::run_session`] sends.
    pub(super) fn register(
        &self,
        sid: u64,
        est: &mut Established,
    ) -> (Arc<OnSession>, mpsc::Receiver<Control>) {
        let (out_tx, out_rx) = mpsc::channel(16);
        let session = Arc::new(OnSession {
            node: est.node_id.clone(),
            link: Link {
                mux: est.mux.clone(),
                control: out_tx,
                kill: self.base.kill.child_token(),
            },
            accepted: std::sync::Mutex::new(std::mem::take(&mut est.accepted)),
            services_msgs: est.services_msgs,
            draining: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            recycling: AtomicBool::new(false),
        });
        lock(&self.sessions).insert(sid, session.clone());
        (session, out_rx)
    }

    /// Runs a registered session until it ends.
    pub(super) async fn run_session(
        self: Arc<Self>,
        sid: u64,
        est: Established,
        session: Arc<OnSession>,
        out_rx: mpsc::Receiver<Control>,
    ) {
        let cfg = self.cfg();
        let t = &cfg.timers;
        self.base.metrics.session_up(&session.node, true);
        info!(target: "tether_gateway::onprem", gateway = %self.cfg().id, session = sid, node = %session.node, "session up");
        // Server states changed since HELLO are sent at once; after that the full set is
        // repeated every ping interval, so a state message lost to a full queue (changes are
        // sent with try_send) cannot leave a cloud node with a stale view for long.
        let resync = {
            let g = self.clone();
            let s = session.clone();
            let every = t.ping;
            tokio::spawn(async move {
                loop {
                    let states: Vec<(String, bool)> = lock(&g.export_up)
                        .iter()
                        .map(|(k, v)| (k.clone(), *v))
                        .collect();
                    for (service, up) in states {
                        let m = Control::ServiceState {
                            service,
                            up,
                            reason: String::new(),
                        };
                        if s.link.control.send(m).await.is_err() {
                            return;
                        }
                    }
                    tokio::select! {
                        _ = s.link.kill.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                }
            })
        };
        self.refresh_consume_ready();
        let g = self.clone();
        let g2 = self.clone();
        let s2 = session.clone();
        let end = common::session_loop(
            est.rd,
            est.wr,
            &est.mux,
            est.inbound,
            out_rx,
            t.ping,
            t.dead_after,
            session.link.kill.clone(),
            self.base.metrics.clone(),
            move |m| g.on_control(&s2, m),
            move |stream| {
                let g3 = g2.clone();
                // Work from the moment it arrives: a drain that begins while the server is
                // being connected waits for it instead of killing the session under it.
                let work = g2.base.work.token();
                g2.base.tracker.spawn(async move {
                    g3.serve_reverse(stream).await;
                    drop(work);
                });
            },
        )
        .await;
        resync.abort();
        let reason = if end == End::Killed && session.recycling.load(Ordering::SeqCst) {
            MAX_AGE
        } else {
            end.as_str()
        };
        info!(target: "tether_gateway::onprem", gateway = %self.cfg().id, session = sid, node = %session.node, reason, "session down");
        self.base.metrics.session_closed(reason);
        lock(&self.sessions).remove(&sid);
        lock(&self.placement).session_down(Instant::now(), sid, &mut rand::rng());
        est.mux.close();
        self.refresh_consume_ready();
        self.base.metrics.session_up(&session.node, false);
        self.wake.notify_one();
    }

    /// Recycles a session that reached its maximum age, once placement has its
    /// replacement up: no new forward streams on it, DRAIN so the cloud node opens no new
    /// reverse streams on it, then its streams are given the drain grace and it is closed.
    /// The replacement already carries new streams, so no client is refused meanwhile.
    pub(super) async fn recycle(self: Arc<Self>, sid: u64, node: &str) {
        let Some(session) = lock(&self.sessions).get(&sid).cloned() else {
            return;
        };
        let t = self.cfg().timers.clone();
        info!(target: "tether_gateway::onprem", gateway = %self.cfg().id, session = sid, %node, streams = session.link.mux.live_streams().saturating_sub(1), "session reached its maximum age; draining it");
        session.recycling.store(true, Ordering::SeqCst);
        session.draining.store(true, Ordering::SeqCst);
        self.refresh_consume_ready();
        session
            .link
            .send_drain(t.drain_grace, "maximum session age");
        let streams_done = async {
            // A stream the node opened before it read the DRAIN may still be on its way:
            // give the DRAIN a ping interval to be read before looking for streams. (One
            // that arrives after the close fails its open and is raced on another session
            // by the node.)
            tokio::time::sleep(t.ping).await;
            // The control stream stays.
            session.link.mux.streams_at_most(1).await;
        };
        tokio::select! {
            _ = streams_done => {}
            _ = tokio::time::sleep(t.drain_grace) => {
                info!(target: "tether_gateway::onprem", gateway = %self.cfg().id, session = sid, %node, streams = session.link.mux.live_streams().saturating_sub(1), "drain grace over; closing the recycled session with streams left");
            }
            _ = session.link.kill.cancelled() => {}
        }
        session.link.kill.cancel();
    }

    fn on_control(&self, session: &OnSession, m: Control) {
        match m {
            Control::Drain { reason, .. } => {
                info!(target: "tether_gateway::onprem", gateway = %self.cfg().id, node = %session.node, %reason, "cloud node drains");
                session.draining.store(true, Ordering::SeqCst);
                lock(&self.placement).node_draining(
                    Instant::now(),
                    &session.node,
                    Duration::from_secs(1),
                );
                self.refresh_consume_ready();
                self.wake.notify_one();
            }
            Control::Accepted { accepted, rejected } => {
                for r in &rejected {
                    warn!(target: "tether_gateway::onprem", gateway = %self.cfg().id, node = %session.node, service = %r.service, reason = %r.reason, "service refused by cloud node");
                }
                info!(target: "tether_gateway::onprem", gateway = %self.cfg().id, node = %session.node, ?accepted, "services accepted");
                *lock(&session.accepted) = accepted.into_iter().collect();
                self.refresh_consume_ready();
            }
            Control::Roster { roster } => {
                let names: Vec<&str> = roster.iter().map(|r| r.node_id.as_str()).collect();
                info!(target: "tether_gateway::onprem", gateway = %self.cfg().id, node = %session.node, roster = ?names, "cloud roster changed");
                lock(&self.placement).apply_roster(&roster);
                self.wake.notify_one();
            }
            other => {
                debug!(target: "tether_gateway::onprem", msg = ?other, "ignored control message")
            }
        }
    }
}
