//! `tether vrrp` configuration: TOML that keepalived users recognise, parsed with
//! `deny_unknown_fields` and validated into [`Config`], with every error naming file,
//! line, key and what is allowed.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tether_health::config::{ConfigErrors, Source};

use crate::packet::{Auth, ChecksumMode, Version};

mod raw;
mod track;
mod validate;

pub use raw::{RawAdmin, RawConfig, RawInstance, RawSyncGroup, RawTrack, TrackKeys};
pub use validate::{parse_vip, validate};

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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackConfig {
    /// What to check.
    pub kind: TrackKind,
    /// Time between checks.
    pub interval: Duration,
    /// Time between checks while a rise or fall is under way (default: the interval).
    pub fast_interval: Duration,
    /// Time between checks while the track is down (default: the interval).
    pub down_interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Failed checks before the track is down.
    pub fall: u32,
    /// Passed checks before the track is up.
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

#[cfg(test)]
mod tests;
