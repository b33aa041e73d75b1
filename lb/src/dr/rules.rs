//! The nftables program of the forwarding tier, as text for `nft -f -` (kube-proxy's nftables
//! mode drives the kernel the same way). Sans-IO: a [`Desired`] goes in, a script comes out,
//! and the script is applied as one transaction, so a failure leaves the previous program
//! serving.
//!
//! One table (`netdev` family) holds, per interface, a base chain on its ingress hook that
//! sends a VIP's packets (only frames addressed to this host: `meta pkttype host`, so a
//! flooded frame is not forwarded twice) to the frontend's chain. The frontend chain:
//!
//! 1. looks the flow up in the frontend's flow map (a server keeps the flows it has);
//! 2. forgets the answer, and the entry, when that server is down (its flows are lost anyway;
//!    they go to a live server instead of being dropped, and stay there when it returns);
//! 3. otherwise picks a slot with `jhash(saddr . sport)` and a fixed seed, the same on every
//!    balancer, and the slot's server;
//! 4. records the flow with a timeout, and forwards the frame to the server's MAC with
//!    `fwd`, counting packets and bytes per server.
//!
//! A server is known to the kernel by a *mark*, a number derived from its backend and
//! address, so flows keep their server across reloads that reorder or rename servers.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The jhash seed of every balancer: without an explicit seed the kernel draws one per rule,
/// and two balancers would send the same flow to different servers.
pub const SEED: u32 = 0x7465_7468;

/// What the kernel should do for every `mode = "dr"` frontend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// The nftables table (netdev family) that holds everything.
    pub table: String,
    /// The frontends.
    pub frontends: Vec<FrontendRules>,
}

/// One frontend's forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendRules {
    /// The frontend's name (its objects are named after a hash of it).
    pub name: String,
    /// Its backend's name.
    pub backend: String,
    /// The link the VIP's packets arrive on and the servers are on.
    pub interface: String,
    /// The VIPs and ports.
    pub binds: Vec<SocketAddr>,
    /// IPv6 (`fwd ip6`) rather than IPv4; every bind and server is of this family.
    pub v6: bool,
    /// How long an idle flow keeps its server.
    pub flow_timeout: Duration,
    /// Most flows remembered; beyond it new flows are forwarded by hash alone.
    pub flow_size: u32,
    /// Servers whose open flows continue (every server not known down).
    pub live: Vec<ServerRule>,
    /// The mark of each slot's server; empty when no server takes new flows.
    pub slots: Vec<u32>,
}

/// One server in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRule {
    /// Its mark (never 0: 0 means "no server yet").
    pub mark: u32,
    /// Where its frames go.
    pub addr: IpAddr,
}

/// The names of what a [`Desired`] puts in the table, so the next change can remove what
/// went away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Objects {
    /// Base chains, one per interface.
    pub base_chains: BTreeSet<String>,
    /// Frontend chains.
    pub chains: BTreeSet<String>,
    /// Flow maps.
    pub maps: BTreeSet<String>,
    /// Named counters.
    pub counters: BTreeSet<String>,
}

/// A fixed 32-bit hash of `s` (FNV-1a): the same on every balancer and every version.
pub fn hash32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A short, stable hex name for `s` (nft identifiers allow fewer characters than our names).
pub fn tag(s: &str) -> String {
    format!("{:08x}", hash32(s))
}

/// The counter of a server's forwarded packets.
pub fn server_counter(mark: u32) -> String {
    format!("s_{mark:08x}")
}

/// The counter of a frontend's packets dropped for want of a server.
pub fn no_server_counter(frontend: &str) -> String {
    format!("nosrv_{}", tag(frontend))
}

/// A frontend's flow map.
pub fn flow_map(f: &FrontendRules) -> String {
    format!("flows{}_{}", if f.v6 { 6 } else { 4 }, tag(&f.name))
}

fn frontend_chain(f: &FrontendRules) -> String {
    format!("fe_{}", tag(&f.name))
}

fn base_chain(interface: &str) -> String {
    let clean: String = interface
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("in_{clean}_{}", &tag(interface)[..4])
}

impl Desired {
    /// The objects this program consists of.
    pub fn objects(&self) -> Objects {
        let mut o = Objects::default();
        for f in &self.frontends {
            o.base_chains.insert(base_chain(&f.interface));
            o.chains.insert(frontend_chain(f));
            o.maps.insert(flow_map(f));
            o.counters.insert(no_server_counter(&f.name));
            for s in &f.live {
                o.counters.insert(server_counter(s.mark));
            }
        }
        o
    }

