//! From the live state to the kernel program: which servers of each dr frontend keep their
//! flows, which take new ones, and the slot table over those.
//!
//! - A server known down loses its flows (they are re-hashed to a live server).
//! - A server drained or in maintenance keeps its flows but takes no new ones.
//! - Backup servers take new flows only when no other server can.
//! - A server not checked yet takes new flows only while no server of its backend is known
//!   up: a fresh balancer serves before its first checks end, but a server added by a
//!   reload to a serving backend waits for its first check. Unlike a proxy, the kernel
//!   cannot retry a connection that a server not listening yet refuses.
//! - A server that is not on the frontend's link cannot be forwarded to: it is left out and
//!   reported.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use tether_health::check::Health;

use super::rules::{Desired, FrontendRules, ServerRule};
use super::table::{self, Member};
use crate::state::{AdminState, State};

/// A frontend's size of flow map: beyond it, new flows are forwarded by their hash alone.
pub const FLOW_MAP_SIZE: u32 = 262_144;

/// The program for a state, and what the shell needs beside it.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The program.
    pub desired: Desired,
    /// Mark to `(backend, server)`, for metrics and the API.
    pub marks: HashMap<u32, (String, String)>,
    /// Servers or frontends that could not be programmed, and why.
    pub errors: Vec<String>,
}

impl Plan {
    /// `(frontend, backend, server, slots)` for every server of every dr frontend, 0 for
    /// those that take no new flows, in name order.
    pub fn slots_held(&self) -> Vec<(&str, &str, &str, usize)> {
        let mut out = Vec::new();
        for f in &self.desired.frontends {
            let mut servers: Vec<(&u32, &(String, String))> = self
                .marks
                .iter()
                .filter(|(_, (b, _))| *b == f.backend)
                .collect();
            servers.sort_by(|a, b| a.1.cmp(b.1));
            for (mark, (b, s)) in servers {
                let n = f.slots.iter().filter(|m| *m == mark).count();
                out.push((f.name.as_str(), b.as_str(), s.as_str(), n));
            }
        }
        out
    }

    /// Who holds how many slots, per frontend, for the log: `svc: be/s1=512 be/s2=512`.
    pub fn summary(&self) -> String {
        let mut out: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for f in &self.desired.frontends {
            out.entry(f.name.as_str()).or_default();
        }
        for (f, b, s, n) in self.slots_held() {
            if n > 0 {
                out.entry(f).or_default().push(format!("{b}/{s}={n}"));
            }
        }
        let parts: Vec<String> = out
            .iter()
            .map(|(f, held)| format!("{f}: {}", held.join(" ")))
            .collect();
        parts.join("; ")
    }
}

/// The addresses and prefixes of the host's links, by link name.
pub type Links = HashMap<String, Vec<(IpAddr, u8)>>;

/// Reads the links of this network namespace.
pub fn links() -> Links {
    let mut out: Links = HashMap::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        let entry = out.entry(a.interface_name.clone()).or_default();
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        if let (Some(ip), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            entry.push((IpAddr::V4(ip.ip()), u32::from(m.ip()).count_ones() as u8));
        } else if let (Some(ip), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            let bits: u32 = m.ip().octets().iter().map(|b| b.count_ones()).sum();
            entry.push((IpAddr::V6(ip.ip()), bits as u8));
        }
    }
    out
}

/// Whether `ip` is inside one of `prefixes`.
pub fn on_link(ip: IpAddr, prefixes: &[(IpAddr, u8)]) -> bool {
    prefixes.iter().any(|(net, len)| match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let shift = 32 - u32::from((*len).min(32));
            shift == 32 || (u32::from(a) >> shift) == (u32::from(*n) >> shift)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let shift = 128 - u32::from((*len).min(128));
            shift == 128 || (u128::from(a) >> shift) == (u128::from(*n) >> shift)
        }
        _ => false,
    })
}

/// The program for the dr frontends of `state`, with the host's links read now.
pub fn plan(state: &State, table_name: &str) -> Plan {
    if state.frontends.iter().all(|f| f.cfg.dr.is_none()) {
        return plan_with(state, table_name, &Links::new());
    }
    plan_with(state, table_name, &links())
}

