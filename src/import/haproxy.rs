//! haproxy.cfg to lb.toml: `mode tcp` frontends, backends and listens, SNI routes, server
//! options and health checks. Everything else is reported, line by line.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::toml_out::{Backend, Frontend, LbFile, Table, Val, name};
use super::{Conversion, ParseError, Warning};

/// Converts an haproxy.cfg; `file` names the input in comments of the output.
pub fn convert(text: &str, file: &str) -> Result<Conversion, ParseError> {
    let sections = sections(text)?;
    let mut w = Vec::new();
    let mut defaults = Common::default();
    let defaults_sections = sections.iter().filter(|s| s.kind == Kind::Defaults).count();
    // With one defaults section its timeouts become lb.toml's [defaults]; with several,
    // each proxy gets the values of the section before it written out in full.
    let inline = defaults_sections > 1;
    let mut lb_defaults = Table::new("[defaults]", String::new());
    let mut proxies: Vec<Proxy> = Vec::new();
    for s in &sections {
        match &s.kind {
            Kind::Global => global(s, &mut lb_defaults, file, &mut w),
            Kind::Defaults => {
                let mut p = Proxy::new(s, Common::default());
                for l in &s.body {
                    p.directive(l, Role::Defaults, &mut w);
                }
                defaults = p.common;
                if !inline {
                    lb_defaults.comment(format!("{file}:{}: defaults", s.line));
                    defaults.frontend_keys(&mut lb_defaults, true);
                    defaults.backend_keys(&mut lb_defaults, true);
                }
            }
            Kind::Frontend | Kind::Backend | Kind::Listen => {
                let base = if inline {
                    defaults.clone()
                } else {
                    defaults.backend_only()
                };
                let mut p = Proxy::new(s, base);
                let role = match s.kind {
                    Kind::Frontend => Role::Frontend,
                    Kind::Backend => Role::Backend,
                    _ => Role::Listen,
                };
                if let Some(addr) = s.args.first() {
                    if role == Role::Backend {
                        w.push(Warning::new(
                            s.line,
                            format!("backend {} {addr}", s.name),
                            "a backend has no address",
                        ));
                    } else {
                        p.bind(s.line, std::slice::from_ref(addr), &mut w);
                    }
                }
                for l in &s.body {
                    p.directive(l, role, &mut w);
                }
                proxies.push(p);
            }
            Kind::Other(k) => w.push(Warning::new(
                s.line,
                format!("{k} {}", s.name).trim_end().to_string(),
                other_section_why(k),
            )),
        }
    }
    let mut lb = assemble(&proxies, file, &mut w);
    if lb.frontends.is_empty() {
        return Err(ParseError::new(
            text.lines().count().max(1),
            "no frontend or listen section could be converted; nothing to write",
        ));
    }
    lb.header = vec![
        format!("Converted by `tether import haproxy` from {file}."),
        "Every block says which lines it came from; `tether lb --check --config lb.toml` validates it.".into(),
    ];
    if !lb_defaults.is_empty() {
        lb.defaults = Some(lb_defaults);
    }
    w.sort_by_key(|x| x.line);
    Ok(Conversion {
        files: vec![("lb.toml", lb.render())],
        warnings: w,
    })
}

fn other_section_why(kind: &str) -> &'static str {
    match kind {
        "resolvers" => {
            "tether resolves host:port server addresses with [resolver] nameservers (default: /etc/resolv.conf)"
        }
        "peers" => "tether has no stick tables to share",
        "userlist" | "cache" | "http-errors" | "fcgi-app" => "HTTP features; tether lb is layer 4",
        _ => "tether lb has no such section",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Global,
    Defaults,
    Frontend,
    Backend,
    Listen,
    Other(String),
}

/// One directive: its line and words (quotes and escapes resolved).
#[derive(Debug, Clone)]
struct Line {
    no: usize,
    words: Vec<String>,
}

impl Line {
    fn arg(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }

    /// The directive as the warning names it: keyword plus its first argument(s).
    fn label(&self, n: usize) -> String {
        self.words
            .iter()
            .take(n)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug)]
struct Section {
    kind: Kind,
    name: String,
    args: Vec<String>,
    line: usize,
    body: Vec<Line>,
}

const OTHER_SECTIONS: &[&str] = &[
    "resolvers",
    "peers",
    "userlist",
    "mailers",
    "program",
    "cache",
    "http-errors",
    "ring",
    "log-forward",
    "fcgi-app",
    "crt-store",
    "traces",
];

fn sections(text: &str) -> Result<Vec<Section>, ParseError> {
    let mut out: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let words = words(raw).map_err(|m| ParseError::new(no, m))?;
        let Some(first) = words.first() else {
            continue;
        };
        let kind = match first.as_str() {
            "global" => Some(Kind::Global),
            "defaults" => Some(Kind::Defaults),
            "frontend" => Some(Kind::Frontend),
            "backend" => Some(Kind::Backend),
            "listen" => Some(Kind::Listen),
            k if OTHER_SECTIONS.contains(&k) => Some(Kind::Other(k.to_string())),
            _ => None,
        };
        match kind {
            Some(kind) => {
                let name = words.get(1).cloned().unwrap_or_default();
                if name.is_empty() && matches!(kind, Kind::Frontend | Kind::Backend | Kind::Listen)
                {
                    return Err(ParseError::new(no, format!("{first} without a name")));
                }
                out.push(Section {
                    kind,
                    name,
                    args: words.iter().skip(2).cloned().collect(),
                    line: no,
                    body: Vec::new(),
                });
            }
            None => match out.last_mut() {
                Some(s) => s.body.push(Line { no, words }),
                None => {
                    return Err(ParseError::new(
                        no,
                        format!(
                            "\"{first}\" outside any section (global, defaults, frontend, backend, listen)"
                        ),
                    ));
                }
            },
        }
    }
    if out.is_empty() {
        return Err(ParseError::new(1, "no section: this is not an haproxy.cfg"));
    }
    Ok(out)
}

