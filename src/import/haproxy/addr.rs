//! Bind and server addresses, and SNI matches, as HAProxy writes them.

use std::net::{IpAddr, SocketAddr};

pub(super) const BIND_ARG_KEYWORDS: &[&str] = &[
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
pub(super) fn sni_term(t: &[String]) -> Result<(Vec<String>, Vec<String>), &'static str> {
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
pub(super) fn bind_addrs(a: &str) -> Result<Vec<SocketAddr>, String> {
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
pub(super) fn server_addr(a: &str) -> Result<(String, Option<u16>), String> {
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
