//! Cloud-side readiness and coverage (sans-IO).
//!
//! Tracks which on-prem sessions are live, which services each exports and whether it
//! reports its server up; decides per service whether this node is READY (so the driver
//! binds listeners and answers `/readyz/<service>`), which session carries the next stream,
//! when a restarted gateway's stale sessions are purged (boot epoch), and when a session that
//! stays silent on stream opens is ejected.
//!
//! The driver feeds events with the current time and applies the returned [`Action`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Identifies a session within one cloud process.
pub type SessionId = u64;

/// What a session registered in its HELLO (after authorization).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The gateway id from its verified certificate.
    pub gateway: String,
    /// The gateway process's boot epoch.
    pub epoch: u64,
    /// The gateway's session slot.
    pub slot: u32,
    /// Accepted exported services, with whether their server is up.
    pub exports: BTreeMap<String, bool>,
}

/// Why the core wants a session closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its gateway restarted: a HELLO arrived with a new boot epoch.
    StaleEpoch,
    /// The same gateway, epoch and slot registered again (a re-dial of a dead session).
    Replaced,
    /// Stream opens went unanswered within `open_timeout`.
    Silent,
}

impl CloseReason {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::StaleEpoch => "stale_epoch",
            CloseReason::Replaced => "replaced",
            CloseReason::Silent => "silent",
        }
    }
}

/// An instruction for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Close this session.
    Close {
        /// Which.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
    /// A service's readiness changed: bind/unbind its listener, flip `/readyz/<service>`.
    Readiness {
        /// Which service.
        service: String,
        /// New state.
        ready: bool,
    },
}

#[derive(Debug)]
struct Entry {
    info: SessionInfo,
    active_streams: u32,
    misses: u32,
    draining: bool,
}

#[derive(Debug, Default)]
struct ServiceState {
    ready: bool,
    lost_at: Option<Instant>,
}

/// Per-service readiness and session choice of a cloud node.
#[derive(Debug)]
pub struct CloudCore {
    sessions: BTreeMap<SessionId, Entry>,
    services: BTreeMap<String, ServiceState>,
    down_debounce: Duration,
    eject_after: u32,
    draining: bool,
    rr: u64,
}

impl CloudCore {
    /// A core for the node's reverse `services`. Readiness drops `down_debounce` after the last
    /// capacity vanished; a session is ejected after `eject_after` unanswered opens in a row.
    pub fn new<I: IntoIterator<Item = String>>(
        services: I,
        down_debounce: Duration,
        eject_after: u32,
    ) -> Self {
        CloudCore {
            sessions: BTreeMap::new(),
            services: services
                .into_iter()
                .map(|s| (s, ServiceState::default()))
                .collect(),
            down_debounce,
            eject_after: eject_after.max(1),
            draining: false,
            rr: 0,
        }
    }

    /// Changes how long readiness holds after the last capacity vanished (a reload); a
    /// drop already pending falls due that long after its capacity vanished.
    pub fn set_down_debounce(&mut self, down_debounce: Duration) {
        self.down_debounce = down_debounce;
    }