/// Splits a line into words as HAProxy does: blanks separate, `#` starts a comment,
/// `\` escapes the next character, and single or double quotes group.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                in_word = true;
                match chars.next() {
                    Some('r') if quote.is_some() => cur.push('\r'),
                    Some('n') if quote.is_some() => cur.push('\n'),
                    Some('r') => cur.push('\r'),
                    Some('n') => cur.push('\n'),
                    Some(n) => cur.push(n),
                    None => return Err("line ends with a lone backslash".into()),
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// HAProxy time: a number with an optional unit (us, ms, s, m, h, d); bare is ms.
fn time(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "" | "ms" => Duration::from_millis(n),
        "us" => Duration::from_micros(n).max(Duration::from_millis(if n > 0 { 1 } else { 0 })),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        _ => return None,
    })
}

fn global(s: &Section, defaults: &mut Table, file: &str, w: &mut Vec<Warning>) {
    for l in &s.body {
        let why = match l.arg(0) {
            "hard-stop-after" => match time(l.arg(1)) {
                Some(t) if !t.is_zero() => {
                    defaults.comment(format!("{file}:{}: hard-stop-after", l.no));
                    defaults.set("grace_period", Val::Dur(t));
                    continue;
                }
                _ => "not a time",
            },
            "maxconn" => {
                "a process-wide limit; tether limits connections per frontend (maxconn on [[frontend]] or [defaults])"
            }
            "nbthread" | "nbproc" | "cpu-map" => {
                "use `tether lb --workers N` (default: one worker per core)"
            }
            "daemon" | "master-worker" | "pidfile" => {
                "systemd runs tether in the foreground (Type=notify); there is no pid file"
            }
            "user" | "group" | "uid" | "gid" | "chroot" => {
                "the systemd unit sets the user and the sandbox"
            }
            "stats" => "use the admin HTTP listener ([admin] listen: /stats, /metrics, /api)",
            "log" | "log-send-hostname" | "log-tag" => {
                "tether logs to stderr (the journal), as text or --log-format json"
            }
            k if k.starts_with("ssl-") || k.starts_with("tune.ssl") => {
                "tether passes TLS through and terminates none"
            }
            _ => "no equivalent in tether lb",
        };
        w.push(Warning::new(l.no, l.label(2), why));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Defaults,
    Frontend,
    Backend,
    Listen,
}

impl Role {
    fn frontend(self) -> bool {
        self != Role::Backend
    }
    fn backend(self) -> bool {
        self != Role::Frontend
    }
}

/// Server options, from `default-server` and `server` lines.
#[derive(Debug, Clone, Default)]
struct ServerOpts {
    check: Option<bool>,
    inter: Option<Duration>,
    rise: Option<i64>,
    fall: Option<i64>,
    port: Option<i64>,
    weight: Option<i64>,
    maxconn: Option<i64>,
    maxqueue: Option<i64>,
    backup: Option<bool>,
    disabled: Option<bool>,
    send_proxy: Option<&'static str>,
}

impl ServerOpts {
    /// `over` wins where it sets a value.
    fn overlay(&self, over: &ServerOpts) -> ServerOpts {
        ServerOpts {
            check: over.check.or(self.check),
            inter: over.inter.or(self.inter),
            rise: over.rise.or(self.rise),
            fall: over.fall.or(self.fall),
            port: over.port.or(self.port),
            weight: over.weight.or(self.weight),
            maxconn: over.maxconn.or(self.maxconn),
            maxqueue: over.maxqueue.or(self.maxqueue),
            backup: over.backup.or(self.backup),
            disabled: over.disabled.or(self.disabled),
            send_proxy: over.send_proxy.or(self.send_proxy),
        }
    }

    /// Parses server or default-server keywords from `words`; reports the rest.
    fn parse(&mut self, l: &Line, words: &[String], who: &str, w: &mut Vec<Warning>) {
        let mut i = 0;
        while i < words.len() {
            let k = words[i].as_str();
            let arg = words.get(i + 1).map(String::as_str);
            let num = |w: &mut Vec<Warning>| -> Option<i64> {
                match arg.and_then(|a| a.parse::<i64>().ok()) {
                    Some(n) => Some(n),
                    None => {
                        w.push(Warning::new(l.no, format!("{who} {k}"), "needs a number"));
                        None
                    }
                }
            };
            let mut took_arg = true;
            match k {
                "check" => {
                    self.check = Some(true);
                    took_arg = false;
                }
                "no-check" => {
                    self.check = Some(false);
                    took_arg = false;
                }
                "inter" => match arg.and_then(time) {
                    Some(t) if !t.is_zero() => self.inter = Some(t),
                    _ => w.push(Warning::new(l.no, format!("{who} inter"), "not a time")),
                },
                "rise" => self.rise = num(w),
                "fall" => self.fall = num(w),
                "port" => self.port = num(w),
                "weight" => self.weight = num(w),
                "maxconn" => self.maxconn = num(w),
                "maxqueue" => self.maxqueue = num(w),
                "backup" | "no-backup" => {
                    self.backup = Some(k == "backup");
                    took_arg = false;
                }
                "disabled" | "enabled" => {
                    self.disabled = Some(k == "disabled");
                    took_arg = false;
                }
                "send-proxy" | "send-proxy-v2" => {
                    self.send_proxy = Some(if k == "send-proxy" { "v1" } else { "v2" });
                    took_arg = false;
                }
                // Tether's checks send the PROXY header whenever the backend does.
                "check-send-proxy" => took_arg = false,
                _ if SERVER_ARG_KEYWORDS.contains(&k) => w.push(Warning::new(
                    l.no,
                    format!("{who} {k} {}", arg.unwrap_or(""))
                        .trim_end()
                        .to_string(),
                    server_keyword_why(k),
                )),
                _ => {
                    took_arg = false;
                    w.push(Warning::new(
                        l.no,
                        format!("{who} {k}"),
                        server_keyword_why(k),
                    ));
                }
            }
            i += if took_arg { 2 } else { 1 };
        }
    }
}

const SERVER_ARG_KEYWORDS: &[&str] = &[
    "addr",
    "agent-inter",
    "agent-port",
    "agent-send",
    "alpn",
    "ca-file",
    "check-alpn",
    "check-proto",
    "check-sni",
    "ciphers",
    "cookie",
    "crl-file",
    "crt",
    "downinter",
    "error-limit",
    "fastinter",
    "id",
    "init-addr",
    "init-state",
    "max-reuse",
    "minconn",
    "namespace",
    "observe",
    "on-error",
    "on-marked-down",
    "on-marked-up",
    "pool-max-conn",
    "pool-purge-delay",
    "proto",
    "proxy-v2-options",
    "redir",
    "resolve-net",
    "resolve-prefer",
    "resolvers",
    "slowstart",
    "sni",
    "source",
    "ssl-max-ver",
    "ssl-min-ver",
    "tcp-ut",
    "track",
    "verify",
    "verifyhost",
    "ws",
];

fn server_keyword_why(k: &str) -> &'static str {
    match k {
        "ssl" | "verify" | "ca-file" | "crt" | "sni" | "alpn" | "ciphers" | "check-ssl" => {
            "tether passes TLS through and opens no TLS to servers (TLS checks: [backend.health] kind = \"tls\")"
        }
        "resolvers" | "init-addr" | "resolve-prefer" | "resolve-net" => {
            "a host:port address is resolved with [resolver] nameservers and followed every resolve_interval"
        }
        "fastinter" | "downinter" => "tether checks at one interval",
        "slowstart" => "tether gives a returning server its full weight at once",
        "cookie" | "redir" => "HTTP features; tether lb is layer 4",
        "agent-check" | "agent-inter" | "agent-port" | "agent-send" => {
            "tether has no agent checks; use an http check on the server's own readiness endpoint"
        }
        _ => "no equivalent in tether lb",
    }
}

