//! In-process harness: certificates, echo servers, a small fault-injecting TCP balancer,
//! cloud and on-prem gateways on loopback ports chosen by the OS.
#![allow(dead_code, unused_imports)]

mod balancer;
mod scenario;

pub use balancer::{Mode, TestLb};
pub use scenario::{CoveredOne, Scenario, lone_cloud, scenario, single_node};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether_gateway::certs::{TestCa, Validity};
use tether_gateway::config::{
    CloudConfig, Consume, Export, ExportCheck, ExportHealth, ForwardService, OnpremConfig,
    ReverseService, RosterNode, Timers, TlsFiles, WhenNotReady,
};
use tether_gateway::{CloudHandle, OnpremHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub const DOMAIN: &str = "gw.example.com";

/// Timers short enough for tests; the reconnect cap keeps the production default (2 s) so
/// the restart test checks the real bound.
pub fn test_timers() -> Timers {
    Timers {
        ping: Duration::from_millis(200),
        dead_after: Duration::from_millis(1200),
        open_timeout: Duration::from_millis(800),
        connect_timeout: Duration::from_millis(500),
        handshake_timeout: Duration::from_secs(2),
        readiness_down: Duration::from_millis(200),
        drain_grace: Duration::from_secs(5),
        stop_delay: Duration::ZERO,
        backoff_cap: Duration::from_secs(2),
        probe: Duration::from_secs(30),
        stream_idle_timeout: Duration::from_secs(3600),
        max_session_age: None,
    }
}

/// A directory of certificates: `ca.pem`, one cert per name, plus a foreign CA's cert and an
/// expired one.
pub struct Certs {
    pub dir: tempfile::TempDir,
    /// The CA of `ca.pem`, to issue more certificates (rotation).
    pub ca: TestCa,
}

impl Certs {
    pub fn new() -> Certs {
        Certs::with_ca("Tether test CA")
    }

    /// The same files under a CA of another name (the CA a rotation moves to).
    pub fn with_ca(ca_name: &str) -> Certs {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new(ca_name).expect("ca");
        std::fs::write(dir.path().join("ca.pem"), ca.pem().cert).expect("write");
        for name in ["cloud1", "cloud2", "onprem1", "onprem2", "onprem3"] {
            let p = ca.issue(name, DOMAIN, Validity::Current).expect("issue");
            std::fs::write(dir.path().join(format!("{name}.pem")), p.cert).expect("write");
            std::fs::write(dir.path().join(format!("{name}.key")), p.key).expect("write");
        }
        let expired = ca
            .issue("onprem1", DOMAIN, Validity::Expired)
            .expect("issue");
        std::fs::write(dir.path().join("expired.pem"), expired.cert).expect("write");
        std::fs::write(dir.path().join("expired.key"), expired.key).expect("write");
        let other = TestCa::new("Some other CA").expect("ca");
        let rogue = other
            .issue("onprem1", DOMAIN, Validity::Current)
            .expect("issue");
        std::fs::write(dir.path().join("other-ca.pem"), other.pem().cert).expect("write");
        std::fs::write(dir.path().join("rogue.pem"), rogue.cert).expect("write");
        std::fs::write(dir.path().join("rogue.key"), rogue.key).expect("write");
        Certs { dir, ca }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn files(&self, name: &str) -> TlsFiles {
        TlsFiles {
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}.key")),
            ca: self.path("ca.pem"),
        }
    }
}

pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// For listeners bound again on the same port: a cloud node's after a restart, and a
/// service listener that unbinds while not ready. An address of their own, since on
/// 127.0.0.1 such a port, free meanwhile, can be taken as the source port of some
/// connection of the test (connections to 127.0.0.0/8 leave from 127.0.0.1), and the bind
/// then fails with EADDRINUSE.
pub fn rebinding_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 3], 0))
}

