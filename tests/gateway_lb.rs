//! The gateway behind the real `tether lb`, in-process on loopback: on-prem gateways dial
//! each cloud node's SNI name through one balancer frontend (SNI routes), clients reach the
//! cloud nodes through another frontend health-checked on `/readyz/svc-a`.
//!
//! Covers the reference-scenario regression with SNI pinning (a restarted cloud node is
//! ready within 3 s with no client traffic and serves the first client) and a drain of a
//! cloud node under a connect loop through the balancer with zero failed connects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tether_gateway::certs::{TestCa, Validity};
use tether_gateway::config::{
    CloudConfig, Export, ExportCheck, ExportHealth, OnpremConfig, ReverseService, RosterNode,
    Timers, TlsFiles, WhenNotReady,
};
use tether_gateway::{CloudHandle, OnpremHandle};
use tether_health::config::Source;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const DOMAIN: &str = "gw.example.com";

/// A scratch directory removed when the test ends, also on failure.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("tether-gwlb-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("tempdir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Cancels on drop so every daemon of a failed test stops.
struct Stop(CancellationToken);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn certs() -> TempDir {
    let dir = TempDir::new();
    let ca = TestCa::new("Tether test CA").expect("ca");
    std::fs::write(dir.0.join("ca.pem"), ca.pem().cert).expect("write");
    for name in ["cloud1", "cloud2", "onprem1", "onprem2"] {
        let p = ca.issue(name, DOMAIN, Validity::Current).expect("issue");
        std::fs::write(dir.0.join(format!("{name}.pem")), p.cert).expect("write");
        std::fs::write(dir.0.join(format!("{name}.key")), p.key).expect("write");
    }
    dir
}

fn files(dir: &TempDir, name: &str) -> TlsFiles {
    TlsFiles {
        cert: dir.0.join(format!("{name}.pem")),
        key: dir.0.join(format!("{name}.key")),
        ca: dir.0.join("ca.pem"),
    }
}

fn timers() -> Timers {
    Timers {
        ping: Duration::from_millis(300),
        dead_after: Duration::from_millis(1500),
        open_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_millis(500),
        handshake_timeout: Duration::from_secs(2),
        readiness_down: Duration::from_millis(200),
        drain_grace: Duration::from_secs(5),
        stop_delay: Duration::ZERO,
        // The production default: the restart bound below is checked with it.
        backoff_cap: Duration::from_secs(2),
        probe: Duration::from_secs(30),
        stream_idle_timeout: Duration::from_secs(3600),
        max_session_age: None,
    }
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A cloud node's listeners: a restart binds the same ports again, and the service listener
/// unbinds while not ready. On an address of their own, so that no connection of the test
/// (they leave from 127.0.0.1) takes one of those ports as its source port meanwhile.
fn cloud_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 3], 0))
}

fn cloud_cfg(dir: &TempDir, id: &str) -> CloudConfig {
    CloudConfig {
        id: id.into(),
        session_listen: cloud_listen(),
        admin_listen: cloud_listen(),
        roster: ["cloud1", "cloud2"]
            .iter()
            .map(|n| RosterNode {
                id: n.to_string(),
                sni: format!("{n}.{DOMAIN}"),
            })
            .collect(),
        tls: files(dir, id),
        reverse: vec![ReverseService {
            service: "svc-a".into(),
            listen: cloud_listen(),
            when_not_ready: WhenNotReady::Unbind,
            accept_wait: Duration::from_secs(1),
            allowed_exporters: ["onprem1".to_string(), "onprem2".to_string()].into(),
        }],
        forward: Vec::new(),
        timers: timers(),
        limits: Default::default(),
    }
}

fn onprem_cfg(dir: &TempDir, id: &str, vip: SocketAddr, server: SocketAddr) -> OnpremConfig {
    OnpremConfig {
        id: id.into(),
        cloud: vip.to_string(),
        server_name: DOMAIN.into(),
        sni_pinning: true,
        prepared_connections: 2,
        admin_listen: local(),
        tls: files(dir, id),
        export: vec![Export {
            service: "svc-a".into(),
            connect: server.to_string(),
            health: Some(ExportHealth {
                check: ExportCheck::Tcp,
                interval: Duration::from_millis(200),
                fast_interval: Duration::from_millis(200),
                down_interval: Duration::from_millis(200),
                timeout: Duration::from_millis(200),
                rise: 1,
                fall: 1,
            }),
            resolve_interval: Duration::from_secs(10),
        }],
        consume: Vec::new(),
        timers: timers(),
        limits: Default::default(),
        nameservers: Vec::new(),
    }
}

