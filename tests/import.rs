//! `tether import` as a user runs it: exit codes, warnings on stderr, output that the
//! daemons' own `--check` accepts, and an haproxy.cfg whose conversion, run by `tether lb`,
//! picks the same servers as real HAProxy does on the original.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

const TETHER: &str = env!("CARGO_BIN_EXE_tether");

/// A child we started, stopped by its pid and reaped when the test ends, even on failure.
/// HAProxy's master gets SIGTERM, so that it stops its workers and frees the ports before
/// `tether lb` binds them; our own processes get SIGKILL.
struct Proc {
    child: Child,
    term: bool,
}

impl Proc {
    fn new(child: Child) -> Self {
        Proc { child, term: false }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.term {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        } else {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("tether-import-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn import(kind: &str, input: &Path, out: &Path) -> Output {
    Command::new(TETHER)
        .args(["import", kind])
        .arg(input)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn check(daemon: &str, config: &Path) -> Output {
    Command::new(TETHER)
        .args([daemon, "--check", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn import_haproxy_writes_a_checked_lb_toml_and_reports_on_stderr() {
    let dir = TempDir::new("cli-h");
    let cfg = dir.0.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        "defaults\n  mode tcp\n  timeout connect 5s\n\
         frontend fe\n  bind :8443\n  option tcplog\n  default_backend be\n\
         backend be\n  server s1 192.0.2.1:443 check\n",
    )
    .unwrap();
    let out = import("haproxy", &cfg, &dir.0.join("out"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}:6: option tcplog: not carried over: tether logs to stderr (the journal) in its own format\n",
            cfg.display()
        )
    );
    let lb = dir.0.join("out/lb.toml");
    let c = check("lb", &lb);
    assert!(c.status.success(), "{}", text(&c.stderr));

    std::fs::write(&cfg, "frontend fe\n  bind \"*:80\n").unwrap();
    let out = import("haproxy", &cfg, &dir.0.join("bad"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("{}:2: unterminated \" quote\n", cfg.display())
    );
    assert!(
        !dir.0.join("bad").exists(),
        "nothing written on a parse error"
    );
}

#[test]
fn import_keepalived_writes_a_checked_vrrp_toml() {
    let dir = TempDir::new("cli-k");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(
        &conf,
        "vrrp_instance VI_1 {\n  state MASTER\n  interface eth0\n  virtual_router_id 51\n  priority 150\n\
         advert_int 1\n  virtual_ipaddress {\n    192.0.2.100/24 dev eth0\n  }\n  smtp_alert\n}\n",
    )
    .unwrap();
    let out = import("keepalived", &conf, &dir.0.join("out"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}:10: smtp_alert: not carried over: tether sends no mail; use notify\n",
            conf.display()
        )
    );
    let c = check("vrrp", &dir.0.join("out/vrrp.toml"));
    assert!(c.status.success(), "{}", text(&c.stderr));
    assert!(
        !dir.0.join("out/lb.toml").exists(),
        "no virtual_server, no lb.toml"
    );

    std::fs::write(&conf, "vrrp_instance VI_1 {\n  interface eth0\n").unwrap();
    assert_eq!(
        import("keepalived", &conf, &dir.0.join("bad"))
            .status
            .code(),
        Some(1)
    );
}

/// Starts `tether echo` answering with `banner` first; returns it and its address.
fn echo(banner: &str) -> (Proc, SocketAddr) {
    let mut p = Proc::new(
        Command::new(TETHER)
            .args(["--log-format", "json", "echo", "--listen", "127.0.0.1:0"])
            .args(["--banner", banner])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = BufReader::new(p.child.stderr.take().unwrap()).lines();
    for line in lines.map_while(Result::ok) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "echo server ready" {
            let addr = v["listen"].as_str().unwrap().parse().unwrap();
            return (p, addr);
        }
    }
    panic!("echo {banner} exited before it was ready");
}

/// A TLS ClientHello naming `sni`, as a client would send it first.
fn client_hello(sni: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// The banner of the server a new connection to `port` reaches.
fn reached(port: u16, first: Option<&[u8]>) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if let Some(b) = first {
        s.write_all(b).unwrap();
    }
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while s.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    text(&line)
}

/// What clients get through a balancer running the config below, per scenario.
#[derive(Debug, PartialEq)]
struct Choices {
    roundrobin: BTreeMap<String, usize>,
    first: BTreeMap<String, usize>,
    source_servers: usize,
    sni: Vec<String>,
}

fn count(port: u16, n: usize) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        *m.entry(reached(port, None)).or_default() += 1;
    }
    m
}

fn choices(ports: &[u16; 4]) -> Choices {
    Choices {
        roundrobin: count(ports[0], 12),
        first: count(ports[1], 4),
        source_servers: count(ports[2], 6).len(),
        sni: [
            "api.example.com",
            "API2.example.com",
            "x.apps.example.com",
            "other.example",
        ]
        .iter()
        .map(|n| reached(ports[3], Some(&client_hello(n))))
        .collect(),
    }
}

/// Runs HAProxy in master-worker mode and waits for its systemd readiness message.
fn haproxy(cfg: &Path, dir: &Path) -> Proc {
    let bin = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("haproxy is not installed: run scripts/install-test-deps.sh as root");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let p = Proc {
        child: Command::new(bin)
            .arg("-Ws")
            .arg("-f")
            .arg(cfg)
            .env("NOTIFY_SOCKET", &sock_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        term: true,
    };
    let mut buf = [0u8; 512];
    loop {
        let n = sock.recv(&mut buf).expect("haproxy sent no READY=1");
        if text(&buf[..n]).lines().any(|l| l == "READY=1") {
            return p;
        }
    }
}

/// Runs `tether lb` and waits until each of its `frontends` logged that it listens.
fn tether_lb(cfg: &Path, frontends: usize) -> Proc {
    let mut p = Proc::new(
        Command::new(TETHER)
            .args(["--log-format", "json", "lb", "--workers", "1", "--config"])
            .arg(cfg)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = BufReader::new(p.child.stderr.take().unwrap()).lines();
    let mut seen = 0;
    for line in lines.map_while(Result::ok) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "listening" {
            seen += 1;
            if seen == frontends {
                return p;
            }
        }
    }
    panic!("tether lb exited before listening on {frontends} frontends");
}

#[test]
fn the_converted_haproxy_cfg_picks_the_same_servers_as_haproxy() {
    let dir = TempDir::new("roundtrip");
    let names = [
        "a1", "a2", "a3", "a4", "a5", "f1", "f2", "s1", "s2", "api", "wild", "def",
    ];
    let servers: Vec<(Proc, SocketAddr)> = names.iter().map(|n| echo(n)).collect();
    let at = |n: &str| servers[names.iter().position(|x| *x == n).unwrap()].1;
    let ports = [
        support::free_port(),
        support::free_port(),
        support::free_port(),
        support::free_port(),
    ];
    let cfg = format!(
        "global\n  maxconn 1000\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend fe_rr\n  bind 127.0.0.1:{p0}\n  default_backend be_rr\n\
         backend be_rr\n  balance roundrobin\n\
           server a1 {a1} weight 1\n  server a2 {a2} weight 2\n  server a3 {a3} weight 3\n\
           server a4 {a4} disabled\n  server a5 {a5} backup\n\
         listen first\n  bind 127.0.0.1:{p1}\n  balance first\n  server f1 {f1}\n  server f2 {f2}\n\
         listen source\n  bind 127.0.0.1:{p2}\n  balance source\n  hash-type consistent\n\
           server s1 {s1}\n  server s2 {s2}\n\
         frontend fe_sni\n  bind 127.0.0.1:{p3}\n  tcp-request inspect-delay 5s\n\
           tcp-request content accept if {{ req_ssl_hello_type 1 }}\n\
           acl api req.ssl_sni -i api.example.com api2.example.com\n\
           use_backend be_api if api\n\
           use_backend be_wild if {{ req_ssl_sni -m end .apps.example.com }}\n\
           default_backend be_def\n\
         backend be_api\n  server api {api}\n\
         backend be_wild\n  server wild {wild}\n\
         backend be_def\n  server def {def}\n",
        p0 = ports[0],
        p1 = ports[1],
        p2 = ports[2],
        p3 = ports[3],
        a1 = at("a1"),
        a2 = at("a2"),
        a3 = at("a3"),
        a4 = at("a4"),
        a5 = at("a5"),
        f1 = at("f1"),
        f2 = at("f2"),
        s1 = at("s1"),
        s2 = at("s2"),
        api = at("api"),
        wild = at("wild"),
        def = at("def"),
    );
    let cfg_path = dir.0.join("haproxy.cfg");
    std::fs::write(&cfg_path, &cfg).unwrap();

    let original = {
        let _h = haproxy(&cfg_path, &dir.0);
        choices(&ports)
    };
    let want = Choices {
        roundrobin: [("a1", 2), ("a2", 4), ("a3", 6)]
            .map(|(k, v)| (k.to_string(), v))
            .into(),
        first: [("f1".to_string(), 4)].into(),
        source_servers: 1,
        sni: ["api", "api", "wild", "def"].map(String::from).into(),
    };
    assert_eq!(original, want, "HAProxy itself");

    let out = import("haproxy", &cfg_path, &dir.0.join("out"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let converted = {
        let _lb = tether_lb(&dir.0.join("out/lb.toml"), 4);
        choices(&ports)
    };
    assert_eq!(converted, original);
}
