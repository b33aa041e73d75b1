//! From the file as written to the [`Config`] the balancer runs: everything serde cannot
//! check, every error collected with its file, line and key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use tether_health::config::{ConfigError, ConfigErrors, Seg, Source};

use super::health::validate_health;
use super::*;

/// What a key allows, added to serde's type errors (which know only the Rust type).
pub(super) fn allowed(path: &[Seg]) -> Option<&'static str> {
    let Some(Seg::Key(key)) = path.last() else {
        return None;
    };
    let in_frontend = matches!(path.first(), Some(Seg::Key(k)) if k == "frontend");
    Some(match key.as_str() {
        "weight" => "an integer 1..=256",
        "retries" => "an integer 0..=100",
        "maxconn" if in_frontend || path.len() == 2 => "an integer 1..=10000000",
        "maxconn" | "maxqueue" => "an integer 0..=10000000",
        "rise" | "fall" => "an integer 1..=1000",
        "port" | "check_port" => "an integer 1..=65535",
        "expect_status" => "an integer 100..=599",
        "connect_timeout" | "client_timeout" | "server_timeout" | "queue_timeout"
        | "grace_period" | "resolve_interval" | "inspect_timeout" | "interval"
        | "fast_interval" | "down_interval" | "timeout" => {
            "a duration such as \"500ms\", \"2s\" or \"1m\""
        }
        "splice" | "backup" | "accept_proxy" => "true or false",
        "send_proxy" if path.len() > 3 => "true or false",
        "send_proxy" => "\"v1\" or \"v2\"",
        "name" | "address" | "listen" | "token" | "backend" | "sni" | "path" | "host" | "ca" => {
            "a string"
        }
        "bind" | "nameservers" => "a list of \"ip:port\" strings",
        _ => return None,
    })
}

