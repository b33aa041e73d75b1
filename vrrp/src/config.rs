//! `tether vrrp` configuration: TOML that keepalived users recognise, parsed with
//! `deny_unknown_fields` and validated into [`Config`], with every error naming file,
//! line, key and what is allowed.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tether_health::config::{ConfigError, ConfigErrors, Seg, Source};

use crate::packet::{Auth, ChecksumMode, Version};

/// The file as written (serde view); [`validate`] turns it into a [`Config`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Admin HTTP surface.
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    /// VRRP instances.
    #[serde(default)]
    pub instance: Vec<RawInstance>,
    /// Sync groups.
    #[serde(default)]
    pub sync_group: Vec<RawSyncGroup>,
}

/// `[admin]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Listen address of /metrics, /healthz, /readyz, /api/state.
    pub listen: String,
}

/// `[[instance]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstance {
    /// Instance name (keepalived's `vrrp_instance NAME`).
    pub name: String,
    /// Interface the instance runs on.
    pub interface: String,
    /// Virtual router id.
    pub vrid: i64,
    /// Priority.
    #[serde(default = "default_priority")]
    pub priority: i64,
    /// Protocol version.
    #[serde(default = "default_version")]
    pub version: i64,
    /// Advert interval.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub advert_interval: Duration,
    /// Preempt lower-priority masters.
    #[serde(default = "default_true")]
    pub preempt: bool,
    /// Tolerate a lower-priority master this long.
    #[serde(default, with = "humantime_serde")]
    pub preempt_delay: Duration,
    /// VIPs with optional prefix length.
    pub virtual_addresses: Vec<String>,
    /// Unicast peers; empty = multicast.
    #[serde(default)]
    pub unicast_peers: Vec<String>,
    /// Source address for unicast (default: the interface's primary address).
    #[serde(default)]
    pub unicast_src: Option<String>,
    /// v3/IPv4 checksum convention.
    #[serde(default = "default_checksum")]
    pub v3_checksum: ChecksumMode,
    /// v2 PASS authentication.
    #[serde(default)]
    pub auth_pass: Option<String>,
    /// Notify command.
    #[serde(default)]
    pub notify: Option<String>,
    /// Notify command timeout.
    #[serde(default = "default_notify_timeout", with = "humantime_serde")]
    pub notify_timeout: Duration,
    /// GARP/NA packets per burst.
    #[serde(default = "default_garp_repeat")]
    pub garp_repeat: i64,
    /// Delay of the second burst.
    #[serde(default = "default_garp_delay", with = "humantime_serde")]
    pub garp_delay: Duration,
    /// Tracked objects.
    #[serde(default)]
    pub track: Vec<RawTrack>,
}

/// `[[instance.track]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrack {
    /// http | tcp | exec | interface.
    pub kind: String,
    /// http: URL (`http://IP:PORT/path`).
    #[serde(default)]
    pub url: Option<String>,
    /// http: expected status.
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// tcp: address to connect to.
    #[serde(default)]
    pub address: Option<String>,
    /// exec: argv (no shell).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// interface: name.
    #[serde(default)]
    pub interface: Option<String>,
    /// Check interval.
    #[serde(default = "default_track_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Check timeout (default: the interval).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Failures to go down.
    #[serde(default = "default_one")]
    pub fall: u32,
    /// Successes to go up.
    #[serde(default = "default_one")]
    pub rise: u32,
    /// keepalived weight semantics.
    #[serde(default)]
    pub weight: i64,
}

/// `[[sync_group]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyncGroup {
    /// Group name.
    pub name: String,
    /// Member instance names.
    pub instances: Vec<String>,
}