/// An HTTP or TCP check as `option httpchk` / `http-check` / `option tcp-check` describe it.
#[derive(Debug, Clone, Default)]
struct Check {
    http: bool,
    path: Option<String>,
    host: Option<String>,
    expect: Option<i64>,
}

/// What defaults, frontends and backends share.
#[derive(Debug, Clone, Default)]
struct Common {
    connect: Option<Duration>,
    client: Option<Duration>,
    server: Option<Duration>,
    queue: Option<Duration>,
    check_timeout: Option<Duration>,
    retries: Option<i64>,
    maxconn: Option<i64>,
    inspect: Option<Duration>,
    splice: Option<bool>,
    balance: Option<&'static str>,
    default_server: ServerOpts,
    check: Check,
}

impl Common {
    /// What lb.toml has no [defaults] key for, so every backend carries it itself.
    fn backend_only(&self) -> Common {
        Common {
            check_timeout: self.check_timeout,
            balance: self.balance,
            default_server: self.default_server.clone(),
            check: self.check.clone(),
            ..Common::default()
        }
    }

    fn frontend_keys(&self, t: &mut Table, in_defaults: bool) {
        if let Some(m) = self.maxconn {
            t.set("maxconn", Val::Int(m));
        }
        if let Some(d) = self.client {
            t.set("client_timeout", Val::Dur(d));
        }
        if let Some(d) = self.inspect {
            t.set("inspect_timeout", Val::Dur(d));
        }
        let _ = in_defaults;
    }

    fn backend_keys(&self, t: &mut Table, in_defaults: bool) {
        if !in_defaults && let Some(b) = self.balance {
            t.set("balance", Val::Str(b.into()));
        }
        for (k, v) in [
            ("connect_timeout", self.connect),
            ("server_timeout", self.server),
            ("queue_timeout", self.queue),
        ] {
            if let Some(d) = v {
                t.set(k, Val::Dur(d));
            }
        }
        if let Some(r) = self.retries {
            t.set("retries", Val::Int(r));
        }
        if let Some(s) = self.splice {
            t.set("splice", Val::Bool(s));
        }
    }
}

#[derive(Debug, Clone)]
struct Server {
    name: String,
    host: String,
    port: Option<u16>,
    line: usize,
    opts: ServerOpts,
}

/// An SNI route: pattern and backend, with the line it came from.
#[derive(Debug, Clone)]
struct RouteOut {
    sni: String,
    backend: String,
    line: usize,
}

/// A frontend, backend or listen section as parsed (and defaults, with only `common`).
#[derive(Debug, Clone)]
struct Proxy {
    name: String,
    kind: Kind,
    line: usize,
    common: Common,
    binds: Vec<SocketAddr>,
    accept_proxy: Vec<bool>,
    default_backend: Option<String>,
    routes: Vec<RouteOut>,
    servers: Vec<Server>,
    sni_acls: HashMap<String, Vec<String>>,
}

impl Proxy {
    fn new(s: &Section, common: Common) -> Self {
        Proxy {
            name: s.name.clone(),
            kind: s.kind.clone(),
            line: s.line,
            common,
            binds: Vec::new(),
            accept_proxy: Vec::new(),
            default_backend: None,
            routes: Vec::new(),
            servers: Vec::new(),
            sni_acls: HashMap::new(),
        }
    }

