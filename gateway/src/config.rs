//! Gateway configuration: one TOML file whose `[node] role` selects the cloud or the on-prem
//! shape, parsed with `deny_unknown_fields` and then validated so that every error names the
//! file, the line, the key and what is allowed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tether_health::config::{ConfigError, ConfigErrors, Seg, Source};

/// What a service listener does while the service has no capacity behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WhenNotReady {
    /// Close the listening socket, so connects are refused and a balancer retries elsewhere.
    #[default]
    Unbind,
    /// Stay bound, accept and close at once.
    Reject,
    /// Accept and wait up to `accept_wait` for capacity, then close.
    Hold,
}

impl WhenNotReady {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WhenNotReady::Unbind => "unbind",
            WhenNotReady::Reject => "reject",
            WhenNotReady::Hold => "hold",
        }
    }
}

/// One cloud node as announced in the roster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterNode {
    /// Stable node id.
    pub id: String,
    /// TLS server name that the balancer routes to this node.
    pub sni: String,
}

/// A reverse service on a cloud node: clients connect to `listen`, the traffic goes to an
/// on-prem gateway that exports the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseService {
    /// Service name.
    pub service: String,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Listener behaviour while not ready.
    pub when_not_ready: WhenNotReady,
    /// Longest time an accepted client waits for a stream.
    pub accept_wait: Duration,
    /// Gateway identities allowed to export this service.
    pub allowed_exporters: BTreeSet<String>,
}

/// A forward service on a cloud node: on-prem clients reach `connect` through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardService {
    /// Service name.
    pub service: String,
    /// The cloud-side server (host:port, resolved on each connect).
    pub connect: String,
    /// Gateway identities allowed to consume this service.
    pub allowed_consumers: BTreeSet<String>,
}

/// TLS material of a node (paths resolved relative to the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA that peers' certificates must chain to.
    pub ca: PathBuf,
}

/// A validated cloud node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudConfig {
    /// Node id, announced in HELLO_ACK.
    pub id: String,
    /// Where on-prem sessions arrive (behind the VIP).
    pub session_listen: SocketAddr,
    /// Admin HTTP (`/livez`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// The roster sent to on-prem gateways.
    pub roster: Vec<RosterNode>,
    /// Certificate, key and client CA.
    pub tls: TlsFiles,
    /// Reverse services.
    pub reverse: Vec<ReverseService>,
    /// Forward services.
    pub forward: Vec<ForwardService>,
    /// Timers.
    pub timers: Timers,
    /// Per-session limits.
    pub limits: Limits,
}

/// How an on-prem gateway checks the server behind an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportHealth {
    /// What a check does.
    pub check: ExportCheck,
    /// Time between checks.
    pub interval: Duration,
    /// Time between checks while a rise or fall is under way.
    pub fast_interval: Duration,
    /// Time between checks while the server is down.
    pub down_interval: Duration,
    /// Check timeout.
    pub timeout: Duration,
    /// Successes to go up.
    pub rise: u32,
    /// Failures to go down.
    pub fall: u32,
}

/// The kind of an export's check (`[export.health] kind`) and what it talks to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExportCheck {
    /// A TCP connect.
    #[default]
    Tcp,
    /// `GET path`, passing on `expect_status`.
    Http {
        /// The request path.
        path: String,
        /// The `Host` header; the server's address when absent.
        host: Option<String>,
        /// The status that passes.
        expect_status: u16,
    },
    /// A TLS handshake whose certificate verifies for `server_name`.
    Tls {
        /// Sent as SNI and verified in the certificate: `host`, else the host of `connect`.
        server_name: String,
        /// PEM file of the CA certificates to verify against (relative paths resolved
        /// against the configuration file's directory); the Mozilla roots when absent.
        ca: Option<PathBuf>,
    },
}

/// A service an on-prem gateway exports to the cloud (reverse path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Service name.
    pub service: String,
    /// The on-prem server (host:port); a host name is resolved at start and again every
    /// `resolve_interval`, for the health check and new streams alike.
    pub connect: String,
    /// Health check of the server; `None` means reported up whenever its address is known.
    pub health: Option<ExportHealth>,
    /// How often a host name in `connect` is resolved again.
    pub resolve_interval: Duration,
}

/// A cloud service local clients reach through an on-prem gateway (forward path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consume {
    /// Service name.
    pub service: String,
    /// Where local clients connect.
    pub listen: SocketAddr,
    /// Listener behaviour while no cloud node accepts the service.
    pub when_not_ready: WhenNotReady,
    /// Longest time an accepted client waits for a stream.
    pub accept_wait: Duration,
}

/// A validated on-prem gateway configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnpremConfig {
    /// Gateway id; must be a name its client certificate is valid for.
    pub id: String,
    /// The VIP, `host:port`.
    pub cloud: String,
    /// TLS name for dials to the VIP itself (defaults to the host of `cloud`).
    pub server_name: String,
    /// Dial each roster node's SNI (the balancer routes by SNI); otherwise dial the VIP
    /// name and close surplus sessions.
    pub sni_pinning: bool,
    /// Sessions kept to every cloud node.
    pub prepared_connections: usize,
    /// Admin HTTP.
    pub admin_listen: SocketAddr,
    /// Client certificate, key and the CA cloud certificates chain to.
    pub tls: TlsFiles,
    /// Exported services.
    pub export: Vec<Export>,
    /// Consumed services.
    pub consume: Vec<Consume>,
    /// Timers.
    pub timers: Timers,
    /// Per-session limits.
    pub limits: Limits,
    /// Name servers for host names in exports' `connect` (`[resolver] nameservers`); empty
    /// means those of `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
}