fn default_priority() -> i64 {
    100
}
fn default_version() -> i64 {
    3
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_true() -> bool {
    true
}
fn default_checksum() -> ChecksumMode {
    ChecksumMode::PseudoHeader
}
fn default_notify_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_garp_repeat() -> i64 {
    5
}
fn default_garp_delay() -> Duration {
    Duration::from_secs(5)
}
fn default_track_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_one() -> u32 {
    1
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Admin listen address, if any.
    pub admin: Option<SocketAddr>,
    /// Instances.
    pub instances: Vec<InstanceConfig>,
    /// Sync groups: each a list of indexes into `instances`.
    pub sync_groups: Vec<SyncGroup>,
}

/// One sync group.
#[derive(Debug, Clone)]
pub struct SyncGroup {
    /// Name (for notify and logs).
    pub name: String,
    /// Indexes into [`Config::instances`].
    pub members: Vec<usize>,
}

/// A VIP with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vip {
    /// Address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

/// One validated instance.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// Name.
    pub name: String,
    /// Interface.
    pub interface: String,
    /// VRID 1..=255.
    pub vrid: u8,
    /// Priority 1..=255.
    pub priority: u8,
    /// Version.
    pub version: Version,
    /// Interval (whole seconds for v2, 10 ms steps for v3).
    pub advert_interval: Duration,
    /// Preempt.
    pub preempt: bool,
    /// Preempt delay.
    pub preempt_delay: Duration,
    /// VIPs, one family.
    pub vips: Vec<Vip>,
    /// Unicast peers (empty = multicast).
    pub unicast_peers: Vec<IpAddr>,
    /// Unicast source override.
    pub unicast_src: Option<IpAddr>,
    /// v3/IPv4 checksum convention to send.
    pub checksum: ChecksumMode,
    /// v2 auth.
    pub auth: Auth,
    /// Notify command (run through `/bin/sh -c`? no: split on whitespace, keepalived style).
    pub notify: Option<Vec<String>>,
    /// Notify timeout.
    pub notify_timeout: Duration,
    /// GARP packets per burst.
    pub garp_repeat: u32,
    /// Second burst delay.
    pub garp_delay: Duration,
    /// Tracked objects.
    pub tracks: Vec<TrackConfig>,
}

impl InstanceConfig {
    /// Whether the instance is IPv6.
    pub fn is_v6(&self) -> bool {
        self.vips.first().is_some_and(|v| v.addr.is_ipv6())
    }

    /// The interval field as it goes on the wire (seconds for v2, centiseconds for v3).
    pub fn interval_field(&self) -> u16 {
        let f = match self.version {
            Version::V2 => self.advert_interval.as_secs(),
            Version::V3 => u64::try_from(self.advert_interval.as_millis() / 10).unwrap_or(4095),
        };
        u16::try_from(f).unwrap_or(u16::MAX)
    }
}

/// What a track checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackKind {
    /// HTTP GET expecting a status.
    Http {
        /// Target.
        addr: SocketAddr,
        /// Path.
        path: String,
        /// Host header.
        host: String,
        /// Expected status.
        expect_status: u16,
    },
    /// TCP connect.
    Tcp {
        /// Target.
        addr: SocketAddr,
    },
    /// Command exit status.
    Exec {
        /// argv.
        argv: Vec<String>,
    },
    /// Interface operational state.
    Interface {
        /// Interface name.
        name: String,
    },
}

/// One validated track.
#[derive(Debug, Clone)]
pub struct TrackConfig {
    /// What to check.
    pub kind: TrackKind,
    /// Interval.
    pub interval: Duration,
    /// Timeout.
    pub timeout: Duration,
    /// Fall.
    pub fall: u32,
    /// Rise.
    pub rise: u32,
    /// Weight, -253..=253.
    pub weight: i32,
}

/// Reads and validates a file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let src = Source::read(path)?;
    parse(&src)
}