    fn directive(&mut self, l: &Line, role: Role, w: &mut Vec<Warning>) {
        let k = l.arg(0);
        let c = &mut self.common;
        let why: &str = match k {
            "mode" => match l.arg(1) {
                "tcp" => return,
                "http" => {
                    "tether lb is layer 4 (TCP, TLS passthrough); this proxy is converted as mode tcp, without HTTP processing"
                }
                _ => "tether lb is layer 4",
            },
            "bind" if role != Role::Defaults && role != Role::Backend => {
                self.bind(l.no, &l.words[1..], w);
                return;
            }
            "default_backend" if role.frontend() && role != Role::Defaults => {
                self.default_backend = Some(l.arg(1).to_string());
                return;
            }
            "use_backend" if role.frontend() && role != Role::Defaults => {
                match self.use_backend(l, w) {
                    Ok(()) => return,
                    Err(why) => {
                        w.push(Warning::new(l.no, l.label(2), why));
                        return;
                    }
                }
            }
            "acl" if role.frontend() && role != Role::Defaults => match sni_term(&l.words[2..]) {
                Ok((pats, notes)) => {
                    for n in notes {
                        w.push(Warning::new(l.no, format!("acl {}", l.arg(1)), n));
                    }
                    self.sni_acls
                        .entry(l.arg(1).to_string())
                        .or_default()
                        .extend(pats);
                    return;
                }
                Err(_) => "only SNI ACLs (req_ssl_sni, req.ssl_sni) are carried over, as routes",
            },
            "tcp-request" if role.frontend() => match (l.arg(1), l.arg(2)) {
                ("inspect-delay", _) => match time(l.arg(2)) {
                    Some(t) if !t.is_zero() => {
                        c.inspect = Some(t);
                        return;
                    }
                    _ => "not a time",
                },
                ("content", "accept")
                    if matches!(
                        &l.words[3..].iter().map(String::as_str).collect::<Vec<_>>()[..],
                        [
                            "if",
                            "{",
                            "req_ssl_hello_type" | "req.ssl_hello_type",
                            "1",
                            "}"
                        ]
                    ) =>
                {
                    // Implied: a frontend with routes waits for the whole ClientHello.
                    return;
                }
                _ => {
                    "tether has no tcp-request rules; SNI routing waits for the ClientHello by itself"
                }
            },
            "balance" if role.backend() => match l.arg(1) {
                "roundrobin" | "static-rr" => {
                    c.balance = Some("roundrobin");
                    return;
                }
                "leastconn" => {
                    c.balance = Some("leastconn");
                    return;
                }
                "source" => {
                    c.balance = Some("source");
                    return;
                }
                "first" => {
                    c.balance = Some("first");
                    return;
                }
                b if b == "random" || b.starts_with("random(") => {
                    c.balance = Some("random");
                    return;
                }
                _ => {
                    "tether balances by roundrobin, leastconn, source, random or first; the backend uses roundrobin"
                }
            },
            "hash-type" if role.backend() => match l.arg(1) {
                // Tether's `source` is always a consistent (rendezvous) hash.
                "consistent" => return,
                _ => "tether's balance = \"source\" is always a consistent hash",
            },
            "server" if role.backend() && role != Role::Defaults => {
                self.server(l, w);
                return;
            }
            "default-server" if role.backend() => {
                let mut o = ServerOpts::default();
                o.parse(l, &l.words[1..], "default-server", w);
                c.default_server = c.default_server.overlay(&o);
                return;
            }
            "option" => match l.arg(1) {
                "redispatch" if role.backend() => {
                    // Tether sends every retry to another server.
                    return;
                }
                "httpchk" if role.backend() => {
                    c.check.http = true;
                    match l.words.len() {
                        2 => {}
                        3 => c.check.path = Some(l.arg(2).to_string()),
                        _ => {
                            if !matches!(l.arg(2), "GET" | "HEAD") {
                                w.push(Warning::new(
                                    l.no,
                                    format!("option httpchk {}", l.arg(2)),
                                    "tether checks with GET",
                                ));
                            }
                            c.check.path = Some(l.arg(3).to_string());
                            if let Some(h) = l.arg(4).split("\r\n").skip(1).find_map(|h| {
                                h.strip_prefix("Host:").or_else(|| h.strip_prefix("host:"))
                            }) {
                                c.check.host = Some(h.trim().to_string());
                            }
                        }
                    }
                    return;
                }
                "tcp-check" if role.backend() => {
                    c.check = Check::default();
                    return;
                }
                "splice-auto" | "splice-request" | "splice-response" => {
                    c.splice = Some(true);
                    return;
                }
                "tcplog" | "httplog" | "dontlognull" | "log-health-checks" | "logasap" => {
                    "tether logs to stderr (the journal) in its own format"
                }
                "ssl-hello-chk" => {
                    "tether's TLS check is a full handshake with verification: [backend.health] kind = \"tls\"; the backend keeps a TCP check"
                }
                "forwardfor"
                | "http-server-close"
                | "httpclose"
                | "http-keep-alive"
                | "http-buffer-request" => "HTTP features; tether lb is layer 4",
                _ => "no equivalent in tether lb",
            },
            "no" if l.arg(1) == "option" && l.arg(2) == "redispatch" => {
                "tether always sends a retry to another server"
            }
            "http-check" if role.backend() => match (l.arg(1), l.arg(2)) {
                ("expect", "status") => match l.arg(3).parse::<i64>() {
                    Ok(s) => {
                        c.check.expect = Some(s);
                        return;
                    }
                    Err(_) => "tether expects one status code",
                },
                ("send", _) => {
                    let mut i = 2;
                    while i + 1 < l.words.len() {
                        match l.arg(i) {
                            "uri" => c.check.path = Some(l.arg(i + 1).to_string()),
                            "hdr" if l.arg(i + 1).eq_ignore_ascii_case("host") => {
                                c.check.host = Some(l.arg(i + 2).to_string());
                                i += 1;
                            }
                            "hdr" => {
                                w.push(Warning::new(
                                    l.no,
                                    format!("http-check send hdr {}", l.arg(i + 1)),
                                    "tether's HTTP check sends only the Host header",
                                ));
                                i += 1;
                            }
                            "meth" if matches!(l.arg(i + 1), "GET" | "HEAD") => {}
                            other => w.push(Warning::new(
                                l.no,
                                format!("http-check send {other}"),
                                "tether's HTTP check is a GET of the path with a Host header",
                            )),
                        }
                        i += 2;
                    }
                    return;
                }
                _ => "tether's HTTP check expects one status code (http-check expect status N)",
            },
            "tcp-check" if role.backend() => match (l.arg(1), l.words.len()) {
                ("connect", 2) => return,
                _ => "tether's TCP check is a connect; send/expect sequences are not run",
            },
            "timeout" | "contimeout" | "clitimeout" | "srvtimeout" => {
                let (which, arg) = match k {
                    "contimeout" => ("connect", l.arg(1)),
                    "clitimeout" => ("client", l.arg(1)),
                    "srvtimeout" => ("server", l.arg(1)),
                    _ => (l.arg(1), l.arg(2)),
                };
                let t = time(arg).filter(|t| !t.is_zero());
                let slot = match which {
                    "connect" if role.backend() => &mut c.connect,
                    "client" if role.frontend() => &mut c.client,
                    "server" if role.backend() => &mut c.server,
                    "queue" if role.backend() => &mut c.queue,
                    "check" if role.backend() => &mut c.check_timeout,
                    "connect" | "server" | "queue" | "check" => {
                        w.push(Warning::new(
                            l.no,
                            format!("timeout {which}"),
                            "applies to backends; HAProxy ignores it in a frontend too",
                        ));
                        return;
                    }
                    "client" => {
                        w.push(Warning::new(
                            l.no,
                            "timeout client",
                            "applies to frontends; HAProxy ignores it in a backend too",
                        ));
                        return;
                    }
                    "tunnel" | "client-fin" | "server-fin" => {
                        w.push(Warning::new(
                            l.no,
                            format!("timeout {which}"),
                            "tether has one idle timeout per side: client_timeout and server_timeout",
                        ));
                        return;
                    }
                    _ => {
                        w.push(Warning::new(
                            l.no,
                            format!("timeout {which}"),
                            "HTTP timeouts; tether lb is layer 4",
                        ));
                        return;
                    }
                };
                match t {
                    Some(t) => {
                        *slot = Some(t);
                        return;
                    }
                    None => "not a time above 0",
                }
            }
            "retries" if role.backend() => match l.arg(1).parse::<i64>() {
                Ok(r) => {
                    c.retries = Some(r);
                    return;
                }
                Err(_) => "not a number",
            },
            "maxconn" if role.frontend() => match l.arg(1).parse::<i64>() {
                Ok(m) => {
                    c.maxconn = Some(m);
                    return;
                }
                Err(_) => "not a number",
            },
            "maxconn" => {
                "a backend's maxconn only sizes fullconn in HAProxy; limit servers with maxconn on each server"
            }
            "log" | "log-format" | "log-tag" | "error-log-format" => {
                "tether logs to stderr (the journal) in its own format"
            }
            "stats" => {
                "tether serves statistics on its admin listener ([admin] listen: /stats, /metrics)"
            }
            "stick-table" | "stick" | "stick-store-request" | "stick-store-response" => {
                "tether has no stick tables; balance = \"source\" keeps a client on one server while the pool is stable"
            }
            "http-request"
            | "http-response"
            | "http-after-response"
            | "redirect"
            | "use-server"
            | "cookie"
            | "capture"
            | "compression"
            | "http-reuse"
            | "errorfile"
            | "monitor-uri" => "HTTP features; tether lb is layer 4",
            _ => "no equivalent in tether lb",
        };
        w.push(Warning::new(l.no, l.label(2), why));
    }