/// A validated configuration of either role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayConfig {
    /// `role = "cloud"`.
    Cloud(CloudConfig),
    /// `role = "onprem"`.
    Onprem(OnpremConfig),
}

impl GatewayConfig {
    /// The node or gateway id.
    pub fn id(&self) -> &str {
        match self {
            GatewayConfig::Cloud(c) => &c.id,
            GatewayConfig::Onprem(c) => &c.id,
        }
    }
}

// ---- the file as written -------------------------------------------------------------

/// Loads and validates a gateway configuration file, including the TLS files it names
/// (read as the gateway reads them at start).
pub fn load(path: &Path) -> Result<GatewayConfig, ConfigErrors> {
    let source = Source::read(path)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    validate(&source, &base, true)
}

/// Parses and validates configuration text; relative TLS paths are resolved against `base`.
/// The TLS files are not read (see [`load`]).
pub fn parse(source: &Source, base: &Path) -> Result<GatewayConfig, ConfigErrors> {
    validate(source, base, false)
}

fn validate(source: &Source, base: &Path, read_files: bool) -> Result<GatewayConfig, ConfigErrors> {
    let raw: RawFile = source.parse()?;
    let mut v = Validator {
        source,
        errors: Vec::new(),
        read_files,
    };
    let config = match raw.node.role.as_str() {
        "cloud" => v.cloud(raw, base).map(GatewayConfig::Cloud),
        "onprem" => v.onprem(raw, base).map(GatewayConfig::Onprem),
        other => {
            v.err(
                &["node".into(), "role".into()],
                format!("unknown role {other:?}; allowed: \"cloud\", \"onprem\""),
            );
            None
        }
    };
    match config {
        Some(c) if v.errors.is_empty() => Ok(c),
        _ => Err(ConfigErrors(v.errors)),
    }
}

struct Validator<'a> {
    source: &'a Source,
    errors: Vec<ConfigError>,
    /// Also read the TLS files (`--check` and start; not for text without its files).
    read_files: bool,
}

fn path(parts: &[Seg]) -> Vec<Seg> {
    parts.to_vec()
}

impl Validator<'_> {
    fn err(&mut self, at: &[Seg], message: impl Into<String>) {
        self.errors.push(self.source.error(at, message));
    }

    fn addr(&mut self, at: &[Seg], text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(at, format!("{text:?} is not an IP:port socket address (e.g. \"0.0.0.0:8443\", \"[::]:8443\")"));
                None
            }
        }
    }

    fn host_port(&mut self, at: &[Seg], text: &str) -> bool {
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                true
            }
            _ => {
                self.err(
                    at,
                    format!(
                        "{text:?} is not host:port (e.g. \"server-a:5000\", \"10.0.0.5:5000\")"
                    ),
                );
                false
            }
        }
    }

    fn id(&mut self, at: &[Seg], id: &str) {
        let ok = !id.is_empty()
            && id.len() <= 253
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        if !ok {
            self.err(
                at,
                format!(
                    "{id:?} is not a valid name; use 1..=253 characters of a-z, 0-9, '-', '.', '_'"
                ),
            );
        }
    }

    fn required<T>(&mut self, at: &[Seg], v: Option<T>, role: &str) -> Option<T> {
        if v.is_none() {
            self.err(at, format!("required for role = \"{role}\""));
        }
        v
    }

    fn forbidden<T>(&mut self, at: &[Seg], v: &Option<T>, role: &str) {
        if v.is_some() {
            self.err(at, format!("not allowed for role = \"{role}\""));
        }
    }

    fn forbidden_list<T>(&mut self, key: &str, v: &[T], role: &str) {
        if !v.is_empty() {
            self.err(
                &[key.into()],
                format!("[[{key}]] is not allowed for role = \"{role}\""),
            );
        }
    }

    fn tls(&mut self, raw: Option<RawTls>, base: &Path, role: &str, id: &str) -> Option<TlsFiles> {
        let raw = self.required(&["tls".into()], raw, role)?;
        let (ca_key, ca, other_key, other) = if role == "cloud" {
            ("client_ca", raw.client_ca, "ca", raw.ca)
        } else {
            ("ca", raw.ca, "client_ca", raw.client_ca)
        };
        self.forbidden(&["tls".into(), other_key.into()], &other, role);
        let ca = self.required(&["tls".into(), ca_key.into()], ca, role)?;
        let files = TlsFiles {
            cert: base.join(raw.cert),
            key: base.join(raw.key),
            ca: base.join(ca),
        };
        if self.read_files {
            let onprem_id = (role == "onprem").then_some(id);
            self.errors
                .extend(checks::tls_files(self.source, &files, onprem_id));
        }
        Some(files)
    }
}

mod checks;
mod cloud;
mod export;
mod onprem;
mod raw;
use raw::{RawFile, RawTls};
mod limits;
pub use limits::Limits;
mod timers;
pub use timers::Timers;

#[cfg(test)]
mod tests;
