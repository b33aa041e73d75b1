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
    /// The frontend's name in the configuration, for the reason a VIP is not announced.
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

impl Verdict {
    /// Every verdict, for a state-set metric.
    pub const ALL: [Verdict; 3] = [Verdict::Announced, Verdict::Degraded, Verdict::Withdrawn];

    /// The name in metrics labels and logs (as in `/api/state`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Announced => "announced",
            Verdict::Degraded => "degraded",
            Verdict::Withdrawn => "withdrawn",
        }
    }
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
        /// The VIP whose route (/32 or /128) is set.
        vip: IpAddr,
        /// Whether the route carries the degraded marker.
        degraded: bool,
    },
    /// Delete the VIP's route.
    Remove {
        /// The VIP whose route is deleted.
        vip: IpAddr,
    },
}

/// One VIP's announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// What the route in the kernel says (the last change the kernel took).
    pub verdict: Verdict,
    /// What the route should say; differs from `verdict` while a change waits to be made
    /// (again, after the kernel refused it).
    pub want: Verdict,
    /// Why it is not announced (empty when it is).
    pub reason: String,
    /// When `verdict` last changed.
    pub since: Instant,
    /// No frontend forwards this VIP any more: forgotten once its route is gone.
    pub leaving: bool,
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

    /// Moves toward `wanted`; returns the route changes to make, each to be reported with
    /// [`Announcer::applied`]. A VIP no frontend forwards any more is withdrawn, then
    /// forgotten.
    pub fn update(
        &mut self,
        now: Instant,
        wanted: &BTreeMap<IpAddr, (Verdict, String)>,
    ) -> Vec<RouteOp> {
        for (vip, h) in self.held.iter_mut() {
            if !wanted.contains_key(vip) {
                h.want = Verdict::Withdrawn;
                h.reason = "no frontend forwards it any more".into();
                h.leaving = true;
            }
        }
        for (vip, (verdict, reason)) in wanted {
            let h = self.held.entry(*vip).or_insert(Held {
                verdict: Verdict::Withdrawn,
                want: Verdict::Withdrawn,
                reason: String::new(),
                since: now,
                leaving: false,
            });
            h.want = *verdict;
            h.reason = reason.clone();
            h.leaving = false;
        }
        self.held
            .retain(|_, h| !(h.leaving && h.verdict == Verdict::Withdrawn));
        self.held
            .iter()
            .filter(|(_, h)| h.want != h.verdict)
            .map(|(vip, h)| match h.want {
                Verdict::Withdrawn => RouteOp::Remove { vip: *vip },
                Verdict::Announced => RouteOp::Set {
                    vip: *vip,
                    degraded: false,
                },
                Verdict::Degraded => RouteOp::Set {
                    vip: *vip,
                    degraded: true,
                },
            })
            .collect()
    }

    /// The kernel took (`ok`) or refused the change [`Announcer::update`] asked for `vip`; a
    /// refused one is asked for again by the next update. Returns the new verdict when the
    /// kernel's route changed.
    pub fn applied(&mut self, now: Instant, vip: IpAddr, ok: bool) -> Option<Verdict> {
        let h = self.held.get_mut(&vip)?;
        if !ok || h.verdict == h.want {
            return None;
        }
        h.verdict = h.want;
        h.since = now;
        let v = h.verdict;
        if h.leaving && v == Verdict::Withdrawn {
            self.held.remove(&vip);
        }
        Some(v)
    }

    /// Whether a change is waiting to be made again.
    pub fn has_pending(&self) -> bool {
        self.held.values().any(|h| h.want != h.verdict)
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
    fn changes_are_made_once_and_since_moves_only_when_the_kernel_took_one() {
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
        assert_eq!(a.held()[&vip].verdict, Verdict::Withdrawn, "not taken yet");
        assert_eq!(a.applied(t1, vip, true), Some(Verdict::Announced));
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
        assert_eq!(a.applied(t2, vip, true), Some(Verdict::Degraded));
        assert_eq!(a.held()[&vip].since, t2);
    }

    #[test]
    fn a_refused_change_keeps_the_old_verdict_and_is_asked_for_again() {
        let t0 = Instant::now();
        let vip = ip("192.0.2.100");
        let mut a = Announcer::new();
        a.update(t0, &want(&[("192.0.2.100", Verdict::Announced)]));
        assert_eq!(a.applied(t0, vip, false), None);
        assert!(a.has_pending());
        assert_eq!(a.held()[&vip].verdict, Verdict::Withdrawn);
        let ops = a.update(t0, &want(&[("192.0.2.100", Verdict::Announced)]));
        assert_eq!(ops.len(), 1, "asked for again");
        assert_eq!(a.applied(t0, vip, true), Some(Verdict::Announced));
        assert!(!a.has_pending());
    }

    #[test]
    fn a_vip_gone_from_the_config_is_withdrawn_before_it_is_forgotten() {
        let t0 = Instant::now();
        let vip = ip("192.0.2.100");
        let mut a = Announcer::new();
        a.update(t0, &want(&[("192.0.2.100", Verdict::Degraded)]));
        a.applied(t0, vip, true);
        let ops = a.update(t0, &BTreeMap::new());
        assert_eq!(ops, vec![RouteOp::Remove { vip }]);
        // The kernel refused: still held, asked for again.
        a.applied(t0, vip, false);
        assert_eq!(
            a.update(t0, &BTreeMap::new()),
            vec![RouteOp::Remove { vip }]
        );
        assert_eq!(a.applied(t0, vip, true), Some(Verdict::Withdrawn));
        assert!(a.held().is_empty());
        assert!(a.update(t0, &BTreeMap::new()).is_empty());
    }
}
