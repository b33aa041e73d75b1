//! Whether each VIP should be announced, and the route changes that get the kernel there
//! (sans-IO: the shell feeds it the installed forwarding program and applies what it says).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use serde::Serialize;

use super::config::WhenDegraded;
use crate::dr::rules::Desired;

/// What a VIP's route says to the routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Announced: every frontend on the VIP forwards to a live server.
    Announced,
    /// Announced as a last resort: a frontend on the VIP has no live server, and
    /// `degraded = "announce"` keeps the route with the degraded marker.
    Degraded,
    /// Not announced.
    Withdrawn,
}

/// A dr frontend as the assessment sees it.
#[derive(Debug, Clone)]
pub struct DrFrontend<'a> {
    /// Its name.
    pub name: &'a str,
    /// The VIPs it forwards.
    pub vips: Vec<IpAddr>,
    /// A server of its backend is known up (checked, or without checks), not merely untried.
    pub server_up: bool,
}

/// The verdict for every VIP of `frontends`, with the reason for anything short of
/// announced. A VIP is announced only when every frontend on it is in the kernel and has a
/// server known up taking new flows: a VIP that forwards one port and drops another would
/// take traffic another balancer could serve, and a balancer that just started has not
/// checked its servers yet.
pub fn assess(
    frontends: &[DrFrontend<'_>],
    installed: Option<&Desired>,
    degraded: WhenDegraded,
    stopping: bool,
) -> BTreeMap<IpAddr, (Verdict, String)> {
    let mut out = BTreeMap::new();
    for f in frontends {
        let rules = installed.and_then(|d| d.frontends.iter().find(|r| r.name == f.name));
        let (verdict, reason) = if stopping {
            (Verdict::Withdrawn, "stopping".to_string())
        } else {
            match rules {
                None => (
                    Verdict::Withdrawn,
                    format!("frontend {}: forwarding rules not installed", f.name),
                ),
                Some(r) if r.slots.is_empty() || !f.server_up => {
                    let why = format!("frontend {}: no server up", f.name);
                    match degraded {
                        WhenDegraded::Withdraw => (Verdict::Withdrawn, why),
                        WhenDegraded::Announce => (Verdict::Degraded, why),
                    }
                }
                Some(_) => (Verdict::Announced, String::new()),
            }
        };
        for vip in &f.vips {
            let e = out
                .entry(*vip)
                .or_insert((Verdict::Announced, String::new()));
            // The worst frontend on a VIP decides; the first reason found is kept.
            if rank(verdict) > rank(e.0) {
                *e = (verdict, reason.clone());
            }
        }
    }
    out
}

fn rank(v: Verdict) -> u8 {
    match v {
        Verdict::Announced => 0,
        Verdict::Degraded => 1,
        Verdict::Withdrawn => 2,
    }
}

/// A route change for the shell to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOp {
    /// Add or replace the VIP's route, marked degraded or not.
    Set {
        /// The VIP.
        vip: IpAddr,
        /// Whether the route carries the degraded marker.
        degraded: bool,
    },
    /// Delete the VIP's route.
    Remove {
        /// The VIP.
        vip: IpAddr,
    },
}

/// One VIP's announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// What the route says now (as far as the kernel accepted it).
    pub verdict: Verdict,
    /// Why it is not announced (empty when it is).
    pub reason: String,
    /// When the verdict last changed.
    pub since: Instant,
    /// The kernel has not taken the last change yet: make it again.
    pub pending: bool,
}

/// The announcements this balancer holds, and the changes that move them to a new
/// assessment.
#[derive(Debug, Default)]
pub struct Announcer {
    held: BTreeMap<IpAddr, Held>,
}

impl Announcer {
    /// An announcer holding nothing (a new device has no routes).
    pub fn new() -> Announcer {
        Announcer::default()
    }

    /// Moves to `wanted`; returns the route changes to make. A VIP no frontend forwards any
    /// more is removed and forgotten.
    pub fn update(
        &mut self,
        now: Instant,
        wanted: &BTreeMap<IpAddr, (Verdict, String)>,
    ) -> Vec<RouteOp> {
        let mut ops = Vec::new();
        let gone: Vec<IpAddr> = self
            .held
            .keys()
            .filter(|v| !wanted.contains_key(v))
            .copied()
            .collect();
        for vip in gone {
            if let Some(h) = self.held.remove(&vip)
                && (h.verdict != Verdict::Withdrawn || h.pending)
            {
                ops.push(RouteOp::Remove { vip });
            }
        }
        for (vip, (verdict, reason)) in wanted {
            let h = self.held.entry(*vip).or_insert(Held {
                verdict: Verdict::Withdrawn,
                reason: String::new(),
                since: now,
                pending: false,
            });
            h.reason = reason.clone();
            if h.verdict == *verdict && !h.pending {
                continue;
            }
            if h.verdict != *verdict {
                h.since = now;
            }
            h.verdict = *verdict;
            h.pending = true;
            ops.push(match verdict {
                Verdict::Withdrawn => RouteOp::Remove { vip: *vip },
                Verdict::Announced => RouteOp::Set {
                    vip: *vip,
                    degraded: false,
                },
                Verdict::Degraded => RouteOp::Set {
                    vip: *vip,
                    degraded: true,
                },
            });
        }
        ops
    }

    /// The kernel took (`ok`) or refused the change for `vip`; a refused one is made again on
    /// the next [`Announcer::update`].
    pub fn applied(&mut self, vip: IpAddr, ok: bool) {
        if let Some(h) = self.held.get_mut(&vip) {
            h.pending = !ok;
        }
    }

