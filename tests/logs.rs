//! Daemon logs where users run them: in files and pipes without colour codes, `NO_COLOR`
//! honoured on a terminal, and a log output nobody reads costing log lines, not traffic.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TETHER: &str = env!("CARGO_BIN_EXE_tether");
const ESC: u8 = 0x1b;

/// Kills the child (by its pid, which we started) when the test ends, even on failure.
struct Proc(Option<Child>);

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        Proc(Some(cmd.spawn().expect("spawn")))
    }
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("a child not yet waited for")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A directory of the test's files, removed when the test ends, even on failure.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("tether-logs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A balancer configuration whose one server is `server`, checked every 100 ms.
fn lb_config(dir: &TempDir, server: &str, extra: &str) -> std::path::PathBuf {
    let cfg = dir.0.join("lb.toml");
    std::fs::write(
        &cfg,
        format!(
            "{extra}[[frontend]]\nname = \"fe\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"b\"\n\
             [[backend]]\nname = \"b\"\n[backend.health]\ninterval = \"100ms\"\n\
             [[backend.server]]\nname = \"s\"\naddress = \"{server}\"\nweight = 1\n"
        ),
    )
    .unwrap();
    cfg
}

/// Waits (30 s at most) for the balancer's first health check on `server`: by then it has
/// logged its start and handles SIGTERM.
fn wait_checked(server: TcpListener) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(server.accept().map(|_| ()));
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("no health check from the balancer")
        .unwrap();
}

/// Waits (30 s at most) for `p` to exit after the test asked it to; kills it after that.
fn wait_exit(mut p: Proc) -> std::process::ExitStatus {
    let mut c = p.0.take().expect("a child not yet waited for");
    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(c.wait());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            // Not reaped yet, so the pid is still our child's.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("the process did not exit in 30 s");
        }
    }
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let dir = TempDir::new("file");
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = lb_config(&dir, &server.local_addr().unwrap().to_string(), "");
    let log = dir.0.join("lb.log");
    let mut lb = Proc::spawn(
        Command::new(TETHER)
            .args(["lb", "--config"])
            .arg(&cfg)
            .env_remove("NO_COLOR")
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    wait_checked(server);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lb.child().id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_exit(lb).success());
    let text = std::fs::read(&log).unwrap();
    let shown = String::from_utf8_lossy(&text);
    assert!(shown.contains("listening"), "no start lines: {shown}");
    assert!(
        !text.contains(&ESC),
        "escape codes in a log file: {shown:?}"
    );
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    // What journald, a container runtime or `| tee` read: a pipe, NO_COLOR unset.
    let mut echo = Proc::spawn(
        Command::new(TETHER)
            .args(["echo", "--listen", "127.0.0.1:0"])
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped()),
    );
    let mut stderr = BufReader::new(echo.child().stderr.take().unwrap());
    // Bytes, not text: an escape code must not hide in a line that fails to decode.
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = stderr.read_until(b'\n', &mut line).unwrap();
        assert!(n > 0, "the echo server exited before saying it was ready");
        let shown = String::from_utf8_lossy(&line);
        assert!(!line.contains(&ESC), "escape codes in a pipe: {shown:?}");
        if shown.contains("echo server ready") {
            break;
        }
    }
}

