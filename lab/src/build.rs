//! Describing a lab ([`LabBuilder`]) and making it: namespaces, bridges, veth pairs,
//! addresses, routes and the firewall, all inside namespaces the lab owns.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::addr::{Cidr, Cidr6};
use crate::cmd::{run, run_stdin};
use crate::proc::Procs;
use crate::teardown::{Inner, State, default_dir, reclaim_stale};
use crate::{Lab, LabError, available, signals};

/// One network: a bridge in its own namespace, and the hosts plugged into it.
#[derive(Debug, Clone)]
pub(crate) struct NetSpec {
    pub(crate) name: String,
    pub(crate) cidr: Cidr,
    /// Its IPv6 prefix, when it has one ([`LabBuilder::ipv6`]).
    pub(crate) v6: Option<Cidr6>,
}

#[derive(Debug, Clone)]
pub(crate) struct HostSpec {
    pub(crate) name: String,
    /// (network, host octet) per interface, in the order eth0, eth1...
    pub(crate) ifaces: Vec<(String, u8)>,
    pub(crate) router: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct FirewallSpec {
    pub(crate) router: String,
    pub(crate) protected: String,
}

/// Describes a lab; [`LabBuilder::build`] makes it.
#[derive(Debug)]
pub struct LabBuilder {
    pub(crate) prefix: String,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) nets: Vec<NetSpec>,
    pub(crate) hosts: Vec<HostSpec>,
    pub(crate) firewalls: Vec<FirewallSpec>,
    pub(crate) signals: bool,
    pub(crate) errors: Vec<LabError>,
}

impl LabBuilder {
    /// Adds a network, e.g. `network("cloud", "192.0.2.0/24")`. The prefix must lie inside a
    /// documentation range.
    pub fn network(mut self, name: &str, cidr: &str) -> Self {
        match Cidr::parse(cidr) {
            Ok(c) => self.nets.push(NetSpec {
                name: name.to_string(),
                cidr: c,
                v6: None,
            }),
            Err(e) => self.errors.push(e),
        }
        self
    }

    /// Gives network `net` (added before) an IPv6 prefix too, a /64 inside 2001:db8::/32:
    /// each host on it gets `<prefix>::<octet>` beside its IPv4 address. Hosts on such a
    /// network run without duplicate address detection, so their addresses (the
    /// link-local one included) are usable at once, as a VRRP advert source must be. A
    /// router on such a network forwards IPv6, and the other hosts get an IPv6 default route
    /// via its address there, as they do for IPv4.
    pub fn ipv6(mut self, net: &str, cidr: &str) -> Self {
        match (
            Cidr6::parse(cidr),
            self.nets.iter_mut().find(|n| n.name == net),
        ) {
            (Ok(c), Some(n)) => n.v6 = Some(c),
            (Err(e), _) => self.errors.push(e),
            (Ok(_), None) => self.errors.push(LabError::Spec(format!(
                "ipv6: no network {net:?} (add it first)"
            ))),
        }
        self
    }

    /// Adds a host with one interface per `(network, host octet)`: `eth0` on the first,
    /// `eth1` on the second... A host on a network that has a router gets a default route via
    /// the router's address on its first network.
    pub fn host(self, name: &str, ifaces: &[(&str, u8)]) -> Self {
        self.add_host(name, ifaces, false)
    }

    /// Adds a router: a host that forwards between its networks and is the default gateway
    /// of the other hosts on them.
    pub fn router(self, name: &str, ifaces: &[(&str, u8)]) -> Self {
        self.add_host(name, ifaces, true)
    }

    fn add_host(mut self, name: &str, ifaces: &[(&str, u8)], router: bool) -> Self {
        self.hosts.push(HostSpec {
            name: name.to_string(),
            ifaces: ifaces.iter().map(|(n, o)| (n.to_string(), *o)).collect(),
            router,
        });
        self
    }