/// Parses and validates text already read.
pub fn parse(src: &Source) -> Result<Config, ConfigErrors> {
    let raw: RawConfig = src.parse()?;
    validate(src, raw)
}

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
            let tk = |f: &str| {
                vec![
                    Seg::from("instance"),
                    i.into(),
                    "track".into(),
                    k.into(),
                    f.into(),
                ]
            };
            match validate_track(t) {
                Ok(tc) => tracks.push(tc),
                Err((f, m)) => errs.push(src.error(&tk(f), m)),
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

fn validate_track(t: &RawTrack) -> Result<TrackConfig, (&'static str, String)> {
    let weight = match i32::try_from(t.weight) {
        Ok(w) if (-253..=253).contains(&w) => w,
        _ => {
            return Err((
                "weight",
                format!(
                    "{} is out of range; weight must be -253..=253 (0 = FAULT while failing)",
                    t.weight
                ),
            ));
        }
    };
    if t.fall == 0 {
        return Err((
            "fall",
            "0 is not allowed; fall is the number of failed checks before the track is down (1 or more)".into(),
        ));
    }
    if t.rise == 0 {
        return Err((
            "rise",
            "0 is not allowed; rise is the number of passed checks before the track is up (1 or more)".into(),
        ));
    }
    if t.interval < Duration::from_millis(10) {
        return Err(("interval", "must be at least 10ms".into()));
    }
    let only = |allowed: &[&str]| -> Result<(), (&'static str, String)> {
        let present = [
            ("url", t.url.is_some()),
            ("expect_status", t.expect_status.is_some()),
            ("address", t.address.is_some()),
            ("command", t.command.is_some()),
            ("interface", t.interface.is_some()),
        ];
        for (name, there) in present {
            if there && !allowed.contains(&name) {
                return Err((
                    "kind",
                    format!(
                        "\"{}\" tracks do not take `{name}`; they take {}",
                        t.kind,
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    };
    let kind = match t.kind.as_str() {
        "http" => {
            only(&["url", "expect_status"])?;
            let url = t.url.as_deref().ok_or((
                "url",
                "http tracks need url = \"http://IP:PORT/path\"".to_string(),
            ))?;
            let (addr, path, host) = parse_http_url(url).map_err(|m| ("url", m))?;
            TrackKind::Http {
                addr,
                path,
                host,
                expect_status: t.expect_status.unwrap_or(200),
            }
        }
        "tcp" => {
            only(&["address"])?;
            let a = t.address.as_deref().ok_or((
                "address",
                "tcp tracks need address = \"IP:PORT\"".to_string(),
            ))?;
            let addr = a
                .parse()
                .map_err(|_| ("address", format!("\"{a}\" is not IP:PORT")))?;
            TrackKind::Tcp { addr }
        }
        "exec" => {
            only(&["command"])?;
            let argv = t.command.clone().unwrap_or_default();
            if argv.is_empty() || argv[0].is_empty() {
                return Err((
                    "command",
                    "exec tracks need command = [\"/path/prog\", \"arg\"...]".into(),
                ));
            }
            TrackKind::Exec { argv }
        }
        "interface" => {
            only(&["interface"])?;
            let name = t.interface.clone().unwrap_or_default();
            if name.is_empty() || name.len() > 15 {
                return Err((
                    "interface",
                    "interface tracks need interface = \"NAME\" (1..=15 characters)".into(),
                ));
            }
            TrackKind::Interface { name }
        }
        other => {
            return Err((
                "kind",
                format!("\"{other}\" is unknown; kind must be http, tcp, exec or interface"),
            ));
        }
    };
    Ok(TrackConfig {
        kind,
        interval: t.interval,
        timeout: t.timeout.unwrap_or(t.interval),
        fall: t.fall,
        rise: t.rise,
        weight,
    })
}

/// Splits `http://IP:PORT/path` (no DNS: a tracker must not hang on a resolver).
fn parse_http_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("\"{url}\" must start with http:// (built-in checks speak plain HTTP)")
    })?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr: SocketAddr = hostport
        .parse()
        .or_else(|_| format!("{hostport}:80").parse())
        .map_err(|_| format!("\"{url}\": host must be an IP address with an optional port, e.g. http://127.0.0.1:9090/readyz"))?;
    Ok((addr, path, hostport.to_string()))
}

#[cfg(test)]
mod tests;
