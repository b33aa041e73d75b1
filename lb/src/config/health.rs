//! `[backend.health]`: how a backend's servers are checked, as written and validated.

use std::time::Duration;

use serde::Deserialize;
use tether_health::config::{ConfigError, Seg, Source};

use super::{ProxyVersion, RawBackend, check_nonzero, check_range};

/// The kinds of health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
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

/// `[backend.health]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// What to check.
    #[serde(default)]
    pub kind: HealthKind,
    /// Time between checks.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Time between checks while a rise or fall is under way (HAProxy's `fastinter`).
    #[serde(default, with = "humantime_serde")]
    pub fast_interval: Option<Duration>,
    /// Time between checks while the server is down (HAProxy's `downinter`).
    #[serde(default, with = "humantime_serde")]
    pub down_interval: Option<Duration>,
    /// Time one check may take.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Consecutive successes to go up.
    pub rise: Option<i64>,
    /// Consecutive failures to go down.
    pub fall: Option<i64>,
    /// Check this port instead of the traffic port.
    pub port: Option<i64>,
    /// HTTP path.
    pub path: Option<String>,
    /// HTTP status that counts as healthy.
    pub expect_status: Option<i64>,
    /// HTTP `Host` header, or the TLS server name.
    pub host: Option<String>,
    /// PEM file of CA certificates for TLS checks (default: the Mozilla roots).
    pub ca: Option<String>,
    /// Send the backend's PROXY header on TCP and HTTP checks (default: when the backend
    /// sends one).
    pub send_proxy: Option<bool>,
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

/// Checks while a rise or fall is under way come at most this far apart unless
/// `fast_interval` says otherwise: a server's change is confirmed within a second, not
/// `rise` full intervals.
const DEFAULT_FAST_INTERVAL: Duration = Duration::from_millis(250);

/// A down server is checked at most this far apart unless `down_interval` says otherwise,
/// so one that comes back takes new connections within about a second.
const DEFAULT_DOWN_INTERVAL: Duration = Duration::from_millis(500);

pub(super) fn validate_health(
    b: &RawBackend,
    bi: usize,
    src: &Source,
    errs: &mut Vec<ConfigError>,
) -> Option<HealthConfig> {
    let at = |key: &str| vec![Seg::from("backend"), bi.into(), "health".into(), key.into()];
    let default = RawHealth {
        kind: HealthKind::Tcp,
        interval: None,
        fast_interval: None,
        down_interval: None,
        timeout: None,
        rise: None,
        fall: None,
        port: None,
        path: None,
        expect_status: None,
        host: None,
        ca: None,
        send_proxy: None,
    };
    let h = b.health.as_ref().unwrap_or(&default);
    check_range(errs, src, &at("rise"), h.rise, 1, 1000);
    check_range(errs, src, &at("fall"), h.fall, 1, 1000);
    check_range(errs, src, &at("port"), h.port, 1, 65535);
    check_range(errs, src, &at("expect_status"), h.expect_status, 100, 599);
    check_nonzero(errs, src, &at("interval"), h.interval);
    check_nonzero(errs, src, &at("fast_interval"), h.fast_interval);
    check_nonzero(errs, src, &at("down_interval"), h.down_interval);
    check_nonzero(errs, src, &at("timeout"), h.timeout);
    if h.kind != HealthKind::Http {
        for (key, set) in [
            ("path", h.path.is_some()),
            ("expect_status", h.expect_status.is_some()),
        ] {
            if set {
                errs.push(src.error(
                    &at(key),
                    format!(
                        "backend \"{}\": {key} applies only to kind = \"http\"",
                        b.name
                    ),
                ));
            }
        }
    }
    if h.send_proxy == Some(true) && b.send_proxy.is_none() {
        errs.push(src.error(
            &at("send_proxy"),
            format!(
                "backend \"{}\": health send_proxy needs send_proxy = \"v1\" or \"v2\" on the backend",
                b.name
            ),
        ));
    }
    if h.kind != HealthKind::Tls && h.ca.is_some() {
        errs.push(src.error(
            &at("ca"),
            format!("backend \"{}\": ca applies only to kind = \"tls\"", b.name),
        ));
    }
    if h.kind == HealthKind::Tls
        && let Some((key, why)) =
            crate::health::tls_check_problem(h.ca.as_deref(), h.host.as_deref())
    {
        errs.push(src.error(&at(key), format!("backend \"{}\": {why}", b.name)));
    }
    if let Some(p) = &h.path
        && !p.starts_with('/')
    {
        errs.push(src.error(
            &at("path"),
            format!("backend \"{}\": path \"{p}\" must start with /", b.name),
        ));
    }
    if h.kind == HealthKind::None {
        return None;
    }
    let interval = h.interval.unwrap_or(Duration::from_secs(2));
    Some(HealthConfig {
        kind: h.kind,
        interval,
        fast_interval: h
            .fast_interval
            .unwrap_or(interval.min(DEFAULT_FAST_INTERVAL)),
        down_interval: h
            .down_interval
            .unwrap_or(interval.min(DEFAULT_DOWN_INTERVAL)),
        timeout: h.timeout.unwrap_or(interval.min(Duration::from_secs(2))),
        rise: h.rise.unwrap_or(2).max(1) as u32,
        fall: h.fall.unwrap_or(3).max(1) as u32,
        port: h.port.map(|p| p as u16),
        path: h.path.clone().unwrap_or_else(|| "/".into()),
        expect_status: h.expect_status.unwrap_or(200) as u16,
        host: h.host.clone(),
        ca: h.ca.clone(),
        send_proxy: match h.send_proxy {
            Some(false) => None,
            Some(true) | None => b.send_proxy,
        },
    })
}
