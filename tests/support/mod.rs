//! Helpers shared by the namespace tests (`dr.rs`, `scale_out.rs`, `failure_matrix.rs`,
//! `cluster.rs`): following a process's log, `tether probe` in a client host, servers that
//! name themselves, client connections that know which server answered, and the
//! balancer's admin API from inside its host.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tether_lab::{Lab, ProcSpec};

/// A port free on 127.0.0.1 a moment ago, for a daemon the test starts on loopback.
pub fn free_port() -> u16 {
    tether_lab::kit::free_port("127.0.0.1")
}

/// An echo server on 127.0.0.1 in threads of this test process; its port.
pub fn spawn_echo() -> u16 {
    tether_lab::kit::spawn_echo()
}

/// The binary under test.
pub const TETHER: &str = env!("CARGO_BIN_EXE_tether");
/// How long any one wait may take.
pub const T: Duration = Duration::from_secs(15);

pub fn can_run() -> bool {
    match tether_lab::available() {
        Ok(()) => true,
        Err(e) => {
            assert!(!nix::unistd::geteuid().is_root(), "running as root but {e}");
            eprintln!("SKIP: {e}");
            false
        }
    }
}

/// Follows a process's log file: `tail -F` feeds lines to a channel, so waiting for a line
/// blocks on the channel instead of re-reading the file.
pub struct Follow {
    child: Child,
    /// The lines, as they are written.
    pub lines: mpsc::Receiver<String>,
}

impl Follow {
    pub fn new(lab: &Lab, name: &str) -> Follow {
        let mut child = Command::new("tail")
            .args(["-n", "+1", "-F"])
            .arg(lab.log_path(name))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("tail");
        let out = child.stdout.take().expect("tail stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Follow { child, lines }
    }

    /// Waits for a line containing every one of `needles`.
    pub fn wait(&self, needles: &[&str]) -> Result<String, String> {
        self.wait_for(&format!("{needles:?}"), |l| {
            needles.iter().all(|n| l.contains(n))
        })
    }

    /// Waits for the forwarding table to be applied with `holders` holding slots, and no
    /// other server.
    pub fn wait_table(&self, holders: &[&str]) -> Result<String, String> {
        self.wait_for(&format!("a table held by {holders:?}"), |l| {
            l.contains("forwarding table applied")
                && ["s1", "s2", "s3"]
                    .iter()
                    .all(|s| l.contains(&format!("be/{s}=")) == holders.contains(s))
        })
    }

    pub fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> Result<String, String> {
        let end = Instant::now() + T;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if ok(&l) => return Ok(l),
                Ok(_) => {}
                Err(_) => return Err(format!("no line with {what} within {T:?}")),
            }
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write(lab: &Lab, name: &str, text: &str) -> String {
    let p = lab.dir().join(name);
    std::fs::write(&p, text).expect("writing a lab file");
    p.to_string_lossy().to_string()
}

pub fn start(lab: &Lab, name: &str, host: &str, args: &[&str]) -> Follow {
    lab.start(ProcSpec::new(name, host, PathBuf::from(TETHER)).args(args.iter().copied()))
        .expect("starting a process");
    Follow::new(lab, name)
}

/// A server: the VIPs on lo, and an echo server that names itself first.
pub fn start_server(lab: &Lab, host: &str, vips: &[&str], listen: &str) {
    let mut args = vec!["dr-server"];
    for v in vips {
        args.extend(["--vip", v]);
    }
    let f = start(lab, &format!("dr-{host}"), host, &args);
    f.wait(&["VIPs on lo"]).expect("dr-server ready");
    start_echo(lab, host, listen);
}

pub fn start_echo(lab: &Lab, host: &str, listen: &str) {
    let f = start(
        lab,
        &format!("echo-{host}"),
        host,
        &["echo", "--listen", listen, "--banner", host],
    );
    f.wait(&["echo server ready"]).expect("echo listening");
}

/// A client connection that knows which server answered.
pub struct Conn {
    /// The client's socket, its banner already read.
    pub s: TcpStream,
    /// The server's name, from its banner.
    pub server: String,
    /// Messages exchanged.
    pub n: u64,
}

impl Conn {
    pub fn open(lab: &Lab, to: SocketAddr, patience: Duration) -> Result<Conn, String> {
        Conn::open_from(lab, "c", to, patience)
    }

    /// Opens a connection from lab host `client` and reads the server's banner.
    pub fn open_from(
        lab: &Lab,
        client: &str,
        to: SocketAddr,
        patience: Duration,
    ) -> Result<Conn, String> {
        let s = lab
            .connect(client, to, patience)
            .map_err(|e| format!("connect: {e}"))?;
        Conn::from_stream(s)
    }

    /// A connected socket whose server's banner is still to be read.
    pub fn from_stream(s: TcpStream) -> Result<Conn, String> {
        s.set_nonblocking(false).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while b[0] != b'\n' {
            (&s).read_exact(&mut b)
                .map_err(|e| format!("reading the banner: {e}"))?;
            line.push(b[0]);
        }
        let server = String::from_utf8_lossy(&line).trim().to_string();
        Ok(Conn { s, server, n: 0 })
    }

    /// Sends a numbered message and reads exactly it back.
    pub fn exchange(&mut self) -> Result<(), String> {
        self.n += 1;
        let msg = format!("{:>12}|{:<16}\n", self.n, self.server);
        (&self.s)
            .write_all(msg.as_bytes())
            .map_err(|e| format!("{}: write: {e}", self.server))?;
        let mut back = vec![0u8; msg.len()];
        (&self.s)
            .read_exact(&mut back)
            .map_err(|e| format!("{}: read: {e}", self.server))?;
        if back != msg.as_bytes() {
            return Err(format!("{}: bytes differ", self.server));
        }
        Ok(())
    }
}

/// Starts `n` connections from lab host `client` to `to` without waiting for them: each
/// one's SYN has left when this returns.
pub fn start_connects(lab: &Lab, client: &str, to: SocketAddr, n: usize) -> Vec<Socket> {
    lab.in_ns(client, || {
        (0..n)
            .map(|_| {
                let s = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
                s.set_nonblocking(true)?;
                match s.connect(&to.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    Err(e) => return Err(e),
                }
                Ok(s)
            })
            .collect::<std::io::Result<Vec<_>>>()
    })
    .expect("entering the client's namespace")
    .expect("starting connections")
}

/// Waits until `pending` connections are established, or `within` has passed: returns the
/// established ones (blocking sockets) and those still waiting. A connection refused or
/// reset fails the test.
pub fn await_connects(mut pending: Vec<Socket>, within: Duration) -> (Vec<TcpStream>, Vec<Socket>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let end = Instant::now() + within;
    let mut done = Vec::new();
    while !pending.is_empty() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = pending
                .iter()
                .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLOUT))
                .collect();
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            poll(&mut fds, timeout).expect("poll");
            fds.iter().map(|f| f.any().unwrap_or(false)).collect()
        };
        let (now, still): (Vec<_>, Vec<_>) = pending.into_iter().zip(ready).partition(|(_, r)| *r);
        pending = still.into_iter().map(|(s, _)| s).collect();
        for (s, _) in now {
            if let Some(e) = s.take_error().expect("SO_ERROR") {
                panic!("connection failed: {e}");
            }
            done.push(TcpStream::from(s));
        }
    }
    (done, pending)
}

