//! Parsed proxies into lb.toml tables.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::super::Warning;
use super::super::toml_out::{Backend, Frontend, LbFile, Table, Val, name};
use super::Kind;
use super::settings::{Proxy, Server};

/// Turns parsed proxies into lb.toml's frontends and backends, dropping (with a warning)
/// what would make the file invalid: backends left with no server and what points at them.
pub(super) fn assemble(proxies: &[Proxy], file: &str, w: &mut Vec<Warning>) -> LbFile {
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
        p.common.frontend_keys(&mut t);
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

pub(super) fn backend(
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
                    (
                        "fastinter",
                        s.opts.fastinter.map(|d| d.as_millis() as i64),
                        first.opts.fastinter.map(|d| d.as_millis() as i64),
                    ),
                    (
                        "downinter",
                        s.opts.downinter.map(|d| d.as_millis() as i64),
                        first.opts.downinter.map(|d| d.as_millis() as i64),
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
            // HAProxy's fastinter and downinter default to inter (2 s without it); Tether's
            // defaults are faster, so they are written out to keep HAProxy's timing.
            let inter = first
                .opts
                .inter
                .unwrap_or(std::time::Duration::from_secs(2));
            for (key, given) in [
                ("fast_interval", first.opts.fastinter),
                ("down_interval", first.opts.downinter),
            ] {
                match given {
                    Some(i) => {
                        h.set(key, Val::Dur(i));
                    }
                    None => {
                        h.set_noted(
                            key,
                            Val::Dur(inter),
                            Some("HAProxy's default (inter); tether's own is faster".into()),
                        );
                    }
                }
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
