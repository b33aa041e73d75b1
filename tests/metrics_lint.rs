//! Every daemon's `/metrics` passes `promtool check metrics`, Prometheus' own linter (help
//! text on every family, base units in names, counters and only counters ending in
//! `_total`), so recording rules, alerts and dashboards built with Prometheus tooling take
//! the names as they are. The daemons run as a user runs them, on loopback: a balancer with
//! a connection through it, a VRRP daemon (its interface missing, so it touches nothing on
//! the machine), and a cloud and an on-prem gateway with a stream between them, so the
//! families that appear only after traffic (connect times, stream opens, bytes) are linted
//! too.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TETHER: &str = env!("CARGO_BIN_EXE_tether");
/// How long a daemon may take to say READY=1, or an echo to come back (a loaded CI box).
const PATIENCE: Duration = Duration::from_secs(60);

/// Kills the child (by its pid, which we started) when the test ends, even on failure.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory removed when the test ends, also on failure.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `promtool`, from Debian's `prometheus` package (scripts/apt-packages.txt). `None` only
/// when it is missing and the test cannot install it (not root): then the test says so and
/// passes; as root a missing promtool is a broken setup and fails.
fn promtool() -> Option<PathBuf> {
    let found = ["/usr/bin", "/usr/local/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join("promtool"))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            !nix::unistd::Uid::effective().is_root(),
            "promtool is not installed: run scripts/install-test-deps.sh (Debian package prometheus)"
        );
        eprintln!(
            "SKIPPED: promtool is not installed and this user cannot install it; \
             run scripts/install-test-deps.sh as root (Debian package prometheus)"
        );
    }
    found
}

/// Starts `tether ARGS --config CFG` and waits for its READY=1 (systemd's notify protocol,
/// sent once its listeners and admin are up). Its log goes to `NAME.log` in `dir`, shown
/// if it never gets ready.
fn start(dir: &Path, name: &str, args: &[&str], cfg: &str) -> Proc {
    let cfg_path = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg_path, cfg).expect("write config");
    let sock_path = dir.join(format!("{name}.notify"));
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let proc = Proc(
        Command::new(TETHER)
            .args(args)
            .arg("--config")
            .arg(&cfg_path)
            .current_dir(dir)
            .env("NOTIFY_SOCKET", &sock_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tether"),
    );
    let mut buf = [0u8; 256];
    let ready = sock.recv(&mut buf).map(|n| buf[..n].to_vec());
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    match ready {
        Ok(msg) => assert_eq!(String::from_utf8_lossy(&msg).trim(), "READY=1", "{name}"),
        Err(e) => panic!("{name}: no READY=1 ({e}); its log:\n{log}"),
    }
    proc
}

/// Opens a connection to `port`, sends a line and reads its echo; returns the connection,
/// still open, so the gauges of open connections and streams have series too.
fn echo_through(port: u16, what: &str) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{what}: {e}"));
    c.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let line = b"metrics lint\n";
    c.write_all(line).expect("write");
    let mut buf = [0u8; 13];
    c.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("no echo through {what}: {e}"));
    assert_eq!(&buf, line, "{what}");
    c
}

/// The body of `GET /metrics` on an admin port (HTTP/1.0: the server closes at the end).
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("admin connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_string()
}