pub fn cloud_config(
    certs: &Certs,
    id: &str,
    when_not_ready: WhenNotReady,
    forward_to: Option<SocketAddr>,
) -> CloudConfig {
    CloudConfig {
        id: id.into(),
        session_listen: rebinding_port(),
        admin_listen: rebinding_port(),
        roster: vec![
            RosterNode {
                id: "cloud1".into(),
                sni: format!("cloud1.{DOMAIN}"),
            },
            RosterNode {
                id: "cloud2".into(),
                sni: format!("cloud2.{DOMAIN}"),
            },
        ],
        tls: certs.files(id),
        reverse: vec![ReverseService {
            service: "svc-a".into(),
            listen: rebinding_port(),
            when_not_ready,
            accept_wait: Duration::from_secs(1),
            allowed_exporters: ["onprem1".to_string(), "onprem2".to_string()].into(),
        }],
        forward: forward_to
            .map(|addr| ForwardService {
                service: "svc-b".into(),
                connect: addr.to_string(),
                allowed_consumers: ["onprem1".to_string(), "onprem2".to_string()].into(),
            })
            .into_iter()
            .collect(),
        timers: test_timers(),
        limits: Default::default(),
    }
}

pub fn onprem_config(
    certs: &Certs,
    id: &str,
    cloud: SocketAddr,
    server_a: SocketAddr,
    consume: bool,
) -> OnpremConfig {
    OnpremConfig {
        id: id.into(),
        cloud: cloud.to_string(),
        server_name: DOMAIN.into(),
        sni_pinning: false,
        prepared_connections: 2,
        admin_listen: any_port(),
        tls: certs.files(id),
        export: vec![Export {
            service: "svc-a".into(),
            connect: server_a.to_string(),
            health: Some(ExportHealth {
                check: ExportCheck::Tcp,
                interval: Duration::from_millis(100),
                fast_interval: Duration::from_millis(100),
                down_interval: Duration::from_millis(100),
                timeout: Duration::from_millis(200),
                rise: 1,
                fall: 1,
            }),
            resolve_interval: Duration::from_secs(10),
        }],
        consume: if consume {
            vec![Consume {
                service: "svc-b".into(),
                listen: rebinding_port(),
                when_not_ready: WhenNotReady::Unbind,
                accept_wait: Duration::from_secs(1),
            }]
        } else {
            Vec::new()
        },
        timers: test_timers(),
        limits: Default::default(),
        nameservers: Vec::new(),
    }
}

/// Cancels a token on drop, so servers stop even when a test fails.
pub struct CancelOnDrop(pub CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

pub struct Echo {
    pub addr: SocketAddr,
    pub stats: Arc<tether_health::tools::echo::EchoStats>,
    pub stop: CancellationToken,
    _guard: CancelOnDrop,
}

impl Echo {
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::SeqCst)
    }
}

pub async fn echo() -> Echo {
    let stop = CancellationToken::new();
    let e = tether_health::tools::echo::start(any_port(), None, stop.clone())
        .await
        .expect("echo server");
    Echo {
        addr: e.addr,
        stats: e.stats,
        stop: stop.clone(),
        _guard: CancelOnDrop(stop),
    }
}

