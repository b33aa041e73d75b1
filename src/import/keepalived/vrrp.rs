//! vrrp_instance, vrrp_script, vrrp_sync_group and global_defs into vrrp.toml.

use std::net::IpAddr;
use std::time::Duration;

use super::super::Warning;
use super::super::toml_out::{Table, Val};
use super::{Cx, Instance, Node, Script};

impl Cx<'_> {
    pub(super) fn global_defs(&mut self, n: &Node) {
        for c in n.children() {
            match c.key() {
                "vrrp_version" => {
                    if let Some(v) = self.int(c) {
                        self.version = v;
                    }
                }
                "vrrp_garp_master_repeat" => self.garp_repeat = self.int(c),
                "vrrp_garp_master_delay" => self.garp_delay = self.secs(c),
                "vrrp_strict" => self.warn(
                    c,
                    1,
                    "tether installs no firewall rules; vrrp_strict's DROP rules break a balancer on the VIP anyway",
                ),
                "enable_script_security" | "script_user" => self.warn(
                    c,
                    2,
                    "tether runs scripts as the daemon's user; the systemd unit sets it",
                ),
                _ => self.warn(c, 2, "no equivalent in tether vrrp"),
            }
        }
    }

    pub(super) fn script(&mut self, n: &Node) {
        let mut s = Script {
            line: n.line,
            command: None,
            interval: None,
            timeout: None,
            weight: None,
            rise: None,
            fall: None,
        };
        for c in n.children() {
            match c.key() {
                "script" => {
                    let line = c.words[1..].join(" ");
                    match shlex::split(&line) {
                        Some(argv) if !argv.is_empty() => s.command = Some(argv),
                        _ => self.warn(c, 1, "not a command line"),
                    }
                }
                "interval" => s.interval = self.secs(c),
                "timeout" => s.timeout = self.secs(c),
                "weight" => {
                    s.weight = self.int(c);
                    if c.arg(2) == "reverse" {
                        self.warn(c, 3, "tether adds a positive weight while the check passes, subtracts a negative one while it fails; no reverse");
                    }
                }
                "rise" => s.rise = self.int(c),
                "fall" => s.fall = self.int(c),
                "user" => self.warn(c, 2, "tether runs scripts as the daemon's user"),
                _ => self.warn(c, 2, "no equivalent in tether vrrp"),
            }
        }
        self.scripts.insert(n.arg(1).to_string(), s);
    }

    pub(super) fn instance(&mut self, n: &Node) -> Option<Instance> {
        let iname = n.arg(1).to_string();
        let mut t = Table::new("[[instance]]", self.origin(n));
        t.set("name", Val::Str(iname.clone()));
        let interface = n
            .children()
            .iter()
            .find(|c| c.key() == "interface")
            .map(|c| c.arg(1).to_string());
        let Some(interface) = interface else {
            self.warn(
                n,
                2,
                "no interface; tether needs the link the instance runs on",
            );
            return None;
        };
        t.set("interface", Val::Str(interface.clone()));
        let mut version = self.version;
        let mut vrid = None;
        let mut priority = 100;
        let mut advert: Option<(Duration, &Node)> = None;
        let mut vips: Vec<(IpAddr, Option<u8>)> = Vec::new();
        let mut tracks = Vec::new();
        let mut auth: Option<(String, usize)> = None;
        for c in n.children() {
            match c.key() {
                "interface" => {}
                "state" => {
                    t.comment(format!(
                        "state {}: tether starts every node as backup; priority decides who is master",
                        c.arg(1)
                    ));
                }
                "virtual_router_id" => vrid = self.int(c),
                "priority" => priority = self.int(c).unwrap_or(100),
                "advert_int" => advert = self.secs(c).map(|d| (d, c)),
                "version" | "vrrp_version" => version = self.int(c).unwrap_or(version),
                "nopreempt" => {
                    t.set("preempt", Val::Bool(false));
                }
                "preempt" => {}
                "preempt_delay" => {
                    if let Some(d) = self.secs(c) {
                        t.set("preempt_delay", Val::Dur(d));
                    }
                }
                "authentication" => {
                    let words: Vec<&String> = c.children().iter().flat_map(|x| &x.words).collect();
                    let get = |k: &str| {
                        words
                            .iter()
                            .position(|w| *w == k)
                            .and_then(|i| words.get(i + 1))
                    };
                    match (get("auth_type").map(|s| s.as_str()), get("auth_pass")) {
                        (Some("PASS"), Some(p)) => auth = Some(((*p).clone(), c.line)),
                        (Some("AH"), _) => self.warn(c, 1, "tether has no AH authentication"),
                        _ => self.warn(c, 1, "no auth_type PASS with an auth_pass"),
                    }
                }
                "unicast_src_ip" => {
                    t.set("unicast_src", Val::Str(c.arg(1).to_string()));
                }
                "unicast_peer" => {
                    let peers: Vec<String> = c
                        .items()
                        .iter()
                        .flat_map(|(_, w)| w.first().cloned())
                        .collect();
                    t.set("unicast_peers", Val::Strs(peers));
                }
                "virtual_ipaddress" => {
                    for (line, words) in c.items() {
                        self.vip(line, words, &interface, &mut vips);
                    }
                }
                "track_script" => {
                    for (line, words) in c.items() {
                        let mut i = 0;
                        while i < words.len() {
                            let weight = (words.get(i + 1).map(String::as_str) == Some("weight"))
                                .then(|| words.get(i + 2).and_then(|w| w.parse::<i64>().ok()))
                                .flatten();
                            tracks.extend(self.track_script(line, &words[i], weight));
                            i += if weight.is_some() { 3 } else { 1 };
                        }
                    }
                }
                "track_interface" => {
                    for (line, words) in c.items() {
                        let mut tt = Table::new(
                            "[[instance.track]]",
                            format!("{}:{line}: track_interface {}", self.file, words[0]),
                        );
                        tt.set("kind", Val::Str("interface".into()));
                        tt.set("interface", Val::Str(words[0].clone()));
                        if words.get(1).map(String::as_str) == Some("weight") {
                            match words.get(2).and_then(|w| w.parse::<i64>().ok()) {
                                Some(wt) => {
                                    tt.set("weight", Val::Int(wt));
                                }
                                None => self.w.push(Warning::new(
                                    line,
                                    format!("track_interface {} weight", words[0]),
                                    "not a number",
                                )),
                            }
                        }
                        tracks.push(tt);
                    }
                }
                "notify" => {
                    t.set("notify", Val::Str(c.words[1..].join(" ")));
                }
                "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => self.warn(
                    c,
                    1,
                    "tether runs one notify command with keepalived's `notify` arguments (INSTANCE NAME STATE PRIORITY); move the script there",
                ),
                "garp_master_repeat" => {
                    if let Some(g) = self.int(c) {
                        t.set("garp_repeat", Val::Int(g));
                    }
                }
                "garp_master_delay" => {
                    if let Some(d) = self.secs(c) {
                        t.set("garp_delay", Val::Dur(d));
                    }
                }
                "use_vmac" | "vmac_xmit_base" => self.warn(
                    c,
                    1,
                    "tether sends with the interface's own MAC (no virtual MAC)",
                ),
                "virtual_routes" | "virtual_rules" | "virtual_ipaddress_excluded" => {
                    self.warn(c, 1, "tether floats the listed addresses only")
                }
                "smtp_alert" => self.warn(c, 1, "tether sends no mail; use notify"),
                _ => self.warn(c, 2, "no equivalent in tether vrrp"),
            }
        }
        let Some(vrid) = vrid else {
            self.warn(n, 2, "no virtual_router_id");
            return None;
        };
        t.set("vrid", Val::Int(vrid));
        t.set("priority", Val::Int(priority));
        let v6 = vips.first().is_some_and(|(a, _)| a.is_ipv6());
        if v6 && version != 3 {
            t.comment("IPv6 virtual addresses: VRRP version 3 (VRRPv2 is IPv4 only)");
            version = 3;
        }
        t.set("version", Val::Int(version));
        if let Some((d, c)) = advert {
            let d = if version == 2 && d.subsec_millis() != 0 {
                let whole = Duration::from_secs(d.as_secs_f64().round().max(1.0) as u64);
                self.warn(
                    c,
                    2,
                    format!(
                        "VRRPv2 advertises whole seconds; converted to {}s (use version 3 for sub-second adverts)",
                        whole.as_secs()
                    ),
                );
                whole
            } else {
                Duration::from_millis(d.as_millis() as u64 / 10 * 10)
            };
            t.set("advert_interval", Val::Dur(d));
        }
        if let Some((pass, line)) = auth {
            if version == 2 {
                if pass.len() > 8 {
                    self.w.push(Warning::new(
                        line,
                        "auth_pass",
                        "longer than 8 bytes; keepalived uses the first 8, and so does this conversion",
                    ));
                }
                t.set("auth_pass", Val::Str(pass.chars().take(8).collect()));
            } else {
                self.w.push(Warning::new(
                    line,
                    "authentication",
                    "authentication exists only in VRRPv2; keepalived ignores it with version 3 too",
                ));
            }
        }
        let mut out = Vec::new();
        for (a, p) in vips {
            if a.is_ipv6() != v6 {
                self.w.push(Warning::new(
                    n.line,
                    format!("virtual_ipaddress {a}"),
                    "one instance carries one address family; add a second instance (another vrid) for it on every node",
                ));
                continue;
            }
            self.vips.push((
                interface.clone(),
                a,
                p.unwrap_or(if a.is_ipv6() { 128 } else { 32 }),
            ));
            out.push(match p {
                Some(p) => format!("{a}/{p}"),
                None => a.to_string(),
            });
        }
        t.set("virtual_addresses", Val::Strs(out));
        if let Some(g) = self.garp_repeat
            && t.get("garp_repeat").is_none()
        {
            t.set("garp_repeat", Val::Int(g));
        }
        if let Some(d) = self.garp_delay
            && t.get("garp_delay").is_none()
        {
            t.set("garp_delay", Val::Dur(d));
        }
        Some(Instance {
            name: iname,
            table: t,
            tracks,
        })
    }

    pub(super) fn vip(
        &mut self,
        line: usize,
        words: &[String],
        interface: &str,
        vips: &mut Vec<(IpAddr, Option<u8>)>,
    ) {
        let Some(first) = words.first() else { return };
        let (a, p) = match first.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().ok()),
            None => (first.as_str(), None),
        };
        let Ok(addr) = a.parse::<IpAddr>() else {
            self.w
                .push(Warning::new(line, first.clone(), "not an IP address"));
            return;
        };
        vips.push((addr, p));
        let mut i = 1;
        while i < words.len() {
            let k = words[i].as_str();
            let arg = words.get(i + 1).map_or("", String::as_str);
            match k {
                "dev" if arg == interface => {}
                "dev" => self.w.push(Warning::new(
                    line,
                    format!("{first} dev {arg}"),
                    format!("tether adds an instance's addresses on its interface ({interface})"),
                )),
                "no_track" | "home" => {
                    self.w.push(Warning::new(
                        line,
                        format!("{first} {k}"),
                        "no equivalent in tether vrrp",
                    ));
                    i += 1;
                    continue;
                }
                _ => self.w.push(Warning::new(
                    line,
                    format!("{first} {k} {arg}"),
                    "tether adds the address with its prefix only (no broadcast, label or scope)",
                )),
            }
            i += 2;
        }
    }

    pub(super) fn track_script(
        &mut self,
        line: usize,
        sname: &str,
        weight: Option<i64>,
    ) -> Option<Table> {
        let Some(s) = self.scripts.get(sname).cloned() else {
            self.w.push(Warning::new(
                line,
                format!("track_script {sname}"),
                "no vrrp_script of that name",
            ));
            return None;
        };
        let Some(command) = s.command else {
            self.w.push(Warning::new(
                line,
                format!("track_script {sname}"),
                "its vrrp_script has no script",
            ));
            return None;
        };
        let mut t = Table::new(
            "[[instance.track]]",
            format!(
                "{}:{line}: track_script {sname} (vrrp_script at line {})",
                self.file, s.line
            ),
        );
        t.set("kind", Val::Str("exec".into()));
        t.set("command", Val::Strs(command));
        if let Some(i) = s.interval {
            t.set("interval", Val::Dur(i));
        }
        if let Some(d) = s.timeout {
            t.set("timeout", Val::Dur(d));
        }
        if let Some(r) = s.rise {
            t.set("rise", Val::Int(r));
        }
        if let Some(f) = s.fall {
            t.set("fall", Val::Int(f));
        }
        if let Some(wt) = weight.or(s.weight) {
            t.set("weight", Val::Int(wt));
        }
        Some(t)
    }

    pub(super) fn sync_group(&mut self, n: &Node, instances: &[String]) -> Option<Table> {
        let mut t = Table::new("[[sync_group]]", self.origin(n));
        t.set("name", Val::Str(n.arg(1).to_string()));
        let mut members = Vec::new();
        for c in n.children() {
            match c.key() {
                "group" => {
                    for (line, words) in c.items() {
                        for m in words {
                            if instances.contains(m) {
                                members.push(m.clone());
                            } else {
                                self.w.push(Warning::new(
                                    line,
                                    format!("group {m}"),
                                    "no converted vrrp_instance of that name",
                                ));
                            }
                        }
                    }
                }
                k if k.starts_with("notify") => self.warn(
                    c,
                    1,
                    "tether runs notify per instance; each member's notify sees the group's transitions",
                ),
                _ => self.warn(c, 2, "no equivalent in tether vrrp"),
            }
        }
        if members.is_empty() {
            self.warn(n, 2, "no member instance left");
            return None;
        }
        t.set("instances", Val::Strs(members));
        Some(t)
    }
}