struct Cloud {
    handle: CloudHandle,
    shutdown: CancellationToken,
    config: CloudConfig,
}

async fn start_cloud(config: CloudConfig) -> Cloud {
    let shutdown = CancellationToken::new();
    let handle = tether_gateway::cloud::start(config.clone(), shutdown.clone())
        .await
        .expect("cloud");
    let mut config = config;
    config.session_listen = handle.session_addr;
    config.admin_listen = handle.admin_addr;
    config.reverse[0].listen = handle.service_addrs["svc-a"];
    Cloud {
        handle,
        shutdown,
        config,
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct Onprem(OnpremHandle, CancellationToken);

impl Drop for Onprem {
    fn drop(&mut self) {
        self.1.cancel();
    }
}

async fn start_onprem(config: OnpremConfig) -> Onprem {
    let t = CancellationToken::new();
    Onprem(
        tether_gateway::onprem::start(config, t.clone())
            .await
            .expect("onprem"),
        t,
    )
}

fn covered(o: &Onprem) -> bool {
    let c = o.0.coverage();
    c.len() == 2 && c.values().all(|n| *n == 2)
}

async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    loop {
        if cond() {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn echo_once(addr: SocketAddr, tag: &str) -> Result<(), String> {
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
            return Err("echo mismatch".into());
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

fn lb_toml(c1: &Cloud, c2: &Cloud, balance: &str) -> String {
    let (s1, s2) = (c1.handle.session_addr, c2.handle.session_addr);
    let (a1, a2) = (c1.config.reverse[0].listen, c2.config.reverse[0].listen);
    let (m1, m2) = (c1.handle.admin_addr.port(), c2.handle.admin_addr.port());
    format!(
        r#"
[defaults]
connect_timeout = "500ms"
retries = 2

[[frontend]]
name = "sessions"
bind = ["127.0.0.1:0"]
backend = "sessions-any"
inspect_timeout = "1s"

[[frontend.route]]
sni = "cloud1.{DOMAIN}"
backend = "sessions-cloud1"

[[frontend.route]]
sni = "cloud2.{DOMAIN}"
backend = "sessions-cloud2"

[[frontend]]
name = "svc-a"
# Another loopback address: the balancer refuses two frontends on "127.0.0.1:0".
bind = ["127.0.0.2:0"]
backend = "svc-a"

[[backend]]
name = "sessions-any"
balance = "leastconn"
health = {{ kind = "none" }}
[[backend.server]]
name = "cloud1"
address = "{s1}"
[[backend.server]]
name = "cloud2"
address = "{s2}"

[[backend]]
name = "sessions-cloud1"
health = {{ kind = "none" }}
[[backend.server]]
name = "cloud1"
address = "{s1}"

[[backend]]
name = "sessions-cloud2"
health = {{ kind = "none" }}
[[backend.server]]
name = "cloud2"
address = "{s2}"

[[backend]]
name = "svc-a"
balance = "{balance}"
health = {{ kind = "http", interval = "200ms", timeout = "200ms", rise = 1, fall = 1, path = "/readyz/svc-a", expect_status = 200 }}
[[backend.server]]
name = "cloud1"
address = "{a1}"
check_port = {m1}
[[backend.server]]
name = "cloud2"
address = "{a2}"
check_port = {m2}
"#
    )
}

struct Setup {
    _dir: TempDir,
    _echo: Stop,
    cloud1: Cloud,
    cloud2: Cloud,
    onprems: Vec<Onprem>,
    lb: tether_lb::Running,
    _lb_stop: Stop,
}

async fn setup(balance: &str) -> Setup {
    // Shown when a test fails: the warnings, or what RUST_LOG asks for.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let dir = certs();
    let echo_stop = CancellationToken::new();
    let a1 = tether_health::tools::echo::start(local(), None, echo_stop.clone())
        .await
        .expect("echo");
    let a2 = tether_health::tools::echo::start(local(), None, echo_stop.clone())
        .await
        .expect("echo");
    let cloud1 = start_cloud(cloud_cfg(&dir, "cloud1")).await;
    let cloud2 = start_cloud(cloud_cfg(&dir, "cloud2")).await;
    let config = tether_lb::Config::from_source(&Source::from_text(
        "lb.toml",
        lb_toml(&cloud1, &cloud2, balance),
    ))
    .expect("lb config");
    let lb_stop = CancellationToken::new();
    let lb = tether_lb::start(
        config,
        tether_lb::Options {
            workers: 1,
            ..Default::default()
        },
        lb_stop.clone(),
    )
    .await
    .expect("lb");
    let vip = lb.frontend_addrs("sessions")[0];
    let onprems = vec![
        start_onprem(onprem_cfg(&dir, "onprem1", vip, a1.addr)).await,
        start_onprem(onprem_cfg(&dir, "onprem2", vip, a2.addr)).await,
    ];
    wait_for(
        Duration::from_secs(15),
        "both on-prem gateways cover both nodes",
        || onprems.iter().all(covered),
    )
    .await;
    Setup {
        _dir: dir,
        _echo: Stop(echo_stop),
        cloud1,
        cloud2,
        onprems,
        lb,
        _lb_stop: Stop(lb_stop),
    }
}

fn surplus(o: &Onprem) -> f64 {
    o.0.metrics()
        .dials
        .with_label_values(&["cloud1", "surplus"])
        .get() as f64
        + o.0
            .metrics()
            .dials
            .with_label_values(&["cloud2", "surplus"])
            .get() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_pinned_sessions_and_cloud1_restart_through_tether_lb() {
    let mut s = setup("leastconn").await;
    // SNI pinning: every session landed on the node it named.
    for o in &s.onprems {
        assert_eq!(surplus(o), 0.0, "a pinned dial landed on the wrong node");
    }
    s.cloud1.handle.kill().await;
    wait_for(Duration::from_secs(5), "on-prem sees cloud1 gone", || {
        s.onprems
            .iter()
            .all(|o| o.0.coverage().get("cloud1").copied() == Some(0))
    })
    .await;
    let config = s.cloud1.config.clone();
    let restarted = start_cloud(config).await;
    let took = wait_for(
        Duration::from_secs(3),
        "restarted cloud1 ready within 3 s",
        || restarted.handle.is_ready("svc-a"),
    )
    .await;
    eprintln!("tether lb + SNI pinning: cloud1 ready {took:?} after restart");
    echo_once(restarted.config.reverse[0].listen, "first client on cloud1")
        .await
        .expect("the very first client on the restarted node");
    s.cloud1 = restarted;
    wait_for(Duration::from_secs(10), "coverage restored", || {
        s.onprems.iter().all(covered)
    })
    .await;
    // The balancer's first checks of svc-a (every 200 ms) saw 503 before any session was
    // up, and all of the above can take less than one interval: until a check has seen a
    // node ready it has no server and refuses the client, which is right, but not what
    // this test is about.
    wait_for(
        Duration::from_secs(5),
        "the balancer sees a svc-a node up",
        || {
            s.lb.lb
                .state()
                .backends
                .iter()
                .filter(|b| b.cfg.name == "svc-a")
                .flat_map(|b| b.servers.iter())
                .any(|srv| srv.up())
        },
    )
    .await;
    // Clients through the balancer's service frontend all succeed.
    let front = s.lb.frontend_addrs("svc-a")[0];
    for i in 0..20 {
        echo_once(front, &format!("via lb {i}"))
            .await
            .expect("through tether lb");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_cloud1_under_load_through_tether_lb_zero_failures() {
    let s = setup("roundrobin").await;
    let front = s.lb.frontend_addrs("svc-a")[0];
    // Wait until the balancer's checks see both nodes ready.
    wait_for(Duration::from_secs(5), "both nodes ready", || {
        s.cloud1.handle.is_ready("svc-a") && s.cloud2.handle.is_ready("svc-a")
    })
    .await;
    // And until the balancer's own checks have seen them (its first verdicts).
    let t = Instant::now();
    let mut both = 0;
    while both < 10 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "balancer never passed traffic"
        );
        match echo_once(front, "warm-up").await {
            Ok(()) => both += 1,
            Err(_) => both = 0,
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let load = tokio::spawn(async move {
        let (mut ok, mut failures) = (0u32, Vec::new());
        let t = Instant::now();
        while !st.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(30) && ok < 20_000 {
            match echo_once(front, &format!("drain {ok}")).await {
                Ok(()) => ok += 1,
                Err(e) => failures.push(e),
            }
        }
        (ok, failures)
    });
    let streams = |c: &Cloud| {
        c.handle
            .metrics()
            .streams
            .with_label_values(&["svc-a", "reverse", "ok"])
            .get()
    };
    wait_for(Duration::from_secs(10), "load reaches cloud1", || {
        streams(&s.cloud1) >= 20
    })
    .await;
    s.cloud1.shutdown.cancel();
    s.cloud1.handle.wait().await;
    let before = streams(&s.cloud2);
    wait_for(Duration::from_secs(10), "load continues on cloud2", || {
        streams(&s.cloud2) >= before + 100
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failures) = load.await.expect("load");
    eprintln!(
        "drain through tether lb: {ok} connects, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed connects during the drain: {failures:?}"
    );
}