    /// Whether a change is waiting to be made again.
    pub fn has_pending(&self) -> bool {
        self.held.values().any(|h| h.pending)
    }

    /// Every VIP held, in address order.
    pub fn held(&self) -> &BTreeMap<IpAddr, Held> {
        &self.held
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dr::rules::{FrontendRules, ServerRule};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rules(name: &str, slots: bool) -> FrontendRules {
        FrontendRules {
            name: name.into(),
            backend: "be".into(),
            interface: "eth0".into(),
            binds: vec![],
            v6: false,
            flow_timeout: Duration::from_secs(60),
            flow_size: 1024,
            live: vec![ServerRule {
                mark: 1,
                addr: ip("192.0.2.21"),
            }],
            slots: if slots { vec![1; 4] } else { vec![] },
        }
    }

    fn installed(frontends: Vec<FrontendRules>) -> Desired {
        Desired {
            table: "t".into(),
            frontends,
        }
    }

    fn fe<'a>(name: &'a str, vips: &[&str]) -> DrFrontend<'a> {
        DrFrontend {
            name,
            vips: vips.iter().map(|v| ip(v)).collect(),
            server_up: true,
        }
    }

    #[test]
    fn a_vip_is_announced_only_when_every_frontend_on_it_forwards() {
        let fes = [
            fe("web", &["192.0.2.100"]),
            fe("tls", &["192.0.2.100"]),
            fe("db", &["192.0.2.101"]),
        ];
        let d = installed(vec![
            rules("web", true),
            rules("tls", false),
            rules("db", true),
        ]);
        let a = assess(&fes, Some(&d), WhenDegraded::Withdraw, false);
        assert_eq!(
            a[&ip("192.0.2.100")],
            (Verdict::Withdrawn, "frontend tls: no server up".into())
        );
        assert_eq!(a[&ip("192.0.2.101")].0, Verdict::Announced);
    }

    #[test]
    fn degraded_announce_keeps_a_vip_without_servers_but_not_one_without_rules() {
        let fes = [fe("web", &["192.0.2.100"]), fe("db", &["192.0.2.101"])];
        let d = installed(vec![rules("web", false)]);
        let a = assess(&fes, Some(&d), WhenDegraded::Announce, false);
        assert_eq!(a[&ip("192.0.2.100")].0, Verdict::Degraded);
        assert_eq!(
            a[&ip("192.0.2.101")],
            (
                Verdict::Withdrawn,
                "frontend db: forwarding rules not installed".into()
            )
        );
        let none = assess(&fes, None, WhenDegraded::Announce, false);
        assert!(none.values().all(|(v, _)| *v == Verdict::Withdrawn));
    }

    #[test]
    fn servers_not_yet_checked_do_not_make_a_vip_ready() {
        let mut web = fe("web", &["192.0.2.100"]);
        web.server_up = false;
        let d = installed(vec![rules("web", true)]);
        let a = assess(&[web], Some(&d), WhenDegraded::Withdraw, false);
        assert_eq!(
            a[&ip("192.0.2.100")],
            (Verdict::Withdrawn, "frontend web: no server up".into())
        );
    }

    #[test]
    fn stopping_withdraws_everything() {
        let fes = [fe("web", &["192.0.2.100"])];
        let d = installed(vec![rules("web", true)]);
        let a = assess(&fes, Some(&d), WhenDegraded::Announce, true);
        assert_eq!(
            a[&ip("192.0.2.100")],
            (Verdict::Withdrawn, "stopping".into())
        );
    }

    fn want(list: &[(&str, Verdict)]) -> BTreeMap<IpAddr, (Verdict, String)> {
        list.iter()
            .map(|(v, x)| (ip(v), (*x, String::new())))
            .collect()
    }

    #[test]
    fn changes_are_made_once_and_since_moves_only_with_the_verdict() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let t2 = t0 + Duration::from_secs(2);
        let vip = ip("192.0.2.100");
        let mut a = Announcer::new();
        let ops = a.update(t0, &want(&[("192.0.2.100", Verdict::Withdrawn)]));
        assert!(ops.is_empty(), "a new device has nothing to withdraw");
        let ops = a.update(t1, &want(&[("192.0.2.100", Verdict::Announced)]));
        assert_eq!(
            ops,
            vec![RouteOp::Set {
                vip,
                degraded: false
            }]
        );
        a.applied(vip, true);
        assert!(
            a.update(t2, &want(&[("192.0.2.100", Verdict::Announced)]))
                .is_empty()
        );
        assert_eq!(a.held()[&vip].since, t1);
        let ops = a.update(t2, &want(&[("192.0.2.100", Verdict::Degraded)]));
        assert_eq!(
            ops,
            vec![RouteOp::Set {
                vip,
                degraded: true
            }]
        );
        assert_eq!(a.held()[&vip].since, t2);
    }

    #[test]
    fn a_refused_change_is_made_again_and_a_vip_gone_from_the_config_is_removed() {
        let t0 = Instant::now();
        let vip = ip("192.0.2.100");
        let mut a = Announcer::new();
        a.update(t0, &want(&[("192.0.2.100", Verdict::Announced)]));
        a.applied(vip, false);
        assert!(a.has_pending());
        let ops = a.update(t0, &want(&[("192.0.2.100", Verdict::Announced)]));
        assert_eq!(ops.len(), 1, "retried");
        a.applied(vip, true);
        assert!(!a.has_pending());
        let ops = a.update(t0, &BTreeMap::new());
        assert_eq!(ops, vec![RouteOp::Remove { vip }]);
        assert!(a.held().is_empty());
    }
}