/// The program for the dr frontends of `state` on a host with `links`.
pub fn plan_with(state: &State, table_name: &str, links: &Links) -> Plan {
    let mut p = Plan {
        desired: Desired {
            table: table_name.to_string(),
            frontends: Vec::new(),
        },
        ..Plan::default()
    };
    let marks = assign_marks(state);
    for f in &state.frontends {
        let Some(dr) = &f.cfg.dr else {
            continue;
        };
        let Some(prefixes) = links.get(&dr.interface) else {
            p.errors.push(format!(
                "frontend \"{}\": interface \"{}\" does not exist; not forwarding until it does (looked at again every 2 s)",
                f.cfg.name, dr.interface
            ));
            continue;
        };
        let v6 = f.cfg.binds.first().is_some_and(|b| b.is_ipv6());
        let any_up = f.backend.servers.iter().any(|s| s.up());
        let mut live = Vec::new();
        let mut primaries = Vec::new();
        let mut backups = Vec::new();
        for s in &f.backend.servers {
            let ip = s.addr.ip();
            let who = format!("{}/{}", f.backend.cfg.name, s.cfg.name);
            if ip.is_ipv6() != v6 || s.addr.port() != f.cfg.binds[0].port() {
                p.errors.push(format!(
                    "frontend \"{}\": server {who} at {} is not of the VIP's family and port; left out",
                    f.cfg.name, s.addr
                ));
                continue;
            }
            if !on_link(ip, prefixes) {
                p.errors.push(format!(
                    "frontend \"{}\": server {who} at {ip} is not on the link of interface \"{}\"; direct server return needs the servers on that link; left out",
                    f.cfg.name, dr.interface
                ));
                continue;
            }
            let Some(&mark) = marks.get(&(f.backend.cfg.name.clone(), ip)) else {
                continue;
            };
            if live.iter().any(|l: &ServerRule| l.mark == mark) {
                p.errors.push(format!(
                    "frontend \"{}\": server {who} repeats the address {ip}; left out",
                    f.cfg.name
                ));
                continue;
            }
            p.marks
                .insert(mark, (f.backend.cfg.name.clone(), s.cfg.name.clone()));
            if s.health() == Health::Down {
                continue;
            }
            live.push(ServerRule { mark, addr: ip });
            let unchecked_beside_up = any_up && s.health() == Health::Unknown;
            if s.usable() && s.admin_state() == AdminState::Ready && !unchecked_beside_up {
                let m = (
                    Member {
                        addr: ip,
                        weight: s.view().weight.max(1),
                    },
                    mark,
                );
                if s.cfg.backup {
                    backups.push(m);
                } else {
                    primaries.push(m);
                }
            }
        }
        let takers = if primaries.is_empty() {
            backups
        } else {
            primaries
        };
        let members: Vec<Member> = takers.iter().map(|(m, _)| m.clone()).collect();
        let slots = table::build(&members)
            .into_iter()
            .map(|i| takers[i].1)
            .collect();
        p.desired.frontends.push(FrontendRules {
            name: f.cfg.name.clone(),
            backend: f.backend.cfg.name.clone(),
            interface: dr.interface.clone(),
            binds: f.cfg.binds.clone(),
            v6,
            flow_timeout: dr.flow_timeout,
            flow_size: FLOW_MAP_SIZE,
            live,
            slots,
        });
    }
    p
}