    fn bind(&mut self, line: usize, words: &[String], w: &mut Vec<Warning>) {
        let Some(addrs) = words.first() else {
            w.push(Warning::new(line, "bind", "no address"));
            return;
        };
        let mut accept_proxy = false;
        let mut i = 1;
        while i < words.len() {
            let k = words[i].as_str();
            let arg = words.get(i + 1).map(String::as_str).unwrap_or("");
            match k {
                "accept-proxy" => accept_proxy = true,
                // Tether always binds with IP_FREEBIND.
                "transparent" => {}
                "ssl" | "strict-sni" => w.push(Warning::new(
                    line,
                    format!("bind {addrs} {k}"),
                    "tether passes TLS through and terminates none; the bind is converted without TLS",
                )),
                _ if BIND_ARG_KEYWORDS.contains(&k) => {
                    w.push(Warning::new(
                        line,
                        format!("bind {addrs} {k} {arg}"),
                        "no equivalent on a tether bind",
                    ));
                    i += 1;
                }
                _ => w.push(Warning::new(
                    line,
                    format!("bind {addrs} {k}"),
                    "no equivalent on a tether bind",
                )),
            }
            i += 1;
        }
        for a in addrs.split(',').filter(|a| !a.is_empty()) {
            match bind_addrs(a) {
                Ok(list) => {
                    for addr in list {
                        self.binds.push(addr);
                        self.accept_proxy.push(accept_proxy);
                    }
                }
                Err(why) => w.push(Warning::new(line, format!("bind {a}"), why)),
            }
        }
    }

