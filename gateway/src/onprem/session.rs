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
use crate::common;
use crate::mux::Mux;
use crate::proto::Control;

impl Onprem {
    pub(super) async fn run_session(self: Arc<Self>, sid: u64, est: Established) {
        let cfg = self.cfg();
        let t = &cfg.timers;
        let (out_tx, out_rx) = mpsc::channel(16);
        let session = Arc::new(OnSession {
            node: est.node_id.clone(),
            link: Link {
                mux: est.mux.clone(),
                control: out_tx,
                kill: self.base.kill.child_token(),
            },
            accepted: std::sync::Mutex::new(est.accepted),
            services_msgs: est.services_msgs,
            draining: AtomicBool::new(false),
            active: AtomicUsize::new(0),
        });
        lock(&self.sessions).insert(sid, session.clone());
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
        info!(target: "tether_gateway::onprem", gateway = %self.cfg().id, session = sid, node = %session.node, reason = end.as_str(), "session down");
        self.base.metrics.session_closed(end.as_str());
        lock(&self.sessions).remove(&sid);
        lock(&self.placement).session_down(Instant::now(), sid, &mut rand::rng());
        est.mux.close();
        self.refresh_consume_ready();
        self.base.metrics.session_up(&session.node, false);
        self.wake.notify_one();
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
