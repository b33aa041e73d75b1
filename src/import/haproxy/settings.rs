//! What defaults, frontends, backends and servers carry while a file is read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::super::Warning;
use super::super::toml_out::{Table, Val};
use super::{Kind, Line, time};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Defaults,
    Frontend,
    Backend,
    Listen,
}

impl Role {
    pub(super) fn frontend(self) -> bool {
        self != Role::Backend
    }
    pub(super) fn backend(self) -> bool {
        self != Role::Frontend
    }
}

/// Server options, from `default-server` and `server` lines.
#[derive(Debug, Clone, Default)]
pub(super) struct ServerOpts {
    pub(super) check: Option<bool>,
    pub(super) inter: Option<Duration>,
    pub(super) fastinter: Option<Duration>,
    pub(super) downinter: Option<Duration>,
    pub(super) rise: Option<i64>,
    pub(super) fall: Option<i64>,
    pub(super) port: Option<i64>,
    pub(super) weight: Option<i64>,
    pub(super) maxconn: Option<i64>,
    pub(super) maxqueue: Option<i64>,
    pub(super) backup: Option<bool>,
    pub(super) disabled: Option<bool>,
    pub(super) send_proxy: Option<&'static str>,
}

impl ServerOpts {
    /// `over` wins where it sets a value.
    pub(super) fn overlay(&self, over: &ServerOpts) -> ServerOpts {
        ServerOpts {
            check: over.check.or(self.check),
            inter: over.inter.or(self.inter),
            fastinter: over.fastinter.or(self.fastinter),
            downinter: over.downinter.or(self.downinter),
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
    pub(super) fn parse(&mut self, l: &Line, words: &[String], who: &str, w: &mut Vec<Warning>) {
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
                "inter" | "fastinter" | "downinter" => match arg.and_then(time) {
                    Some(t) if !t.is_zero() => {
                        *match k {
                            "inter" => &mut self.inter,
                            "fastinter" => &mut self.fastinter,
                            _ => &mut self.downinter,
                        } = Some(t)
                    }
                    _ => w.push(Warning::new(l.no, format!("{who} {k}"), "not a time")),
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

pub(super) const SERVER_ARG_KEYWORDS: &[&str] = &[
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
    "error-limit",
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

pub(super) fn server_keyword_why(k: &str) -> &'static str {
    match k {
        "ssl" | "verify" | "ca-file" | "crt" | "sni" | "alpn" | "ciphers" | "check-ssl" => {
            "tether passes TLS through and opens no TLS to servers (TLS checks: [backend.health] kind = \"tls\")"
        }
        "resolvers" | "init-addr" | "resolve-prefer" | "resolve-net" => {
            "a host:port address is resolved with [resolver] nameservers and followed every resolve_interval"
        }
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
pub(super) struct Check {
    pub(super) http: bool,
    pub(super) path: Option<String>,
    pub(super) host: Option<String>,
    pub(super) expect: Option<i64>,
}

/// What defaults, frontends and backends share.
#[derive(Debug, Clone, Default)]
pub(super) struct Common {
    pub(super) connect: Option<Duration>,
    pub(super) client: Option<Duration>,
    pub(super) server: Option<Duration>,
    pub(super) queue: Option<Duration>,
    pub(super) check_timeout: Option<Duration>,
    pub(super) retries: Option<i64>,
    pub(super) maxconn: Option<i64>,
    pub(super) inspect: Option<Duration>,
    pub(super) splice: Option<bool>,
    pub(super) balance: Option<&'static str>,
    pub(super) default_server: ServerOpts,
    pub(super) check: Check,
}

impl Common {
    /// What lb.toml has no [defaults] key for, so every backend carries it itself.
    pub(super) fn backend_only(&self) -> Common {
        Common {
            check_timeout: self.check_timeout,
            balance: self.balance,
            default_server: self.default_server.clone(),
            check: self.check.clone(),
            ..Common::default()
        }
    }

    pub(super) fn frontend_keys(&self, t: &mut Table) {
        if let Some(m) = self.maxconn {
            t.set("maxconn", Val::Int(m));
        }
        if let Some(d) = self.client {
            t.set("client_timeout", Val::Dur(d));
        }
        if let Some(d) = self.inspect {
            t.set("inspect_timeout", Val::Dur(d));
        }
    }

    pub(super) fn backend_keys(&self, t: &mut Table, in_defaults: bool) {
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
pub(super) struct Server {
    pub(super) name: String,
    pub(super) host: String,
    pub(super) port: Option<u16>,
    pub(super) line: usize,
    pub(super) opts: ServerOpts,
}

/// An SNI route: pattern and backend, with the line it came from.
#[derive(Debug, Clone)]
pub(super) struct RouteOut {
    pub(super) sni: String,
    pub(super) backend: String,
    pub(super) line: usize,
}

/// A frontend, backend or listen section as parsed (and defaults, with only `common`).
#[derive(Debug, Clone)]
pub(super) struct Proxy {
    pub(super) name: String,
    pub(super) kind: Kind,
    pub(super) line: usize,
    pub(super) common: Common,
    pub(super) binds: Vec<SocketAddr>,
    pub(super) accept_proxy: Vec<bool>,
    pub(super) default_backend: Option<String>,
    pub(super) routes: Vec<RouteOut>,
    pub(super) servers: Vec<Server>,
    pub(super) sni_acls: HashMap<String, Vec<String>>,
}
