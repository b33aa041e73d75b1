//! `[backend.health]`: how a backend's servers are checked. The table is tether-health's
//! shared schema ([`tether_health::config::check`]) with the lb's own keys: the port to
//! check, the HTTP path and host, the TLS CA and the PROXY header.

use std::time::Duration;

use serde::de::MapAccess;
use tether_health::config::check::{self, Defaults, Kind, OwnKeys, RawCheck};
use tether_health::config::{ConfigError, Seg, Source};

use super::validate::check_range;
use super::{ProxyVersion, RawBackend};

/// The kinds of health check the lb runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealthKind {
    /// A TCP connect.
    #[default]
    Tcp,
    /// An HTTP GET with an expected status.
    Http,
    /// A TLS handshake with certificate verification.
    Tls,
    /// No checks: servers are always up.
    None,
}

/// `[backend.health]` as written: the shared keys, and [`LbCheckKeys`].
pub type RawHealth = RawCheck<LbCheckKeys>;

/// The keys only `[backend.health]` has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbCheckKeys {
    /// Check this port instead of the traffic port.
    pub port: Option<i64>,
    /// HTTP path.
    pub path: Option<String>,
    /// HTTP `Host` header, or the TLS server name.
    pub host: Option<String>,
    /// PEM file of CA certificates for TLS checks (default: the Mozilla roots).
    pub ca: Option<String>,
    /// Send the backend's PROXY header on TCP and HTTP checks (default: when the backend
    /// sends one).
    pub send_proxy: Option<bool>,
}

impl OwnKeys for LbCheckKeys {
    const KEYS: &'static [&'static str] = &["port", "path", "host", "ca", "send_proxy"];

    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: &'static str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match key {
            "port" => self.port = Some(map.next_value()?),
            "path" => self.path = Some(map.next_value()?),
            "host" => self.host = Some(map.next_value()?),
            "ca" => self.ca = Some(map.next_value()?),
            _ => self.send_proxy = Some(map.next_value()?),
        }
        Ok(())
    }

    fn kind_bound(&self) -> Vec<(&'static str, &'static [Kind])> {
        let mut bound: Vec<(&'static str, &'static [Kind])> = Vec::new();
        if self.path.is_some() {
            bound.push(("path", &[Kind::Http]));
        }
        if self.ca.is_some() {
            bound.push(("ca", &[Kind::Tls]));
        }
        bound
    }
}

/// Validated health-check settings.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// What to check.
    pub kind: HealthKind,
    /// Time between checks.
    pub interval: Duration,
    /// Time between checks while a rise or fall is under way.
    pub fast_interval: Duration,
    /// Time between checks while the server is down.
    pub down_interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Consecutive successes to go up.
    pub rise: u32,
    /// Consecutive failures to go down.
    pub fall: u32,
    /// The port to check instead of the traffic port.
    pub port: Option<u16>,
    /// HTTP path.
    pub path: String,
    /// HTTP status expected.
    pub expect_status: u16,
    /// HTTP host or TLS server name.
    pub host: Option<String>,
    /// CA file for TLS checks.
    pub ca: Option<String>,
    /// PROXY header sent on checks.
    pub send_proxy: Option<ProxyVersion>,
}

/// The lb's defaults: TCP every 2 s, rise 2, fall 3. Checks while a rise or fall is under
/// way come at most 250 ms apart, so a server's change is confirmed within a second, not
/// `rise` full intervals; a down server is checked at most 500 ms apart, so one that
/// comes back takes new connections within about a second.
const DEFAULTS: Defaults = Defaults {
    kinds: &[Kind::Tcp, Kind::Http, Kind::Tls, Kind::None],
    interval: Duration::from_secs(2),
    fast_interval: |interval| interval.min(Duration::from_millis(250)),
    down_interval: |interval| interval.min(Duration::from_millis(500)),
    timeout: |interval| interval.min(Duration::from_secs(2)),
    rise: 2,
    fall: 3,
};

pub(super) fn validate_health(
    b: &RawBackend,
    bi: usize,
    src: &Source,
    errs: &mut Vec<ConfigError>,
) -> Option<HealthConfig> {
    let table = [Seg::from("backend"), bi.into(), "health".into()];
    let at = |key: &str| [&table[..], &[key.into()]].concat();
    let default = RawHealth::default();
    let h = b.health.as_ref().unwrap_or(&default);
    let own = &h.own;
    let shared = check::validate(h, &DEFAULTS);
    check_range(errs, src, &at("port"), own.port, 1, 65535);
    if let Some(p) = &own.path
        && !p.starts_with('/')
    {
        errs.push(src.error(
            &at("path"),
            format!("backend \"{}\": path \"{p}\" must start with /", b.name),
        ));
    }
    if own.send_proxy == Some(true) && b.send_proxy.is_none() {
        errs.push(src.error(
            &at("send_proxy"),
            format!(
                "backend \"{}\": health send_proxy needs send_proxy = \"v1\" or \"v2\" on the backend",
                b.name
            ),
        ));
    }
    let c = match shared {
        Ok(c) => c,
        Err(e) => {
            errs.extend(check::located(src, &table, e));
            return None;
        }
    };
    let kind = match c.kind {
        Kind::Http => HealthKind::Http,
        Kind::Tls => HealthKind::Tls,
        Kind::None => return None,
        // DEFAULTS.kinds admits no other kind.
        _ => HealthKind::Tcp,
    };
    if kind == HealthKind::Tls
        && let Some((key, why)) =
            crate::health::tls_check_problem(own.ca.as_deref(), own.host.as_deref())
    {
        errs.push(src.error(&at(key), format!("backend \"{}\": {why}", b.name)));
    }
    Some(HealthConfig {
        kind,
        interval: c.interval,
        fast_interval: c.fast_interval,
        down_interval: c.down_interval,
        timeout: c.timeout,
        rise: c.rise,
        fall: c.fall,
        port: own.port.map(|p| p as u16),
        path: own.path.clone().unwrap_or_else(|| "/".into()),
        expect_status: c.expect_status,
        host: own.host.clone(),
        ca: own.ca.clone(),
        send_proxy: match own.send_proxy {
            Some(false) => None,
            Some(true) | None => b.send_proxy,
        },
    })
}
