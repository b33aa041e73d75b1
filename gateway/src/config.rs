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

/// Timers shared by both roles (reference §4.9 defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// Interval of control-stream pings.
    pub ping: Duration,
    /// A session with no inbound control message for this long is dead.
    pub dead_after: Duration,
    /// A stream open must be answered (status byte) within this.
    pub open_timeout: Duration,
    /// Connect timeout to the real servers.
    pub connect_timeout: Duration,
    /// Bound on TCP connect + TLS handshake + HELLO of a session.
    pub handshake_timeout: Duration,
    /// How long a service stays ready after its last capacity vanished (anti-flap).
    pub readiness_down: Duration,
    /// How long a drain waits for streams to finish.
    pub drain_grace: Duration,
    /// Cloud: how long a stopping node keeps serving with `/readyz` already 503, before its
    /// listeners close, so balancers that cannot retry a refused connect (`mode = "dr"`)
    /// move new clients away first (HAProxy's `grace`).
    pub stop_delay: Duration,
    /// Highest reconnect backoff towards a roster node.
    pub backoff_cap: Duration,
    /// How often a cloud node probes each session with an empty stream open, so a session
    /// that answers pings but not opens is ejected before a client meets it.
    pub probe: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            ping: Duration::from_secs(3),
            dead_after: Duration::from_secs(9),
            open_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            readiness_down: Duration::from_millis(500),
            drain_grace: Duration::from_secs(30),
            stop_delay: Duration::ZERO,
            backoff_cap: Duration::from_secs(2),
            probe: Duration::from_secs(30),
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
    /// Time between checks.
    pub interval: Duration,
    /// Check timeout.
    pub timeout: Duration,
    /// Successes to go up.
    pub rise: u32,
    /// Failures to go down.
    pub fall: u32,
}

