//! One directive of a defaults, frontend, backend or listen section at a time.

use super::super::Warning;
use super::addr::{BIND_ARG_KEYWORDS, bind_addrs, server_addr, sni_term};
use std::collections::HashMap;

use super::settings::{Check, Common, Proxy, Role, RouteOut, Server, ServerOpts};
use super::{Line, Section, time};

impl Proxy {
    pub(super) fn new(s: &Section, common: Common) -> Self {
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

    pub(super) fn directive(&mut self, l: &Line, role: Role, w: &mut Vec<Warning>) {
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

    pub(super) fn bind(&mut self, line: usize, words: &[String], w: &mut Vec<Warning>) {
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

    pub(super) fn use_backend(&mut self, l: &Line, w: &mut Vec<Warning>) -> Result<(), String> {
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
    pub(super) fn sni_alternative(
        &self,
        alt: &[String],
    ) -> Result<(Vec<String>, Vec<String>), String> {
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

    pub(super) fn server(&mut self, l: &Line, w: &mut Vec<Warning>) {
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