    /// A session completed its HELLO. Purges the gateway's sessions from an older boot epoch
    /// and a previous session in the same slot.
    pub fn session_up(&mut self, now: Instant, id: SessionId, info: SessionInfo) -> Vec<Action> {
        let mut actions = Vec::new();
        let stale: Vec<(SessionId, CloseReason)> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.info.gateway == info.gateway)
            .filter_map(|(&sid, e)| {
                if e.info.epoch != info.epoch {
                    Some((sid, CloseReason::StaleEpoch))
                } else if e.info.slot == info.slot {
                    Some((sid, CloseReason::Replaced))
                } else {
                    None
                }
            })
            .collect();
        for (sid, reason) in stale {
            self.sessions.remove(&sid);
            actions.push(Action::Close {
                session: sid,
                reason,
            });
        }
        self.sessions.insert(
            id,
            Entry {
                info,
                active_streams: 0,
                misses: 0,
                draining: false,
            },
        );
        self.evaluate(now, &mut actions);
        actions
    }

    /// A session ended (closed, dead, or ejected by the driver).
    pub fn session_down(&mut self, now: Instant, id: SessionId) -> Vec<Action> {
        let mut actions = Vec::new();
        self.sessions.remove(&id);
        self.evaluate(now, &mut actions);
        actions
    }

    /// The gateway reported its server for `service` up or down.
    pub fn service_state(
        &mut self,
        now: Instant,
        id: SessionId,
        service: &str,
        up: bool,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(e) = self.sessions.get_mut(&id)
            && let Some(state) = e.info.exports.get_mut(service)
        {
            *state = up;
        }
        self.evaluate(now, &mut actions);
        actions
    }

    /// A reverse service a reload added: ready as soon as a session can carry it (one
    /// already granted it may be up).
    pub fn add_service(&mut self, now: Instant, service: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        self.services.entry(service.to_string()).or_default();
        self.evaluate(now, &mut actions);
        actions
    }

    /// A reverse service a reload removed: no longer ready, at once.
    pub fn remove_service(&mut self, service: &str) -> Vec<Action> {
        match self.services.remove(service) {
            Some(s) if s.ready => vec![Action::Readiness {
                service: service.to_string(),
                ready: false,
            }],
            _ => Vec::new(),
        }
    }

    /// The services a live session exports changed: a reload granted or its gateway asked
    /// for more, or its gateway stopped exporting some. Readiness follows at once for a
    /// service gained, and after the debounce for one whose last capacity went.
    pub fn session_exports(
        &mut self,
        now: Instant,
        id: SessionId,
        exports: BTreeMap<String, bool>,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(e) = self.sessions.get_mut(&id) {
            e.info.exports = exports;
        }
        self.evaluate(now, &mut actions);
        actions
    }

    /// The gateway said it drains this session: no new streams on it.
    pub fn session_draining(&mut self, now: Instant, id: SessionId) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(e) = self.sessions.get_mut(&id) {
            e.draining = true;
        }
        self.evaluate(now, &mut actions);
        actions
    }

    /// This node drains: every service becomes not ready at once (no debounce).
    pub fn drain(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        self.draining = true;
        self.evaluate(now, &mut actions);
        actions
    }

    /// Chooses the session for a new stream of `service`: a usable session (not draining,
    /// exporting the service with its server up) with the fewest active streams, not in
    /// `exclude`, preferring gateways not in `avoid` (a retry goes to another gateway when
    /// one exists, even if the failed session is already gone), rotating among equals.
    pub fn pick(
        &mut self,
        service: &str,
        exclude: &[SessionId],
        avoid: &BTreeSet<String>,
    ) -> Option<SessionId> {
        let mut excluded_gateways: BTreeSet<&str> = exclude
            .iter()
            .filter_map(|id| self.sessions.get(id))
            .map(|e| e.info.gateway.as_str())
            .collect();
        excluded_gateways.extend(avoid.iter().map(String::as_str));
        let usable: Vec<(SessionId, &Entry)> = self
            .sessions
            .iter()
            .filter(|(id, e)| !exclude.contains(id) && usable(e, service))
            .map(|(&id, e)| (id, e))
            .collect();
        let preferred: Vec<&(SessionId, &Entry)> = usable
            .iter()
            .filter(|(_, e)| !excluded_gateways.contains(e.info.gateway.as_str()))
            .collect();
        let pool: Vec<&(SessionId, &Entry)> = if preferred.is_empty() {
            usable.iter().collect()
        } else {
            preferred
        };
        let least = pool.iter().map(|(_, e)| e.active_streams).min()?;
        let ties: Vec<SessionId> = pool
            .iter()
            .filter(|(_, e)| e.active_streams == least)
            .map(|(id, _)| *id)
            .collect();
        self.rr = self.rr.wrapping_add(1);
        let idx = usize::try_from(self.rr % ties.len() as u64).unwrap_or(0);
        ties.get(idx).copied()
    }

    /// A stream started on `id`.
    pub fn stream_started(&mut self, id: SessionId) {
        if let Some(e) = self.sessions.get_mut(&id) {
            e.active_streams = e.active_streams.saturating_add(1);
        }
    }

    /// A stream on `id` ended.
    pub fn stream_ended(&mut self, id: SessionId) {
        if let Some(e) = self.sessions.get_mut(&id) {
            e.active_streams = e.active_streams.saturating_sub(1);
        }
    }

    /// A stream open on `id` was answered (any status): the session is responsive.
    pub fn open_answered(&mut self, id: SessionId) {
        if let Some(e) = self.sessions.get_mut(&id) {
            e.misses = 0;
        }
    }

    /// A stream open on `id` got no answer within `open_timeout`. Ejects the session after
    /// `eject_after` misses in a row.
    pub fn open_silent(&mut self, now: Instant, id: SessionId) -> Vec<Action> {
        let mut actions = Vec::new();
        let eject = match self.sessions.get_mut(&id) {
            Some(e) => {
                e.misses += 1;
                e.misses >= self.eject_after
            }
            None => false,
        };
        if eject {
            self.sessions.remove(&id);
            actions.push(Action::Close {
                session: id,
                reason: CloseReason::Silent,
            });
        }
        self.evaluate(now, &mut actions);
        actions
    }

    /// Lets debounced readiness changes fall due.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        self.evaluate(now, &mut actions);
        actions
    }

    /// When [`CloudCore::handle_timeout`] must be called next, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.services
            .values()
            .filter(|s| s.ready)
            .filter_map(|s| s.lost_at)
            .map(|t| t + self.down_debounce)
            .min()
    }

    /// Whether `service` is ready (unknown services never are).
    pub fn is_ready(&self, service: &str) -> bool {
        self.services.get(service).is_some_and(|s| s.ready)
    }

    /// Whether every service is ready and the node does not drain (`/readyz`).
    pub fn all_ready(&self) -> bool {
        !self.draining && self.services.values().all(|s| s.ready)
    }

    /// Usable sessions for `service` and how many distinct gateways hold them.
    pub fn capacity(&self, service: &str) -> (usize, usize) {
        let sessions: Vec<&Entry> = self
            .sessions
            .values()
            .filter(|e| usable(e, service))
            .collect();
        let gateways: BTreeSet<&str> = sessions.iter().map(|e| e.info.gateway.as_str()).collect();
        (sessions.len(), gateways.len())
    }

    /// Number of registered sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions of `gateway` from the incarnation `epoch` (older incarnations do not count:
    /// they are purged when the new one registers).
    pub fn sessions_of_epoch(&self, gateway: &str, epoch: u64) -> usize {
        self.sessions
            .values()
            .filter(|e| e.info.gateway == gateway && e.info.epoch == epoch)
            .count()
    }

    /// The boot epoch of `gateway`'s registered sessions (older ones are purged, so all
    /// share one), if it has any.
    pub fn epoch_of(&self, gateway: &str) -> Option<u64> {
        self.sessions
            .values()
            .find(|e| e.info.gateway == gateway)
            .map(|e| e.info.epoch)
    }

    /// The registered sessions of `gateway`.
    pub fn sessions_of(&self, gateway: &str) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, e)| e.info.gateway == gateway)
            .map(|(&id, _)| id)
            .collect()
    }

    /// The service names this core tracks.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }

    fn evaluate(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            let has = !self.draining && self.sessions.values().any(|e| usable(e, &name));
            let debounce = self.down_debounce;
            let draining = self.draining;
            let Some(state) = self.services.get_mut(&name) else {
                continue;
            };
            if has {
                state.lost_at = None;
                if !state.ready {
                    state.ready = true;
                    actions.push(Action::Readiness {
                        service: name,
                        ready: true,
                    });
                }
            } else if state.ready {
                let lost_at = *state.lost_at.get_or_insert(now);
                // Draining flips readiness at once: that is the first step of a drain.
                if draining || now.saturating_duration_since(lost_at) >= debounce {
                    state.ready = false;
                    state.lost_at = None;
                    actions.push(Action::Readiness {
                        service: name,
                        ready: false,
                    });
                }
            }
        }
    }
}

fn usable(e: &Entry, service: &str) -> bool {
    !e.draining && e.info.exports.get(service).copied().unwrap_or(false)
}

#[cfg(test)]
mod tests;
