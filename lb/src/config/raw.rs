//! The file as written: what serde reads, unknown keys refused.

use std::time::Duration;

use serde::Deserialize;

use super::RawHealth;

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The admin listener; without it there is none.
    pub admin: Option<RawAdmin>,
    /// Values frontends and backends inherit.
    #[serde(default)]
    pub defaults: RawDefaults,
    /// The listeners.
    #[serde(default)]
    pub frontend: Vec<RawFrontend>,
    /// The server pools.
    #[serde(default)]
    pub backend: Vec<RawBackend>,
    /// Name servers for `host:port` server addresses.
    pub resolver: Option<RawResolver>,
    /// Offering the dr VIPs to a routing daemon.
    pub announce: Option<crate::announce::config::RawAnnounce>,
}

/// `[resolver]`: where host names of servers are resolved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResolver {
    /// `ip:port` of name servers; default: those of `/etc/resolv.conf`.
    #[serde(default)]
    pub nameservers: Vec<String>,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `host:port` of the admin HTTP listener.
    pub listen: String,
    /// When set, write endpoints require `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// `[defaults]`: every key may also be set on a frontend or backend.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// How long a connect to a server may take.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// Idle timeout on the client side.
    #[serde(default, with = "humantime_serde")]
    pub client_timeout: Option<Duration>,
    /// Idle timeout on the server side.
    #[serde(default, with = "humantime_serde")]
    pub server_timeout: Option<Duration>,
    /// How long a connection may wait in a full server's queue (default: connect_timeout).
    #[serde(default, with = "humantime_serde")]
    pub queue_timeout: Option<Duration>,
    /// Connect attempts after the first, each on another server.
    pub retries: Option<i64>,
    /// Per-frontend connection limit.
    pub maxconn: Option<i64>,
    /// How long `SIGTERM` waits for open connections before closing them.
    #[serde(default, with = "humantime_serde")]
    pub grace_period: Option<Duration>,
    /// How often `host:port` server addresses are resolved again.
    #[serde(default, with = "humantime_serde")]
    pub resolve_interval: Option<Duration>,
    /// How long a frontend waits for a whole TLS ClientHello or PROXY header.
    #[serde(default, with = "humantime_serde")]
    pub inspect_timeout: Option<Duration>,
    /// Whether bulk transfers move with `splice(2)` (HAProxy's `option splice-auto`).
    pub splice: Option<bool>,
    /// How long a stopping balancer keeps its dr frontends forwarding after `/readyz` turned
    /// 503, so VRRP or BGP moves the VIP's traffic away first (HAProxy's `grace`).
    #[serde(default, with = "humantime_serde")]
    pub stop_delay: Option<Duration>,
}

/// `[[frontend]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFrontend {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// Addresses to listen on.
    pub bind: Vec<String>,
    /// The backend that gets the connections.
    pub backend: String,
    /// Most connections open at once; further clients wait in the kernel's backlog.
    pub maxconn: Option<i64>,
    /// Idle timeout on the client side.
    #[serde(default, with = "humantime_serde")]
    pub client_timeout: Option<Duration>,
    /// How long to wait for a whole ClientHello (SNI routes) or PROXY header.
    #[serde(default, with = "humantime_serde")]
    pub inspect_timeout: Option<Duration>,
    /// Require a PROXY protocol header (v1 or v2) from the client (another balancer).
    #[serde(default)]
    pub accept_proxy: bool,
    /// TLS passthrough routes by server name; the first match wins.
    #[serde(default)]
    pub route: Vec<RawRoute>,
    /// `proxy` (terminate TCP and relay) or `dr` (forward packets in the kernel).
    #[serde(default)]
    pub mode: Mode,
    /// `dr`: the link the VIP's packets arrive on and the servers are on.
    pub interface: Option<String>,
    /// `dr`: how long an idle flow keeps its server.
    #[serde(default, with = "humantime_serde")]
    pub flow_timeout: Option<Duration>,
}

/// How a frontend carries connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Accept, pick a server, connect and relay (HAProxy `mode tcp`).
    #[default]
    Proxy,
    /// Direct server return: the kernel forwards each packet to the chosen server's MAC and
    /// the server answers the client itself (LVS-DR, Maglev).
    Dr,
}

/// The settings of a `mode = "dr"` frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrConfig {
    /// The link the VIP's packets arrive on and the servers are on.
    pub interface: String,
    /// How long an idle flow keeps its server (IPVS's established timeout by default).
    pub flow_timeout: Duration,
}

/// `[[frontend.route]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// An exact server name, or `*.` followed by a name (one label).
    pub sni: String,
    /// The backend for matching clients.
    pub backend: String,
}

/// PROXY protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    /// The text header.
    V1,
    /// The binary header.
    V2,
}

/// The balancing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Smooth weighted round robin.
    #[default]
    Roundrobin,
    /// Fewest active connections per weight.
    Leastconn,
    /// Consistent hash of the client address.
    Source,
    /// Random with two choices.
    Random,
    /// The first server, in order, that has room.
    First,
}

/// `[[backend]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// Unique name.
    pub name: String,
    /// The algorithm.
    #[serde(default)]
    pub balance: Balance,
    /// Active health checks; default TCP every 2 s, rise 2, fall 3.
    pub health: Option<RawHealth>,
    /// The servers.
    #[serde(default)]
    pub server: Vec<RawServer>,
    /// Overrides `[defaults]`.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// Overrides `[defaults]`.
    #[serde(default, with = "humantime_serde")]
    pub server_timeout: Option<Duration>,
    /// Overrides `[defaults]`.
    #[serde(default, with = "humantime_serde")]
    pub queue_timeout: Option<Duration>,
    /// Overrides `[defaults]`.
    pub retries: Option<i64>,
    /// Overrides `[defaults]`.
    #[serde(default, with = "humantime_serde")]
    pub resolve_interval: Option<Duration>,
    /// Send a PROXY protocol header to servers, carrying the client's address.
    pub send_proxy: Option<ProxyVersion>,
    /// Overrides `[defaults]`.
    pub splice: Option<bool>,
}

/// `[[backend.server]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Unique within the backend.
    pub name: String,
    /// `ip:port` or `host:port`.
    pub address: String,
    /// 1..=256.
    pub weight: Option<i64>,
    /// Used only when no non-backup server is up.
    #[serde(default)]
    pub backup: bool,
    /// 0 = unlimited; else excess connections wait in a bounded queue.
    pub maxconn: Option<i64>,
    /// How many connections may wait for this server when it is full (default 1024).
    pub maxqueue: Option<i64>,
    /// This server's health check port.
    pub check_port: Option<i64>,
}
