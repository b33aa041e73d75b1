//! A session's lifecycle on a cloud node: TLS handshake, control stream and HELLO (what
//! fails before HELLO is accepted is counted and logged through a gate), admission
//! ([`super::admit`], then duplicate ids), HELLO_ACK, registration with the core, the
//! session loop, and its end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use tokio::io::split;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::admit::{self, Facts, Hello};
use super::{Cloud, Session};
use crate::base::{Link, lock};
use crate::common::{self, End};
use crate::duplicate::{self, Admission};
use crate::mux::{Mux, MuxTuning, Side, YamuxSession};
use crate::proto::{Control, FEATURE_ROSTER, FEATURE_SERVICES, RejectCode};
use crate::readiness::{SessionId, SessionInfo};
use crate::tls;

/// Interval of the log gate for sessions failing before their HELLO is accepted.
pub(super) const UNAUTHENTICATED_LOG_EVERY: Duration = Duration::from_secs(10);

/// The `code` label of `tether_gateway_sessions_rejected_total` for a REJECT.
pub(crate) fn reject_label(code: RejectCode) -> &'static str {
    match code {
        RejectCode::Auth => "auth",
        RejectCode::Draining => "draining",
        RejectCode::Version => "version",
        RejectCode::OverQuota => "over_quota",
    }
}

fn handshake_reason(e: &std::io::Error) -> &'static str {
    use rustls::CertificateError as C;
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "io";
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "expired",
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => "unknown_ca",
        rustls::Error::InvalidCertificate(_) => "bad_certificate",
        rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => "incompatible",
        _ => "tls",
    }
}