/// Runs `tether lb` on a pseudo-terminal (`script` from util-linux) with `NO_COLOR` set to
/// `no_color` (or unset), stops it, and returns what the terminal showed.
fn terminal_output(no_color: Option<&str>) -> Vec<u8> {
    let dir = TempDir::new(&format!("tty-{}", no_color.is_some()));
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = lb_config(&dir, &server.local_addr().unwrap().to_string(), "");
    let mut cmd = Command::new("script");
    // The shell stops the balancer when the test sends it a line on the terminal.
    cmd.args([
        "-q",
        "-e",
        "-c",
        "\"$TETHER\" lb --config \"$CFG\" & pid=$!; read go; kill -TERM $pid; wait $pid",
        "/dev/null",
    ])
    .env("SHELL", "/bin/sh")
    .env("TETHER", TETHER)
    .env("CFG", &cfg)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    match no_color {
        Some(v) => cmd.env("NO_COLOR", v),
        None => cmd.env_remove("NO_COLOR"),
    };
    let mut term = Proc::spawn(&mut cmd);
    let mut out = term.child().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut shown = Vec::new();
        let _ = out.read_to_end(&mut shown);
        let _ = tx.send(shown);
    });
    wait_checked(server);
    let mut input = term.child().stdin.take().unwrap();
    input.write_all(b"go\n").unwrap();
    let shown = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the terminal session did not end");
    drop(input);
    assert!(wait_exit(term).success());
    let text = String::from_utf8_lossy(&shown).to_string();
    assert!(text.contains("listening"), "no start lines: {text}");
    shown
}

#[test]
fn no_color_turns_colour_off_even_on_a_terminal() {
    // Without NO_COLOR a terminal gets colour: the check below can see escape codes.
    assert!(terminal_output(None).contains(&ESC));
    let shown = terminal_output(Some("1"));
    assert!(
        !shown.contains(&ESC),
        "escape codes despite NO_COLOR=1: {:?}",
        String::from_utf8_lossy(&shown)
    );
}

/// Reads JSON log lines until one says `message`; returns its `field`.
fn wait_log_field(lines: &mut impl Iterator<Item = String>, message: &str, field: &str) -> String {
    for line in lines {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["message"] == message {
            return v[field].as_str().unwrap_or_default().to_string();
        }
    }
    panic!("the process exited before logging {message}");
}

/// `GET /metrics` on the admin listener at `addr`.
fn metrics(addr: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).expect("no /metrics answer");
    out
}

#[test]
fn a_log_output_nobody_reads_drops_lines_and_the_proxy_keeps_serving() {
    let mut echo = Proc::spawn(
        Command::new(TETHER)
            .args(["--log-format", "json", "echo", "--listen", "127.0.0.1:0"])
            .args(["--banner", "e"])
            .stderr(Stdio::piped()),
    );
    let mut echo_lines = BufReader::new(echo.child().stderr.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let server = wait_log_field(&mut echo_lines, "echo server ready", "listen");

    let dir = TempDir::new("full");
    let cfg = lb_config(&dir, &server, "[admin]\nlisten = \"127.0.0.1:0\"\n");
    let mut lb = Proc::spawn(
        Command::new(TETHER)
            .args(["--log-format", "json", "lb", "--config"])
            .arg(&cfg)
            .env("TETHER_LOG_BUFFER_LINES", "64")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped()),
    );
    let mut lines = BufReader::new(lb.child().stderr.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let bind = wait_log_field(&mut lines, "listening", "bind");
    let frontend = bind.trim_matches(|c| c == '[' || c == ']').to_string();
    let admin = wait_log_field(&mut lines, "admin listening", "listen");
    // From here on nobody reads the balancer's stderr: the pipe (64 KiB) fills after a few
    // hundred connection lines, then the queue of 64 lines.

    let deadline = Instant::now() + Duration::from_secs(120);
    let n = 2000;
    for i in 0..n {
        assert!(Instant::now() < deadline, "{i} of {n} connections in 120 s");
        let mut c = TcpStream::connect(&frontend).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 8];
        let got = c.read(&mut b);
        assert!(
            matches!(got, Ok(n) if n > 0 && b[0] == b'e'),
            "connection {i} of {n} not served ({got:?}): the proxy waits for its log output"
        );
    }
    let m = metrics(&admin);
    let dropped: f64 = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("tether_log_lines_dropped_total ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no tether_log_lines_dropped_total:\n{m}"));
    // At most pipe + queue + one line in the writer's hands got through.
    assert!(
        dropped >= (n / 2) as f64,
        "{dropped} lines dropped of {n}:\n{m}"
    );
    assert!(
        lb.child().try_wait().unwrap().is_none(),
        "the balancer died"
    );
    drop(lines);
}
