//! What a `mode = "dr"` frontend may and may not say, checked with the rest of the
//! configuration so `--check` and reload refuse it with the file, the line and the key.
//!
//! The kernel forwards frames unchanged to a server on the same link, so everything that
//! needs the bytes of the stream (PROXY headers, SNI) or a second connection (retries) is
//! out, and the server must listen on the VIP's port.

use std::time::Duration;

use tether_health::config::{ConfigError, Seg, Source};

use crate::config::{DrConfig, Mode, RawConfig, RawFrontend, ServerAddress};

/// IPVS's timeout for an established TCP connection: a flow idle longer than this is
/// forgotten, and keeps its server anyway unless the servers changed meanwhile.
pub const DEFAULT_FLOW_TIMEOUT: Duration = Duration::from_secs(900);

/// Checks frontend `fi`; returns its dr settings when it is a valid dr frontend.
pub fn frontend(
    f: &RawFrontend,
    fi: usize,
    raw: &RawConfig,
    src: &Source,
    errs: &mut Vec<ConfigError>,
) -> Option<DrConfig> {
    let at = |key: &str| vec![Seg::from("frontend"), fi.into(), key.into()];
    let name = &f.name;
    if f.mode == Mode::Proxy {
        for (key, set) in [
            ("interface", f.interface.is_some()),
            ("flow_timeout", f.flow_timeout.is_some()),
        ] {
            if set {
                errs.push(src.error(
                    &at(key),
                    format!("frontend \"{name}\": {key} applies only to mode = \"dr\""),
                ));
            }
        }
        return None;
    }
    let before = errs.len();
    let mut refuse = |key: &str, why: &str| {
        errs.push(src.error(
            &at(key),
            format!("frontend \"{name}\": mode = \"dr\" {why}"),
        ));
    };
    if f.accept_proxy {
        refuse(
            "accept_proxy",
            "cannot read a PROXY header: the kernel forwards packets without reading the stream (use mode = \"proxy\")",
        );
    }
    if !f.route.is_empty() {
        refuse(
            "route",
            "cannot route by SNI: the kernel forwards packets without reading the stream (use mode = \"proxy\")",
        );
    }
    if f.inspect_timeout.is_some() {
        refuse(
            "inspect_timeout",
            "reads nothing, so has no inspect_timeout",
        );
    }
    if f.client_timeout.is_some() {
        refuse(
            "client_timeout",
            "does not terminate TCP, so has no client_timeout (see flow_timeout)",
        );
    }
    if f.maxconn.is_some() {
        refuse("maxconn", "does not count connections, so has no maxconn");
    }
    let interface = match &f.interface {
        None => {
            refuse(
                "mode",
                "needs interface = \"<link>\": the link the VIP's packets arrive on and the servers are on",
            );
            None
        }
        Some(i) if !valid_interface(i) => {
            refuse(
                "interface",
                &format!(
                    "has interface \"{i}\", which is not a link name (1 to 15 characters, no '/', ' ' or quotes)"
                ),
            );
            None
        }
        Some(i) => Some(i.clone()),
    };
    if f.flow_timeout == Some(Duration::ZERO) {
        refuse("flow_timeout", "needs a flow_timeout above 0, e.g. \"15m\"");
    }
    let binds: Vec<std::net::SocketAddr> = f.bind.iter().filter_map(|b| b.parse().ok()).collect();
    for (i, b) in binds.iter().enumerate() {
        let at_bind = vec![Seg::from("frontend"), fi.into(), "bind".into(), i.into()];
        if b.ip().is_unspecified() || b.port() == 0 {
            errs.push(src.error(
                &at_bind,
                format!("frontend \"{name}\": mode = \"dr\" binds a VIP and a port, not {b}: the kernel matches packets by destination address and port"),
            ));
        }
        if b.is_ipv6() != binds[0].is_ipv6() || b.port() != binds[0].port() {
            errs.push(src.error(
                &at_bind,
                format!("frontend \"{name}\": mode = \"dr\" binds must share one address family and one port ({b} and {}); write a frontend per family", binds[0]),
            ));
        }
    }
    if let Some((bi, b)) = raw
        .backend
        .iter()
        .enumerate()
        .find(|(_, b)| b.name == f.backend)
    {
        if b.send_proxy.is_some() {
            errs.push(src.error(
                &[Seg::from("backend"), bi.into(), "send_proxy".into()],
                format!("backend \"{}\" is used by mode = \"dr\" frontend \"{name}\", which cannot send a PROXY header: the server sees the client's own packets", b.name),
            ));
        }
        if let Some(first) = binds.first() {
            for (si, s) in b.server.iter().enumerate() {
                let at_server = [
                    Seg::from("backend"),
                    bi.into(),
                    "server".into(),
                    si.into(),
                    "address".into(),
                ];
                match crate::config::parse_server_address(&s.address) {
                    Ok(ServerAddress::Ip(a)) => {
                        if a.port() != first.port() {
                            errs.push(src.error(&at_server, format!("backend \"{}\": server \"{}\" listens on port {}, but mode = \"dr\" frontend \"{name}\" forwards packets for port {} unchanged: the ports must be the same", b.name, s.name, a.port(), first.port())));
                        }
                        if a.is_ipv6() != first.is_ipv6() {
                            errs.push(src.error(&at_server, format!("backend \"{}\": server \"{}\" is {}, but mode = \"dr\" frontend \"{name}\" binds {first}: one address family per dr frontend", b.name, s.name, a.ip())));
                        }
                    }
                    Ok(ServerAddress::Host(_, port)) => {
                        if port != first.port() {
                            errs.push(src.error(&at_server, format!("backend \"{}\": server \"{}\" listens on port {port}, but mode = \"dr\" frontend \"{name}\" forwards packets for port {} unchanged: the ports must be the same", b.name, s.name, first.port())));
                        }
                    }
                    // Reported with the backend.
                    Err(_) => {}
                }
            }
        }
    }
    if errs.len() > before {
        return None;
    }
    Some(DrConfig {
        interface: interface?,
        flow_timeout: f.flow_timeout.unwrap_or(DEFAULT_FLOW_TIMEOUT),
    })
}

/// A Linux link name: what `ip link` accepts.
fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '"' | '\'' | ':'))
}
