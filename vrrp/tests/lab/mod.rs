//! Network-namespace lab for VRRP tests (reference §4.1): nodes joined by a bridge that
//! lives in its own namespace, documentation addresses only, everything deleted on Drop
//! (also when a test fails). Nothing touches the machine's own namespace.

#![allow(dead_code, clippy::too_many_arguments)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Port of the tiny TCP service every node runs (answers with the node's name).
pub const SERVICE_PORT: u16 = 7000;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// SIGTERM and SIGKILL (Linux numbers), so this module needs no libc crate: it is also
/// compiled into the root package's tests, which do not depend on libc.
pub const SIGTERM: i32 = 15;
/// See [`SIGTERM`].
pub const SIGKILL: i32 = 9;
/// See [`SIGTERM`].
pub const SIGSTOP: i32 = 19;
const CLONE_NEWNET: i32 = 0x4000_0000;

unsafe extern "C" {
    fn setns(fd: i32, nstype: i32) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
}

/// One node of the lab.
#[derive(Clone, Debug)]
pub struct Node {
    /// Short name: a, b, c...
    pub name: String,
    /// Namespace name.
    pub ns: String,
    /// IPv4 address on eth0.
    pub v4: String,
    /// IPv6 global address on eth0.
    pub v6: String,
}

/// The lab: namespaces, a temp dir and the processes started in it.
pub struct Lab {
    pub prefix: String,
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    children: Vec<Child>,
    threads: Vec<(Arc<AtomicBool>, JoinHandle<()>)>,
    namespaces: Vec<String>,
    /// When set, `start_tether` runs `BIN vrrp --config FILE` instead of re-executing
    /// the test binary.
    pub tether_bin: Option<PathBuf>,
}

pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs keepalived and tshark (idempotent) via the repository script.
pub fn install_peers() {
    // This module is shared by vrrp/tests and the root package's tests.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = if here.join("scripts").is_dir() {
        here.join("scripts/install-vrrp-deps.sh")
    } else {
        here.join("../scripts/install-vrrp-deps.sh")
    };
    let st = Command::new("sh")
        .arg(script)
        .status()
        .expect("running install script");
    assert!(st.success(), "scripts/install-vrrp-deps.sh failed");
}

