//! `[announce]`: how this balancer offers its dr VIPs to a routing daemon.

use std::path::PathBuf;

use serde::Deserialize;
use tether_health::config::{ConfigError, Seg, Source};

use crate::config::{Mode, RawConfig};

/// The kernel routing table the announced routes go in by default. Nothing routes through
/// it (no rule points at it): it only carries the routes to the routing daemon.
pub const DEFAULT_TABLE: u32 = 7474;

/// The device the routes point at by default.
pub const DEFAULT_DEVICE: &str = "tether-vip";

/// `[announce]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnnounce {
    /// The kernel routing table for the routes.
    pub table: Option<i64>,
    /// The name of the device the routes point at.
    pub device: Option<String>,
    /// What a VIP whose frontend has no live server does: `withdraw` or `announce` (marked
    /// degraded).
    #[serde(default)]
    pub degraded: WhenDegraded,
    /// BIRD's control socket, read for the BGP session state in metrics and the API.
    pub bird_socket: Option<PathBuf>,
}

/// What a VIP with a frontend that has no live server does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenDegraded {
    /// Its route is withdrawn.
    #[default]
    Withdraw,
    /// Its route stays, marked degraded, for the routing daemon to announce with a worse
    /// preference: traffic still lands somewhere when every balancer is degraded.
    Announce,
}

/// The validated `[announce]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// The kernel routing table for the routes.
    pub table: u32,
    /// The device the routes point at.
    pub device: String,
    /// What a VIP with a frontend without live servers does.
    pub degraded: WhenDegraded,
    /// BIRD's control socket, if the session state is to be read.
    pub bird_socket: Option<PathBuf>,
}

/// Checks `[announce]`; the validated form when it is valid.
pub fn validate(
    raw: &RawConfig,
    src: &Source,
    errs: &mut Vec<ConfigError>,
) -> Option<AnnounceConfig> {
    let a = raw.announce.as_ref()?;
    let at = |key: &str| vec![Seg::from("announce"), key.into()];
    let before = errs.len();
    let table = a.table.unwrap_or(i64::from(DEFAULT_TABLE));
    // 0 is "unspecified"; 253 to 255 are the kernel's default, main and local tables, whose
    // routes the host itself uses.
    if !(1..=i64::from(u32::MAX)).contains(&table) || (253..=255).contains(&table) {
        errs.push(src.error(
            &at("table"),
            format!(
                "table = {table}: must be 1 to {} and not 253 (default), 254 (main) or 255 (local)",
                u32::MAX
            ),
        ));
    }
    let device = a
        .device
        .clone()
        .unwrap_or_else(|| DEFAULT_DEVICE.to_string());
    if device.is_empty()
        || device.len() > 15
        || device
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        errs.push(src.error(
            &at("device"),
            format!(
                "device = \"{device}\": an interface name of 1 to 15 characters without '/', ':' or spaces"
            ),
        ));
    }
    if !raw.frontend.iter().any(|f| f.mode == Mode::Dr) {
        errs.push(src.error(
            &[Seg::from("announce")],
            "[announce] offers the VIPs of mode = \"dr\" frontends, and there is none",
        ));
    }
    (errs.len() == before).then(|| AnnounceConfig {
        table: table as u32,
        device,
        degraded: a.degraded,
        bird_socket: a.bird_socket.clone(),
    })
}