    fn use_backend(&mut self, l: &Line, w: &mut Vec<Warning>) -> Result<(), String> {
        let backend = l.arg(1);
        match l.arg(2) {
            "if" => {}
            "unless" => return Err("tether routes only on a positive SNI match".into()),
            "" => {
                return Err(
                    "an unconditional use_backend; tether uses default_backend for that".into(),
                );
            }
            _ => return Err("a condition tether cannot read".into()),
        }
        let mut pats = Vec::new();
        let cond = &l.words[3..];
        for alt in cond.split(|t| t == "||" || t == "or") {
            let (p, notes) = self.sni_alternative(alt)?;
            for n in notes {
                w.push(Warning::new(l.no, l.label(2), n));
            }
            pats.extend(p);
        }
        if pats.is_empty() {
            return Err("the condition names no server name".into());
        }
        for sni in pats {
            self.routes.push(RouteOut {
                sni,
                backend: backend.to_string(),
                line: l.no,
            });
        }
        Ok(())
    }

    /// One `||` alternative of a condition: a single SNI term, anonymous or by ACL name.
    fn sni_alternative(&self, alt: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
        match alt {
            [name] if self.sni_acls.contains_key(name) => {
                Ok((self.sni_acls[name].clone(), Vec::new()))
            }
            [name] => Err(format!(
                "ACL \"{name}\" is not an SNI ACL; tether routes on the server name only"
            )),
            [open, inner @ .., close] if open == "{" && close == "}" => {
                sni_term(inner).map_err(|e| e.to_string())
            }
            _ => Err(
                "tether routes on one server-name match per alternative (no AND, no negation)"
                    .into(),
            ),
        }
    }

    fn server(&mut self, l: &Line, w: &mut Vec<Warning>) {
        let who = format!("server {}", l.arg(1));
        let addr = l.arg(2);
        let (host, port) = match server_addr(addr) {
            Ok(hp) => hp,
            Err(why) => {
                w.push(Warning::new(l.no, format!("{who} {addr}"), why));
                return;
            }
        };
        let mut opts = ServerOpts::default();
        opts.parse(l, &l.words[3.min(l.words.len())..], &who, w);
        self.servers.push(Server {
            name: l.arg(1).to_string(),
            host,
            port,
            line: l.no,
            opts: self.common.default_server.overlay(&opts),
        });
    }
}

const BIND_ARG_KEYWORDS: &[&str] = &[
    "alpn",
    "backlog",
    "ca-file",
    "ciphers",
    "crt",
    "crt-list",
    "curves",
    "expose-fd",
    "gid",
    "group",
    "id",
    "interface",
    "level",
    "maxconn",
    "mode",
    "mss",
    "name",
    "namespace",
    "nice",
    "npn",
    "process",
    "severity-output",
    "ssl-max-ver",
    "ssl-min-ver",
    "tcp-ut",
    "thread",
    "uid",
    "user",
    "verify",
];

/// A `{ fetch flags values }` body; only the SNI fetches qualify. Returns Tether patterns
/// and notes on where the match is narrower than HAProxy's.
fn sni_term(t: &[String]) -> Result<(Vec<String>, Vec<String>), &'static str> {
    let Some((fetch, rest)) = t.split_first() else {
        return Err("empty condition");
    };
    if !matches!(fetch.as_str(), "req_ssl_sni" | "req.ssl_sni") {
        return Err("not an SNI match");
    }
    let mut method = "str";
    let mut i = 0;
    while i < rest.len() {
        match rest[i].as_str() {
            "-i" => i += 1,
            "-m" => {
                method = rest.get(i + 1).map_or("", String::as_str);
                i += 2;
            }
            "--" => {
                i += 1;
                break;
            }
            "-f" => return Err("server names from a file (-f) are not read"),
            f if f.starts_with('-') => return Err("an ACL flag tether does not know"),
            _ => break,
        }
    }
    let values = &rest[i..];
    if values.is_empty() {
        return Err("no server name to match");
    }
    let mut pats = Vec::new();
    let mut notes = Vec::new();
    for v in values {
        let bare = v.trim_start_matches('.');
        match method {
            "str" => pats.push(v.to_ascii_lowercase()),
            "end" | "dom" => {
                if method == "dom" {
                    pats.push(bare.to_ascii_lowercase());
                }
                pats.push(format!("*.{}", bare.to_ascii_lowercase()));
                notes.push(format!(
                    "-m {method} {v}: tether's *.{bare} matches exactly one label before .{bare}; deeper names go elsewhere"
                ));
            }
            _ => return Err("only exact (-m str), suffix (-m end) and domain (-m dom) matches"),
        }
    }
    Ok((pats, notes))
}

/// HAProxy bind addresses: `ip:port`, `*:port`, `:port`, `:::port`, `[v6]:port`,
/// port ranges `a-b`, and the `ipv4@`/`ipv6@` prefixes.
fn bind_addrs(a: &str) -> Result<Vec<SocketAddr>, String> {
    if a.starts_with('/') || a.contains("@") && !a.starts_with("ipv4@") && !a.starts_with("ipv6@") {
        return Err("tether binds TCP addresses only (no UNIX sockets, abns or fd@)".into());
    }
    let (v6, a) = match a.strip_prefix("ipv6@") {
        Some(r) => (true, r),
        None => (false, a.strip_prefix("ipv4@").unwrap_or(a)),
    };
    let (host, ports) = match a.strip_prefix('[') {
        Some(r) => r.split_once("]:").ok_or_else(|| "no port".to_string())?,
        None => a.rsplit_once(':').ok_or_else(|| "no port".to_string())?,
    };
    let ip: IpAddr = match host {
        "" | "*" if v6 => IpAddr::from([0u16; 8]),
        "" | "*" => IpAddr::from([0u8; 4]),
        h => h
            .parse()
            .map_err(|_| format!("\"{h}\" is not an IP address; tether binds IP addresses"))?,
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((lo, hi)) => (lo, hi),
        None => (ports, ports),
    };
    let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>()) else {
        return Err(format!("\"{ports}\" is not a port or port range"));
    };
    if lo == 0 || hi < lo || hi - lo >= 256 {
        return Err(format!(
            "\"{ports}\": tether takes ports 1..=65535, ranges of at most 256"
        ));
    }
    Ok((lo..=hi).map(|p| SocketAddr::new(ip, p)).collect())
}

