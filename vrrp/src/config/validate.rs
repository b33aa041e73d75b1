//! From the file as written to a [`Config`]: every key checked, every error collected
//! with file, line, key and what is allowed.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use tether_health::config::{ConfigError, ConfigErrors, Seg, Source};

use super::track::validate_track;
use super::*;
use crate::packet::{Auth, Version};

fn key(parts: &[Seg]) -> Vec<Seg> {
    parts.to_vec()
}

/// Validates a parsed file; collects every error rather than stopping at the first.
pub fn validate(src: &Source, raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut errs: Vec<ConfigError> = Vec::new();
    let admin = match &raw.admin {
        Some(a) => match a.listen.parse::<SocketAddr>() {
            Ok(s) => Some(s),
            Err(_) => {
                errs.push(src.error(
                    &key(&["admin".into(), "listen".into()]),
                    format!(
                        "\"{}\" is not an address; expected IP:PORT such as \"127.0.0.1:9091\"",
                        a.listen
                    ),
                ));
                None
            }
        },
        None => None,
    };
    if raw.instance.is_empty() {
        errs.push(src.error(
            &["instance".into()],
            "no [[instance]]; at least one is required",
        ));
    }
    let mut instances = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut ids: HashSet<(String, u8, bool)> = HashSet::new();
    let mut vip_owner: HashMap<IpAddr, usize> = HashMap::new();
    for (i, ri) in raw.instance.iter().enumerate() {
        let at = |k: &str| vec![Seg::from("instance"), Seg::from(i), Seg::from(k)];
        let before = errs.len();
        if ri.name.is_empty() {
            errs.push(src.error(&at("name"), "empty; give the instance a name"));
        } else if let Some(&first) = names.get(&ri.name) {
            errs.push(src.error(
                &at("name"),
                format!(
                    "\"{}\" is already the name of {}; names must be unique \
                     (sync groups, logs and metrics tell instances apart by name)",
                    ri.name,
                    where_is(src, first, "name"),
                ),
            ));
        } else {
            names.insert(ri.name.clone(), i);
        }
        if ri.interface.is_empty() || ri.interface.len() > 15 {
            errs.push(src.error(
                &at("interface"),
                "must be an interface name of 1..=15 characters",
            ));
        }
        let vrid = match u8::try_from(ri.vrid) {
            Ok(v) if v >= 1 => v,
            _ => {
                errs.push(src.error(
                    &at("vrid"),
                    format!("{} is out of range; vrid must be 1..=255", ri.vrid),
                ));
                1
            }
        };
        let priority = match u8::try_from(ri.priority) {
            Ok(p) if p >= 1 => p,
            _ => {
                errs.push(src.error(
                    &at("priority"),
                    format!("{} is out of range; priority must be 1..=255 (255 = address owner; 0 is reserved for shutdown)", ri.priority),
                ));
                100
            }
        };
        let version = match ri.version {
            2 => Version::V2,
            3 => Version::V3,
            v => {
                errs.push(src.error(
                    &at("version"),
                    format!("{v} is not supported; version must be 2 or 3"),
                ));
                Version::V3
            }
        };
        let iv = ri.advert_interval;
        match version {
            Version::V2 => {
                if iv.subsec_nanos() != 0 || iv.as_secs() < 1 || iv.as_secs() > 255 {
                    errs.push(src.error(
                        &at("advert_interval"),
                        format!("{} is not allowed with version 2; v2 intervals are whole seconds 1s..=255s (use version = 3 for sub-second adverts)", humantime::format_duration(iv)),
                    ));
                }
            }
            Version::V3 => {
                let ms = iv.as_millis();
                if iv.as_nanos() % 10_000_000 != 0 || !(10..=40_950).contains(&ms) {
                    errs.push(src.error(
                        &at("advert_interval"),
                        format!(
                            "{} is not allowed; v3 intervals are 10ms..=40.95s in steps of 10ms",
                            humantime::format_duration(iv)
                        ),
                    ));
                }
            }
        }
        let mut vips = Vec::new();
        for (k, s) in ri.virtual_addresses.iter().enumerate() {
            match parse_vip(s) {
                Ok(v) => vips.push(v),
                Err(m) => errs.push(src.error(
                    &[
                        Seg::from("instance"),
                        i.into(),
                        "virtual_addresses".into(),
                        k.into(),
                    ],
                    m,
                )),
            }
        }
        if ri.virtual_addresses.is_empty() {
            errs.push(src.error(
                &at("virtual_addresses"),
                "empty; at least one virtual address is required",
            ));
        }
        let v6 = vips.first().is_some_and(|v| v.addr.is_ipv6());
        if vips.iter().any(|v| v.addr.is_ipv6() != v6) {
            errs.push(src.error(
                &at("virtual_addresses"),
                "mixes IPv4 and IPv6; one instance carries one family (use two instances)",
            ));
        }
        let max = if v6 { 85 } else { 255 };
        if vips.len() > max {
            errs.push(src.error(
                &at("virtual_addresses"),
                format!("{} addresses; at most {max} fit in one advert", vips.len()),
            ));
        }
        let mut seen = HashSet::new();
        for (k, v) in vips.iter().enumerate() {
            if !seen.insert(v.addr) {
                errs.push(src.error(
                    &at("virtual_addresses"),
                    format!("{} is listed twice", v.addr),
                ));
            } else if let Some(&other) = vip_owner.get(&v.addr) {
                // Two instances would each add and remove the address on their own
                // transitions: one instance's FAULT takes it from the other's MASTER.
                errs.push(src.error(
                    &[
                        Seg::from("instance"),
                        i.into(),
                        "virtual_addresses".into(),
                        k.into(),
                    ],
                    format!(
                        "{} is already a virtual address of \"{}\", {}; \
                         an address can belong to one instance only",
                        v.addr,
                        raw.instance[other].name,
                        where_is(src, other, "virtual_addresses"),
                    ),
                ));
            } else {
                vip_owner.insert(v.addr, i);
            }
        }
        if v6 && version == Version::V2 {
            errs.push(src.error(
                &at("version"),
                "VRRPv2 is IPv4 only; IPv6 instances need version = 3",
            ));
        }
        let mut peers = Vec::new();
        for (k, s) in ri.unicast_peers.iter().enumerate() {
            match s.parse::<IpAddr>() {
                Ok(a) if a.is_ipv6() == v6 && !is_multicast(a) => peers.push(a),
                _ => errs.push(src.error(
                    &[
                        Seg::from("instance"),
                        i.into(),
                        "unicast_peers".into(),
                        k.into(),
                    ],
                    format!(
                        "\"{s}\" must be a unicast {} address like the virtual addresses",
                        if v6 { "IPv6" } else { "IPv4" }
                    ),
                )),
            }
        }
        let unicast_src = match &ri.unicast_src {
            None => None,
            Some(s) => match s.parse::<IpAddr>() {
                Ok(a) if a.is_ipv6() == v6 => Some(a),
                _ => {
                    errs.push(src.error(
                        &at("unicast_src"),
                        format!("\"{s}\" must be an address of the instance's family"),
                    ));
                    None
                }
            },
        };
        if unicast_src.is_some() && peers.is_empty() {
            errs.push(src.error(
                &at("unicast_src"),
                "set without unicast_peers; it only applies to unicast",
            ));
        }
        let auth = match &ri.auth_pass {
            None => Auth::None,
            Some(p) => {
                if version != Version::V2 {
                    errs.push(src.error(
                        &at("auth_pass"),
                        "authentication exists only in VRRPv2 (version = 2)",
                    ));
                }
                if p.is_empty() || p.len() > 8 {
                    errs.push(
                        src.error(&at("auth_pass"), "must be 1..=8 bytes (keepalived's PASS)"),
                    );
                }
                Auth::pass(p)
            }
        };
        let notify = ri
            .notify
            .as_ref()
            .map(|n| n.split_whitespace().map(str::to_string).collect::<Vec<_>>());
        match notify.as_ref().map(|n| n.first()) {
            Some(None) => {
                errs.push(src.error(&at("notify"), "empty; give a command or leave the key out"))
            }
            // Found now rather than at the first transition, when nobody reads the log.
            Some(Some(prog)) => {
                if let Err(m) = executable(prog) {
                    errs.push(src.error(&at("notify"), m));
                }
            }
            None => {}
        }
        if ri.notify_timeout.is_zero() {
            errs.push(src.error(
                &at("notify_timeout"),
                "0s would kill every notify command at once; give a duration such as \"10s\"",
            ));
        }
        let garp_repeat = match u32::try_from(ri.garp_repeat) {
            Ok(g) if g <= 100 => g,
            _ => {
                errs.push(src.error(
                    &at("garp_repeat"),
                    format!("{} is out of range; 0..=100", ri.garp_repeat),
                ));
                5
            }
        };
        let mut tracks = Vec::new();
        for (k, t) in ri.track.iter().enumerate() {
            let at = [Seg::from("instance"), i.into(), "track".into(), k.into()];
            if let Some(tc) = validate_track(t, src, &at, &mut errs) {
                tracks.push(tc);
            }
        }
        if !ids.insert((ri.interface.clone(), vrid, v6)) {
            errs.push(src.error(
                &at("vrid"),
                format!(
                    "vrid {vrid} is already used on {} for this address family",
                    ri.interface
                ),
            ));
        }
        if errs.len() == before {
            instances.push(InstanceConfig {
                name: ri.name.clone(),
                interface: ri.interface.clone(),
                vrid,
                priority,
                version,
                advert_interval: iv,
                preempt: ri.preempt,
                preempt_delay: ri.preempt_delay,
                vips,
                unicast_peers: peers,
                unicast_src,
                checksum: ri.v3_checksum,
                auth,
                notify,
                notify_timeout: ri.notify_timeout,
                garp_repeat,
                garp_delay: ri.garp_delay,
                tracks,
            });
        }
    }
    let mut sync_groups = Vec::new();
    let mut in_group: HashSet<String> = HashSet::new();
    for (g, rg) in raw.sync_group.iter().enumerate() {
        let mut members = Vec::new();
        for (k, n) in rg.instances.iter().enumerate() {
            let at = [
                Seg::from("sync_group"),
                g.into(),
                "instances".into(),
                k.into(),
            ];
            match names.get(n) {
                Some(&idx) => {
                    if !in_group.insert(n.clone()) {
                        errs.push(
                            src.error(&at, format!("instance \"{n}\" is already in a sync group")),
                        );
                    }
                    members.push(idx);
                }
                None => errs.push(src.error(&at, format!("no instance named \"{n}\""))),
            }
        }
        sync_groups.push(SyncGroup {
            name: rg.name.clone(),
            members,
        });
    }
    if errs.is_empty() {
        Ok(Config {
            admin,
            instances,
            sync_groups,
        })
    } else {
        Err(ConfigErrors(errs))
    }
}