    /// The transaction that turns the table from `installed` into this program. `None` for
    /// `installed` means the table's content is unknown (a start, or a previous failure): the
    /// table is then replaced whole, in the same transaction, which also removes what a
    /// crashed instance left behind.
    pub fn script(&self, installed: Option<&Objects>) -> String {
        let t = &self.table;
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "add table netdev {t}");
        if installed.is_none() {
            let _ = writeln!(w, "delete table netdev {t}");
            let _ = writeln!(w, "add table netdev {t}");
        }
        let wanted = self.objects();
        for f in &self.frontends {
            let (addr_type, _) = family(f.v6);
            let _ = writeln!(
                w,
                "add map netdev {t} {} {{ type inet_service . inet_service . {addr_type} : mark ; flags dynamic,timeout ; timeout {}s ; size {} ; }}",
                flow_map(f),
                f.flow_timeout.as_secs().max(1),
                f.flow_size.max(1),
            );
        }
        for c in &wanted.counters {
            let _ = writeln!(w, "add counter netdev {t} {c}");
        }
        let mut interfaces: Vec<&str> = self
            .frontends
            .iter()
            .map(|f| f.interface.as_str())
            .collect();
        interfaces.sort();
        interfaces.dedup();
        for i in &interfaces {
            let b = base_chain(i);
            let _ = writeln!(
                w,
                "add chain netdev {t} {b} {{ type filter hook ingress device \"{i}\" priority 0 ; }}"
            );
            let _ = writeln!(w, "flush chain netdev {t} {b}");
        }
        if let Some(old) = installed {
            // Jumps into a chain that goes away must be gone before the chain is.
            for b in old.base_chains.difference(&wanted.base_chains) {
                let _ = writeln!(w, "flush chain netdev {t} {b}");
            }
        }
        for f in &self.frontends {
            let c = frontend_chain(f);
            let _ = writeln!(w, "add chain netdev {t} {c}");
            let _ = writeln!(w, "flush chain netdev {t} {c}");
        }
        for i in &interfaces {
            self.dispatch(w, i);
        }
        for f in &self.frontends {
            frontend_rules(w, t, f);
        }
        if let Some(old) = installed {
            for b in old.base_chains.difference(&wanted.base_chains) {
                let _ = writeln!(w, "delete chain netdev {t} {b}");
            }
            for c in old.chains.difference(&wanted.chains) {
                let _ = writeln!(w, "flush chain netdev {t} {c}");
                let _ = writeln!(w, "delete chain netdev {t} {c}");
            }
            for m in old.maps.difference(&wanted.maps) {
                let _ = writeln!(w, "delete map netdev {t} {m}");
            }
            for c in old.counters.difference(&wanted.counters) {
                let _ = writeln!(w, "delete counter netdev {t} {c}");
            }
        }
        s
    }

    /// The base chain's rules of one interface: a verdict map from VIP and port to the
    /// frontend's chain, per address family.
    fn dispatch(&self, w: &mut String, interface: &str) {
        let t = &self.table;
        let b = base_chain(interface);
        for v6 in [false, true] {
            let (_, ip) = family(v6);
            let entries: Vec<String> = self
                .frontends
                .iter()
                .filter(|f| f.interface == interface && f.v6 == v6)
                .flat_map(|f| {
                    let c = frontend_chain(f);
                    f.binds
                        .iter()
                        .map(move |a| format!("{} . {} : jump {c}", a.ip(), a.port()))
                })
                .collect();
            if entries.is_empty() {
                continue;
            }
            let _ = writeln!(
                w,
                "add rule netdev {t} {b} meta pkttype host {ip} daddr . tcp dport vmap {{ {} }}",
                entries.join(", ")
            );
        }
    }
}

fn family(v6: bool) -> (&'static str, &'static str) {
    if v6 {
        ("ipv6_addr", "ip6")
    } else {
        ("ipv4_addr", "ip")
    }
}

fn frontend_rules(w: &mut String, t: &str, f: &FrontendRules) {
    let c = frontend_chain(f);
    let (_, ip) = family(f.v6);
    // nft 1.0.6 cannot linearise an `update` whose key puts the 16-byte IPv6 address
    // before a port; the address last works for both families.
    let key = format!("tcp sport . tcp dport . {ip} saddr");
    let map = flow_map(f);
    let rule = |w: &mut String, body: &str| {
        let _ = writeln!(w, "add rule netdev {t} {c} {body}");
    };
    rule(w, "meta mark set 0");
    if !f.live.is_empty() {
        rule(w, &format!("meta mark set {key} map @{map}"));
        let live: Vec<String> = f.live.iter().map(|s| format!("0x{:08x}", s.mark)).collect();
        // The entry itself goes too: `update` below refreshes an existing entry's timeout but
        // keeps its value, so a flow re-hashed while its server was down would go back to
        // that server (and be reset by it) as soon as it came back up.
        rule(
            w,
            &format!(
                "meta mark != 0 meta mark != {{ {} }} delete @{map} {{ {key} : meta mark }} meta mark set 0",
                live.join(", ")
            ),
        );
    }
    if !f.slots.is_empty() {
        let entries: Vec<String> = f
            .slots
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{i} : 0x{m:08x}"))
            .collect();
        rule(
            w,
            &format!(
                "meta mark 0 meta mark set jhash {ip} saddr . tcp sport mod {} seed 0x{SEED:08x} map {{ {} }}",
                f.slots.len(),
                entries.join(", ")
            ),
        );
    }
    if !f.live.is_empty() {
        rule(
            w,
            &format!("meta mark != 0 update @{map} {{ {key} : meta mark }}"),
        );
    }
    for s in &f.live {
        rule(
            w,
            &format!(
                "meta mark 0x{:08x} counter name \"{}\" fwd {ip} to {} device \"{}\"",
                s.mark,
                server_counter(s.mark),
                s.addr,
                f.interface
            ),
        );
    }
    rule(
        w,
        &format!("counter name \"{}\" drop", no_server_counter(&f.name)),
    );
}

/// Removes the whole table (at exit). Succeeds when the table exists.
pub fn teardown(table: &str) -> String {
    format!("add table netdev {table}\ndelete table netdev {table}\n")
}

#[cfg(test)]
mod tests;