/// Checks everything serde cannot, collecting every error rather than stopping at the first.
pub fn validate(raw: &RawConfig, src: &Source) -> Result<Config, ConfigErrors> {
    let mut errs: Vec<ConfigError> = Vec::new();
    let d = &raw.defaults;
    let k = |parts: &[Seg]| parts.to_vec();

    if let Some(t) = raw.admin.as_ref().and_then(|a| a.token.as_ref())
        && t.len() < 16
    {
        errs.push(src.error(
            &k(&["admin".into(), "token".into()]),
            "token is shorter than 16 characters; use a long random string",
        ));
    }
    let mut nameservers = Vec::new();
    for (i, ns) in raw
        .resolver
        .iter()
        .flat_map(|r| r.nameservers.iter())
        .enumerate()
    {
        match ns.parse::<SocketAddr>() {
            Ok(a) => nameservers.push(a),
            Err(_) => errs.push(src.error(
                &k(&["resolver".into(), "nameservers".into(), i.into()]),
                format!("\"{ns}\" is not an ip:port address (e.g. \"192.0.2.53:53\")"),
            )),
        }
    }
    let admin = raw
        .admin
        .as_ref()
        .and_then(|a| match a.listen.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                errs.push(src.error(
                    &k(&["admin".into(), "listen".into()]),
                    format!(
                        "\"{}\" is not an ip:port address (e.g. \"127.0.0.1:9090\")",
                        a.listen
                    ),
                ));
                None
            }
        });
    let retries_default = d.retries.unwrap_or(DEFAULT_RETRIES);
    check_range(
        &mut errs,
        src,
        &["defaults".into(), "retries".into()],
        d.retries,
        0,
        100,
    );
    check_range(
        &mut errs,
        src,
        &["defaults".into(), "maxconn".into()],
        d.maxconn,
        1,
        10_000_000,
    );
    for (key, v) in [
        ("connect_timeout", d.connect_timeout),
        ("client_timeout", d.client_timeout),
        ("server_timeout", d.server_timeout),
        ("queue_timeout", d.queue_timeout),
        ("resolve_interval", d.resolve_interval),
        ("inspect_timeout", d.inspect_timeout),
    ] {
        check_nonzero(&mut errs, src, &["defaults".into(), key.into()], v);
    }

    let mut backend_names = HashSet::new();
    let mut backends = Vec::new();
    for (bi, b) in raw.backend.iter().enumerate() {
        let at = |key: &str| vec![Seg::from("backend"), bi.into(), key.into()];
        if !backend_names.insert(b.name.as_str()) {
            errs.push(src.error(
                &at("name"),
                format!(
                    "backend \"{}\" is defined twice; names must be unique",
                    b.name
                ),
            ));
        }
        check_name(&mut errs, src, &at("name"), &b.name);
        check_range(&mut errs, src, &at("retries"), b.retries, 0, 100);
        for (key, v) in [
            ("connect_timeout", b.connect_timeout),
            ("server_timeout", b.server_timeout),
            ("queue_timeout", b.queue_timeout),
            ("resolve_interval", b.resolve_interval),
        ] {
            check_nonzero(&mut errs, src, &at(key), v);
        }
        if b.server.is_empty() {
            errs.push(src.error(
                &at("server"),
                format!(
                    "backend \"{}\" has no server; add at least one [[backend.server]]",
                    b.name
                ),
            ));
        }
        let health = validate_health(b, bi, src, &mut errs);
        let mut server_names = HashSet::new();
        let mut servers = Vec::new();
        for (si, s) in b.server.iter().enumerate() {
            let at = |key: &str| {
                vec![
                    Seg::from("backend"),
                    bi.into(),
                    "server".into(),
                    si.into(),
                    key.into(),
                ]
            };
            let who = format!("backend \"{}\": server \"{}\"", b.name, s.name);
            if !server_names.insert(s.name.as_str()) {
                errs.push(src.error(
                    &at("name"),
                    format!("{who} is defined twice; server names must be unique in a backend"),
                ));
            }
            check_name(&mut errs, src, &at("name"), &s.name);
            let weight = s.weight.unwrap_or(1);
            if !(1..=256).contains(&weight) {
                errs.push(src.error(
                    &at("weight"),
                    format!("{who} has weight {weight}; weight must be 1..=256"),
                ));
            }
            check_range(&mut errs, src, &at("maxconn"), s.maxconn, 0, 10_000_000);
            check_range(&mut errs, src, &at("maxqueue"), s.maxqueue, 0, 10_000_000);
            check_range(&mut errs, src, &at("check_port"), s.check_port, 1, 65535);
            let address = match parse_server_address(&s.address) {
                Ok(a) => Some(a),
                Err(why) => {
                    errs.push(src.error(
                        &at("address"),
                        format!("{who}: address \"{}\" {why}", s.address),
                    ));
                    None
                }
            };
            if let Some(address) = address {
                servers.push(ServerConfig {
                    name: s.name.clone(),
                    address,
                    weight: weight.clamp(1, 256) as u32,
                    backup: s.backup,
                    maxconn: s.maxconn.unwrap_or(0).max(0) as u32,
                    maxqueue: s.maxqueue.unwrap_or(1024).max(0) as u32,
                    check_port: s.check_port.map(|p| p as u16),
                });
            }
        }
        let connect_timeout = b
            .connect_timeout
            .or(d.connect_timeout)
            .unwrap_or(DEFAULT_CONNECT);
        backends.push(BackendConfig {
            name: b.name.clone(),
            balance: b.balance,
            health,
            servers,
            connect_timeout,
            server_timeout: b
                .server_timeout
                .or(d.server_timeout)
                .unwrap_or(DEFAULT_IDLE),
            queue_timeout: b
                .queue_timeout
                .or(d.queue_timeout)
                .unwrap_or(connect_timeout),
            retries: b.retries.unwrap_or(retries_default).clamp(0, 100) as u32,
            resolve_interval: b
                .resolve_interval
                .or(d.resolve_interval)
                .unwrap_or(Duration::from_secs(10)),
            send_proxy: b.send_proxy,
            splice: b.splice.or(d.splice).unwrap_or(true),
        });
    }

    let mut frontend_names = HashSet::new();
    let mut seen_binds: Vec<(SocketAddr, &str)> = Vec::new();
    let mut frontends = Vec::new();
    if raw.frontend.is_empty() {
        errs.push(src.error(
            &[],
            "no [[frontend]] defined; the balancer would listen nowhere",
        ));
    }
    for (fi, f) in raw.frontend.iter().enumerate() {
        let at = |key: &str| vec![Seg::from("frontend"), fi.into(), key.into()];
        if !frontend_names.insert(f.name.as_str()) {
            errs.push(src.error(
                &at("name"),
                format!(
                    "frontend \"{}\" is defined twice; names must be unique",
                    f.name
                ),
            ));
        }
        check_name(&mut errs, src, &at("name"), &f.name);
        check_range(&mut errs, src, &at("maxconn"), f.maxconn, 1, 10_000_000);
        check_nonzero(&mut errs, src, &at("client_timeout"), f.client_timeout);
        check_nonzero(&mut errs, src, &at("inspect_timeout"), f.inspect_timeout);
        let mut routes = Vec::new();
        for (ri, r) in f.route.iter().enumerate() {
            let at = |key: &str| {
                vec![
                    Seg::from("frontend"),
                    fi.into(),
                    "route".into(),
                    ri.into(),
                    key.into(),
                ]
            };
            let sni = match SniPattern::parse(&r.sni) {
                Ok(p) => Some(p),
                Err(why) => {
                    errs.push(src.error(
                        &at("sni"),
                        format!("frontend \"{}\": sni \"{}\" {why}", f.name, r.sni),
                    ));
                    None
                }
            };
            let backend = raw.backend.iter().position(|b| b.name == r.backend);
            if backend.is_none() {
                errs.push(src.error(
                    &at("backend"),
                    format!(
                        "frontend \"{}\": route for \"{}\" uses backend \"{}\", which is not defined (defined: {})",
                        f.name,
                        r.sni,
                        r.backend,
                        known_backends(raw)
                    ),
                ));
            }
            if let (Some(sni), Some(backend)) = (sni, backend) {
                routes.push(Route { sni, backend });
            }
        }
        if f.bind.is_empty() {
            errs.push(src.error(
                &at("bind"),
                format!(
                    "frontend \"{}\" has no bind address; give at least one \"ip:port\"",
                    f.name
                ),
            ));
        }
        let mut binds = Vec::new();
        for (i, b) in f.bind.iter().enumerate() {
            match b.parse::<SocketAddr>() {
                Ok(addr) => {
                    if let Some((_, other)) = seen_binds.iter().find(|(a, _)| *a == addr) {
                        errs.push(src.error(
                            &[Seg::from("frontend"), fi.into(), "bind".into(), i.into()],
                            format!(
                                "frontend \"{}\": {addr} is already bound by frontend \"{other}\"{}",
                                f.name,
                                if addr.port() == 0 {
                                    " (a bind is known by its address across reloads, so two port-0 binds need different IPs)"
                                } else {
                                    ""
                                }
                            ),
                        ));
                    }
                    seen_binds.push((addr, &f.name));
                    binds.push(addr);
                }
                Err(_) => errs.push(src.error(
                    &[Seg::from("frontend"), fi.into(), "bind".into(), i.into()],
                    format!(
                        "frontend \"{}\": bind \"{b}\" is not an ip:port address (e.g. \"0.0.0.0:5551\" or \"[::]:5551\")",
                        f.name
                    ),
                )),
            }
        }
        let backend = raw.backend.iter().position(|b| b.name == f.backend);
        if backend.is_none() {
            errs.push(src.error(
                &at("backend"),
                format!(
                    "frontend \"{}\" uses backend \"{}\", which is not defined (defined: {})",
                    f.name,
                    f.backend,
                    known_backends(raw)
                ),
            ));
        }
        let dr = crate::dr::validate::frontend(f, fi, raw, src, &mut errs);
        frontends.push(FrontendConfig {
            name: f.name.clone(),
            binds,
            backend: backend.unwrap_or(0),
            maxconn: f.maxconn.or(d.maxconn).unwrap_or(DEFAULT_MAXCONN).max(1) as usize,
            client_timeout: f
                .client_timeout
                .or(d.client_timeout)
                .unwrap_or(DEFAULT_IDLE),
            inspect_timeout: f
                .inspect_timeout
                .or(d.inspect_timeout)
                .unwrap_or(Duration::from_secs(3)),
            accept_proxy: f.accept_proxy,
            routes,
            dr,
        });
    }

    if let Some(e) = admin.and_then(|a| admin_bind_conflict(a, &seen_binds, src)) {
        errs.push(e);
    }
    let announce = crate::announce::config::validate(raw, src, &mut errs);
    if errs.is_empty() {
        Ok(Config {
            admin,
            admin_token: raw.admin.as_ref().and_then(|a| a.token.clone()),
            nameservers,
            grace_period: d.grace_period.unwrap_or(DEFAULT_GRACE),
            stop_delay: d.stop_delay.unwrap_or(DEFAULT_STOP_DELAY),
            frontends,
            backends,
            announce,
        })
    } else {
        errs.sort_by_key(|e| e.line.unwrap_or(0));
        Err(ConfigErrors(errs))
    }
}