pub fn open_many(lab: &Lab, to: SocketAddr, n: usize) -> Vec<Conn> {
    (0..n)
        .map(|i| {
            Conn::open(lab, to, Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect()
}

pub fn all_exchange(conns: &mut [Conn]) -> Result<(), String> {
    for c in conns.iter_mut() {
        c.exchange()?;
    }
    Ok(())
}

pub fn servers(conns: &[Conn]) -> Vec<String> {
    let mut s: Vec<String> = conns.iter().map(|c| c.server.clone()).collect();
    s.sort();
    s.dedup();
    s
}

/// `POST` to the balancer's admin API from inside its host.
pub fn admin_post(lab: &Lab, host: &str, path: &str, json: &str) -> String {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    admin(lab, host, &req)
}

pub fn admin_get(lab: &Lab, host: &str, path: &str) -> String {
    admin(
        lab,
        host,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
}

pub fn admin(lab: &Lab, host: &str, req: &str) -> String {
    let mut s = lab
        .connect(host, "127.0.0.1:9090".parse().unwrap(), T)
        .expect("admin connect");
    s.write_all(req.as_bytes()).expect("admin write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("admin read");
    out
}

/// The sum of the samples of a metric in Prometheus text (not every test reads metrics).
#[allow(unused_imports)]
pub use tether_lab::kit::metric_sum as metric;

/// The machine's own namespace has no table of ours (tests program only their namespaces).
pub fn assert_host_untouched() {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("tether_lb"),
        "a tether_lb table in the machine's own namespace: {text}"
    );
}

pub fn tables_in(lab: &Lab, host: &str) -> String {
    let out = lab.exec(host, &["nft", "list", "tables"]).expect("nft");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Held connections exchanging in a loop and new connections opened one after another, in
/// two threads, while a test breaks something: what a failure costs the clients.
///
/// Dropped without [`Traffic::stop`] (a test panicking midway), it stops and joins both
/// threads, so they release the lab and it is torn down.
pub struct Traffic {
    stop: Vec<mpsc::Sender<()>>,
    rounds: mpsc::Receiver<u64>,
    exchanger: Option<std::thread::JoinHandle<Result<Exchanged, String>>>,
    prober: Option<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

/// Rounds, the longest round, and the connections, from the exchanging thread.
type Exchanged = (u64, Duration, Vec<Conn>);

/// What [`Traffic`] saw.
pub struct TrafficReport {
    /// Rounds of exchanges over every held connection.
    pub rounds: u64,
    /// The longest round.
    pub longest: Duration,
    /// The held connections, when none broke.
    pub conns: Result<Vec<Conn>, String>,
    /// New connections that exchanged a message.
    pub probes_ok: u64,
    /// New connections that failed within `patience`, and why.
    pub probes_failed: Vec<String>,
}

impl TrafficReport {
    /// Prints the figures as `FIGURE <tag>: <row>: ...` and returns the held connections;
    /// fails the test when one broke or a new connection failed.
    pub fn check(self, tag: &str, row: &str) -> Vec<Conn> {
        let conns = self
            .conns
            .unwrap_or_else(|e| panic!("{row}: a held connection broke: {e}"));
        eprintln!(
            "FIGURE {tag}: {row}: {n} of {n} connections kept ({} rounds, longest stall {:?}); new connections {} ok, {} failed",
            self.rounds,
            self.longest,
            self.probes_ok,
            self.probes_failed.len(),
            n = conns.len(),
        );
        assert!(
            self.probes_failed.is_empty(),
            "{row}: new connections failed: {:?}",
            self.probes_failed
        );
        conns
    }
}

impl Traffic {
    /// Starts exchanging on `conns` and probing `to` from `client` (each probe may take
    /// `patience`). Both loops are bounded (2,000 rounds, 400 probes) and stop on their own.
    pub fn start<L: AsRef<Lab> + Send + Sync + 'static>(
        lab: std::sync::Arc<L>,
        client: &'static str,
        to: SocketAddr,
        mut conns: Vec<Conn>,
        patience: Duration,
    ) -> Traffic {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (round_tx, rounds) = mpsc::channel::<u64>();
        let exchanger = std::thread::spawn(move || {
            let mut longest = Duration::ZERO;
            let mut rounds = 0;
            loop {
                let t = Instant::now();
                for c in conns.iter_mut() {
                    c.exchange()
                        .map_err(|e| format!("after {rounds} rounds: {e}"))?;
                }
                longest = longest.max(t.elapsed());
                rounds += 1;
                let _ = round_tx.send(rounds);
                match done_rx.recv_timeout(Duration::from_millis(20)) {
                    Err(mpsc::RecvTimeoutError::Timeout) if rounds < 2_000 => {}
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        return Err(format!(
                            "ran out of rounds ({rounds}) before the step ended"
                        ));
                    }
                    _ => return Ok((rounds, longest, conns)),
                }
            }
        });
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let prober = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            for i in 0.. {
                if i == 400 {
                    failed.push("ran out of probes (400) before the step ended".to_string());
                    break;
                }
                match Conn::open_from((*lab).as_ref(), client, to, patience)
                    .and_then(|mut c| c.exchange())
                {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(e),
                }
                if stop_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                    break;
                }
            }
            (ok, failed)
        });
        Traffic {
            stop: vec![done_tx, stop_tx],
            rounds,
            exchanger: Some(exchanger),
            prober: Some(prober),
        }
    }

    /// Waits until every held connection has exchanged `n` more times (or one broke).
    pub fn wait_rounds(&self, n: u64) {
        for _ in 0..n {
            if self.rounds.recv_timeout(T).is_err() {
                return;
            }
        }
    }

    /// Stops both loops and says what they saw.
    pub fn stop(mut self) -> TrafficReport {
        for s in &self.stop {
            let _ = s.send(());
        }
        let ex = self
            .exchanger
            .take()
            .map(|t| t.join())
            .unwrap_or(Ok(Err("already stopped".into())))
            .unwrap_or_else(|_| Err("the exchanger panicked".into()));
        let (probes_ok, probes_failed) = self
            .prober
            .take()
            .map(|t| t.join())
            .unwrap_or(Ok((0, Vec::new())))
            .unwrap_or_else(|_| (0, vec!["the prober panicked".into()]));
        let (rounds, longest, conns) = match ex {
            Ok((r, l, c)) => (r, l, Ok(c)),
            Err(e) => (0, Duration::ZERO, Err(e)),
        };
        TrafficReport {
            rounds,
            longest,
            conns,
            probes_ok,
            probes_failed,
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for s in &self.stop {
            let _ = s.send(());
        }
        if let Some(t) = self.exchanger.take() {
            let _ = t.join();
        }
        if let Some(t) = self.prober.take() {
            let _ = t.join();
        }
    }
}

/// One probing run of `tether probe` inside a client host, in a thread.
pub fn probe(
    ns: String,
    target: String,
    dur: Duration,
    timeout: Duration,
) -> std::thread::JoinHandle<serde_json::Value> {
    std::thread::spawn(move || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                TETHER,
                "probe",
                "--json",
                "--connect",
                &target,
            ])
            .args(["--every", "20ms", "--timeout"])
            .arg(format!("{}ms", timeout.as_millis()))
            .args(["--for", &format!("{}ms", dur.as_millis())])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            serde_json::json!({ "error": format!("{e}: {}", String::from_utf8_lossy(&out.stderr)) })
        })
    })
}