impl Cloud {
    async fn reject(
        &self,
        wr: &mut (impl tokio::io::AsyncWrite + Unpin),
        code: RejectCode,
        message: String,
    ) {
        self.base.metrics.rejected(reject_label(code));
        let m = Control::Reject {
            code,
            message,
            retry_after_ms: if code == RejectCode::Draining {
                1000
            } else {
                5000
            },
            roster: super::reconfigure::roster_of(&self.cfg()),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), m.write_to(wr)).await;
    }

    /// Refuses (and reports) a HELLO whose gateway id another live process holds
    /// ([`duplicate::DuplicateIds`]); `true` when the session may register.
    async fn admit_id(
        &self,
        wr: &mut (impl tokio::io::AsyncWrite + Unpin),
        gateway_id: &str,
        epoch: u64,
        peer: SocketAddr,
    ) -> bool {
        let incumbent_epoch = lock(&self.core).epoch_of(gateway_id);
        let verdict =
            lock(&self.duplicates).admit(Instant::now(), gateway_id, epoch, incumbent_epoch);
        let Admission::Refuse { incumbent, first } = verdict else {
            return true;
        };
        self.base.metrics.auth_refused("duplicate_id");
        let held_by = lock(&self.sessions)
            .values()
            .find(|s| s.gateway == gateway_id)
            .map_or_else(|| "an earlier session".to_string(), |s| s.peer.to_string());
        if first {
            error!(target: "tether_gateway::cloud",
                gateway = %gateway_id, incumbent = %held_by, newcomer = %peer,
                "two on-prem gateways use the id {gateway_id:?} (from {held_by} and from {peer}): each would \
                 purge the other's sessions; keeping the one from {held_by} for {}s and refusing the other. \
                 Give every gateway its own id and certificate",
                duplicate::HOLD_DOWN.as_secs()
            );
        } else {
            debug!(target: "tether_gateway::cloud", gateway = %gateway_id, newcomer = %peer, "duplicate gateway id refused again");
        }
        self.reject(
            wr,
            RejectCode::Auth,
            format!(
                "gateway id {gateway_id:?} is in use by another process (epoch {incumbent:x}, \
                 connected from {held_by}); two gateways must not share an id"
            ),
        )
        .await;
        false
    }

    /// A session that failed before its HELLO was accepted: counted by `reason`, logged
    /// through a gate (at most one line per [`UNAUTHENTICATED_LOG_EVERY`]) because such
    /// peers need no credentials and could otherwise flood the log.
    fn unauthenticated(&self, peer: SocketAddr, reason: &str, what: &str) {
        self.base.metrics.handshake_failed(reason);
        if let Some(held) = lock(&self.unauth_log).pass(Instant::now()) {
            warn!(target: "tether_gateway::cloud",
                %peer, reason, suppressed = held,
                "{what} (such lines are logged at most every {}s; all are counted in \
                 tether_gateway_handshake_failures_total)",
                UNAUTHENTICATED_LOG_EVERY.as_secs()
            );
        }
    }

    pub(super) async fn handle_session(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        common::session_socket_options(&tcp);
        // Timers, limits and the certificate as they are when the session comes: a reload
        // applies to the sessions after it.
        let cfg = self.cfg();
        let t = &cfg.timers;
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.load_full());
        let tls = match tokio::time::timeout(t.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let reason = handshake_reason(&e);
                self.unauthenticated(peer, reason, &format!("session TLS handshake refused: {e}"));
                return;
            }
            Err(_) => {
                self.unauthenticated(peer, "timeout", "session TLS handshake timed out");
                return;
            }
        };
        let cert: Option<CertificateDer<'static>> = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned();
        let Some(cert) = cert else {
            // The verifier requires one; keep the check anyway.
            self.unauthenticated(
                peer,
                "no_certificate",
                "session without a client certificate",
            );
            return;
        };
        // Authenticated by TLS, not yet by HELLO: what follows is still counted and gated,
        // as any holder of a certificate of the CA could send it.
        let (mux, mut inbound) =
            YamuxSession::spawn(tls, Side::Server, MuxTuning::new(&cfg.limits));
        let ctrl = match tokio::time::timeout(t.handshake_timeout, inbound.recv()).await {
            Ok(Some(s)) => s,
            _ => {
                self.unauthenticated(
                    peer,
                    "no_control_stream",
                    "no control stream; closing session",
                );
                mux.close();
                return;
            }
        };
        let (mut rd, mut wr) = split(ctrl);
        let hello =
            match tokio::time::timeout(t.handshake_timeout, Control::read_from(&mut rd)).await {
                Ok(Ok(Some(m))) => m,
                Ok(Err(_)) => {
                    self.unauthenticated(peer, "bad_hello", "malformed HELLO; closing session");
                    mux.close();
                    return;
                }
                _ => {
                    self.unauthenticated(peer, "no_hello", "no HELLO; closing session");
                    mux.close();
                    return;
                }
            };
        let Control::Hello {
            proto,
            gateway_id,
            boot_epoch,
            slot,
            exports,
            consumes,
            features,
            ..
        } = hello
        else {
            self.unauthenticated(
                peer,
                "not_hello",
                "first control message is not HELLO; closing session",
            );
            mux.close();
            return;
        };
        let hello = Hello {
            proto,
            gateway_id: gateway_id.clone(),
            exports,
            consumes,
            roster_push: features.iter().any(|f| f == FEATURE_ROSTER),
            services_msgs: features.iter().any(|f| f == FEATURE_SERVICES),
        };
        let facts = Facts {
            draining: self.base.draining(),
            identity_ok: tls::cert_has_identity(&cert, &gateway_id),
            held: lock(&self.core).sessions_of_epoch(&gateway_id, boot_epoch),
        };
        let admission = match admit::admit(&self.cfg(), &hello, facts) {
            Ok(a) => a,
            Err(refusal) => {
                match &refusal {
                    admit::Reject::IdentityMismatch => {
                        warn!(target: "tether_gateway::cloud", %peer, %gateway_id, "HELLO identity does not match the client certificate; refused")
                    }
                    admit::Reject::UnknownGateway => {
                        warn!(target: "tether_gateway::cloud", %peer, %gateway_id, "gateway is not allowed any service; refused")
                    }
                    admit::Reject::OverQuota(held) => {
                        warn!(target: "tether_gateway::cloud", %peer, %gateway_id, held, "too many sessions from one gateway; refused")
                    }
                    admit::Reject::Version(_) | admit::Reject::Draining => {}
                }
                if let Some(reason) = refusal.auth_reason() {
                    self.base.metrics.auth_refused(reason);
                }
                self.reject(&mut wr, refusal.code(), refusal.message(&gateway_id))
                    .await;
                mux.close();
                return;
            }
        };
        if !self.admit_id(&mut wr, &gateway_id, boot_epoch, peer).await {
            mux.close();
            return;
        }
        for r in &admission.exports_refused {
            let (service, reason) = (&r.service, r.reason.as_str());
            warn!(target: "tether_gateway::cloud", %gateway_id, %service, reason, "export refused");
            self.base.metrics.auth_refused("export_not_allowed");
        }
        for r in &admission.consumes_refused {
            let (service, reason) = (&r.service, r.reason.as_str());
            warn!(target: "tether_gateway::cloud", %gateway_id, %service, reason, "consume refused");
            self.base.metrics.auth_refused("consume_not_allowed");
        }
        let accepted = admission.accepted.clone();
        let mut rejected = admission.exports_refused;
        rejected.extend(admission.consumes_refused);
        let acked_roster = super::reconfigure::roster_of(&self.cfg());
        let ack = Control::HelloAck {
            node_id: cfg.id.clone(),
            boot_epoch: self.base.boot_epoch,
            roster: acked_roster.clone(),
            accepted: admission.accepted,
            rejected,
            ping_ms: u64::try_from(t.ping.as_millis()).unwrap_or(u64::MAX),
            dead_ms: u64::try_from(t.dead_after.as_millis()).unwrap_or(u64::MAX),
            features: vec![FEATURE_SERVICES.into()],
        };
        if tokio::time::timeout(t.handshake_timeout, ack.write_to(&mut wr))
            .await
            .is_err()
        {
            mux.close();
            return;
        }

        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (out_tx, out_rx) = mpsc::channel(16);
        let session = Arc::new(Session {
            gateway: gateway_id.clone(),
            peer,
            link: Link {
                mux: mux.clone(),
                control: out_tx,
                kill: self.base.kill.child_token(),
            },
            grant: std::sync::Mutex::new(super::Grant {
                hello,
                accepted,
                consumes: admission.consumes,
            }),
        });
        lock(&self.sessions).insert(id, session.clone());
        // A reload that stored its configuration after this session's admission and
        // judged the sessions before it registered would miss it: judge it once more.
        let lost = {
            let g = lock(&session.grant);
            admit::revoked(&self.cfg(), &g.hello, &g.accepted)
        };
        if let Some(why) = lost {
            self.revoke(id, &session, &why);
        } else {
            self.regrant(id, &session, false);
        }
        // Likewise for a roster the reload pushed before this session could receive it.
        let roster = super::reconfigure::roster_of(&self.cfg());
        if roster != acked_roster {
            self.push_roster(&session, roster);
        }
        info!(target: "tether_gateway::cloud", node = %self.cfg().id, session = id, gateway = %gateway_id, epoch = boot_epoch, slot, %peer, "session up");
        let actions = lock(&self.core).session_up(
            Instant::now(),
            id,
            SessionInfo {
                gateway: gateway_id.clone(),
                epoch: boot_epoch,
                slot,
                exports: admission.exports,
            },
        );
        self.apply(actions);
        // After the core has it, so whoever wakes on the change sees the session.
        self.base.metrics.session_up(&gateway_id, true);
        if self.base.draining() {
            // A drain began while this session was being set up.
            let _ = session.link.control.try_send(Control::Drain {
                deadline_ms: 0,
                reason: "draining".into(),
            });
        }

        let me = self.clone();
        let me2 = self.clone();
        let sess2 = session.clone();
        let end = common::session_loop(
            rd,
            wr,
            &mux,
            inbound,
            out_rx,
            t.ping,
            t.dead_after,
            session.link.kill.clone(),
            self.base.metrics.clone(),
            move |m| me.on_control(id, m),
            move |s| {
                let me3 = me2.clone();
                let sess3 = sess2.clone();
                // Work from the moment it arrives (see on-prem's reverse streams).
                let work = me2.base.work.token();
                me2.base.tracker.spawn(async move {
                    me3.serve_stream(sess3, s).await;
                    drop(work);
                });
            },
        )
        .await;
        info!(target: "tether_gateway::cloud", node = %self.cfg().id, session = id, gateway = %gateway_id, reason = end.as_str(), "session down");
        if end != End::Killed {
            self.base.metrics.session_closed(end.as_str());
        }
        lock(&self.sessions).remove(&id);
        let actions = lock(&self.core).session_down(Instant::now(), id);
        self.apply(actions);
        self.base.metrics.session_up(&gateway_id, false);
        mux.close();
    }

    fn session(&self, id: SessionId) -> Option<Arc<Session>> {
        lock(&self.sessions).get(&id).cloned()
    }

    fn on_control(&self, id: SessionId, m: Control) {
        let now = Instant::now();
        let actions = match m {
            Control::ServiceState {
                service,
                up,
                reason,
            } => {
                debug!(target: "tether_gateway::cloud", session = id, %service, up, %reason, "service state");
                // Kept in the grant too, so a service granted later starts from the
                // server's last known state.
                if let Some(s) = self.session(id) {
                    let mut g = lock(&s.grant);
                    if let Some(e) = g.hello.exports.iter_mut().find(|e| e.service == service) {
                        e.up = up;
                    }
                }
                lock(&self.core).service_state(now, id, &service, up)
            }
            Control::Services { exports, consumes } => {
                let Some(s) = self.session(id) else {
                    return;
                };
                info!(target: "tether_gateway::cloud", session = id, gateway = %s.gateway, "gateway's services changed");
                {
                    let mut g = lock(&s.grant);
                    g.hello.exports = exports;
                    g.hello.consumes = consumes;
                }
                self.regrant(id, &s, true);
                Vec::new()
            }
            Control::Drain { reason, .. } => {
                info!(target: "tether_gateway::cloud", session = id, %reason, "peer drains session");
                lock(&self.core).session_draining(now, id)
            }
            other => {
                debug!(target: "tether_gateway::cloud", session = id, msg = ?other, "ignored control message");
                Vec::new()
            }
        };
        self.apply(actions);
    }
}