/// One round trip through `addr`: connect, send a line, read it back, all within 5 s.
pub async fn echo_once(addr: SocketAddr, tag: &str) -> Result<(), String> {
    let run = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let msg = format!("hello {tag}\n");
        s.write_all(msg.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if buf != msg.as_bytes() {
            return Err(format!(
                "echo mismatch: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Ok(r) => r,
        Err(_) => Err("timed out after 5s".into()),
    }
}

/// Every gateway the harness started, as its change signal ([`Metrics::changes`]): what
/// [`wait_for`] wakes on. Shared by the tests of the process; a change in another test's
/// gateway only costs a look at `cond`.
///
/// [`Metrics::changes`]: tether_gateway::metrics::Metrics::changes
static CHANGES: Mutex<Vec<watch::Receiver<u64>>> = Mutex::new(Vec::new());

/// Makes [`wait_for`] wake on this gateway's changes too (for one not started through
/// [`Cloud::start`] or [`Onprem::start`]).
pub fn watch_changes(metrics: &tether_gateway::metrics::Metrics) {
    let mut all = CHANGES.lock().unwrap_or_else(|p| p.into_inner());
    // Gateways gone since: their senders are dropped.
    all.retain(|rx| rx.has_changed().is_ok());
    all.push(metrics.changes());
}

/// Waits until `cond` holds, looking at it again after every change a gateway of the
/// harness records (sessions, readiness, coverage, streams, refusals, pings); fails the
/// test when `limit` passes first. Returns the time it took.
pub async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + limit);
    let mut changes: Vec<watch::Receiver<u64>> =
        CHANGES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    loop {
        for rx in &mut changes {
            rx.borrow_and_update();
        }
        if cond() {
            return start.elapsed();
        }
        let any = async {
            if changes.is_empty() {
                return std::future::pending().await;
            }
            let waits = changes.iter_mut().map(|rx| Box::pin(rx.changed()));
            let (result, i, rest) = futures::future::select_all(waits).await;
            drop(rest);
            if result.is_err() {
                // That gateway is gone; it will not change again.
                changes.swap_remove(i);
            }
        };
        if tokio::time::timeout_at(deadline, any).await.is_err() {
            assert!(cond(), "timed out after {limit:?} waiting for {what}");
            return start.elapsed();
        }
    }
}

/// A cloud node with the token that drains it; killed on drop.
pub struct Cloud {
    pub handle: CloudHandle,
    pub shutdown: CancellationToken,
    pub config: CloudConfig,
}

impl Cloud {
    pub async fn start(config: CloudConfig) -> Cloud {
        let shutdown = CancellationToken::new();
        let handle = tether_gateway::cloud::start(config.clone(), shutdown.clone())
            .await
            .expect("cloud start");
        watch_changes(handle.metrics());
        // Later restarts reuse the same ports.
        let mut config = config;
        config.session_listen = handle.session_addr;
        config.admin_listen = handle.admin_addr;
        for r in &mut config.reverse {
            if let Some(a) = handle.service_addrs.get(&r.service) {
                r.listen = *a;
            }
        }
        Cloud {
            handle,
            shutdown,
            config,
        }
    }

    pub fn svc_a(&self) -> SocketAddr {
        self.config.reverse[0].listen
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        // Drains and stops the node, also when the test failed mid-way; the test runtime
        // ending stops whatever is left.
        self.shutdown.cancel();
    }
}

pub struct Onprem {
    pub handle: OnpremHandle,
    pub shutdown: CancellationToken,
}

impl Onprem {
    pub async fn start(config: OnpremConfig) -> Onprem {
        let shutdown = CancellationToken::new();
        let handle = tether_gateway::onprem::start(config, shutdown.clone())
            .await
            .expect("onprem start");
        watch_changes(handle.metrics());
        Onprem { handle, shutdown }
    }

    pub fn covered(&self, quota: usize) -> bool {
        let c = self.handle.coverage();
        c.len() == 2 && c.values().all(|n| *n == quota)
    }
}

impl Drop for Onprem {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The sum of the samples of `name` in `metrics` that carry each of `labels`, read from
/// the text `/metrics` serves.
pub fn counter(
    metrics: &tether_gateway::metrics::Metrics,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&metrics.registry.gather())
        .expect("metrics text");
    tether_lab::kit::metric_with(&text, name, labels)
}

/// A hand-made TLS 1.3 client of a cloud node's session port (gateway ALPN, trusting
/// `ca.pem`), presenting `identity`'s certificate if given: for peers that are not a real
/// on-prem gateway (no certificate, garbage after the handshake).
pub async fn tls_session(
    certs: &Certs,
    identity: Option<&str>,
    session: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use tether_gateway::tls::{self, TlsKey};
    let roots = tls::roots(TlsKey::Ca, &certs.path("ca.pem")).expect("ca");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots);
    let mut client = match identity {
        Some(name) => {
            let files = certs.files(name);
            builder
                .with_client_auth_cert(
                    tls::load_certs(TlsKey::Cert, &files.cert).expect("cert"),
                    tls::load_key(&files.key).expect("key"),
                )
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    client.alpn_protocols = vec![tls::ALPN.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(session).await?;
    let name = rustls_pki_types::ServerName::try_from(DOMAIN).expect("name");
    connector.connect(name, tcp).await
}
