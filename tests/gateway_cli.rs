//! `tether gateway` as a user runs it: `certs`, `--check` on the examples and on a broken
//! file, and a real pair of processes (cloud + on-prem) that becomes ready and relays.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TETHER: &str = env!("CARGO_BIN_EXE_tether");

/// Kills the child (by its pid, which we started) when the test ends, even on failure.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory removed when the test ends, also on failure.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("tether-gw-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("tempdir");
        TempDir(p)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_accepts_every_gateway_example() {
    // --check reads the certificates the examples name: make them as their comment says.
    let dir = TempDir::new();
    let out = Command::new(TETHER)
        .args(["gateway", "certs", "--out"])
        .arg(dir.path().join("certs"))
        .args(["--names", "cloud1,onprem1"])
        .output()
        .expect("certs");
    assert!(out.status.success());
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("examples")).expect("examples") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("gateway") && path.extension().is_some_and(|e| e == "toml")) {
            continue;
        }
        let copy = dir.path().join(name);
        std::fs::copy(&path, &copy).expect("copy");
        let out = Command::new(TETHER)
            .args(["gateway", "--check", "--config"])
            .arg(&copy)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 2, "found only {checked} gateway examples");
}

#[test]
fn check_reports_file_line_and_key() {
    let dir = TempDir::new();
    let bad = dir.path().join("gw.toml");
    std::fs::write(
        &bad,
        "[node]\nrole = \"onprem\"\nid = \"onprem1\"\ncloud = \"vip:443\"\nprepared_connections = 99\nadmin_listen = \"127.0.0.1:0\"\n[tls]\ncert = \"a\"\nkey = \"b\"\nca = \"c\"\n",
    )
    .expect("write");
    let out = Command::new(TETHER)
        .args(["gateway", "--check", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gw.toml:5: node.prepared_connections: 99 out of range; allowed 1..=16"),
        "{err}"
    );
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn certs_then_cloud_and_onprem_processes_relay() {
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    let out = Command::new(TETHER)
        .args(["gateway", "certs", "--out"])
        .arg(&certs)
        .args(["--names", "cloud1,onprem1"])
        .output()
        .expect("certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "ca.pem",
        "ca.key",
        "cloud1.pem",
        "cloud1.key",
        "onprem1.pem",
        "onprem1.key",
    ] {
        assert!(certs.join(f).exists(), "{f} missing");
    }

    // An echo server as the on-prem server A.
    let echo_port = support::spawn_echo();

    let (session, admin, svc, oadmin) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let cloud_toml = dir.path().join("cloud.toml");
    std::fs::write(
        &cloud_toml,
        format!(
            "[node]\nrole = \"cloud\"\nid = \"cloud1\"\nsession_listen = \"127.0.0.1:{session}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [tls]\ncert = \"certs/cloud1.pem\"\nkey = \"certs/cloud1.key\"\nclient_ca = \"certs/ca.pem\"\n\
             [[reverse]]\nservice = \"svc-a\"\nlisten = \"127.0.0.1:{svc}\"\nallowed_exporters = [\"onprem1\"]\n"
        ),
    )
    .expect("write");
    let onprem_toml = dir.path().join("onprem.toml");
    std::fs::write(
        &onprem_toml,
        format!(
            "[node]\nrole = \"onprem\"\nid = \"onprem1\"\ncloud = \"127.0.0.1:{session}\"\nserver_name = \"gw.example.com\"\nadmin_listen = \"127.0.0.1:{oadmin}\"\n\
             [tls]\ncert = \"certs/onprem1.pem\"\nkey = \"certs/onprem1.key\"\nca = \"certs/ca.pem\"\n\
             [[export]]\nservice = \"svc-a\"\nconnect = \"127.0.0.1:{echo_port}\"\n"
        ),
    )
    .expect("write");
    let spawn = |cfg: &std::path::Path| {
        Proc(
            Command::new(TETHER)
                .args(["gateway", "--config"])
                .arg(cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    };
    let cloud = spawn(&cloud_toml);
    let _onprem = spawn(&onprem_toml);
    let t = Instant::now();
    while http_status(admin, "/readyz/svc-a") != Some(200) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "cloud never became ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = TcpStream::connect(("127.0.0.1", svc)).expect("service port listens when ready");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.write_all(b"through the gateway\n").expect("write");
    let mut buf = [0u8; 20];
    c.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"through the gateway\n");
    assert_eq!(http_status(admin, "/livez"), Some(200));
    drop(c);

    // SIGTERM drains and exits cleanly, promptly when nothing is in flight.
    let mut cloud = cloud;
    let status = Command::new("kill")
        .args(["-TERM", &cloud.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let t = Instant::now();
    let exit = loop {
        if let Some(s) = cloud.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no exit 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit}");
    // Nothing listens on the service port any more.
    assert!(TcpStream::connect(("127.0.0.1", svc)).is_err());
}

/// SIGHUP reloads the file: a valid change is applied and logged with what changed; an
/// invalid file is refused with its errors and the gateway keeps running until SIGTERM
/// stops it cleanly.
#[test]
fn sighup_reloads_the_file_and_refuses_an_invalid_one() {
    use std::io::{BufRead, BufReader};
    let dir = TempDir::new();
    let certs = dir.path().join("certs");
    let out = Command::new(TETHER)
        .args(["gateway", "certs", "--out"])
        .arg(&certs)
        .args(["--names", "cloud1"])
        .output()
        .expect("certs");
    assert!(out.status.success());
    let (session, admin) = (support::free_port(), support::free_port());
    let cfg = dir.path().join("cloud.toml");
    let text = format!(
        "[node]\nrole = \"cloud\"\nid = \"cloud1\"\nsession_listen = \"127.0.0.1:{session}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
         [tls]\ncert = \"certs/cloud1.pem\"\nkey = \"certs/cloud1.key\"\nclient_ca = \"certs/ca.pem\"\n"
    );
    std::fs::write(&cfg, &text).expect("write");
    let mut cloud = Proc(
        Command::new(TETHER)
            .args(["gateway", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    // Lines arrive through a channel so a missing line fails the test instead of hanging
    // it (a gateway that ignores SIGHUP silently prints nothing and keeps running).
    let stderr = cloud.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let wait_for = |needle: &str| {
        let limit = Duration::from_secs(30);
        let t = Instant::now();
        while let Some(left) = limit.checked_sub(t.elapsed()) {
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    assert!(
        wait_for("cloud gateway started").is_some(),
        "the gateway never started"
    );
    let pid = cloud.0.id().to_string();
    let signal = |sig: &str| {
        Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
    };
    std::fs::write(&cfg, format!("{text}[timers]\nping = \"1s\"\n")).expect("write");
    assert!(signal("-HUP").success());
    let logged = wait_for("configuration reloaded").expect("no reload line");
    assert!(logged.contains("timers ping"), "{logged}");
    std::fs::write(&cfg, "[node\n").expect("write");
    assert!(signal("-HUP").success());
    let logged = wait_for("reload refused").expect("no refusal line");
    assert!(logged.contains("keeps serving"), "{logged}");
    assert!(
        cloud.0.try_wait().expect("wait").is_none(),
        "SIGHUP ended the gateway"
    );
    assert!(signal("-TERM").success());
    let exit = cloud.0.wait().expect("wait");
    assert!(exit.success(), "exit status {exit}");
}