/// A service an on-prem gateway exports to the cloud (reverse path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Service name.
    pub service: String,
    /// The on-prem server (host:port).
    pub connect: String,
    /// TCP health check of the server; `None` means always reported up.
    pub health: Option<ExportHealth>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    node: RawNode,
    cluster: Option<RawCluster>,
    tls: Option<RawTls>,
    timers: Option<RawTimers>,
    limits: Option<RawLimits>,
    #[serde(default)]
    reverse: Vec<RawReverse>,
    #[serde(default)]
    forward: Vec<RawForward>,
    #[serde(default)]
    export: Vec<RawExport>,
    #[serde(default)]
    consume: Vec<RawConsume>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    role: String,
    id: String,
    session_listen: Option<String>,
    admin_listen: Option<String>,
    cloud: Option<String>,
    server_name: Option<String>,
    sni_pinning: Option<bool>,
    prepared_connections: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    nodes: Vec<RosterNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimers {
    #[serde(default, with = "humantime_serde")]
    ping: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    dead_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    open_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    handshake_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    readiness_down: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    drain_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    stop_delay: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    backoff_cap: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    probe: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReverse {
    service: String,
    listen: String,
    #[serde(default)]
    when_not_ready: WhenNotReady,
    #[serde(default, with = "humantime_serde")]
    accept_wait: Option<Duration>,
    #[serde(default)]
    allowed_exporters: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    service: String,
    connect: String,
    #[serde(default)]
    allowed_consumers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExport {
    service: String,
    connect: String,
    health: Option<RawHealth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    kind: String,
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    rise: Option<u32>,
    fall: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsume {
    service: String,
    listen: String,
    #[serde(default)]
    when_not_ready: WhenNotReady,
    #[serde(default, with = "humantime_serde")]
    accept_wait: Option<Duration>,
}

const DEFAULT_ACCEPT_WAIT: Duration = Duration::from_secs(2);

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

    fn timers(&mut self, raw: Option<RawTimers>) -> Timers {
        let raw = raw.unwrap_or_default();
        let d = Timers::default();
        let t = Timers {
            ping: raw.ping.unwrap_or(d.ping),
            dead_after: raw.dead_after.unwrap_or(d.dead_after),
            open_timeout: raw.open_timeout.unwrap_or(d.open_timeout),
            connect_timeout: raw.connect_timeout.unwrap_or(d.connect_timeout),
            handshake_timeout: raw.handshake_timeout.unwrap_or(d.handshake_timeout),
            readiness_down: raw.readiness_down.unwrap_or(d.readiness_down),
            drain_grace: raw.drain_grace.unwrap_or(d.drain_grace),
            stop_delay: raw.stop_delay.unwrap_or(d.stop_delay),
            backoff_cap: raw.backoff_cap.unwrap_or(d.backoff_cap),
            probe: raw.probe.unwrap_or(d.probe),
        };
        let at = |k: &str| path(&["timers".into(), k.into()]);
        for (key, value) in [
            ("ping", t.ping),
            ("dead_after", t.dead_after),
            ("open_timeout", t.open_timeout),
            ("connect_timeout", t.connect_timeout),
            ("handshake_timeout", t.handshake_timeout),
            ("backoff_cap", t.backoff_cap),
            ("probe", t.probe),
        ] {
            if value < Duration::from_millis(10) {
                self.err(
                    &at(key),
                    format!("{value:?} is too short; must be at least 10ms"),
                );
            }
        }
        if t.dead_after <= t.ping {
            self.err(
                &at("dead_after"),
                format!(
                    "{:?} must be longer than timers.ping ({:?}); 3 x ping is usual",
                    t.dead_after, t.ping
                ),
            );
        }
        t
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

    fn cloud(&mut self, raw: RawFile, base: &Path) -> Option<CloudConfig> {
        const ROLE: &str = "cloud";
        let n = &raw.node;
        let node = |k: &str| path(&["node".into(), k.into()]);
        self.id(&node("id"), &n.id);
        self.forbidden(&node("cloud"), &n.cloud, ROLE);
        self.forbidden(&node("server_name"), &n.server_name, ROLE);
        self.forbidden(&node("sni_pinning"), &n.sni_pinning, ROLE);
        self.forbidden(&node("prepared_connections"), &n.prepared_connections, ROLE);
        self.forbidden_list("export", &raw.export, ROLE);
        self.forbidden_list("consume", &raw.consume, ROLE);
        let session_listen = self
            .required(&node("session_listen"), n.session_listen.clone(), ROLE)
            .and_then(|s| self.addr(&node("session_listen"), &s));
        let admin_listen = self
            .required(&node("admin_listen"), n.admin_listen.clone(), ROLE)
            .and_then(|s| self.addr(&node("admin_listen"), &s));
        let tls = self.tls(raw.tls, base, ROLE, &n.id);
        let timers = self.timers(raw.timers);
        let limits = self.limits(raw.limits);

        let roster = match raw.cluster {
            Some(c) => c.nodes,
            None => Vec::new(),
        };
        let mut seen = BTreeSet::new();
        for (i, r) in roster.iter().enumerate() {
            let at = path(&["cluster".into(), "nodes".into(), i.into()]);
            self.id(&at, &r.id);
            if !seen.insert(r.id.clone()) {
                self.err(
                    &at,
                    format!("node {:?} is listed twice; node ids must be unique", r.id),
                );
            }
            if rustls_pki_types::DnsName::try_from(r.sni.as_str()).is_err() {
                self.err(&at, format!("sni {:?} is not a DNS name", r.sni));
            }
        }
        if !roster.is_empty() && !seen.contains(&n.id) {
            self.err(
                &["cluster".into(), "nodes".into()],
                format!("the roster must list this node ({:?})", n.id),
            );
        }

        let mut services = BTreeSet::new();
        let mut reverse = Vec::new();
        for (i, r) in raw.reverse.into_iter().enumerate() {
            let at = |k: &str| path(&["reverse".into(), i.into(), k.into()]);
            self.id(&at("service"), &r.service);
            if !services.insert(r.service.clone()) {
                self.err(
                    &at("service"),
                    format!("service {:?} is defined twice", r.service),
                );
            }
            if r.allowed_exporters.is_empty() {
                self.err(
                    &at("allowed_exporters"),
                    "must name at least one gateway identity",
                );
            }
            let accept_wait = r.accept_wait.unwrap_or(DEFAULT_ACCEPT_WAIT);
            if accept_wait.is_zero() || accept_wait > Duration::from_secs(60) {
                self.err(
                    &at("accept_wait"),
                    format!("{accept_wait:?} out of range; allowed 1ms..=60s"),
                );
            }
            if let Some(listen) = self.addr(&at("listen"), &r.listen) {
                reverse.push(ReverseService {
                    service: r.service,
                    listen,
                    when_not_ready: r.when_not_ready,
                    accept_wait,
                    allowed_exporters: r.allowed_exporters.into_iter().collect(),
                });
            }
        }
        let mut forward = Vec::new();
        for (i, f) in raw.forward.into_iter().enumerate() {
            let at = |k: &str| path(&["forward".into(), i.into(), k.into()]);
            self.id(&at("service"), &f.service);
            if !services.insert(f.service.clone()) {
                self.err(
                    &at("service"),
                    format!("service {:?} is defined twice", f.service),
                );
            }
            if f.allowed_consumers.is_empty() {
                self.err(
                    &at("allowed_consumers"),
                    "must name at least one gateway identity",
                );
            }
            if self.host_port(&at("connect"), &f.connect) {
                forward.push(ForwardService {
                    service: f.service,
                    connect: f.connect,
                    allowed_consumers: f.allowed_consumers.into_iter().collect(),
                });
            }
        }
        let mut listeners: Vec<Listener> = [
            ("session_listen", session_listen),
            ("admin_listen", admin_listen),
        ]
        .into_iter()
        .filter_map(|(k, a)| {
            Some(Listener {
                at: node(k),
                name: format!("node.{k}"),
                addr: a?,
            })
        })
        .collect();
        for (i, r) in reverse.iter().enumerate() {
            listeners.push(Listener {
                at: path(&["reverse".into(), i.into(), "listen".into()]),
                name: format!("reverse[{i}].listen"),
                addr: r.listen,
            });
        }
        self.errors
            .extend(checks::listener_conflicts(self.source, &listeners));
        Some(CloudConfig {
            id: n.id.clone(),
            session_listen: session_listen?,
            admin_listen: admin_listen?,
            roster,
            tls: tls?,
            reverse,
            forward,
            timers,
            limits,
        })
    }

    fn onprem(&mut self, raw: RawFile, base: &Path) -> Option<OnpremConfig> {
        const ROLE: &str = "onprem";
        let n = &raw.node;
        let node = |k: &str| path(&["node".into(), k.into()]);
        self.id(&node("id"), &n.id);
        self.forbidden(&node("session_listen"), &n.session_listen, ROLE);
        self.forbidden(&["cluster".into()], &raw.cluster, ROLE);
        self.forbidden_list("reverse", &raw.reverse, ROLE);
        self.forbidden_list("forward", &raw.forward, ROLE);
        let cloud = self.required(&node("cloud"), n.cloud.clone(), ROLE);
        let cloud = cloud.filter(|c| self.host_port(&node("cloud"), c));
        let server_name = match (&n.server_name, &cloud) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(c)) => c
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(|c| c == '[' || c == ']').to_string()),
            (None, None) => None,
        };
        if let Some(s) = &server_name
            && rustls_pki_types::ServerName::try_from(s.as_str()).is_err()
        {
            self.err(
                &node("server_name"),
                format!("{s:?} is not a DNS name or IP address"),
            );
        }
        let prepared = n.prepared_connections.unwrap_or(2);
        if !(1..=16).contains(&prepared) {
            self.err(
                &node("prepared_connections"),
                format!("{prepared} out of range; allowed 1..=16"),
            );
        }
        let admin_listen = self
            .required(&node("admin_listen"), n.admin_listen.clone(), ROLE)
            .and_then(|s| self.addr(&node("admin_listen"), &s));
        let tls = self.tls(raw.tls, base, ROLE, &n.id);
        let timers = self.timers(raw.timers);
        let limits = self.limits(raw.limits);

        let mut services = BTreeSet::new();
        let mut export = Vec::new();
        for (i, e) in raw.export.into_iter().enumerate() {
            let at = |k: &str| path(&["export".into(), i.into(), k.into()]);
            self.id(&at("service"), &e.service);
            if !services.insert(e.service.clone()) {
                self.err(
                    &at("service"),
                    format!("service {:?} is defined twice", e.service),
                );
            }
            let health = e.health.map(|h| {
                if h.kind != "tcp" {
                    self.err(
                        &at("health"),
                        format!("kind {:?} is not supported; allowed: \"tcp\"", h.kind),
                    );
                }
                let interval = h.interval.unwrap_or(Duration::from_secs(2));
                let timeout = h.timeout.unwrap_or(Duration::from_secs(1));
                if interval < Duration::from_millis(10) || timeout < Duration::from_millis(10) {
                    self.err(&at("health"), "interval and timeout must be at least 10ms");
                }
                let rise = h.rise.unwrap_or(1);
                let fall = h.fall.unwrap_or(2);
                if !(1..=100).contains(&rise) || !(1..=100).contains(&fall) {
                    self.err(&at("health"), "rise and fall must be 1..=100");
                }
                ExportHealth {
                    interval,
                    timeout,
                    rise,
                    fall,
                }
            });
            if self.host_port(&at("connect"), &e.connect) {
                export.push(Export {
                    service: e.service,
                    connect: e.connect,
                    health,
                });
            }
        }
        let mut consume = Vec::new();
        for (i, c) in raw.consume.into_iter().enumerate() {
            let at = |k: &str| path(&["consume".into(), i.into(), k.into()]);
            self.id(&at("service"), &c.service);
            if !services.insert(c.service.clone()) {
                self.err(
                    &at("service"),
                    format!("service {:?} is defined twice", c.service),
                );
            }
            let accept_wait = c.accept_wait.unwrap_or(DEFAULT_ACCEPT_WAIT);
            if accept_wait.is_zero() || accept_wait > Duration::from_secs(60) {
                self.err(
                    &at("accept_wait"),
                    format!("{accept_wait:?} out of range; allowed 1ms..=60s"),
                );
            }
            if let Some(listen) = self.addr(&at("listen"), &c.listen) {
                consume.push(Consume {
                    service: c.service,
                    listen,
                    when_not_ready: c.when_not_ready,
                    accept_wait,
                });
            }
        }
        let mut listeners: Vec<Listener> = admin_listen
            .map(|addr| Listener {
                at: node("admin_listen"),
                name: "node.admin_listen".into(),
                addr,
            })
            .into_iter()
            .collect();
        for (i, c) in consume.iter().enumerate() {
            listeners.push(Listener {
                at: path(&["consume".into(), i.into(), "listen".into()]),
                name: format!("consume[{i}].listen"),
                addr: c.listen,
            });
        }
        self.errors
            .extend(checks::listener_conflicts(self.source, &listeners));
        Some(OnpremConfig {
            id: n.id.clone(),
            cloud: cloud?,
            server_name: server_name?,
            sni_pinning: n.sni_pinning.unwrap_or(false),
            prepared_connections: usize::try_from(prepared).unwrap_or(2),
            admin_listen: admin_listen?,
            tls: tls?,
            export,
            consume,
            timers,
            limits,
        })
    }
}

