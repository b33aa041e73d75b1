//! Dialing sessions: the placement loop runs [`crate::placement::Placement`] (which node
//! needs a session, when, after which backoff) and each dial does TCP, TLS and HELLO, then
//! hands a kept session to [`super::session`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::io::{ReadHalf, WriteHalf, split};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::Onprem;
use crate::base::lock;
use crate::common;
use crate::mux::{Mux, MuxTuning, Side, YamuxSession, YamuxStream};
use crate::placement::{Action, DialId, Landed, Target};
use crate::proto::{
    Control, ExportState, FEATURE_ROSTER, FEATURE_SERVICES, PROTO_VERSION, RejectCode, RosterEntry,
};

pub(super) struct Established {
    pub(super) mux: YamuxSession,
    pub(super) inbound: mpsc::Receiver<YamuxStream>,
    pub(super) rd: ReadHalf<YamuxStream>,
    pub(super) wr: WriteHalf<YamuxStream>,
    pub(super) node_id: String,
    pub(super) roster: Vec<RosterEntry>,
    pub(super) accepted: BTreeSet<String>,
    /// The node understands SERVICES (and tells ACCEPTED).
    pub(super) services_msgs: bool,
}

struct DialFailure {
    reason: &'static str,
    retry_after: Duration,
    roster: Vec<RosterEntry>,
    draining_hint: bool,
}

impl DialFailure {
    fn new(reason: &'static str) -> Self {
        DialFailure {
            reason,
            retry_after: Duration::ZERO,
            roster: Vec::new(),
            draining_hint: false,
        }
    }
}

