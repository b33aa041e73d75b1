//! The file as written: the serde view of `vrrp.toml`, with keepalived's defaults.

use std::time::Duration;

use serde::Deserialize;
use serde::de::MapAccess;
use tether_health::config::check::{Kind, OwnKeys, RawCheck};

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

/// `[[instance.track]]` as written: tether-health's shared health-check table
/// ([`tether_health::config::check`]) with the track's own keys, [`TrackKeys`].
pub type RawTrack = RawCheck<TrackKeys>;

/// The keys only `[[instance.track]]` has: what to check, and the weight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackKeys {
    /// http: URL (`http://IP:PORT/path`).
    pub url: Option<String>,
    /// tcp: address to connect to.
    pub address: Option<String>,
    /// exec: argv (no shell).
    pub command: Option<Vec<String>>,
    /// interface: name.
    pub interface: Option<String>,
    /// keepalived weight semantics (default 0: FAULT while failing).
    pub weight: Option<i64>,
}

impl OwnKeys for TrackKeys {
    const KEYS: &'static [&'static str] = &["url", "address", "command", "interface", "weight"];

    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: &'static str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match key {
            "url" => self.url = Some(map.next_value()?),
            "address" => self.address = Some(map.next_value()?),
            "command" => self.command = Some(map.next_value()?),
            "interface" => self.interface = Some(map.next_value()?),
            _ => self.weight = Some(map.next_value()?),
        }
        Ok(())
    }

    fn kind_bound(&self) -> Vec<(&'static str, &'static [Kind])> {
        [
            ("url", self.url.is_some(), &[Kind::Http]),
            ("address", self.address.is_some(), &[Kind::Tcp]),
            ("command", self.command.is_some(), &[Kind::Exec]),
            ("interface", self.interface.is_some(), &[Kind::Interface]),
        ]
        .into_iter()
        .filter(|(_, written, _)| *written)
        .map(|(key, _, kinds)| (key, kinds as &'static [Kind]))
        .collect()
    }
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