impl Lab {
    /// Builds the lab with the given node host numbers (a=1, b=2, c=10...). Returns None
    /// (with a message) only when this machine cannot create network namespaces.
    pub fn new(hosts: &[(&str, u8)]) -> Option<Lab> {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("tv{}x{}", std::process::id() % 100000, n);
        let probe = format!("{prefix}-probe");
        let ok = Command::new("ip")
            .args(["netns", "add", &probe])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIP: cannot create network namespaces here (not root?)");
            return None;
        }
        let _ = Command::new("ip").args(["netns", "del", &probe]).status();
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut lab = Lab {
            prefix: prefix.clone(),
            dir,
            nodes: Vec::new(),
            children: Vec::new(),
            threads: Vec::new(),
            namespaces: Vec::new(),
            tether_bin: None,
        };
        let sw = format!("{prefix}-sw");
        lab.add_ns(&sw);
        run(&[
            "ip",
            "-n",
            &sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ]);
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for (i, (name, h)) in hosts.iter().enumerate() {
            let ns = format!("{prefix}-{name}");
            lab.add_ns(&ns);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            let port = format!("port-{name}");
            run(&[
                "ip", "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ]);
            run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            let mac = format!("02:00:00:00:00:{:02x}", i + 1);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "address", &mac]);
            // No DAD: the link-local source must be usable at once.
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.eth0.accept_dad=0",
            ]);
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.arp_accept=1",
            ]);
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv4.conf.eth0.arp_accept=1",
            ]);
            let v4 = format!("192.0.2.{h}");
            let v6 = format!("2001:db8::{h}");
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                "eth0",
            ]);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            lab.nodes.push(Node {
                name: name.to_string(),
                ns,
                v4,
                v6,
            });
        }
        Some(lab)
    }

    fn add_ns(&mut self, ns: &str) {
        run(&["ip", "netns", "add", ns]);
        self.namespaces.push(ns.to_string());
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("no such node")
    }

    /// Switch namespace.
    pub fn sw(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// Cuts a node's cable at the bridge (its eth0 loses carrier).
    pub fn cut(&self, name: &str) {
        run(&[
            "ip",
            "-n",
            &self.sw(),
            "link",
            "set",
            &format!("port-{name}"),
            "down",
        ]);
    }

    /// Restores a node's cable.
    pub fn heal(&self, name: &str) {
        run(&[
            "ip",
            "-n",
            &self.sw(),
            "link",
            "set",
            &format!("port-{name}"),
            "up",
        ]);
    }

    /// Starts `tether vrrp` (the test binary re-executed as `daemon_child`) in a node.
    pub fn start_tether(&mut self, node: &str, config: &str) -> u32 {
        let ns = self.node(node).ns.clone();
        let cfg = self.dir.join(format!("tether-{node}.toml"));
        std::fs::write(&cfg, config).expect("write config");
        let log = self.log_path(&format!("tether-{node}"));
        let logf = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]);
        match &self.tether_bin {
            Some(bin) => {
                cmd.arg(bin).args(["vrrp", "--config"]).arg(&cfg);
            }
            None => {
                let exe = std::env::current_exe().expect("current exe");
                cmd.arg(exe)
                    .args(["--exact", "daemon_child", "--nocapture", "--test-threads=1"])
                    .env("TETHER_VRRP_CHILD_CONFIG", &cfg);
            }
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn tether");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Starts `program args...` in a node with its output in `<tag>.log`; writes the pid
    /// to `<tag>.pid` (keepalived track scripts read it).
    pub fn start_process(&mut self, node: &str, tag: &str, program: &Path, args: &[&str]) -> u32 {
        let ns = self.node(node).ns.clone();
        let log = self.log_path(tag);
        let logf = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(program)
            .args(args)
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .spawn()
            .expect("spawn");
        let pid = child.id();
        std::fs::write(self.dir.join(format!("{tag}.pid")), pid.to_string()).expect("pid file");
        self.children.push(child);
        pid
    }

    /// Writes a file into the lab directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    /// Starts keepalived 2.2.7 (VRRP only, no daemonising) in a node; returns the pid of
    /// the parent process.
    pub fn start_keepalived(&mut self, node: &str, config: &str) -> u32 {
        let ns = self.node(node).ns.clone();
        let cfg = self.dir.join(format!("ka-{node}.conf"));
        std::fs::write(&cfg, config).expect("write config");
        let log = self.log_path(&format!("ka-{node}"));
        let logf = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let pid = self.dir.join(format!("ka-{node}.pid"));
        let vpid = self.dir.join(format!("ka-{node}.vrrp.pid"));
        // After a hard kill the VRRP child can linger as a zombie (its parent died first
        // and this container's init may not reap), which keepalived would take for a
        // running daemon; a host's init reaps it. Never two keepalived in one node here.
        let _ = std::fs::remove_file(&pid);
        let _ = std::fs::remove_file(&vpid);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-G",
                "-P",
                "-f",
            ])
            .arg(&cfg)
            .arg("-p")
            .arg(&pid)
            .arg("-r")
            .arg(&vpid)
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .spawn()
            .expect("spawn keepalived");
        let id = child.id();
        self.children.push(child);
        id
    }

    /// keepalived's VRRP child pid (from its -r file).
    pub fn keepalived_vrrp_pid(&self, node: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(format!("ka-{node}.vrrp.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    pub fn log_path(&self, what: &str) -> PathBuf {
        self.dir.join(format!("{what}.log"))
    }

    pub fn log(&self, what: &str) -> String {
        std::fs::read_to_string(self.log_path(what)).unwrap_or_default()
    }

    /// Sends a signal to a process this lab started and reaps it for TERM/KILL.
    pub fn signal(&mut self, pid: u32, sig: i32) {
        // SAFETY: kill(2) on a pid we spawned ourselves.
        unsafe {
            kill(pid as i32, sig);
        }
        // Reap a killed child at once, as its init would on a real host: a zombie still
        // passes `kill -0`, which keepalived-style process checks rely on.
        if sig == SIGKILL {
            if let Some(c) = self.children.iter_mut().find(|c| c.id() == pid) {
                let _ = c.wait();
            }
        }
    }

    /// Waits (bounded) for a child of ours to exit.
    pub fn wait_exit(&mut self, pid: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if let Some(c) = self.children.iter_mut().find(|c| c.id() == pid) {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        false
    }

    /// Which nodes hold `vip` on eth0 right now.
    pub fn holders(&self, vip: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| {
                let out = Command::new("ip")
                    .args(["-n", &n.ns, "-br", "addr", "show", "dev", "eth0"])
                    .output();
                match out {
                    Ok(o) => String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .any(|w| w.split('/').next() == Some(vip)),
                    Err(_) => false,
                }
            })
            .map(|n| n.name.clone())
            .collect()
    }

    /// Waits until exactly `want` hold the VIP (bounded).
    pub fn wait_holders(
        &self,
        vip: &str,
        want: &[&str],
        timeout: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let mut last = Vec::new();
        while start.elapsed() < timeout {
            last = self.holders(vip);
            let mut w: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            w.sort();
            last.sort();
            if last == w {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "after {timeout:?} {vip} held by {last:?}, wanted {want:?}"
        ))
    }

    /// Checks that exactly `want` hold the VIP during the whole `window` (a peer that
    /// rejected our adverts would claim the VIP within its Master_Down_Interval).
    pub fn hold_steady(&self, vip: &str, want: &[&str], window: Duration) -> Result<(), String> {
        let start = Instant::now();
        let mut w: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        w.sort();
        while start.elapsed() < window {
            let mut h = self.holders(vip);
            h.sort();
            if h != w {
                return Err(format!(
                    "after {:?} {vip} held by {h:?}, wanted {want:?}",
                    start.elapsed()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits (bounded) until a log contains `needle` at least `n` times (restarts append
    /// to the same log).
    pub fn wait_log_count(&self, what: &str, needle: &str, n: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log(what).matches(needle).count() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits (bounded) until a log contains `needle`.
    pub fn wait_log(&self, what: &str, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log(what).contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Runs a thread inside `ns` until the lab is dropped (or `stop` is set).
    pub fn spawn_in_ns<F>(&mut self, ns: &str, f: F)
    where
        F: FnOnce(Arc<AtomicBool>) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let path = format!("/run/netns/{ns}");
        let h = std::thread::spawn(move || {
            enter_ns(&path);
            f(s2);
        });
        self.threads.push((stop, h));
    }

    /// Runs `f` on a thread inside a node's namespace and returns its result.
    pub fn in_ns<R: Send + 'static>(
        &self,
        node: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> R {
        let ns = format!("/run/netns/{}", self.node(node).ns);
        std::thread::spawn(move || {
            enter_ns(&ns);
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// HTTP/1.0 GET from inside a node's namespace (admin endpoints listen on its
    /// loopback); returns the whole response, or "" when nothing answered.
    pub fn http_get(&self, node: &str, addr: &str, path: &str) -> String {
        let ns = format!("/run/netns/{}", self.node(node).ns);
        let addr: SocketAddr = addr.parse().expect("addr");
        let path = path.to_string();
        std::thread::spawn(move || {
            enter_ns(&ns);
            let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
                return String::new();
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        })
        .join()
        .unwrap_or_default()
    }

    /// Starts the node's TCP service on 0.0.0.0:SERVICE_PORT: answers with its name.
    pub fn start_service(&mut self, node: &str) {
        let n = self.node(node).clone();
        self.spawn_in_ns(&n.ns, move |stop| {
            let l = TcpListener::bind(("::", SERVICE_PORT)).expect("bind service");
            l.set_nonblocking(true).expect("nonblocking");
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(n.name.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
    }

    /// Starts a prober in `node`: connects to `vip` every 10 ms and records who answered.
    pub fn start_probe(&mut self, node: &str, vip: SocketAddr) -> Probe {
        let ns = self.node(node).ns.clone();
        let samples: Samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = samples.clone();
        self.spawn_in_ns(&ns, move |stop| {
            let debug = std::env::var_os("TETHER_PROBE_DEBUG").is_some();
            // Bounded: at most 10 minutes of samples.
            for _ in 0..60_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let r = TcpStream::connect_timeout(&vip, Duration::from_millis(20))
                    .map_err(|e| format!("connect: {e}"))
                    .and_then(|mut s| {
                        s.set_read_timeout(Some(Duration::from_millis(100)))
                            .map_err(|e| e.to_string())?;
                        let mut b = String::new();
                        s.read_to_string(&mut b).map_err(|e| format!("read: {e}"))?;
                        if b.is_empty() {
                            return Err("closed without an answer".to_string());
                        }
                        Ok(b)
                    });
                if debug {
                    if let Err(e) = &r {
                        eprintln!("probe +{:?}: {e}", t.elapsed());
                    }
                }
                let who = r.ok();
                if let Ok(mut v) = s2.lock() {
                    v.push((t, who));
                }
                let spent = t.elapsed();
                if spent < Duration::from_millis(10) {
                    std::thread::sleep(Duration::from_millis(10) - spent);
                }
            }
        });
        Probe { samples }
    }
}

/// Samples of a prober.
pub struct Probe {
    samples: Samples,
}

/// (when, who answered) for every probe.
type Samples = Arc<std::sync::Mutex<Vec<(Instant, Option<String>)>>>;

impl Probe {
    /// Waits (bounded) until the last sample was answered by `who`.
    pub fn wait_answer(&self, who: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(v) = self.samples.lock() {
                if v.last().and_then(|s| s.1.as_deref()) == Some(who) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits (bounded) until the last `streak` probes, all after `after`, were answered.
    pub fn wait_streak(&self, after: Instant, streak: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(v) = self.samples.lock() {
                let recent: Vec<_> = v.iter().rev().take(streak).collect();
                if recent.len() == streak && recent.iter().all(|(t, w)| *t >= after && w.is_some())
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// How many probes after `since` failed.
    pub fn failures_since(&self, since: Instant) -> usize {
        let v = self.samples.lock().map(|v| v.clone()).unwrap_or_default();
        v.iter().filter(|(t, w)| *t >= since && w.is_none()).count()
    }

    /// Marks now; `gap_since(mark)` measures the outage after it.
    pub fn mark(&self) -> Instant {
        Instant::now()
    }

    /// The longest client-visible outage after `since`: from the last answered probe
    /// before a failure run to the first answered probe after it.
    pub fn gap_since(&self, since: Instant) -> Duration {
        let v = self.samples.lock().map(|v| v.clone()).unwrap_or_default();
        let mut last_ok: Option<Instant> = None;
        let mut worst = Duration::ZERO;
        let mut in_gap = false;
        for (t, who) in v.iter() {
            if *t < since {
                if who.is_some() {
                    last_ok = Some(*t);
                }
                continue;
            }
            match who {
                Some(_) => {
                    if in_gap {
                        if let Some(l) = last_ok {
                            worst = worst.max(*t - l);
                        }
                        in_gap = false;
                    }
                    last_ok = Some(*t);
                }
                None => in_gap = true,
            }
        }
        worst
    }
}

fn enter_ns(path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns(2) on a descriptor we just opened; affects only this thread.
    let r = unsafe { setns(f.as_raw_fd(), CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            // Our own children only, by pid.
            let _ = c.kill();
            let _ = c.wait();
        }
        // keepalived's VRRP child is not our direct child: kill it by its recorded pid.
        for n in &self.nodes {
            if let Some(p) = self.keepalived_vrrp_pid(&n.name) {
                // SAFETY: a pid keepalived (started by us) wrote for its own child.
                unsafe {
                    kill(p as i32, SIGKILL);
                }
            }
        }
        for (stop, _) in &self.threads {
            stop.store(true, Ordering::Relaxed);
        }
        for (_, h) in self.threads.drain(..) {
            let _ = h.join();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if std::env::var_os("TETHER_KEEP_LAB").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Config of a tether node.
pub fn tether_config(
    name: &str,
    vrid: u8,
    prio: u8,
    version: u8,
    interval: &str,
    vips: &[&str],
    extra: &str,
) -> String {
    let vips = vips
        .iter()
        .map(|v| format!("\"{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[instance]]\nname = \"{name}\"\ninterface = \"eth0\"\nvrid = {vrid}\npriority = {prio}\nversion = {version}\nadvert_interval = \"{interval}\"\nvirtual_addresses = [{vips}]\ngarp_delay = \"1s\"\n{extra}\n"
    )
}

/// keepalived.conf for one instance, per reference §4.2.
pub fn keepalived_config(
    router: &str,
    name: &str,
    vrid: u8,
    prio: u8,
    version: u8,
    interval: &str,
    vips: &[&str],
    extra: &str,
) -> String {
    let vips = vips
        .iter()
        .map(|v| format!("        {v} dev eth0\n"))
        .collect::<String>();
    format!(
        "global_defs {{\n    router_id {router}\n    vrrp_version {version}\n}}\nvrrp_instance {name} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    priority {prio}\n    advert_int {interval}\n{extra}    virtual_ipaddress {{\n{vips}    }}\n}}\n"
    )
}

/// The child side of the lab: when the test binary is re-executed as a daemon (with
/// `TETHER_VRRP_CHILD_CONFIG` set), runs `tether vrrp` on that file and exits; otherwise
/// returns at once. Each test binary calls it from a test named `daemon_child`.
pub fn run_daemon_child_if_asked() {
    let Ok(path) = std::env::var("TETHER_VRRP_CHILD_CONFIG") else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let cfg = match tether_vrrp::load(std::path::Path::new(&path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let token = tokio_util::sync::CancellationToken::new();
        tether_vrrp::cancel_on_signals(token.clone()).expect("signals");
        if let Err(e) = tether_vrrp::run(cfg, token).await {
            eprintln!("{e}");
            std::process::exit(1);
        }
    });
    eprintln!("tether vrrp stopped");
    std::process::exit(0);
}