impl Onprem {
    pub(super) async fn placement_loop(self: Arc<Self>) {
        loop {
            if self.base.draining() {
                return;
            }
            let now = Instant::now();
            let (actions, next, deficits, forgotten) = {
                let mut p = lock(&self.placement);
                let a = p.poll(now);
                (a, p.next_deadline(), p.deficits(), p.take_forgotten())
            };
            for (node, d) in deficits {
                self.base.metrics.deficit(&node, d);
            }
            for node in forgotten {
                self.base.metrics.forget_node(&node);
            }
            for action in actions {
                let g = self.clone();
                match action {
                    Action::Dial {
                        dial,
                        target,
                        for_node,
                    } => {
                        self.base
                            .tracker
                            .spawn(async move { g.dial(dial, target, for_node).await });
                    }
                    Action::Recycle { session, node } => {
                        self.base
                            .tracker
                            .spawn(async move { g.recycle(session, &node).await });
                    }
                }
            }
            let wait = next
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(500))
                .min(Duration::from_millis(500));
            tokio::select! {
                _ = self.base.kill.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn dial(self: Arc<Self>, dial: DialId, target: Target, for_node: Option<String>) {
        let label = for_node.clone().unwrap_or_else(|| "vip".into());
        let outcome = tokio::select! {
            _ = self.base.kill.cancelled() => return,
            r = self.try_dial(dial, &target) => r,
        };
        match outcome {
            Err(f) => {
                debug!(target: "tether_gateway::onprem", gateway = %self.cfg().id, node = %label, reason = f.reason, "dial failed");
                self.base
                    .metrics
                    .dials
                    .with_label_values(&[&label, f.reason])
                    .inc();
                {
                    let mut p = lock(&self.placement);
                    // A draining node is often one on its way out of the cluster, not
                    // reloaded with the others: its roster may be stale. It still teaches a
                    // gateway that knows none.
                    if !f.draining_hint || !p.knows_roster() {
                        p.apply_roster(&f.roster);
                    }
                    p.dial_failed(Instant::now(), dial, f.retry_after, &mut rand::rng());
                    if f.draining_hint
                        && let Some(n) = &for_node
                        && matches!(target, Target::Node { .. })
                    {
                        p.node_draining(Instant::now(), n, f.retry_after);
                    }
                }
                self.wake.notify_one();
            }
            Ok(mut est) => {
                let sid = self.next_session.fetch_add(1, Ordering::Relaxed);
                // Placement's verdict and the session's registration under one lock: a
                // recycle that placement hands out once this session counts (the old
                // session it replaces) then finds it usable, so draining the old one
                // never leaves a moment without a session to carry new streams.
                let kept = {
                    let mut p = lock(&self.placement);
                    let landed = p.session_up(
                        Instant::now(),
                        dial,
                        sid,
                        &est.node_id,
                        &est.roster,
                        &mut rand::rng(),
                    );
                    (landed == Landed::Keep).then(|| self.register(sid, &mut est))
                };
                match kept {
                    None => {
                        debug!(target: "tether_gateway::onprem", gateway = %self.cfg().id, node = %est.node_id, "surplus session closed");
                        self.base
                            .metrics
                            .dials
                            .with_label_values(&[&est.node_id, "surplus"])
                            .inc();
                        est.mux.close();
                        self.wake.notify_one();
                    }
                    Some((session, out_rx)) => {
                        self.base
                            .metrics
                            .dials
                            .with_label_values(&[&est.node_id, "ok"])
                            .inc();
                        self.wake.notify_one();
                        self.run_session(sid, est, session, out_rx).await;
                    }
                }
            }
        }
    }

    async fn try_dial(&self, dial: DialId, target: &Target) -> Result<Established, DialFailure> {
        // Settings and TLS material as they are when the dial starts: a reload applies to
        // the dials after it.
        let cfg = self.cfg();
        let t = &cfg.timers;
        let name = match target {
            Target::Node { sni, .. } if !sni.is_empty() => sni.clone(),
            _ => cfg.server_name.clone(),
        };
        let server_name = ServerName::try_from(name).map_err(|_| DialFailure::new("bad_name"))?;
        let tcp =
            match tokio::time::timeout(t.handshake_timeout, TcpStream::connect(cfg.cloud.as_str()))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(_)) => return Err(DialFailure::new("connect")),
                Err(_) => return Err(DialFailure::new("connect_timeout")),
            };
        common::session_socket_options(&tcp);
        let tls = match tokio::time::timeout(
            t.handshake_timeout,
            tokio_rustls::TlsConnector::from(self.tls.load_full()).connect(server_name, tcp),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn!(target: "tether_gateway::onprem", gateway = %self.cfg().id, error = %e, "session TLS handshake failed");
                self.base.metrics.handshake_failed("tls");
                return Err(DialFailure::new("tls"));
            }
            Err(_) => return Err(DialFailure::new("tls_timeout")),
        };
        let (mux, inbound) = YamuxSession::spawn(tls, Side::Client, MuxTuning::new(&cfg.limits));
        let hello = Control::Hello {
            proto: PROTO_VERSION,
            gateway_id: cfg.id.clone(),
            boot_epoch: self.base.boot_epoch,
            // Unique per dial: dials in flight together (a node's quota, a replacement of
            // an aged session) must not share a slot, or the cloud would close the first
            // to register as replaced by the second.
            slot: u32::try_from(dial % u64::from(u32::MAX)).unwrap_or(0),
            want_node: match target {
                Target::Node { node, .. } => Some(node.clone()),
                Target::Vip => None,
            },
            exports: lock(&self.export_up)
                .iter()
                .map(|(service, up)| ExportState {
                    service: service.clone(),
                    up: *up,
                })
                .collect(),
            consumes: cfg.consume.iter().map(|c| c.service.clone()).collect(),
            features: vec![FEATURE_ROSTER.into(), FEATURE_SERVICES.into()],
        };
        let handshake = async {
            let ctrl = mux.open().await.map_err(|_| DialFailure::new("mux"))?;
            let (mut rd, mut wr) = split(ctrl);
            hello
                .write_to(&mut wr)
                .await
                .map_err(|_| DialFailure::new("hello"))?;
            let reply = Control::read_from(&mut rd)
                .await
                .map_err(|_| DialFailure::new("hello"))?;
            Ok::<_, DialFailure>((rd, wr, reply))
        };
        let (rd, wr, reply) = match tokio::time::timeout(t.handshake_timeout, handshake).await {
            Ok(Ok(r)) => r,
            Ok(Err(f)) => {
                mux.close();
                // In TLS 1.3 a refused client certificate surfaces here, on the first read.
                return Err(f);
            }
            Err(_) => {
                mux.close();
                return Err(DialFailure::new("hello_timeout"));
            }
        };
        match reply {
            Some(Control::HelloAck {
                node_id,
                roster,
                accepted,
                rejected,
                features,
                ..
            }) => {
                for r in &rejected {
                    warn!(target: "tether_gateway::onprem", gateway = %self.cfg().id, node = %node_id, service = %r.service, reason = %r.reason, "service refused by cloud node");
                }
                Ok(Established {
                    mux,
                    inbound,
                    rd,
                    wr,
                    node_id,
                    roster,
                    accepted: accepted.into_iter().collect(),
                    services_msgs: features.iter().any(|f| f == FEATURE_SERVICES),
                })
            }
            Some(Control::Reject {
                code,
                message,
                retry_after_ms,
                roster,
            }) => {
                mux.close();
                if code != RejectCode::Draining {
                    warn!(target: "tether_gateway::onprem", gateway = %self.cfg().id, ?code, %message, "session rejected");
                }
                Err(DialFailure {
                    reason: match code {
                        RejectCode::Auth => "rejected_auth",
                        RejectCode::Draining => "rejected_draining",
                        RejectCode::Version => "rejected_version",
                        RejectCode::OverQuota => "rejected_over_quota",
                    },
                    retry_after: Duration::from_millis(retry_after_ms.min(60_000)),
                    roster,
                    draining_hint: code == RejectCode::Draining,
                })
            }
            _ => {
                mux.close();
                Err(DialFailure::new("protocol"))
            }
        }
    }
}
