//! The `tether` binary as a user runs it: `--check`, a real SIGTERM, echo and probe.

use std::io::{BufRead, BufReader};
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

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn check_accepts_the_example_and_rejects_errors_with_exit_1() {
    let ok = Command::new(TETHER)
        .args(["lb", "--check", "--config"])
        .arg(examples().join("lb.toml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = tempdir();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:1\"]\nbackend = \"b\"\n[[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:2\"\nweight = 0\n",
    )
    .unwrap();
    let out = Command::new(TETHER)
        .args(["lb", "--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:10: backend[0].server[0].weight: backend \"b\": server \"s\" has weight 0; weight must be 1..=256"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tether-cli-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Reads JSON log lines from the child's stderr until one has `field`, returning its value.
fn wait_log_field(lines: &mut impl Iterator<Item = String>, message: &str, field: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Vec::new();
    for line in lines {
        assert!(Instant::now() < deadline, "no {message} log line in time");
        last.push(line.clone());
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["message"] == message {
            return v[field].as_str().unwrap_or_default().to_string();
        }
    }
    panic!("process exited before logging {message}: {last:#?}");
}

/// Starts `tether lb` (through `cmd`, which runs `TETHER` or wraps it) with JSON logs on
/// `cfg`; returns the process, its log lines and the address its frontend listens on.
fn spawn_lb(
    cmd: Command,
    cfg: &std::path::Path,
) -> (Proc, impl Iterator<Item = String> + use<>, String) {
    spawn_lb_workers(cmd, cfg, 1)
}

/// [`spawn_lb`] with `--workers n`.
fn spawn_lb_workers(
    mut cmd: Command,
    cfg: &std::path::Path,
    workers: usize,
) -> (Proc, impl Iterator<Item = String> + use<>, String) {
    let mut lb = Proc(
        cmd.args(["--log-format", "json", "lb", "--workers"])
            .arg(workers.to_string())
            .arg("--config")
            .arg(cfg)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(lb.0.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let bind = wait_log_field(&mut lines, "listening", "bind");
    let addr = bind.trim_matches(|c| c == '[' || c == ']').to_string();
    (lb, lines, addr)
}

#[test]
fn sigterm_drains_open_connections_then_exits_0() {
    let (_echo, echo_addr) = spawn_echo("e");

    let dir = tempdir();
    let cfg = dir.join("lb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[defaults]\ngrace_period = \"10s\"\n[[frontend]]\nname = \"fe\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"b\"\n\
             [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"e\"\naddress = \"{echo_addr}\"\n"
        ),
    )
    .unwrap();
    let (mut lb, mut lines, addr) = spawn_lb(Command::new(TETHER), &cfg);

    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let n = conn.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"e\n");

    // A pid this test started and has not reaped.
    let pid = nix::unistd::Pid::from_raw(lb.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = wait_log_field(
        &mut lines,
        "stopped accepting; waiting for open connections",
        "open",
    );
    // Refused now, but the open connection still echoes.
    assert!(std::net::TcpStream::connect(&addr).is_err());
    conn.write_all(b"after sigterm\n").unwrap();
    let n = conn.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"after sigterm\n");
    assert!(
        lb.0.try_wait().unwrap().is_none(),
        "exited before the connection closed"
    );
    drop(conn);
    let status = wait_exit(&mut lb, "did not exit after its last connection closed");
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Voluntary context switches of each thread of `pid`, by thread name.
fn switches_by_thread(pid: u32) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap()
        };
        let n: u64 = field("voluntary_ctxt_switches:").parse().unwrap();
        *out.entry(field("Name:")).or_insert(0) += n;
    }
    out
}

#[test]
fn two_workers_each_accept_on_their_own_thread_and_stop_together() {
    use std::io::Write;
    let (_echo, server) = spawn_echo("e");
    let dir = tempdir();
    let cfg = dir.join("lb.toml");
    std::fs::write(&cfg, lb_config(&server, 1)).unwrap();
    let (mut lb, mut lines, addr) = spawn_lb_workers(Command::new(TETHER), &cfg, 2);
    let pid = lb.0.id();
    let before = switches_by_thread(pid);
    assert!(
        before.contains_key("tether-worker-1"),
        "threads: {:?}",
        before.keys()
    );
    // Each worker has its own listening socket; the kernel spreads connections over them
    // by a hash of the client's port, so 64 connections reach both (all on one: 2^-63).
    for i in 0..64 {
        let c = std::net::TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = BufReader::new(c.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "e\n");
        let sent = format!("{i}\n");
        (&c).write_all(sent.as_bytes()).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, sent);
    }
    let after = switches_by_thread(pid);
    assert!(
        after["tether-worker-1"] > before["tether-worker-1"],
        "the second worker never woke: {before:?} -> {after:?}"
    );

    // A pid this test started and has not reaped.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = wait_log_field(&mut lines, "stopped", "message");
    let status = wait_exit(&mut lb, "workers did not stop");
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn probe_reports_failures_with_exit_1_when_nothing_listens() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let out = Command::new(TETHER)
        .args([
            "probe",
            "--connect",
            &addr.to_string(),
            "--every",
            "20ms",
            "--for",
            "200ms",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["successes"], 0);
    assert!(report["failures"].as_u64().unwrap() >= 5, "{report}");
}

/// Waits until `p` (a child this test started) exits, failing with `what` after 30 s.
fn wait_exit(p: &mut Proc, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `tether echo` with a banner; returns the process and its address.
fn spawn_echo(banner: &str) -> (Proc, String) {
    let mut echo = Proc(
        Command::new(TETHER)
            .args([
                "--log-format",
                "json",
                "echo",
                "--listen",
                "127.0.0.1:0",
                "--banner",
                banner,
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(echo.0.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let addr = wait_log_field(&mut lines, "echo server ready", "listen");
    (echo, addr)
}

fn lb_config(server: &str, weight: u32) -> String {
    format!(
        "[[frontend]]\nname = \"fe\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"b\"\n\
         [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"{server}\"\nweight = {weight}\n"
    )
}

fn banner_of(addr: &str) -> String {
    use std::io::Read;
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).trim().to_string()
}

#[test]
fn sighup_reloads_in_place_and_refuses_a_bad_file() {
    use std::io::{Read, Write};
    let (_e1, a1) = spawn_echo("one");
    let (_e2, a2) = spawn_echo("two");
    let dir = tempdir();
    let cfg = dir.join("lb.toml");
    std::fs::write(&cfg, lb_config(&a1, 1)).unwrap();
    let (mut lb, mut lines, addr) = spawn_lb(Command::new(TETHER), &cfg);
    let mut open = std::net::TcpStream::connect(&addr).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let n = open.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"one\n");

    let hup = |p: &Proc| {
        let pid = nix::unistd::Pid::from_raw(p.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    };
    // Point the backend at the other server and reload: the same port now leads there.
    std::fs::write(&cfg, lb_config(&a2, 1)).unwrap();
    hup(&lb);
    let _ = wait_log_field(&mut lines, "configuration reloaded", "report");
    assert_eq!(banner_of(&addr), "two");
    // The connection opened before the reload still talks to the first server.
    open.write_all(b"kept\n").unwrap();
    let n = open.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"kept\n");

    // A bad file is refused with its location, and the balancer keeps serving.
    std::fs::write(&cfg, lb_config(&a1, 0)).unwrap();
    hup(&lb);
    let deadline = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        let line = lines.next().expect("exited");
        if line.contains("reload refused") {
            break line;
        }
        assert!(Instant::now() < deadline, "no refusal logged");
    };
    assert!(
        refusal.contains("lb.toml:10: backend[0].server[0].weight"),
        "{refusal}"
    );
    assert_eq!(banner_of(&addr), "two");
    assert!(lb.0.try_wait().unwrap().is_none());
    let _ = std::fs::remove_dir_all(dir);
}

/// An echo server, and `tether lb` in front of it with an admin listener and `extra` at the
/// end of its file, run with a descriptor limit of `nofile` (soft and hard, ours only,
/// through the shell's ulimit). Returns the echo, the balancer, its log lines, its
/// frontend's address and the directory of its file.
fn spawn_lb_with_fd_limit(
    nofile: u32,
    extra: &str,
) -> (
    Proc,
    Proc,
    impl Iterator<Item = String> + use<>,
    String,
    std::path::PathBuf,
) {
    let (echo, server) = spawn_echo("e");
    let dir = tempdir();
    let cfg = dir.join("lb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n{}{extra}",
            lb_config(&server, 1)
        ),
    )
    .unwrap();
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(TETHER);
    let (lb, lines, addr) = spawn_lb(sh, &cfg);
    (echo, lb, lines, addr, dir)
}

#[test]
fn running_out_of_file_descriptors_is_counted_and_survived() {
    // A tiny descriptor limit so accept(2) hits EMFILE.
    let (_echo, mut lb, mut lines, addr, dir) = spawn_lb_with_fd_limit(64, "");
    // Each proxied connection costs the balancer two descriptors: 60 clients exhaust 64.
    let mut held = Vec::new();
    for _ in 0..60 {
        if let Ok(c) = std::net::TcpStream::connect(&addr) {
            held.push(c);
        }
    }
    let _ = wait_log_field(&mut lines, "accept failed; backing off", "error");
    assert!(lb.0.try_wait().unwrap().is_none(), "the balancer died");
    // Free the descriptors: the listener serves again by itself.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(b) = std::panic::catch_unwind(|| banner_of(&addr))
            && b == "e"
        {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `GET path` on the admin listener at `addr`, retried (bounded) while the admin closes
/// connections beyond its cap.
fn admin_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = || -> std::io::Result<String> {
            let mut c = std::net::TcpStream::connect(addr)?;
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                c,
                "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )?;
            let mut out = String::new();
            c.read_to_string(&mut out)?;
            Ok(out)
        };
        match attempt() {
            Ok(text) if text.starts_with("HTTP/1.1 200") => return text,
            r => assert!(Instant::now() < deadline, "admin never answered: {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metric_value(text: &str, series: &str) -> f64 {
    tether_lab::kit::metric(text, series).unwrap_or(0.0)
}

#[test]
fn idle_admin_connections_leave_descriptors_for_health_checks() {
    // Soft and hard limit 128: raising soft to hard at start gains nothing here.
    let (_echo, mut lb, mut lines, addr, dir) =
        spawn_lb_with_fd_limit(128, "[backend.health]\ninterval = \"50ms\"\nfall = 2\n");
    let admin = wait_log_field(&mut lines, "admin listening", "listen");
    let ok = "tether_lb_server_checks_total{backend=\"b\",result=\"ok\",server=\"s\"}";
    let fail = "tether_lb_server_checks_total{backend=\"b\",result=\"fail\",server=\"s\"}";
    let before = metric_value(&admin_get(&admin, "/metrics"), ok);

    // More idle, unauthenticated admin connections than the process has descriptors.
    let flood: Vec<_> = (0..200)
        .filter_map(|_| std::net::TcpStream::connect(&admin).ok())
        .collect();
    assert!(flood.len() > 128, "only {} connections made", flood.len());
    // Ten check intervals under the flood, then the data path must still serve.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(banner_of(&addr), "e");
    drop(flood);

    let m = admin_get(&admin, "/metrics");
    assert!(
        metric_value(&m, ok) >= before + 3.0,
        "checks did not run:\n{m}"
    );
    assert_eq!(metric_value(&m, fail), 0.0, "checks failed:\n{m}");
    assert!(
        metric_value(&m, "tether_admin_connections_refused_total") > 0.0,
        "{m}"
    );
    assert!(lb.0.try_wait().unwrap().is_none(), "the balancer died");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn generate_writes_man_pages_and_completions_that_match_the_commands() {
    let dir = tempdir().join("generate");
    let out = Command::new(TETHER)
        .args(["generate", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read =
        |p: &str| std::fs::read_to_string(dir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert!(read("man/tether.1").contains(".TH tether 1"));
    let lb = read("man/tether-lb.1");
    assert!(lb.contains("\\-\\-check"), "{lb}");
    assert!(read("man/tether-import.1").contains("keepalived"));
    assert!(
        !dir.join("man/tether-generate.1").exists(),
        "generate is hidden"
    );
    for (file, needle) in [
        ("completions/tether.bash", "tether__subcmd__import"),
        ("completions/_tether", "'--check[Validate the configuration"),
        (
            "completions/tether.fish",
            "__fish_tether_using_subcommand vrrp",
        ),
    ] {
        let text = read(file);
        assert!(text.contains(needle), "{needle:?} not in {file}");
    }
    let help = Command::new(TETHER).arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("generate"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn lb_sends_systemd_ready_once_its_frontends_are_bound() {
    let (_echo, echo_addr) = spawn_echo("e");
    let dir = tempdir().join("notify");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("lb.toml");
    std::fs::write(&cfg, lb_config(&echo_addr, 1)).unwrap();
    let sock_path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut cmd = Command::new(TETHER);
    cmd.env("NOTIFY_SOCKET", &sock_path);
    let (_lb, _lines, addr) = spawn_lb(cmd, &cfg);
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("no READY=1 from tether lb");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    assert_eq!(banner_of(&addr), "e");
    let _ = std::fs::remove_dir_all(dir);
}