/// A server address: host (IP or name, brackets stripped) and port if given.
fn server_addr(a: &str) -> Result<(String, Option<u16>), String> {
    if a.is_empty() {
        return Err("no address".into());
    }
    if a.starts_with('/') || a.contains('@') && !a.starts_with("ipv4@") && !a.starts_with("ipv6@") {
        return Err("tether connects to TCP addresses only".into());
    }
    let a = a
        .strip_prefix("ipv4@")
        .or_else(|| a.strip_prefix("ipv6@"))
        .unwrap_or(a);
    let (host, port) = if let Some(r) = a.strip_prefix('[') {
        match r.split_once(']') {
            Some((h, rest)) => (h, rest.strip_prefix(':')),
            None => return Err("unbalanced [".into()),
        }
    } else if a.parse::<IpAddr>().is_ok() {
        (a, None)
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.starts_with('+') || p.starts_with('-') => {
            return Err(
                "a port relative to the client's (+N/-N); tether needs a fixed port".into(),
            );
        }
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("\"{p}\" is not a port")),
        },
    };
    Ok((host.to_string(), port))
}

/// Turns parsed proxies into lb.toml's frontends and backends, dropping (with a warning)
/// what would make the file invalid: backends left with no server and what points at them.
fn assemble(proxies: &[Proxy], file: &str, w: &mut Vec<Warning>) -> LbFile {
    let origin = |p: &Proxy| {
        let kind = match p.kind {
            Kind::Frontend => "frontend",
            Kind::Backend => "backend",
            _ => "listen",
        };
        format!("{file}:{}: {kind} {}", p.line, p.name)
    };
    let is_fe = |p: &Proxy| matches!(p.kind, Kind::Frontend | Kind::Listen);
    let is_be = |p: &Proxy| matches!(p.kind, Kind::Backend | Kind::Listen);
    // The ports a backend is reached on, for servers written without one.
    let mut ports: HashMap<&str, Vec<u16>> = HashMap::new();
    for p in proxies.iter().filter(|p| is_fe(p)) {
        let mut names: Vec<&str> = p.routes.iter().map(|r| r.backend.as_str()).collect();
        if let Some(d) = &p.default_backend {
            names.push(d);
        }
        if p.kind == Kind::Listen {
            names.push(&p.name);
        }
        for n in names {
            let e = ports.entry(n).or_default();
            for b in &p.binds {
                if !e.contains(&b.port()) {
                    e.push(b.port());
                }
            }
        }
    }
    let mut backends = Vec::new();
    for p in proxies.iter().filter(|p| is_be(p)) {
        if let Some(b) = backend(p, file, origin(p), ports.get(p.name.as_str()), w) {
            backends.push((p.name.clone(), b));
        }
    }
    let mut frontends = Vec::new();
    for p in proxies.iter().filter(|p| is_fe(p)) {
        let has = |n: &str| backends.iter().any(|(b, _)| b == n);
        let default = if p.kind == Kind::Listen {
            Some(p.name.clone())
        } else {
            p.default_backend.clone()
        };
        let Some(default) = default.filter(|d| has(d)) else {
            w.push(Warning::new(
                p.line,
                format!("frontend {}", p.name),
                "no default_backend with servers; tether needs one for the clients no route matches",
            ));
            continue;
        };
        if p.binds.is_empty() {
            w.push(Warning::new(
                p.line,
                format!("frontend {}", p.name),
                "no bind address that tether can listen on",
            ));
            continue;
        }
        let mut t = Table::new("[[frontend]]", origin(p));
        t.set("name", Val::Str(name(&p.name)));
        t.set(
            "bind",
            Val::Strs(p.binds.iter().map(ToString::to_string).collect()),
        );
        t.set("backend", Val::Str(name(&default)));
        p.common.frontend_keys(&mut t, false);
        if p.accept_proxy.iter().any(|a| *a) {
            t.set("accept_proxy", Val::Bool(true));
            if !p.accept_proxy.iter().all(|a| *a) {
                w.push(Warning::new(
                    p.line,
                    format!("frontend {}", p.name),
                    "accept-proxy on some binds only; tether requires the PROXY header on every bind of the frontend",
                ));
            }
        }
        let mut routes = Vec::new();
        for r in &p.routes {
            if !has(&r.backend) {
                w.push(Warning::new(
                    r.line,
                    format!("use_backend {}", r.backend),
                    "the backend is not defined or has no server left",
                ));
                continue;
            }
            let mut rt = Table::new(
                "[[frontend.route]]",
                format!("{file}:{}: use_backend", r.line),
            );
            rt.set("sni", Val::Str(r.sni.clone()));
            rt.set("backend", Val::Str(name(&r.backend)));
            routes.push(rt);
        }
        frontends.push(Frontend { table: t, routes });
    }
    LbFile {
        frontends,
        backends: backends.into_iter().map(|(_, b)| b).collect(),
        ..LbFile::default()
    }
}