    /// On `router`, drops every new connection into network `protected` that does not start
    /// inside it (nftables, stateful: replies to connections opened from inside pass), over
    /// IPv4 and, when the network has an IPv6 prefix, over IPv6 too.
    pub fn firewall(mut self, router: &str, protected: &str) -> Self {
        self.firewalls.push(FirewallSpec {
            router: router.to_string(),
            protected: protected.to_string(),
        });
        self
    }

    /// Where logs and files of the lab go (default: a new folder under the temp dir, removed
    /// on teardown unless `TETHER_KEEP_LAB` is set).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Whether SIGINT/SIGTERM tear the lab down and exit the process (default: yes). A
    /// program with its own signal handling turns this off and drops the lab itself.
    pub fn teardown_on_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    fn check(&mut self) -> Result<(), LabError> {
        if let Some(e) = self.errors.drain(..).next() {
            return Err(e);
        }
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 15
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !valid_name(&self.prefix) {
            return Err(LabError::Spec(format!(
                "prefix {:?}: 1 to 15 letters, digits, - or _",
                self.prefix
            )));
        }
        let mut names = std::collections::HashSet::new();
        for n in &self.nets {
            if !valid_name(&n.name) || !names.insert(format!("net-{}", n.name)) {
                return Err(LabError::Spec(format!(
                    "network {:?}: duplicate or not 1 to 15 letters, digits, - or _",
                    n.name
                )));
            }
        }
        let mut used = std::collections::HashSet::new();
        for h in &self.hosts {
            if !valid_name(&h.name) || h.name.starts_with("net-") || !names.insert(h.name.clone()) {
                return Err(LabError::Spec(format!(
                    "host {:?}: duplicate, starts with net-, or not 1 to 15 letters, digits, - or _",
                    h.name
                )));
            }
            if h.ifaces.is_empty() {
                return Err(LabError::Spec(format!(
                    "host {:?} has no interface",
                    h.name
                )));
            }
            for (net, octet) in &h.ifaces {
                let n = self.nets.iter().find(|n| &n.name == net).ok_or_else(|| {
                    LabError::Spec(format!("host {:?}: no network {net:?}", h.name))
                })?;
                n.cidr
                    .host(*octet)
                    .map_err(|e| LabError::Spec(format!("host {:?} on {net:?}: {e}", h.name)))?;
                if !used.insert((net.clone(), *octet)) {
                    return Err(LabError::Spec(format!(
                        "host {:?}: address .{octet} on {net:?} is taken",
                        h.name
                    )));
                }
            }
        }
        for f in &self.firewalls {
            let r = self.hosts.iter().find(|h| h.name == f.router && h.router);
            if r.is_none() {
                return Err(LabError::Spec(format!(
                    "firewall: no router {:?}",
                    f.router
                )));
            }
            if !self.nets.iter().any(|n| n.name == f.protected) {
                return Err(LabError::Spec(format!(
                    "firewall: no network {:?}",
                    f.protected
                )));
            }
        }
        Ok(())
    }