/// The admin listener on an address a frontend binds (the same port on the same or a
/// wildcard address) could never start: said at validation, not at start.
fn admin_bind_conflict(
    admin: SocketAddr,
    binds: &[(SocketAddr, &str)],
    src: &Source,
) -> Option<ConfigError> {
    let overlaps = |b: &SocketAddr| {
        b.port() == admin.port()
            && admin.port() != 0
            && (b.ip() == admin.ip() || b.ip().is_unspecified() || admin.ip().is_unspecified())
    };
    let (bind, frontend) = binds.iter().find(|(b, _)| overlaps(b))?;
    Some(src.error(
        &["admin".into(), "listen".into()],
        format!(
            "admin listen {admin} overlaps bind {bind} of frontend \"{frontend}\"; give the admin another port"
        ),
    ))
}

pub(super) fn check_range(
    errs: &mut Vec<ConfigError>,
    src: &Source,
    path: &[Seg],
    v: Option<i64>,
    lo: i64,
    hi: i64,
) {
    if let Some(v) = v
        && !(lo..=hi).contains(&v)
    {
        let key = match path.last() {
            Some(Seg::Key(k)) => k.as_str(),
            _ => "value",
        };
        errs.push(src.error(path, format!("{key} is {v}; {key} must be {lo}..={hi}")));
    }
}

