//! Maximum session age: when each kept session reaches it (jittered per session, so the
//! sessions of a gateway, made together at its start, do not all recycle together), and
//! which sessions past it wait for a replacement before they are handed over to drain.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::Rng;

use super::{Action, Placement, SessionId};

/// Spread of a session's age around the configured one: ±15 %.
pub(super) const JITTER: f64 = 0.15;

/// The age state of [`Placement`].
#[derive(Debug, Default)]
pub(super) struct Ages {
    /// The maximum age; `None`: sessions are kept for as long as they live.
    max: Option<Duration>,
    /// When each kept session not yet past its age reaches it.
    due: BTreeMap<SessionId, Instant>,
    /// Kept sessions past their age: they still count, and their node wants one more
    /// session per each, until it has its quota without them.
    aged: BTreeSet<SessionId>,
}

impl Ages {
    /// A session is kept from `now`: it reaches its age at a jittered deadline.
    pub(super) fn kept<R: Rng + ?Sized>(&mut self, session: SessionId, now: Instant, rng: &mut R) {
        if let Some(max) = self.max {
            self.due.insert(session, now + jittered(max, rng));
        }
    }

    /// The session no longer counts (it ended, or its node drains).
    pub(super) fn forget(&mut self, session: SessionId) {
        self.due.remove(&session);
        self.aged.remove(&session);
    }

    /// Sessions of `node` past their age.
    pub(super) fn aged_on(&self, node: &str, session_node: &BTreeMap<SessionId, String>) -> usize {
        self.aged
            .iter()
            .filter(|s| session_node.get(s).is_some_and(|n| n == node))
            .count()
    }

    /// When the next session reaches its age.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }
}

/// `max` ± [`JITTER`], drawn uniformly.
fn jittered<R: Rng + ?Sized>(max: Duration, rng: &mut R) -> Duration {
    max.mul_f64(rng.random_range(1.0 - JITTER..=1.0 + JITTER))
}

impl Placement {
    /// Sets the maximum session age (`None`: off), at start and on a reload. Sessions
    /// already kept reach it counted from when they came up; those already past it are
    /// spread over the next 30 % of it, so a reload that turns it on (or shortens it)
    /// does not recycle every session at once. Turning it off keeps every session.
    pub fn set_max_session_age<R: Rng + ?Sized>(
        &mut self,
        max: Option<Duration>,
        now: Instant,
        rng: &mut R,
    ) {
        self.ages = Ages {
            max,
            ..Ages::default()
        };
        let Some(max) = max else { return };
        for node in self.nodes.values() {
            for (&session, &since) in &node.sessions {
                let mut due = since + jittered(max, rng);
                if due <= now {
                    due = now + max.mul_f64(rng.random_range(0.0..=2.0 * JITTER));
                }
                self.ages.due.insert(session, due);
            }
        }
    }

    /// Marks the sessions that reached their age by `now`, and recycles each session past
    /// its age whose node has its quota without it (its replacement is up).
    pub(super) fn age_sessions(&mut self, now: Instant) -> Vec<Action> {
        let due: Vec<SessionId> = self
            .ages
            .due
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            self.ages.due.remove(&s);
            self.ages.aged.insert(s);
        }
        let mut actions = Vec::new();
        // Lowest id first: the oldest session of a node goes first.
        let aged: Vec<SessionId> = self.ages.aged.iter().copied().collect();
        for session in aged {
            let Some(node_id) = self.session_node.get(&session).cloned() else {
                self.ages.aged.remove(&session);
                continue;
            };
            let Some(node) = self.nodes.get_mut(&node_id) else {
                continue;
            };
            if node.sessions.len() > self.quota {
                node.sessions.remove(&session);
                self.session_node.remove(&session);
                self.ages.aged.remove(&session);
                actions.push(Action::Recycle {
                    session,
                    node: node_id,
                });
            }
        }
        actions
    }

    /// Kept sessions past their age, waiting for a replacement.
    pub fn aged_sessions(&self) -> usize {
        self.ages.aged.len()
    }
}

#[cfg(test)]
mod tests;