/// Where another instance's key is, for errors that involve two instances:
/// `instance[0] (line 7)`.
fn where_is(src: &Source, instance: usize, key: &str) -> String {
    let path = [Seg::from("instance"), instance.into(), key.into()];
    match src.locate(&path) {
        Some(line) => format!("instance[{instance}] (line {line})"),
        None => format!("instance[{instance}]"),
    }
}

/// Whether `prog` names a program that can be run: a path to an executable file, or a
/// bare name found in `PATH` (as the notify command is spawned).
fn executable(prog: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.contains('/') {
        let p = Path::new(prog);
        return match std::fs::metadata(p) {
            Err(e) => Err(format!("\"{prog}\" cannot be run: {e}")),
            Ok(_) if !runnable(p) => Err(format!(
                "\"{prog}\" is not an executable file (chmod +x, or give the interpreter first)"
            )),
            Ok(_) => Ok(()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| runnable(&d.join(prog))) {
        Ok(())
    } else {
        Err(format!(
            "\"{prog}\" is not found in PATH; give the full path of the command"
        ))
    }
}

fn is_multicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast() || a.is_unspecified(),
        IpAddr::V6(a) => a.is_multicast() || a.is_unspecified(),
    }
}

/// Parses `ADDR[/PREFIX]`; the default prefix is the host prefix (keepalived's default).
pub fn parse_vip(s: &str) -> Result<Vip, String> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().map_err(|_| {
        format!(
            "\"{s}\" is not an address; expected e.g. \"192.0.2.100/24\" or \"2001:db8::100/64\""
        )
    })?;
    if is_multicast(addr) || addr.is_loopback() {
        return Err(format!(
            "\"{s}\" cannot be a virtual address (multicast, broadcast, loopback or unspecified)"
        ));
    }
    let max = if addr.is_ipv6() { 128 } else { 32 };
    let prefix = match p {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("\"{s}\": prefix length must be 0..={max}")),
        },
    };
    Ok(Vip { addr, prefix })
}
