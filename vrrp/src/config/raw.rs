//! The file as written: the serde view of `vrrp.toml`, with keepalived's defaults.

use std::time::Duration;

use serde::Deserialize;

use crate::packet::ChecksumMode;

/// The file as written (serde view); [`validate`](super::validate) turns it into a [`Config`](super::Config).
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