/// Runs `promtool check metrics` on `text`: its verdict and what it printed.
fn check(promtool: &Path, text: &str) -> (bool, String) {
    let mut p = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    p.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = p.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn every_daemons_metrics_pass_promtool_check_metrics() {
    let Some(promtool) = promtool() else { return };
    // The linter is live: a counter without `_total` and a family without help fail.
    let (ok, said) = check(&promtool, "# TYPE tether_bad counter\ntether_bad 1\n");
    assert!(
        !ok && said.contains("_total"),
        "promtool let a bad name pass: {said}"
    );

    let dir = TempDir(std::env::temp_dir().join(format!("tether-lint-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("tempdir");
    let d = dir.0.as_path();
    let echo = support::spawn_echo();

    let (lb_admin, fe) = (support::free_port(), support::free_port());
    let _lb = start(
        d,
        "lb",
        &["lb", "--workers", "1"],
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{lb_admin}\"\n\
             [[frontend]]\nname = \"fe\"\nbind = [\"127.0.0.1:{fe}\"]\nbackend = \"b\"\n\
             [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:{echo}\"\n"
        ),
    );

    let vrrp_admin = support::free_port();
    let _vrrp = start(
        d,
        "vrrp",
        &["vrrp"],
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{vrrp_admin}\"\n\
             [[instance]]\nname = \"VI_1\"\ninterface = \"tlintnone0\"\nvrid = 51\n\
             virtual_addresses = [\"192.0.2.100/24\"]\n"
        ),
    );

    let out = Command::new(TETHER)
        .args(["gateway", "certs", "--out"])
        .arg(d.join("certs"))
        .args(["--names", "cloud1,onprem1"])
        .output()
        .expect("gateway certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (session, cloud_admin, svc, onprem_admin) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    // `hold`: the service port listens from the start and a client waits for the on-prem
    // gateway's session, so the test needs no readiness poll.
    let _cloud = start(
        d,
        "cloud",
        &["gateway"],
        &format!(
            "[node]\nrole = \"cloud\"\nid = \"cloud1\"\nsession_listen = \"127.0.0.1:{session}\"\n\
             admin_listen = \"127.0.0.1:{cloud_admin}\"\n\
             [tls]\ncert = \"certs/cloud1.pem\"\nkey = \"certs/cloud1.key\"\nclient_ca = \"certs/ca.pem\"\n\
             [[reverse]]\nservice = \"svc-a\"\nlisten = \"127.0.0.1:{svc}\"\nwhen_not_ready = \"hold\"\n\
             accept_wait = \"60s\"\nallowed_exporters = [\"onprem1\"]\n"
        ),
    );
    let _onprem = start(
        d,
        "onprem",
        &["gateway"],
        &format!(
            "[node]\nrole = \"onprem\"\nid = \"onprem1\"\ncloud = \"127.0.0.1:{session}\"\n\
             server_name = \"gw.example.com\"\nadmin_listen = \"127.0.0.1:{onprem_admin}\"\n\
             [tls]\ncert = \"certs/onprem1.pem\"\nkey = \"certs/onprem1.key\"\nca = \"certs/ca.pem\"\n\
             [[export]]\nservice = \"svc-a\"\nconnect = \"127.0.0.1:{echo}\"\n"
        ),
    );

    let _through_lb = echo_through(fe, "the balancer");
    let _through_gateways = echo_through(svc, "the gateways");

    // Each daemon's output, with a family that only traffic creates: proof the lint saw it.
    let daemons = [
        (
            "tether lb",
            lb_admin,
            "tether_lb_server_connect_seconds_bucket",
        ),
        ("tether vrrp", vrrp_admin, "tether_vrrp_state{"),
        (
            "tether gateway (cloud)",
            cloud_admin,
            "tether_gateway_stream_open_seconds_bucket",
        ),
        (
            "tether gateway (on-prem)",
            onprem_admin,
            "tether_gateway_sessions{",
        ),
    ];
    let mut problems = Vec::new();
    for (name, port, traffic) in daemons {
        let text = scrape(port);
        assert!(text.contains(traffic), "{name}: no {traffic} in\n{text}");
        assert!(text.contains("tether_log_lines_dropped_total"), "{name}");
        let (ok, said) = check(&promtool, &text);
        eprintln!(
            "{name}: promtool check metrics: {}",
            if ok { "clean" } else { "problems" }
        );
        if !ok {
            problems.push(format!("{name}:\n{said}"));
        }
    }
    assert!(
        problems.is_empty(),
        "promtool check metrics:\n{}",
        problems.join("\n")
    );
}