    /// Creates every namespace, bridge, link, address, route and rule. On any error the
    /// part already made is torn down before the error is returned.
    pub fn build(mut self) -> Result<Lab, LabError> {
        self.check()?;
        available()?;
        let dir = match self.dir.clone() {
            Some(d) => d,
            None => default_dir(&self.prefix, std::process::id()),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
        reclaim_stale(&self.prefix)?;
        let inner = Arc::new(Inner {
            prefix: self.prefix.clone(),
            dir,
            state: Mutex::new(State::default()),
            procs: Procs::new(),
        });
        let lab = Lab {
            inner: inner.clone(),
            nets: self.nets.clone(),
            hosts: self.hosts.clone(),
        };
        if self.signals {
            signals::register(&inner);
        }
        // From here on, a failure drops `lab`, which removes what was made.
        lab.make(&self.firewalls)?;
        Ok(lab)
    }
}

impl Lab {
    fn make(&self, firewalls: &[FirewallSpec]) -> Result<(), LabError> {
        let inner = &self.inner;
        for n in &self.nets {
            let ns = self.net_ns(&n.name);
            inner.add_ns(&ns)?;
            run(&[
                "ip",
                "-n",
                &ns,
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ])?;
            run(&["ip", "-n", &ns, "link", "set", "br0", "up"])?;
        }
        for h in &self.hosts {
            let ns = self.ns(&h.name);
            inner.add_ns(&ns)?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            let sysctls: &[&str] = if h.router {
                &["net.ipv4.ip_forward=1", "net.ipv4.conf.all.arp_accept=1"]
            } else {
                // Gratuitous ARP from a new VRRP master must update neighbours at once.
                &["net.ipv4.conf.all.arp_accept=1"]
            };
            let on_v6 = h
                .ifaces
                .iter()
                .any(|(n, _)| self.net(n).is_ok_and(|n| n.v6.is_some()));
            // Before the links exist: they inherit `default`, so DAD is off from the start.
            let no_dad: &[&str] = if on_v6 {
                &[
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ]
            } else {
                &[]
            };
            // A router forwards IPv6 too when one of its networks has a prefix.
            let v6_forward: &[&str] = if on_v6 && h.router {
                &["net.ipv6.conf.all.forwarding=1"]
            } else {
                &[]
            };
            for s in sysctls.iter().chain(no_dad).chain(v6_forward) {
                run(&["ip", "netns", "exec", &ns, "sysctl", "-qw", s])?;
            }
            for (i, (net, octet)) in h.ifaces.iter().enumerate() {
                let eth = format!("eth{i}");
                let bridge_ns = self.net_ns(net);
                // Created straight inside the two namespaces: the machine's own namespace
                // never sees either end.
                run(&[
                    "ip", "link", "add", &eth, "netns", &ns, "type", "veth", "peer", "name",
                    &h.name, "netns", &bridge_ns,
                ])?;
                run(&[
                    "ip", "-n", &bridge_ns, "link", "set", "dev", &h.name, "master", "br0", "up",
                ])?;
                let cidr = self.net(net)?.cidr;
                let a = format!("{}/{}", cidr.host(*octet)?, cidr.len);
                run(&["ip", "-n", &ns, "addr", "add", &a, "dev", &eth])?;
                if let Some(v6) = self.net(net)?.v6 {
                    let a = format!("{}/64", v6.host(*octet));
                    run(&["ip", "-n", &ns, "addr", "add", &a, "dev", &eth, "nodad"])?;
                }
                run(&["ip", "-n", &ns, "link", "set", &eth, "up"])?;
            }
        }
        // Default routes: via the router on the host's first network.
        for h in self.hosts.iter().filter(|h| !h.router) {
            let first = &h.ifaces[0].0;
            if let Some(gw) = self.router_on(first) {
                let ns = self.ns(&h.name);
                run(&[
                    "ip",
                    "-n",
                    &ns,
                    "route",
                    "add",
                    "default",
                    "via",
                    &gw.to_string(),
                ])?;
            }
            if let Some(gw) = self.router6_on(first) {
                let ns = self.ns(&h.name);
                run(&[
                    "ip",
                    "-n",
                    &ns,
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &gw.to_string(),
                ])?;
            }
        }
        for f in firewalls {
            let net = self.net(&f.protected)?;
            let cidr = net.cidr;
            // The same rule for the network's IPv6 prefix, when it has one: a family
            // without it would be an open door.
            let v6 = net
                .v6
                .map(|c| format!("    ip6 daddr {c} ip6 saddr != {c} ct state new drop\n"))
                .unwrap_or_default();
            let rules = format!(
                "table inet tether_lab {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    ct state established,related accept\n    ip daddr {cidr} ip saddr != {cidr} ct state new drop\n{v6}  }}\n}}\n"
            );
            run_stdin(
                &["ip", "netns", "exec", &self.ns(&f.router), "nft", "-f", "-"],
                &rules,
            )?;
        }
        Ok(())
    }
}
