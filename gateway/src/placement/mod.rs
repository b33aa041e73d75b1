//! On-prem placement of sessions (sans-IO): keep `prepared_connections` sessions on every
//! cloud node of the roster.
//!
//! The gateway, not the balancer, decides where sessions land. With SNI pinning each dial
//! names its node; without it every dial goes to the VIP, and a session that lands on a node
//! that already has its quota is closed (surplus), so a least-connections or round-robin
//! balancer converges to full coverage. Dials to a node are spaced by a jittered backoff that
//! is capped low, so a restarted node is covered again within seconds without traffic.
//!
//! With a maximum session age (`age.rs`), a kept session that reaches its age (jittered
//! per session) asks for one more dial to its node while it still counts; once the
//! node's quota is met without it, it is handed to the driver to drain
//! ([`Action::Recycle`]): make before break.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::backoff::Backoff;
use crate::proto::RosterEntry;

/// Identifies a dial attempt.
pub type DialId = u64;
/// Identifies an established session within one on-prem process.
pub type SessionId = u64;

/// Where a dial goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The VIP with this node's TLS server name (SNI pinning).
    Node {
        /// Node id.
        node: String,
        /// Server name to send.
        sni: String,
    },
    /// The VIP with the VIP's own server name; lands wherever the balancer sends it.
    Vip,
}

/// An instruction for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a dial (TCP, TLS, HELLO) and report its outcome with `dial`.
    Dial {
        /// Dial id to report back.
        dial: DialId,
        /// Where to.
        target: Target,
        /// The node the dial is meant to cover (`None` while the roster is unknown).
        for_node: Option<String>,
    },
    /// A kept session reached its maximum age and its node has its quota without it: it
    /// no longer counts; drain it (DRAIN, no new streams, its streams given the drain
    /// grace) and close it. Its end is not reported back ([`Placement::session_down`]
    /// ignores it).
    Recycle {
        /// The session to drain.
        session: SessionId,
        /// Its node.
        node: String,
    },
}

/// Outcome of a session that completed HELLO_ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landed {
    /// Keep it; it counts towards its node's quota.
    Keep,
    /// Its node already has its quota: close it (gracefully) and dial again.
    Surplus,
}

#[derive(Debug)]
struct Node {
    sni: String,
    /// In the latest roster. A node dropped from it keeps its sessions until they end (the
    /// balancers may still send it clients) but is not dialed again, and is forgotten when
    /// it holds nothing.
    listed: bool,
    draining: bool,
    sessions: BTreeMap<SessionId, Instant>,
    dials: usize,
    backoff: Backoff,
    not_before: Option<Instant>,
}

/// Session placement of one on-prem gateway.
#[derive(Debug)]
pub struct Placement {
    quota: usize,
    sni_pinning: bool,
    max_dials_per_node: usize,
    max_dials_total: usize,
    reset_after: Duration,
    first_backoff: Duration,
    backoff_cap: Duration,
    nodes: BTreeMap<String, Node>,
    bootstrap: Backoff,
    bootstrap_not_before: Option<Instant>,
    dials: BTreeMap<DialId, Option<String>>,
    session_node: BTreeMap<SessionId, String>,
    next_dial: DialId,
    forgotten: Vec<String>,
    /// Maximum session age and per-session deadlines (`age.rs`).
    ages: age::Ages,
}

impl Placement {
    /// Placement with `quota` sessions per node, SNI pinning on or off, and reconnect backoff
    /// capped at `backoff_cap`.
    pub fn new(quota: usize, sni_pinning: bool, backoff_cap: Duration) -> Self {
        let first = Duration::from_millis(200).min(backoff_cap);
        Placement {
            quota: quota.max(1),
            sni_pinning,
            max_dials_per_node: 2,
            max_dials_total: 4,
            reset_after: Duration::from_secs(10),
            first_backoff: first,
            backoff_cap,
            nodes: BTreeMap::new(),
            bootstrap: Backoff::new(first, backoff_cap),
            bootstrap_not_before: None,
            dials: BTreeMap::new(),
            session_node: BTreeMap::new(),
            next_dial: 1,
            forgotten: Vec::new(),
            ages: age::Ages::default(),
        }
    }

    /// Changes the reconnect backoff cap (a reload): the next delays of every node follow
    /// it; a wait already drawn runs out as drawn.
    pub fn set_backoff_cap(&mut self, backoff_cap: Duration) {
        let first = Duration::from_millis(200).min(backoff_cap);
        self.first_backoff = first;
        self.backoff_cap = backoff_cap;
        self.bootstrap.set_limits(first, backoff_cap);
        for node in self.nodes.values_mut() {
            node.backoff.set_limits(first, backoff_cap);
        }
    }

