//! A reload applied to a running node: the reverse services added or removed get or lose
//! their listeners ([`super::services`]), new handshakes get the new TLS files, and each
//! live session is judged again: closed when its gateway lost a right it uses (revoked),
//! told the new roster (ROSTER), and granted or withdrawn services (ACCEPTED).

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::{Cloud, Session, admit};
use crate::base::lock;
use crate::common;
use crate::config::{CloudConfig, GatewayConfig};
use crate::metrics::ServiceSide;
use crate::proto::{Control, RosterEntry};
use crate::readiness::SessionId;
use crate::reload::{self, Plan, ReloadError};
use crate::{expiry, tls};

/// The roster a node sends: the configured one, or this node alone.
pub(super) fn roster_of(cfg: &CloudConfig) -> Vec<RosterEntry> {
    if cfg.roster.is_empty() {
        vec![RosterEntry {
            node_id: cfg.id.clone(),
            sni: String::new(),
            draining: false,
        }]
    } else {
        cfg.roster
            .iter()
            .map(|n| RosterEntry {
                node_id: n.id.clone(),
                sni: n.sni.clone(),
                draining: false,
            })
            .collect()
    }
}

impl Cloud {
    pub(super) fn reload(self: &Arc<Self>, new: CloudConfig) -> Result<Plan, ReloadError> {
        let _one = lock(&self.reloading);
        let old = self.cfg();
        let plan = reload::plan(
            &GatewayConfig::Cloud((*old).clone()),
            &GatewayConfig::Cloud(new.clone()),
        );
        let refused = |e: ReloadError| {
            warn!(target: "tether_gateway::cloud", node = %old.id, error = %e, "reload refused; the running configuration keeps serving");
            e
        };
        if plan.needs_restart() {
            return Err(refused(ReloadError::NeedsRestart(plan.restart)));
        }
        // Everything that can fail comes before anything is changed.
        let server_config = tls::server_config(&new.tls).map_err(|e| refused(e.into()))?;
        let certificates =
            expiry::load(&new.tls, tls::TlsKey::ClientCa).map_err(|e| refused(e.into()))?;
        let mut bound = Vec::new();
        for r in &new.reverse {
            if old.reverse.iter().any(|o| o.service == r.service) {
                continue;
            }
            let l = common::bind_now(format!("service {:?} listener", r.service), r.listen)
                .map_err(|e| refused(e.into()))?;
            bound.push((r.clone(), l));
        }

        for name in &plan.added {
            if let Some(service) = name.strip_prefix("forward ") {
                self.base
                    .metrics
                    .service(service, "forward", ServiceSide::Server);
            }
        }
        lock(&self.core).set_down_debounce(new.timers.readiness_down);
        // The readiness timer waits on the core's next deadline, which just moved.
        self.apply(Vec::new());
        self.tls.store(server_config);
        self.base.metrics.cert_expiry.set(certificates);
        let new = Arc::new(new);
        // Stored before the sessions are judged: a session that registers meanwhile
        // judges itself against it (see `handle_session`).
        self.live.store(new.clone());
        for r in &old.reverse {
            if !new.reverse.iter().any(|n| n.service == r.service) {
                self.close_reverse(&r.service);
            }
        }
        for (r, l) in bound {
            self.open_reverse(r, l);
        }
        let sessions: Vec<(SessionId, Arc<Session>)> = lock(&self.sessions)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (id, s) in sessions {
            let lost = {
                let g = lock(&s.grant);
                admit::revoked(&new, &g.hello, &g.accepted)
            };
            if let Some(why) = lost {
                self.revoke(id, &s, &why);
                continue;
            }
            if plan.roster {
                self.push_roster(&s, roster_of(&new));
            }
            self.regrant(id, &s, false);
        }
        info!(target: "tether_gateway::cloud", node = %new.id, changes = %plan, "configuration reloaded");
        Ok(plan)
    }

    /// Sends the roster to a session's gateway, if it understands the message (older ones
    /// learn it from their next HELLO_ACK).
    pub(super) fn push_roster(&self, s: &Session, roster: Vec<RosterEntry>) {
        if lock(&s.grant).hello.roster_push {
            s.link.send_control(&self.base, Control::Roster { roster });
        }
    }

    /// Grants a live session what the running configuration lets its gateway carry, of
    /// the services it asks for now: services gained are carried at once (exports count for
    /// readiness, consumes may open streams) and the gateway is told (ACCEPTED) if it
    /// understands it. `asked`: answering the gateway's SERVICES, which is answered even
    /// when nothing changed and whose refusals are counted as a HELLO's are. Rights lost
    /// are [`admit::revoked`]'s business, judged before this on a reload.
    pub(super) fn regrant(&self, id: SessionId, s: &Session, asked: bool) {
        let facts = admit::Facts {
            draining: false,
            identity_ok: true,
            held: 0,
        };
        let (admission, tell) = {
            let g = lock(&s.grant);
            (
                admit::admit(&self.cfg(), &g.hello, facts),
                g.hello.services_msgs,
            )
        };
        let Ok(a) = admission else {
            return;
        };
        if asked {
            for r in a.exports_refused.iter().chain(&a.consumes_refused) {
                warn!(target: "tether_gateway::cloud", session = id, gateway = %s.gateway, service = %r.service, reason = %r.reason, "service refused");
            }
            for _ in &a.exports_refused {
                self.base.metrics.auth_refused("export_not_allowed");
            }
            for _ in &a.consumes_refused {
                self.base.metrics.auth_refused("consume_not_allowed");
            }
        }
        let changed = {
            let mut g = lock(&s.grant);
            let changed = g.accepted != a.accepted;
            if changed {
                g.accepted = a.accepted.clone();
                g.consumes = a.consumes.clone();
            }
            changed
        };
        if changed {
            info!(target: "tether_gateway::cloud", session = id, gateway = %s.gateway, accepted = ?a.accepted, "session services changed");
            let actions = lock(&self.core).session_exports(Instant::now(), id, a.exports);
            self.apply(actions);
        }
        if tell && (changed || asked) {
            let mut rejected = a.exports_refused;
            rejected.extend(a.consumes_refused);
            s.link.send_control(
                &self.base,
                Control::Accepted {
                    accepted: a.accepted,
                    rejected,
                },
            );
        }
    }

    /// Closes a session whose gateway lost a right it uses.
    pub(super) fn revoke(&self, id: SessionId, s: &Session, why: &str) {
        if s.link.kill.is_cancelled() {
            return;
        }
        warn!(target: "tether_gateway::cloud", session = id, gateway = %s.gateway, reason = "revoked", "closing session: {why}");
        self.base.metrics.session_closed("revoked");
        s.link.kill.cancel();
    }
}
