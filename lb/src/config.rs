//! The `tether lb` configuration: the TOML a user writes, and the validated form the
//! balancer runs.
//!
//! Parsing rejects unknown keys and wrong types; [`validate`] then checks what serde cannot
//! (ranges, names that must exist and be unique, addresses) and reports every problem with
//! the file, the line and the key.
//!
//! Modules: `raw` (the file as written), `validate` (from it to [`Config`]), `health`
//! (`[backend.health]`, on the table the three daemons share).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tether_health::config::{ConfigErrors, Source};

mod health;
mod raw;
mod validate;

pub use health::{HealthConfig, HealthKind, LbCheckKeys, RawHealth};
pub use raw::*;
use validate::{allowed, valid_hostname};
pub use validate::{parse_server_address, validate};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the admin HTTP listener binds, if any.
    pub admin: Option<SocketAddr>,
    /// The admin write token.
    pub admin_token: Option<String>,
    /// Name servers; empty means `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// How long `SIGTERM` waits for open connections.
    pub grace_period: Duration,
    /// How long `SIGTERM` keeps dr frontends forwarding after `/readyz` turned 503.
    pub stop_delay: Duration,
    /// The listeners.
    pub frontends: Vec<FrontendConfig>,
    /// The server pools.
    pub backends: Vec<BackendConfig>,
    /// Offering the dr VIPs to a routing daemon, if at all.
    pub announce: Option<crate::announce::config::AnnounceConfig>,
}

/// A validated frontend.
#[derive(Debug, Clone, PartialEq)]
pub struct FrontendConfig {
    /// Its name.
    pub name: String,
    /// Where it listens.
    pub binds: Vec<SocketAddr>,
    /// Index into [`Config::backends`].
    pub backend: usize,
    /// Most connections open at once.
    pub maxconn: usize,
    /// Idle timeout on the client side.
    pub client_timeout: Duration,
    /// How long to wait for a ClientHello or PROXY header.
    pub inspect_timeout: Duration,
    /// A PROXY header is required.
    pub accept_proxy: bool,
    /// SNI routes, in order.
    pub routes: Vec<Route>,
    /// `Some` for a `mode = "dr"` frontend, which the kernel serves: no listener.
    pub dr: Option<DrConfig>,
}

/// A validated SNI route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// What server names match.
    pub sni: SniPattern,
    /// Index into [`Config::backends`].
    pub backend: usize,
}

/// A server-name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniPattern {
    /// This name exactly (lower case).
    Exact(String),
    /// Any one label followed by this suffix (lower case, starting with `.`).
    Wildcard(String),
}

impl SniPattern {
    /// Parses `name` or `*.name`.
    pub fn parse(s: &str) -> Result<SniPattern, &'static str> {
        let lower = s.to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if !valid_hostname(name) {
            return Err("is not a host name or *.host name (one-label wildcard)");
        }
        Ok(if wild {
            SniPattern::Wildcard(format!(".{name}"))
        } else {
            SniPattern::Exact(name.to_string())
        })
    }

    /// Whether `name` (any case) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        match self {
            SniPattern::Exact(n) => *n == name,
            SniPattern::Wildcard(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }
}

/// A validated backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Its name.
    pub name: String,
    /// The algorithm.
    pub balance: Balance,
    /// Health checks, unless `kind = "none"`.
    pub health: Option<HealthConfig>,
    /// The servers, in configuration order.
    pub servers: Vec<ServerConfig>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Idle timeout on the server side.
    pub server_timeout: Duration,
    /// How long a connection may wait for a full server.
    pub queue_timeout: Duration,
    /// Connect attempts after the first.
    pub retries: u32,
    /// How often host names are resolved again.
    pub resolve_interval: Duration,
    /// PROXY header sent to servers.
    pub send_proxy: Option<ProxyVersion>,
    /// Move a direction that carries bulk data with `splice(2)` instead of copying it
    /// through user space (Linux; `TETHER_LB_SPLICE=off` turns it off process-wide).
    pub splice: bool,
}

/// Where a server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddress {
    /// A literal address.
    Ip(SocketAddr),
    /// A name resolved at start.
    Host(String, u16),
}

impl std::fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddress::Ip(a) => write!(f, "{a}"),
            ServerAddress::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// A validated server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Its name.
    pub name: String,
    /// Where it is.
    pub address: ServerAddress,
    /// Its weight, 1..=256.
    pub weight: u32,
    /// Used only when no primary is up.
    pub backup: bool,
    /// 0 = unlimited.
    pub maxconn: u32,
    /// Most connections waiting for it when full.
    pub maxqueue: u32,
    /// Health check port override.
    pub check_port: Option<u16>,
}

const DEFAULT_CONNECT: Duration = Duration::from_secs(2);
const DEFAULT_IDLE: Duration = Duration::from_secs(60);
const DEFAULT_RETRIES: i64 = 2;
const DEFAULT_MAXCONN: i64 = 10_000;
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Long enough for a VRRP peer tracking `/readyz` every 100-500 ms to take the VIP.
const DEFAULT_STOP_DELAY: Duration = Duration::from_secs(2);

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::from_source(&Source::read(path)?)
    }

    /// Parses and validates text (embedded configurations, tests).
    pub fn from_source(src: &Source) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = src.parse_with_hints(allowed)?;
        validate(&raw, src)
    }
}
