//! The configuration file as written: what serde reads before [`super::Validator`] checks
//! it and names every error by file, line and key.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tether_health::config::check::RawCheck;

use super::export::ExportCheckKeys;
use super::limits::RawLimits;
use super::{RosterNode, WhenNotReady};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) node: RawNode,
    pub(super) cluster: Option<RawCluster>,
    pub(super) tls: Option<RawTls>,
    pub(super) timers: Option<RawTimers>,
    pub(super) limits: Option<RawLimits>,
    #[serde(default)]
    pub(super) reverse: Vec<RawReverse>,
    #[serde(default)]
    pub(super) forward: Vec<RawForward>,
    #[serde(default)]
    pub(super) export: Vec<RawExport>,
    #[serde(default)]
    pub(super) consume: Vec<RawConsume>,
    pub(super) resolver: Option<RawResolver>,
}

/// `[resolver]` (on-prem): where host names of exports' `connect` are resolved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResolver {
    /// `ip:port` of name servers; default: those of `/etc/resolv.conf`.
    #[serde(default)]
    pub(super) nameservers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) role: String,
    pub(super) id: String,
    pub(super) session_listen: Option<String>,
    pub(super) admin_listen: Option<String>,
    pub(super) cloud: Option<String>,
    pub(super) server_name: Option<String>,
    pub(super) sni_pinning: Option<bool>,
    pub(super) prepared_connections: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) nodes: Vec<RosterNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) client_ca: Option<PathBuf>,
    pub(super) ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimers {
    #[serde(default, with = "humantime_serde")]
    pub(super) ping: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) dead_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) open_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) handshake_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) readiness_down: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) drain_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) stop_delay: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) backoff_cap: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) probe: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) stream_idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) max_session_age: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReverse {
    pub(super) service: String,
    pub(super) listen: String,
    #[serde(default)]
    pub(super) when_not_ready: WhenNotReady,
    #[serde(default, with = "humantime_serde")]
    pub(super) accept_wait: Option<Duration>,
    #[serde(default)]
    pub(super) allowed_exporters: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForward {
    pub(super) service: String,
    pub(super) connect: String,
    #[serde(default)]
    pub(super) allowed_consumers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExport {
    pub(super) service: String,
    pub(super) connect: String,
    /// tether-health's shared health-check table, with the keys of what it talks to.
    pub(super) health: Option<RawCheck<ExportCheckKeys>>,
    #[serde(default, with = "humantime_serde")]
    pub(super) resolve_interval: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsume {
    pub(super) service: String,
    pub(super) listen: String,
    #[serde(default)]
    pub(super) when_not_ready: WhenNotReady,
    #[serde(default, with = "humantime_serde")]
    pub(super) accept_wait: Option<Duration>,
}

pub(super) const DEFAULT_ACCEPT_WAIT: Duration = Duration::from_secs(2);