/// A nonzero mark per (backend, address) of the servers of dr frontends: a hash, so it
/// stays the same across reloads; a collision (two in four billion) moves the later
/// address, in address order, to the next free value.
fn assign_marks(state: &State) -> HashMap<(String, IpAddr), u32> {
    let mut keys: BTreeMap<(String, IpAddr), ()> = BTreeMap::new();
    for f in state.frontends.iter().filter(|f| f.cfg.dr.is_some()) {
        for s in &f.backend.servers {
            keys.insert((f.backend.cfg.name.clone(), s.addr.ip()), ());
        }
    }
    let mut taken = std::collections::HashSet::new();
    let mut out = HashMap::new();
    for (k, ()) in keys {
        let mut mark = super::rules::hash32(&format!("{}/{}", k.0, k.1));
        while mark == 0 || !taken.insert(mark) {
            mark = mark.wrapping_add(1);
        }
        out.insert(k, mark);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use tether_health::config::Source;

    const CONFIG: &str = r#"
[[frontend]]
name = "svc"
mode = "dr"
bind = ["192.0.2.100:5551"]
interface = "eth0"
backend = "be"

[[backend]]
name = "be"
[backend.health]
kind = "none"
[[backend.server]]
name = "s1"
address = "192.0.2.21:5551"
[[backend.server]]
name = "s2"
address = "192.0.2.22:5551"
weight = 2
[[backend.server]]
name = "spare"
address = "192.0.2.29:5551"
backup = true
"#;

    async fn state(text: &str) -> std::sync::Arc<State> {
        let config = Config::from_source(&Source::from_text("lb.toml", text)).unwrap();
        let lb = crate::runtime::Lb::new(1, Vec::new(), None, &[]).expect("metrics");
        lb.apply(config).await.unwrap();
        lb.state()
    }

    fn eth0() -> Links {
        Links::from([(
            "eth0".to_string(),
            vec![("192.0.2.11".parse().unwrap(), 24)],
        )])
    }

    fn holders(p: &Plan) -> Vec<String> {
        let mut names: Vec<String> = p.desired.frontends[0]
            .slots
            .iter()
            .map(|m| p.marks[m].1.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn live(p: &Plan) -> Vec<String> {
        p.desired.frontends[0]
            .live
            .iter()
            .map(|s| p.marks[&s.mark].1.clone())
            .collect()
    }

    #[tokio::test]
    async fn primaries_take_new_flows_by_weight_and_backups_wait() {
        let st = state(CONFIG).await;
        let p = plan_with(&st, "t", &eth0());
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(holders(&p), ["s1", "s2"]);
        assert_eq!(live(&p), ["s1", "s2", "spare"]);
        let s2 = p.desired.frontends[0]
            .slots
            .iter()
            .filter(|m| p.marks[m].1 == "s2")
            .count();
        assert!(s2 > 600, "weight 2 of 3 holds {s2} of 1024 slots");
    }

    #[tokio::test]
    async fn down_loses_its_flows_drain_keeps_them_and_backups_step_in() {
        let st = state(CONFIG).await;
        let server = |n: &str| st.server("be", n).unwrap().clone();
        server("s1").set_health(Health::Down);
        server("s2").set_admin_state(AdminState::Drain);
        let p = plan_with(&st, "t", &eth0());
        assert_eq!(live(&p), ["s2", "spare"]);
        assert_eq!(holders(&p), ["spare"]);
        server("s2").set_admin_state(AdminState::Maint);
        server("spare").set_health(Health::Down);
        let p = plan_with(&st, "t", &eth0());
        assert_eq!(live(&p), ["s2"]);
        assert!(p.desired.frontends[0].slots.is_empty());
    }

    #[tokio::test]
    async fn an_unchecked_server_waits_for_its_check_beside_one_known_up() {
        let st = state(CONFIG).await;
        let server = |n: &str| st.server("be", n).unwrap().clone();
        // A fresh balancer: nothing checked yet, every primary takes new flows.
        for n in ["s1", "s2", "spare"] {
            server(n).set_health(Health::Unknown);
        }
        assert_eq!(holders(&plan_with(&st, "t", &eth0())), ["s1", "s2"]);
        // s1 known up, s2 not checked yet (as when a reload adds it): s2 waits.
        server("s1").set_health(Health::Up);
        let p = plan_with(&st, "t", &eth0());
        assert_eq!(holders(&p), ["s1"]);
        assert_eq!(live(&p), ["s1", "s2", "spare"]);
        server("s2").set_health(Health::Up);
        assert_eq!(holders(&plan_with(&st, "t", &eth0())), ["s1", "s2"]);
    }

    #[tokio::test]
    async fn marks_follow_the_address_not_the_order_or_the_name() {
        let a = plan_with(&*state(CONFIG).await, "t", &eth0());
        let reordered = CONFIG
            .replace(
                "name = \"s1\"\naddress = \"192.0.2.21:5551\"",
                "name = \"x\"\naddress = \"192.0.2.22:5551\"\nweight = 2",
            )
            .replacen(
                "name = \"s2\"\naddress = \"192.0.2.22:5551\"\nweight = 2",
                "name = \"y\"\naddress = \"192.0.2.21:5551\"",
                1,
            );
        let b = plan_with(&*state(&reordered).await, "t", &eth0());
        assert_eq!(a.desired.frontends[0].slots, b.desired.frontends[0].slots);
    }

    #[tokio::test]
    async fn servers_off_the_link_and_a_missing_interface_are_reported() {
        let st = state(&CONFIG.replace("192.0.2.29", "198.51.100.29")).await;
        let p = plan_with(&st, "t", &eth0());
        assert_eq!(live(&p), ["s1", "s2"]);
        assert!(
            p.errors[0].contains("spare at 198.51.100.29 is not on the link"),
            "{:?}",
            p.errors
        );
        let p = plan_with(&st, "t", &Links::new());
        assert!(p.desired.frontends.is_empty());
        assert!(
            p.errors[0].contains("interface \"eth0\" does not exist"),
            "{:?}",
            p.errors
        );
    }

    #[test]
    fn prefixes_decide_what_is_on_the_link() {
        let p = [("192.0.2.11".parse().unwrap(), 24)];
        assert!(on_link("192.0.2.21".parse().unwrap(), &p));
        assert!(!on_link("198.51.100.21".parse().unwrap(), &p));
        assert!(!on_link("2001:db8::21".parse().unwrap(), &p));
        let p6 = [("2001:db8::11".parse().unwrap(), 64)];
        assert!(on_link("2001:db8::21".parse().unwrap(), &p6));
        assert!(!on_link("2001:db8:1::21".parse().unwrap(), &p6));
        assert!(on_link(
            "203.0.113.9".parse().unwrap(),
            &[("0.0.0.0".parse().unwrap(), 0)]
        ));
    }
}
