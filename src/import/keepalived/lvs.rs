//! LVS direct-routing virtual_server blocks into `mode = "dr"` frontends of lb.toml.

use std::net::IpAddr;
use std::time::Duration;

use super::super::toml_out::{Backend, Frontend, Table, Val, name};
use super::{Cx, Node};

impl Cx<'_> {
    pub(super) fn virtual_server(&mut self, n: &Node) -> Option<(Frontend, Backend)> {
        let Ok(vip) = n.arg(1).parse::<IpAddr>() else {
            self.warn(
                n,
                3,
                "tether's direct routing takes one address and port (no fwmark or group)",
            );
            return None;
        };
        let Ok(port) = n.arg(2).parse::<u16>() else {
            self.warn(n, 3, "no port");
            return None;
        };
        let kind = n
            .children()
            .iter()
            .find(|c| c.key() == "lb_kind")
            .map_or("NAT", |c| c.arg(1));
        if !kind.eq_ignore_ascii_case("DR") {
            self.warn(
                n,
                3,
                format!(
                    "lb_kind {kind}: tether's lb covers LVS direct routing (lb_kind DR, mode = \"dr\") and proxying (mode tcp); NAT and TUN are not converted"
                ),
            );
            return None;
        }
        let bind = std::net::SocketAddr::new(vip, port).to_string();
        let vname = name(&format!("vs_{vip}_{port}"));
        let mut b = Table::new("[[backend]]", self.origin(n));
        b.set("name", Val::Str(vname.clone()));
        let mut interval = Duration::from_secs(60);
        let mut servers: Vec<(IpAddr, Table)> = Vec::new();
        let mut check: Option<(Table, &str)> = None;
        for c in n.children() {
            match c.key() {
                "lb_kind" | "protocol" if c.arg(1) != "UDP" => {}
                "delay_loop" => interval = self.secs(c).unwrap_or(interval),
                "lb_algo" => match c.arg(1) {
                    "rr" | "wrr" => {
                        b.set("balance", Val::Str("roundrobin".into()));
                    }
                    "lc" | "wlc" => {
                        b.set("balance", Val::Str("leastconn".into()));
                    }
                    "sh" | "mh" => {
                        b.set("balance", Val::Str("source".into()));
                    }
                    _ => self.warn(
                        c,
                        2,
                        "tether balances by roundrobin, leastconn, source, random or first; the backend uses roundrobin",
                    ),
                },
                "real_server" | "sorry_server" => {
                    if let Some(s) = self.real_server(c, port, &mut check) {
                        servers.push(s);
                    }
                }
                "persistence_timeout" | "persistence_granularity" => self.warn(
                    c,
                    2,
                    "tether has no persistence table; balance = \"source\" keeps a client on one server while the pool is stable",
                ),
                _ => self.warn(c, 2, "no equivalent in tether lb"),
            }
        }
        if servers.is_empty() {
            self.warn(n, 3, "no real_server left; tether needs at least one");
            return None;
        }
        let mut f = Table::new("[[frontend]]", self.origin(n));
        f.set("name", Val::Str(vname.clone()));
        f.set("mode", Val::Str("dr".into()));
        f.set("bind", Val::Strs(vec![bind]));
        let link = self
            .vips
            .iter()
            .find(|(_, a, _)| *a == vip)
            .or_else(|| {
                self.vips
                    .iter()
                    .find(|(_, a, p)| servers.iter().any(|(s, _)| same_net(*a, *s, *p)))
            })
            .map(|(i, _, _)| i.clone());
        match link {
            Some(i) => {
                f.set_noted(
                    "interface",
                    Val::Str(i),
                    Some(
                        "the link of the vrrp_instance holding the VIP or the servers' subnet"
                            .into(),
                    ),
                );
            }
            None => {
                // A dr frontend without its link would fail `tether lb --check`: leave it
                // to the operator rather than write a file that does not load.
                self.warn(
                    n,
                    3,
                    "no vrrp_instance holds this address or the real servers' subnet, so the link (`interface`) is unknown; write this frontend by hand",
                );
                return None;
            }
        }
        f.set("backend", Val::Str(vname));
        let health = match check {
            Some((mut h, _)) => {
                h.set("interval", Val::Dur(interval));
                h
            }
            None => {
                let mut h = Table::new("[backend.health]", self.origin(n));
                h.set_noted(
                    "kind",
                    Val::Str("none".into()),
                    Some("no real_server had a check".into()),
                );
                h
            }
        };
        Some((
            Frontend {
                table: f,
                routes: Vec::new(),
            },
            Backend {
                table: b,
                health: Some(health),
                servers: servers.into_iter().map(|(_, t)| t).collect(),
            },
        ))
    }

    pub(super) fn real_server<'n>(
        &mut self,
        n: &'n Node,
        vport: u16,
        check: &mut Option<(Table, &'n str)>,
    ) -> Option<(IpAddr, Table)> {
        let Ok(ip) = n.arg(1).parse::<IpAddr>() else {
            self.warn(n, 2, "not an IP address");
            return None;
        };
        let port = n.arg(2).parse::<u16>().unwrap_or(vport);
        if port != vport {
            self.warn(
                n,
                3,
                format!("direct routing cannot change the port; the server gets the virtual server's port {vport}"),
            );
        }
        let mut t = Table::new("[[backend.server]]", self.origin(n));
        t.set("name", Val::Str(name(&format!("rs_{ip}_{vport}"))));
        t.set(
            "address",
            Val::Str(std::net::SocketAddr::new(ip, vport).to_string()),
        );
        if n.key() == "sorry_server" {
            t.set_noted(
                "backup",
                Val::Bool(true),
                Some("sorry_server: used when no real server is up".into()),
            );
        }
        for c in n.children() {
            match c.key() {
                "weight" => match self.int(c) {
                    Some(0) => {
                        self.warn(c, 2, "tether weights are 1..=256; a quiesced server is left out");
                        return None;
                    }
                    Some(w) if w > 256 => {
                        self.warn(c, 2, "tether weights are 1..=256; converted to 256");
                        t.set("weight", Val::Int(256));
                    }
                    Some(w) => {
                        t.set("weight", Val::Int(w));
                    }
                    None => {}
                },
                "TCP_CHECK" | "HTTP_GET" => {
                    let h = self.check(c, port);
                    match check {
                        None => *check = Some((h, c.key())),
                        Some((_, k)) if *k != c.key() => self.warn(
                            c,
                            1,
                            format!("tether checks a backend's servers alike; the backend uses the first server's {k}"),
                        ),
                        Some(_) => {}
                    }
                }
                k if k.ends_with("_CHECK") || k == "SSL_GET" => self.warn(
                    c,
                    1,
                    "tether checks with TCP connects, HTTP GETs or TLS handshakes; this server is checked like the backend's others",
                ),
                _ => self.warn(c, 2, "no equivalent in tether lb"),
            }
        }
        Some((ip, t))
    }

    pub(super) fn check(&mut self, n: &Node, port: u16) -> Table {
        let http = n.key() == "HTTP_GET";
        let mut h = Table::new("[backend.health]", self.origin(n));
        h.set("kind", Val::Str(if http { "http" } else { "tcp" }.into()));
        h.set_noted(
            "rise",
            Val::Int(1),
            Some("keepalived puts a server back on its first good check".into()),
        );
        for c in n.children() {
            match c.key() {
                "connect_port" => match c.arg(1).parse::<u16>() {
                    Ok(p) if p != port => {
                        h.set("port", Val::Int(p.into()));
                    }
                    Ok(_) => {}
                    Err(_) => self.warn(c, 2, "not a port"),
                },
                "connect_timeout" => {
                    if let Some(d) = self.secs(c) {
                        h.set("timeout", Val::Dur(d));
                    }
                }
                "retry" | "nb_get_retry" => {
                    if let Some(r) = self.int(c) {
                        h.set_noted(
                            "fall",
                            Val::Int(r + 1),
                            Some(format!("{} {r}: the failure and {r} retries", c.key())),
                        );
                    }
                }
                "delay_before_retry" => {
                    self.warn(c, 2, "tether retries a failed check at its interval")
                }
                "url" if http => {
                    for u in c.children() {
                        match u.key() {
                            "path" => {
                                h.set("path", Val::Str(u.arg(1).to_string()));
                            }
                            "status_code" => match u.arg(1).parse::<i64>() {
                                Ok(s) => {
                                    h.set("expect_status", Val::Int(s));
                                }
                                Err(_) => self.warn(u, 2, "tether expects one status code"),
                            },
                            _ => self.warn(u, 2, "tether's HTTP check compares the status only"),
                        }
                    }
                }
                "virtualhost" if http => {
                    h.set("host", Val::Str(c.arg(1).to_string()));
                }
                _ => self.warn(c, 2, "no equivalent in tether's checks"),
            }
        }
        if http && h.get("path").is_none() {
            h.set("path", Val::Str("/".into()));
        }
        h
    }
}

/// Whether `b` is in `a`'s network of `prefix` bits.
fn same_net(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            u32::from(a) & m == u32::from(b) & m
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            u128::from(a) & m == u128::from(b) & m
        }
        _ => false,
    }
}