fn check_nonzero(errs: &mut Vec<ConfigError>, src: &Source, path: &[Seg], v: Option<Duration>) {
    if v == Some(Duration::ZERO) {
        errs.push(src.error(
            path,
            "a duration of 0 is not allowed; give e.g. \"500ms\" or \"2s\"",
        ));
    }
}

fn check_name(errs: &mut Vec<ConfigError>, src: &Source, path: &[Seg], name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        errs.push(src.error(
            path,
            format!("name \"{name}\" must be 1 to 64 characters of A-Z a-z 0-9 - _ ."),
        ));
    }
}

/// The defined backends' names, for error messages.
fn known_backends(raw: &RawConfig) -> String {
    let known: Vec<&str> = raw.backend.iter().map(|b| b.name.as_str()).collect();
    if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    }
}

/// A DNS host name: dot-separated labels of letters, digits, `-` and `_`.
pub(super) fn valid_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Parses `ip:port`, `[v6]:port` or `host:port`.
pub fn parse_server_address(s: &str) -> Result<ServerAddress, &'static str> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err("has port 0; the port must be 1..=65535");
        }
        return Ok(ServerAddress::Ip(a));
    }
    if looks_like_ipv4(s) {
        return Err(
            "is not a valid IPv4 address and port (each of the four numbers must be 0..=255)",
        );
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("has no port; write ip:port or host:port");
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err("has a port that is not 1..=65535"),
    };
    if !valid_hostname(host) {
        return Err("is neither an ip:port nor a valid host:port");
    }
    Ok(ServerAddress::Host(host.to_string(), port))
}

/// A host whose last label is all digits is meant as an IPv4 address (as URL parsers
/// decide), never a DNS name: `999.1.1.1:80` is a typo to report, not a name to resolve.
fn looks_like_ipv4(s: &str) -> bool {
    let host = s.rsplit_once(':').map_or(s, |(h, _)| h);
    host.rsplit('.')
        .next()
        .is_some_and(|last| !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}