    /// Dials that are due now, and sessions to recycle.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = self.age_sessions(now);
        let mut total = self.dials.len();
        if self.nodes.is_empty() {
            // Roster unknown: one dial to the VIP learns it.
            if total == 0 && self.bootstrap_not_before.is_none_or(|t| now >= t) {
                actions.push(self.dial(Target::Vip, None));
            }
            return actions;
        }
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            // A session past its age still counts: its replacement is dialed on top.
            let quota = self.quota + self.ages.aged_on(&name, &self.session_node);
            let (sni_pinning, max_per_node, max_total) = (
                self.sni_pinning,
                self.max_dials_per_node,
                self.max_dials_total,
            );
            let Some(node) = self.nodes.get_mut(&name) else {
                continue;
            };
            if !node.listed || node.not_before.is_some_and(|t| now < t) {
                continue;
            }
            let have = node.sessions.len() + node.dials;
            let mut want = quota.saturating_sub(have);
            let mut target = Vec::new();
            while want > 0 && node.dials < max_per_node && total < max_total {
                node.dials += 1;
                total += 1;
                want -= 1;
                target.push(if sni_pinning {
                    Target::Node {
                        node: name.clone(),
                        sni: node.sni.clone(),
                    }
                } else {
                    Target::Vip
                });
            }
            for t in target {
                let id = self.next_dial;
                self.next_dial += 1;
                self.dials.insert(id, Some(name.clone()));
                actions.push(Action::Dial {
                    dial: id,
                    target: t,
                    for_node: Some(name.clone()),
                });
            }
        }
        actions
    }

    fn dial(&mut self, target: Target, for_node: Option<String>) -> Action {
        let id = self.next_dial;
        self.next_dial += 1;
        self.dials.insert(id, for_node.clone());
        Action::Dial {
            dial: id,
            target,
            for_node,
        }
    }

    fn finish_dial(&mut self, dial: DialId) -> Option<Option<String>> {
        let for_node = self.dials.remove(&dial)?;
        if let Some(n) = for_node.as_ref().and_then(|n| self.nodes.get_mut(n)) {
            n.dials = n.dials.saturating_sub(1);
        }
        self.forget_unlisted();
        Some(for_node)
    }

    fn new_node(&self, sni: &str) -> Node {
        Node {
            sni: sni.to_string(),
            listed: true,
            draining: false,
            sessions: BTreeMap::new(),
            dials: 0,
            backoff: Backoff::new(self.first_backoff, self.backoff_cap),
            not_before: None,
        }
    }

    /// Drops the nodes that left the roster and hold nothing any more.
    fn forget_unlisted(&mut self) {
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.listed && n.sessions.is_empty() && n.dials == 0)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.nodes.remove(&id);
            self.forgotten.push(id);
        }
    }

    /// Nodes forgotten since the last call (they left the roster and their last session
    /// ended), so the driver can drop what it reports about them.
    pub fn take_forgotten(&mut self) -> Vec<String> {
        std::mem::take(&mut self.forgotten)
    }

    fn back_off<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        for_node: Option<String>,
        at_least: Duration,
        rng: &mut R,
    ) {
        match for_node.and_then(|n| self.nodes.get_mut(&n)) {
            Some(node) => {
                let d = node.backoff.next_delay(rng).max(at_least);
                node.not_before = Some(now + d);
            }
            None => {
                let d = self.bootstrap.next_delay(rng).max(at_least);
                self.bootstrap_not_before = Some(now + d);
            }
        }
    }

    /// A dial failed (connect, TLS, HELLO timeout or REJECT). `retry_after` is the peer's hint.
    pub fn dial_failed<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        dial: DialId,
        retry_after: Duration,
        rng: &mut R,
    ) {
        if let Some(for_node) = self.finish_dial(dial) {
            self.back_off(now, for_node, retry_after, rng);
        }
    }

    /// Applies a roster (from HELLO_ACK, REJECT or a ROSTER push): adds new nodes, updates
    /// names, and retires nodes no longer listed. A retired node is not dialed again; its
    /// sessions run until they end, as the balancers may still send it clients until they
    /// are reloaded too, and it is forgotten once it holds nothing. An empty roster says
    /// nothing and changes nothing.
    pub fn apply_roster(&mut self, roster: &[RosterEntry]) {
        if roster.is_empty() {
            return;
        }
        for r in roster {
            if !self.nodes.contains_key(&r.node_id) {
                let node = self.new_node(&r.sni);
                self.nodes.insert(r.node_id.clone(), node);
            }
            if let Some(node) = self.nodes.get_mut(&r.node_id) {
                node.sni = r.sni.clone();
                node.listed = true;
            }
        }
        for (id, node) in &mut self.nodes {
            if !roster.iter().any(|r| &r.node_id == id) {
                node.listed = false;
            }
        }
        self.forget_unlisted();
    }

    /// Whether a roster is known (some node was reached).
    pub fn knows_roster(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// A dial completed HELLO_ACK on node `node_id` (where it actually landed) with `roster`.
    pub fn session_up<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        dial: DialId,
        session: SessionId,
        node_id: &str,
        roster: &[RosterEntry],
        rng: &mut R,
    ) -> Landed {
        let for_node = self.finish_dial(dial).flatten();
        self.apply_roster(roster);
        self.bootstrap.reset();
        self.bootstrap_not_before = None;
        // Room for the replacements of its sessions past their age.
        let quota = self.quota + self.ages.aged_on(node_id, &self.session_node);
        if !self.nodes.contains_key(node_id) {
            let node = self.new_node("");
            self.nodes.insert(node_id.to_string(), node);
        }
        let Some(node) = self.nodes.get_mut(node_id) else {
            return Landed::Surplus;
        };
        // It accepted a HELLO, so it is not draining (any more).
        node.draining = false;
        // A node that left the roster gets no new session, wherever the balancer sent it.
        if !node.listed || node.sessions.len() >= quota {
            // Landed on a covered node: the node it was meant for is still short (or down, and
            // the balancer retried elsewhere). Back off like a failure, so a balancer that
            // always picks the same node (source hash) does not turn this into a dial storm;
            // the cap keeps the retry of a returning node within seconds.
            let intended = for_node.filter(|n| n != node_id);
            if let Some(n) = intended.and_then(|n| self.nodes.get_mut(&n)) {
                n.not_before = Some(now + n.backoff.next_delay(rng));
            }
            return Landed::Surplus;
        }
        node.sessions.insert(session, now);
        node.not_before = None;
        self.session_node.insert(session, node_id.to_string());
        self.ages.kept(session, now, rng);
        Landed::Keep
    }

    /// A kept session ended. Its node gets a jittered retry; the backoff is reset first when
    /// the session had lived long enough to count as healthy.
    pub fn session_down<R: Rng + ?Sized>(&mut self, now: Instant, session: SessionId, rng: &mut R) {
        let Some(node_id) = self.session_node.remove(&session) else {
            return;
        };
        self.ages.forget(session);
        if let Some(node) = self.nodes.get_mut(&node_id) {
            if let Some(since) = node.sessions.remove(&session)
                && now.saturating_duration_since(since) >= self.reset_after
            {
                node.backoff.reset();
            }
            let d = node.backoff.next_delay(rng);
            let t = now + d;
            node.not_before = Some(node.not_before.map_or(t, |old| old.max(t)));
        }
        self.forget_unlisted();
    }

    /// The node `node_id` announced a drain: its sessions stop counting and it is not dialed
    /// again before `retry_after`.
    pub fn node_draining(&mut self, now: Instant, node_id: &str, retry_after: Duration) {
        if let Some(node) = self.nodes.get_mut(node_id) {
            node.draining = true;
            node.not_before = Some(now + retry_after);
            for s in std::mem::take(&mut node.sessions).into_keys() {
                self.session_node.remove(&s);
                self.ages.forget(s);
            }
        }
        self.forget_unlisted();
    }

    /// When [`Placement::poll`] should run next because a backoff expires or a session
    /// reaches its age.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.nodes.is_empty() {
            return if self.dials.is_empty() {
                self.bootstrap_not_before
            } else {
                None
            };
        }
        let backoff = self
            .nodes
            .iter()
            .filter(|(id, n)| {
                n.listed
                    && n.sessions.len() + n.dials
                        < self.quota + self.ages.aged_on(id, &self.session_node)
            })
            .filter_map(|(_, n)| n.not_before)
            .min();
        let age = self.ages.next_due();
        backoff.into_iter().chain(age).min()
    }

    /// Missing sessions per roster node (`quota - kept`), for the coverage metric.
    pub fn deficits(&self) -> BTreeMap<String, usize> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.listed)
            .map(|(id, n)| (id.clone(), self.quota.saturating_sub(n.sessions.len())))
            .collect()
    }

    /// Kept sessions per roster node.
    pub fn coverage(&self) -> BTreeMap<String, usize> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.listed)
            .map(|(id, n)| (id.clone(), n.sessions.len()))
            .collect()
    }

    /// Whether the node is marked draining.
    pub fn is_draining(&self, node_id: &str) -> bool {
        self.nodes.get(node_id).is_some_and(|n| n.draining)
    }

    /// Dials in flight.
    pub fn dials_in_flight(&self) -> usize {
        self.dials.len()
    }
}

mod age;
#[cfg(test)]
mod tests;