mod checks;
use checks::Listener;
mod limits;
pub use limits::Limits;
use limits::RawLimits;

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUD: &str = r#"
[node]
role = "cloud"
id = "cloud1"
session_listen = "0.0.0.0:8443"
admin_listen = "0.0.0.0:9100"
[cluster]
nodes = [ { id = "cloud1", sni = "cloud1.gw.example.com" },
          { id = "cloud2", sni = "cloud2.gw.example.com" } ]
[tls]
cert = "certs/cloud1.pem"
key = "certs/cloud1.key"
client_ca = "certs/ca.pem"
[[reverse]]
service = "svc-a"
listen = "0.0.0.0:5551"
when_not_ready = "unbind"
allowed_exporters = ["onprem1", "onprem2"]
[[forward]]
service = "svc-b"
connect = "server-b:6000"
allowed_consumers = ["onprem1", "onprem2"]
"#;

    const ONPREM: &str = r#"
[node]
role = "onprem"
id = "onprem1"
cloud = "gw.example.com:443"
sni_pinning = true
prepared_connections = 2
admin_listen = "0.0.0.0:9101"
[tls]
cert = "certs/onprem1.pem"
key = "certs/onprem1.key"
ca = "certs/ca.pem"
[[export]]
service = "svc-a"
connect = "server-a:5000"
health = { kind = "tcp", interval = "2s" }
[[consume]]
service = "svc-b"
listen = "0.0.0.0:6661"
"#;

    fn parse_text(text: &str) -> Result<GatewayConfig, ConfigErrors> {
        parse(
            &Source::from_text("gw.toml", text),
            Path::new("/etc/tether"),
        )
    }

    fn one_error(text: &str) -> String {
        match parse_text(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => {
                assert_eq!(e.0.len(), 1, "{e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn issue_examples_parse() {
        let Ok(GatewayConfig::Cloud(c)) = parse_text(CLOUD) else {
            panic!("cloud")
        };
        assert_eq!(c.id, "cloud1");
        assert_eq!(c.roster.len(), 2);
        assert_eq!(c.reverse[0].when_not_ready, WhenNotReady::Unbind);
        assert_eq!(c.reverse[0].accept_wait, Duration::from_secs(2));
        assert_eq!(c.tls.ca, Path::new("/etc/tether/certs/ca.pem"));
        assert_eq!(c.timers, Timers::default());
        let Ok(GatewayConfig::Onprem(o)) = parse_text(ONPREM) else {
            panic!("onprem")
        };
        assert_eq!(o.server_name, "gw.example.com");
        assert!(o.sni_pinning);
        assert_eq!(o.prepared_connections, 2);
        assert_eq!(
            o.export[0].health.as_ref().map(|h| h.interval),
            Some(Duration::from_secs(2))
        );
        assert_eq!(o.consume[0].listen.port(), 6661);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = CLOUD.replace(
            "when_not_ready = \"unbind\"",
            "when_not_ready = \"unbind\"\nlisten_backlog = 5",
        );
        let e = one_error(&text);
        assert!(e.starts_with("gw.toml:18:"), "{e}");
        assert!(e.contains("listen_backlog"), "{e}");
    }

    #[test]
    fn bad_enum_value_lists_allowed() {
        let e = one_error(&CLOUD.replace("\"unbind\"", "\"drop\""));
        assert!(e.starts_with("gw.toml:17:"), "{e}");
        assert!(e.contains("unbind") && e.contains("hold"), "{e}");
    }

    #[test]
    fn bad_role() {
        let e = one_error(&CLOUD.replace("role = \"cloud\"", "role = \"edge\""));
        assert_eq!(
            e,
            "gw.toml:3: node.role: unknown role \"edge\"; allowed: \"cloud\", \"onprem\""
        );
    }

    #[test]
    fn bad_listen_address() {
        let e = one_error(&CLOUD.replace("0.0.0.0:5551", "localhost:5551"));
        assert!(e.starts_with("gw.toml:16: reverse[0].listen:"), "{e}");
        assert!(e.contains("IP:port"), "{e}");
    }

    #[test]
    fn role_specific_keys() {
        let e =
            one_error(&CLOUD.replace("id = \"cloud1\"\n", "id = \"cloud1\"\nsni_pinning = true\n"));
        assert!(
            e.contains("node.sni_pinning: not allowed for role = \"cloud\""),
            "{e}"
        );
        let e = one_error(&ONPREM.replace("cloud = \"gw.example.com:443\"\n", ""));
        assert!(
            e.contains("node.cloud: required for role = \"onprem\""),
            "{e}"
        );
        let Err(e) =
            parse_text(&ONPREM.replace("ca = \"certs/ca.pem\"", "client_ca = \"certs/ca.pem\""))
        else {
            panic!("client_ca on onprem must fail")
        };
        let e = e.to_string();
        assert!(
            e.contains("gw.toml:12: tls.client_ca: not allowed for role = \"onprem\""),
            "{e}"
        );
        assert!(e.contains("tls.ca: required for role = \"onprem\""), "{e}");
    }

    #[test]
    fn range_checks() {
        let e = one_error(&ONPREM.replace("prepared_connections = 2", "prepared_connections = 0"));
        assert!(
            e.starts_with("gw.toml:7: node.prepared_connections: 0 out of range; allowed 1..=16"),
            "{e}"
        );
        let e = one_error(&format!(
            "{ONPREM}[timers]\nping = \"5s\"\ndead_after = \"2s\"\n"
        ));
        assert!(
            e.contains("timers.dead_after") && e.contains("longer than timers.ping"),
            "{e}"
        );
        let e = one_error(&CLOUD.replace(
            "allowed_exporters = [\"onprem1\", \"onprem2\"]",
            "allowed_exporters = []",
        ));
        assert!(
            e.contains("reverse[0].allowed_exporters: must name at least one"),
            "{e}"
        );
    }

    #[test]
    fn duplicates_and_roster() {
        let e = one_error(&CLOUD.replace("service = \"svc-b\"", "service = \"svc-a\""));
        assert!(
            e.contains("forward[0].service: service \"svc-a\" is defined twice"),
            "{e}"
        );
        let e =
            one_error(&CLOUD.replace("{ id = \"cloud1\", sni = \"cloud1.gw.example.com\" },", ""));
        assert!(e.contains("the roster must list this node"), "{e}");
    }

    #[test]
    fn bad_duration() {
        let e = one_error(&format!("{CLOUD}[timers]\nping = \"fast\"\n"));
        assert!(
            e.starts_with("gw.toml:24:") && e.contains("expected a duration"),
            "{e}"
        );
    }

    #[test]
    fn several_errors_reported_together() {
        let text = CLOUD
            .replace("0.0.0.0:5551", "nowhere")
            .replace("server-b:6000", "server-b");
        let Err(e) = parse_text(&text) else {
            panic!("expected errors")
        };
        assert_eq!(e.0.len(), 2, "{e}");
    }
}
