//! Shared by the balancer's integration tests: an in-process balancer, echo servers, TLS
//! material, metrics parsing, and a guard for child processes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tether_health::config::Source;
use tether_health::tools::echo::{self, Echo};
use tether_lb::{Config, Options, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The bound on every wait in these tests.
pub const T: Duration = Duration::from_secs(10);

/// An echo server on loopback that writes `name` first.
pub async fn echo_server(name: &str, stop: &CancellationToken) -> Echo {
    echo::start(
        "127.0.0.1:0".parse().unwrap(),
        Some(name.to_string()),
        stop.clone(),
    )
    .await
    .unwrap()
}

/// `[[backend.server]]` tables for `servers`, each with `extra` lines.
pub fn servers_toml(servers: &[(&str, SocketAddr)], extra: &str) -> String {
    servers
        .iter()
        .map(|(n, a)| format!("[[backend.server]]\nname = \"{n}\"\naddress = \"{a}\"\n{extra}\n"))
        .collect()
}

/// A balancer running in this process; stopped when dropped.
pub struct Lb {
    pub running: Option<Running>,
    pub stop: CancellationToken,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: Option<TempDir>,
}

impl Lb {
    /// Starts from TOML text (no reload possible).
    pub async fn start(toml: &str) -> Lb {
        Self::start_inner(toml, None).await
    }

    /// Starts from a file in a fresh temporary directory, so the test can rewrite it and
    /// reload.
    pub async fn start_file(toml: &str) -> Lb {
        let dir = TempDir::new("lb");
        let path = dir.path.join("lb.toml");
        std::fs::write(&path, toml).unwrap();
        let mut lb = Self::start_inner(toml, Some(path)).await;
        lb.dir = Some(dir);
        lb
    }

    async fn start_inner(toml: &str, path: Option<PathBuf>) -> Lb {
        let cfg = Config::from_source(&Source::from_text("test.toml", toml))
            .unwrap_or_else(|e| panic!("{e}"));
        let stop = CancellationToken::new();
        let opts = Options {
            workers: 2,
            config_path: path,
            ..Default::default()
        };
        let running = tether_lb::start(cfg, opts, stop.clone()).await.unwrap();
        let addr = running.lb.state().frontends[0].bound[0];
        let admin = running.admin_addr.unwrap();
        Lb {
            running: Some(running),
            stop,
            addr,
            admin,
            dir: None,
        }
    }

    /// Rewrites the configuration file.
    pub fn write_config(&self, toml: &str) {
        let dir = self.dir.as_ref().expect("started from a file");
        std::fs::write(dir.path.join("lb.toml"), toml).unwrap();
    }

    pub async fn get(&self, path: &str) -> tether_health::http::Response {
        tether_health::http::get(self.admin, "admin", path, T)
            .await
            .unwrap()
    }

    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> tether_health::http::Response {
        tether_health::http::request(
            self.admin,
            "POST",
            "admin",
            path,
            headers,
            body.to_string().into(),
            T,
        )
        .await
        .unwrap()
    }

    pub async fn state(&self) -> serde_json::Value {
        serde_json::from_slice(&self.get("/api/state").await.body).unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text()
    }

    /// Waits (bounded) until server `name` of the first backend has health `want`.
    pub async fn wait_health(&self, name: &str, want: &str) {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let state = self.state().await;
            let found = state["backends"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|b| b["servers"].as_array().unwrap().iter())
                .find(|s| s["name"] == name)
                .cloned();
            if found.as_ref().is_some_and(|s| s["health"] == want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} never became {want}: {found:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + T;
        while self.get("/readyz").await.status != 200 {
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (bounded) until `series` reads at least `want`.
    pub async fn wait_metric_at_least(&self, series: &str, want: f64) {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let m = self.metrics().await;
            if metric_opt(&m, series).is_some_and(|v| v >= want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} never reached {want}:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until `series` reads `want`.
    pub async fn wait_metric(&self, series: &str, want: f64) {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let m = self.metrics().await;
            if metric_opt(&m, series) == Some(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} never {want}:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The configuration most tests start from: one frontend `fe`, one backend `be`.
pub fn base(admin_extra: &str, backend_extra: &str, servers: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
{admin_extra}
[defaults]
connect_timeout = "500ms"
retries = 2

[[frontend]]
name = "fe"
bind = ["127.0.0.1:0"]
backend = "be"

[[backend]]
name = "be"
{backend_extra}
{servers}
"#
    )
}

/// Connects, sends a line, reads until it comes back; returns the banner line.
pub async fn exchange(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let text = String::from_utf8(round_trip(&mut s).await).unwrap();
    text.lines().next().unwrap().to_string()
}

/// Sends a line on `s` and reads until it comes back; returns what was read (the banner
/// first, on a connection's first round trip).
pub async fn round_trip(s: &mut TcpStream) -> Vec<u8> {
    s.write_all(b"hello\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"hello\n") {
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed early after {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// The value of one series in Prometheus text, if present.
pub fn metric_opt(text: &str, series: &str) -> Option<f64> {
    tether_lab::kit::metric(text, series)
}

/// The value of one series in Prometheus text.
pub fn metric(text: &str, series: &str) -> f64 {
    metric_opt(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// A temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "tether-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A child process killed (by its pid) and reaped when the test ends, even on failure.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A program from Debian that the test needs; a clear failure when it is missing.
pub fn require(program: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = std::path::Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{program} is not installed: run scripts/install-test-deps.sh as root (Debian package {package})"
    );
}

/// Waits (bounded) until something accepts TCP connections on `addr`.
pub async fn wait_listening(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + T;
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A free loopback port (bound and released: good enough for a test peer's config file).
pub fn free_port(ip: &str) -> u16 {
    tether_lab::kit::free_port(ip)
}

/// A test certificate authority (rcgen) and what clients and servers need from it.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate.
    pub cert: rustls_pki_types::CertificateDer<'static>,
    /// The CA certificate as PEM.
    pub pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tether test CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server configuration with a certificate for `names`.
    pub fn server_config(&self, names: &[&str]) -> std::sync::Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), self.cert.clone()], key)
            .unwrap();
        std::sync::Arc::new(config)
    }

    /// A client configuration trusting only this CA.
    pub fn client_config(&self, sni: bool) -> std::sync::Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.enable_sni = sni;
        std::sync::Arc::new(config)
    }
}

/// A TLS echo server: completes the handshake with a certificate for `names`, writes
/// `banner`, then echoes.
pub async fn tls_echo(
    ca: &TestCa,
    names: &[&str],
    banner: &str,
    stop: &CancellationToken,
) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(names));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let banner = format!("{banner}\n");
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = tokio::select! {
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                _ = stop.cancelled() => return,
            };
            let acceptor = acceptor.clone();
            let banner = banner.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                if tls.write_all(banner.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A TLS client exchange through `addr` for `name` (verified against `ca`); returns the
/// banner of the server that answered.
pub async fn tls_exchange(
    ca: &TestCa,
    addr: SocketAddr,
    name: &str,
    sni: bool,
) -> Result<String, String> {
    let connector = tokio_rustls::TlsConnector::from(ca.client_config(sni));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let server_name =
        rustls_pki_types::ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let mut tls = tokio::time::timeout(T, connector.connect(server_name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tls.write_all(b"ping\n").await.map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"ping\n") {
        let n = tokio::time::timeout(T, tls.read(&mut buf))
            .await
            .map_err(|_| "read timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}
