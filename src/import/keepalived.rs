//! keepalived.conf to vrrp.toml (instances, scripts, sync groups) and lb.toml (LVS
//! direct-routing virtual servers as `mode = "dr"` frontends). Everything else is reported.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::toml_out::{Backend, Frontend, LbFile, Table, Val, name};
use super::{Conversion, ParseError, Warning};

/// Converts a keepalived.conf; `file` names the input in comments of the output.
pub fn convert(text: &str, file: &str) -> Result<Conversion, ParseError> {
    let tree = parse(text)?;
    let mut cx = Cx {
        file,
        w: Vec::new(),
        version: 2,
        garp_repeat: None,
        garp_delay: None,
        scripts: HashMap::new(),
        vips: Vec::new(),
    };
    for n in &tree {
        match n.key() {
            "global_defs" => cx.global_defs(n),
            "vrrp_script" => cx.script(n),
            _ => {}
        }
    }
    let mut instances = Vec::new();
    let mut groups = Vec::new();
    let mut virtual_servers = Vec::new();
    for n in &tree {
        match n.key() {
            "global_defs" | "vrrp_script" => {}
            "vrrp_instance" => instances.extend(cx.instance(n)),
            "vrrp_sync_group" => groups.push(n),
            "virtual_server" => virtual_servers.push(n),
            "include" => cx.warn(
                n,
                2,
                "tether import reads one file; convert the included file on its own",
            ),
            _ => cx.warn(n, 2, "no equivalent in tether vrrp"),
        }
    }
    let names: Vec<String> = instances
        .iter()
        .map(|i: &Instance| i.name.clone())
        .collect();
    let mut vrrp = String::new();
    if !instances.is_empty() {
        vrrp.push_str(&format!(
            "# Converted by `tether import keepalived` from {file}.\n# Every block says which lines it came from; `tether vrrp --check --config vrrp.toml` validates it.\n"
        ));
        for i in &instances {
            i.table.render(&mut vrrp);
            for t in &i.tracks {
                t.render(&mut vrrp);
            }
        }
        for g in groups {
            if let Some(t) = cx.sync_group(g, &names) {
                t.render(&mut vrrp);
            }
        }
    }
    let mut lb = LbFile::default();
    for vs in virtual_servers {
        if let Some((f, b)) = cx.virtual_server(vs) {
            lb.frontends.push(f);
            lb.backends.push(b);
        }
    }
    let mut files = Vec::new();
    if !vrrp.is_empty() {
        files.push(("vrrp.toml", vrrp));
    }
    if !lb.frontends.is_empty() {
        lb.header = vec![
            format!("Converted by `tether import keepalived` from {file}: LVS direct-routing virtual servers."),
            "Every block says which lines it came from; `tether lb --check --config lb.toml` validates it.".into(),
        ];
        files.push(("lb.toml", lb.render()));
    }
    if files.is_empty() {
        return Err(ParseError::new(
            tree.last().map_or(1, |n| n.line),
            "no vrrp_instance or direct-routing virtual_server could be converted; nothing to write",
        ));
    }
    cx.w.sort_by_key(|w| w.line);
    Ok(Conversion {
        files,
        warnings: cx.w,
    })
}

/// One statement: its words and, for a block, the statements inside.
#[derive(Debug, Clone)]
struct Node {
    line: usize,
    words: Vec<String>,
    children: Option<Vec<Node>>,
}

impl Node {
    fn key(&self) -> &str {
        self.arg(0)
    }
    fn arg(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }
    fn label(&self, n: usize) -> String {
        self.words
            .iter()
            .take(n)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    }
    fn children(&self) -> &[Node] {
        self.children.as_deref().unwrap_or(&[])
    }
    /// Every word inside a list block (`unicast_peer { a b }` or one per line).
    fn items(&self) -> Vec<(usize, &[String])> {
        self.children()
            .iter()
            .map(|c| (c.line, c.words.as_slice()))
            .collect()
    }
}