fn backend(
    p: &Proxy,
    file: &str,
    origin: String,
    ports: Option<&Vec<u16>>,
    w: &mut Vec<Warning>,
) -> Option<Backend> {
    let mut t = Table::new("[[backend]]", origin);
    t.set("name", Val::Str(name(&p.name)));
    p.common.backend_keys(&mut t, false);
    let mut servers = Vec::new();
    let mut send_proxy: Option<(&str, &str)> = None;
    let mut checked: Option<&Server> = None;
    let live: Vec<&Server> = p
        .servers
        .iter()
        .filter(|s| {
            let drop = if s.opts.disabled == Some(true) {
                Some((
                    "disabled",
                    "tether has no server in maintenance at start; the server is left out (add it and use POST /api/servers/BACKEND/SERVER state=drain)",
                ))
            } else if s.opts.weight == Some(0) {
                Some((
                    "weight 0",
                    "tether weights are 1..=256; the server got no traffic and is left out",
                ))
            } else {
                None
            };
            if let Some((d, why)) = drop {
                w.push(Warning::new(s.line, format!("server {} {d}", s.name), why));
            }
            drop.is_none()
        })
        .collect();
    let any_check = live.iter().any(|s| s.opts.check == Some(true));
    for s in &live {
        let port = match (s.port, ports.map(Vec::as_slice)) {
            (Some(p), _) => p,
            (None, Some([p])) => *p,
            _ => {
                w.push(Warning::new(
                    s.line,
                    format!("server {} {}", s.name, s.host),
                    "no port, and the backend is not reached on exactly one port; tether needs ip:port",
                ));
                continue;
            }
        };
        let address = match s.host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port).to_string(),
            Err(_) => format!("{}:{port}", s.host),
        };
        let mut st = Table::new(
            "[[backend.server]]",
            format!("{file}:{}: server {}", s.line, s.name),
        );
        st.set("name", Val::Str(name(&s.name)));
        st.set("address", Val::Str(address));
        if let Some(wt) = s.opts.weight {
            st.set("weight", Val::Int(wt.min(256)));
        }
        if s.opts.backup == Some(true) {
            st.set("backup", Val::Bool(true));
        }
        if let Some(m) = s.opts.maxconn {
            st.set("maxconn", Val::Int(m));
        }
        if let Some(m) = s.opts.maxqueue {
            st.set("maxqueue", Val::Int(m));
        }
        if let Some(cp) = s.opts.port {
            st.set("check_port", Val::Int(cp));
        }
        if send_proxy.is_none() && s.opts.send_proxy.is_some() {
            send_proxy = s.opts.send_proxy.map(|v| (v, s.name.as_str()));
        }
        if any_check {
            if s.opts.check != Some(true) {
                w.push(Warning::new(
                    s.line,
                    format!("server {} (no check)", s.name),
                    "tether checks every server of a backend; this one is now checked too",
                ));
            } else if let Some(first) = checked {
                for (k, a, b) in [
                    (
                        "inter",
                        s.opts.inter.map(|d| d.as_millis() as i64),
                        first.opts.inter.map(|d| d.as_millis() as i64),
                    ),
                    ("rise", s.opts.rise, first.opts.rise),
                    ("fall", s.opts.fall, first.opts.fall),
                ] {
                    if a != b {
                        w.push(Warning::new(
                            s.line,
                            format!("server {} {k}", s.name),
                            format!(
                                "tether checks a backend's servers alike; the backend uses server {}'s",
                                first.name
                            ),
                        ));
                    }
                }
            } else {
                checked = Some(s);
            }
        }
        servers.push(st);
    }
    if let Some((v, first)) = send_proxy {
        for s in live.iter().filter(|s| s.opts.send_proxy != Some(v)) {
            w.push(Warning::new(
                s.line,
                format!("server {} (PROXY header)", s.name),
                format!(
                    "tether sends one PROXY header setting per backend: {v}, as server {first}; this server gets it too"
                ),
            ));
        }
    }
    if servers.is_empty() {
        w.push(Warning::new(
            p.line,
            format!("backend {}", p.name),
            "no server left; tether needs at least one, so the backend and the rules using it are left out",
        ));
        return None;
    }
    if let Some((v, _)) = send_proxy {
        t.set("send_proxy", Val::Str(v.into()));
    }
    let h_origin = match checked {
        Some(s) => format!("{file}:{}: checks as on server {}", s.line, s.name),
        None => format!(
            "{file}:{}: no server of backend {} has check",
            p.line, p.name
        ),
    };
    let mut h = Table::new("[backend.health]", h_origin);
    match checked {
        None => {
            h.set_noted(
                "kind",
                Val::Str("none".into()),
                Some("no server had `check`: all are always up, as in HAProxy".into()),
            );
        }
        Some(first) => {
            let c = &p.common.check;
            h.set("kind", Val::Str(if c.http { "http" } else { "tcp" }.into()));
            if let Some(i) = first.opts.inter {
                h.set("interval", Val::Dur(i));
            }
            if let Some(t) = p.common.check_timeout {
                h.set("timeout", Val::Dur(t));
            }
            if let Some(r) = first.opts.rise {
                h.set("rise", Val::Int(r));
            }
            if let Some(f) = first.opts.fall {
                h.set("fall", Val::Int(f));
            }
            if c.http {
                h.set(
                    "path",
                    Val::Str(c.path.clone().unwrap_or_else(|| "/".into())),
                );
                if let Some(s) = c.expect {
                    h.set("expect_status", Val::Int(s));
                }
                if let Some(host) = &c.host {
                    h.set("host", Val::Str(host.clone()));
                }
            }
        }
    }
    Some(Backend {
        table: t,
        health: Some(h),
        servers,
    })
}

#[cfg(test)]
#[path = "haproxy_tests.rs"]
mod tests;