/// Splits keepalived.conf into statements and `{ }` blocks. `#` and `!` start comments;
/// double quotes group words; a `{` alone on a line opens the block of the line before.
fn parse(text: &str) -> Result<Vec<Node>, ParseError> {
    let mut stack: Vec<Vec<Node>> = vec![Vec::new()];
    let mut open: Vec<Node> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let mut cur: Vec<String> = Vec::new();
        for tok in tokens(raw).map_err(|m| ParseError::new(no, m))? {
            match tok.as_str() {
                "{" => {
                    let node = if cur.is_empty() {
                        match stack.last_mut().and_then(Vec::pop) {
                            Some(n) if n.children.is_none() => n,
                            _ => return Err(ParseError::new(no, "\"{\" opens no statement")),
                        }
                    } else {
                        Node {
                            line: no,
                            words: std::mem::take(&mut cur),
                            children: None,
                        }
                    };
                    open.push(node);
                    stack.push(Vec::new());
                }
                "}" => {
                    let (Some(mut node), Some(mut children)) = (open.pop(), stack.pop()) else {
                        return Err(ParseError::new(no, "\"}\" closes no block"));
                    };
                    if !cur.is_empty() {
                        children.push(Node {
                            line: no,
                            words: std::mem::take(&mut cur),
                            children: None,
                        });
                    }
                    node.children = Some(children);
                    match stack.last_mut() {
                        Some(top) => top.push(node),
                        None => return Err(ParseError::new(no, "\"}\" closes no block")),
                    }
                }
                _ => cur.push(tok),
            }
        }
        if !cur.is_empty() {
            if let Some(top) = stack.last_mut() {
                top.push(Node {
                    line: no,
                    words: cur,
                    children: None,
                });
            }
        }
    }
    if let Some(n) = open.last() {
        return Err(ParseError::new(
            n.line,
            format!("block \"{}\" is never closed", n.label(2)),
        ));
    }
    let top = stack.pop().unwrap_or_default();
    if top.is_empty() {
        return Err(ParseError::new(
            1,
            "no statement: this is not a keepalived.conf",
        ));
    }
    Ok(top)
}

fn tokens(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            _ if quoted => cur.push(c),
            '#' | '!' if !in_word => break,
            '{' | '}' => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unterminated \" quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Seconds as keepalived writes them (`1`, `0.1`), to the millisecond.
fn seconds(s: &str) -> Option<Duration> {
    let f: f64 = s.parse().ok()?;
    (f.is_finite() && f >= 0.0).then(|| Duration::from_millis((f * 1000.0).round() as u64))
}

/// A `vrrp_script`.
#[derive(Debug, Clone)]
struct Script {
    line: usize,
    command: Option<Vec<String>>,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    weight: Option<i64>,
    rise: Option<i64>,
    fall: Option<i64>,
}

/// A converted instance.
struct Instance {
    name: String,
    table: Table,
    tracks: Vec<Table>,
}

struct Cx<'a> {
    file: &'a str,
    w: Vec<Warning>,
    version: i64,
    garp_repeat: Option<i64>,
    garp_delay: Option<Duration>,
    scripts: HashMap<String, Script>,
    /// `(interface, vip, prefix)` of every converted instance, for DR frontends' links.
    vips: Vec<(String, IpAddr, u8)>,
}

impl Cx<'_> {
    fn warn(&mut self, n: &Node, words: usize, why: impl Into<String>) {
        self.w.push(Warning::new(n.line, n.label(words), why));
    }

    fn origin(&self, n: &Node) -> String {
        format!("{}:{}: {}", self.file, n.line, n.label(3))
    }

    fn int(&mut self, n: &Node) -> Option<i64> {
        let v = n.arg(1).parse().ok();
        if v.is_none() {
            self.warn(n, 2, "not a number");
        }
        v
    }

    fn secs(&mut self, n: &Node) -> Option<Duration> {
        let v = seconds(n.arg(1));
        if v.is_none() {
            self.warn(n, 2, "not a number of seconds");
        }
        v
    }

    fn global_defs(&mut self, n: &Node) {
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

    fn script(&mut self, n: &Node) {
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

    fn instance(&mut self, n: &Node) -> Option<Instance> {
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

    fn vip(
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

    fn track_script(&mut self, line: usize, sname: &str, weight: Option<i64>) -> Option<Table> {
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

    fn sync_group(&mut self, n: &Node, instances: &[String]) -> Option<Table> {
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

    fn virtual_server(&mut self, n: &Node) -> Option<(Frontend, Backend)> {
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
                    Some("the link of the vrrp_instance holding the VIP or the servers' subnet".into()),
                );
            }
            None => self.warn(
                n,
                3,
                "interface: no vrrp_instance holds this address or the real servers' subnet; set `interface` on the frontend by hand",
            ),
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

    fn real_server<'n>(
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

    fn check(&mut self, n: &Node, port: u16) -> Table {
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

#[cfg(test)]
#[path = "keepalived_tests.rs"]
mod tests;
