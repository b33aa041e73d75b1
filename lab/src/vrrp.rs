//! A VRRP lab on one bridged network: hosts on 192.0.2.0/24 and 2001:db8::/64, VRRP
//! daemons (`tether vrrp` or keepalived) started in them, a TCP service that answers
//! with its host's name, and a client probing a VIP. Waits follow events (`ip monitor
//! address` in every host, a log followed with `tail -F`, probe results as they come),
//! never a sleep loop.
//!
//! The daemon under test runs from a [`Daemon`]: the `tether` binary, or the test binary
//! itself re-executed with one test selected (the vrrp crate's tests cannot name the
//! binary of the package above them).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Lab, LabError, ProcSpec, Watch};

mod probe;

pub use probe::Probe;

/// The network of the lab (192.0.2.0/24, 2001:db8::/64).
pub const LAN: &str = "lan";
/// The second network of a [`VrrpLab::two_links`] lab (198.51.100.0/24), `eth1` in
/// every host: an inside link next to the outside one, for sync groups.
pub const LAN2: &str = "lan2";
/// Port of the TCP service [`VrrpLab::start_service`] runs (answers with the host's name).
pub const SERVICE_PORT: u16 = 7000;

/// How the `tether vrrp` daemon is started in a host.
#[derive(Debug, Clone)]
pub enum Daemon {
    /// `BIN vrrp --config FILE`.
    Binary(PathBuf),
    /// The running test binary again, with only test `test` selected and the config file
    /// in environment variable `env`: that test runs the daemon.
    ReExec {
        /// The test that runs the daemon.
        test: String,
        /// The variable carrying the config file's path.
        env: String,
    },
}

/// A VRRP lab: the [`Lab`] (reachable through `Deref`), and the services and probes
/// running in it, stopped when it is dropped.
pub struct VrrpLab {
    lab: Lab,
    daemon: Daemon,
    hosts: Vec<String>,
    /// `ip monitor address` in every host, from the start: a wait drains it, reads, then
    /// blocks on it, so no change between the read and the wait goes unseen.
    changes: Watch,
    services: Vec<(TcpListener, Worker)>,
    probes: Vec<(Arc<AtomicBool>, Worker)>,
}

/// A thread of the lab (a service, a probe), joined when the lab is dropped.
type Worker = JoinHandle<Result<(), LabError>>;

impl std::ops::Deref for VrrpLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl VrrpLab {
    /// Builds the lab with hosts `(name, host number)` on [`LAN`] (`a`=1 is 192.0.2.1 and
    /// 2001:db8::1). `Ok(None)` (after saying so) when a user other than root cannot make
    /// namespaces; an error when root cannot.
    pub fn new(tag: &str, hosts: &[(&str, u8)], daemon: Daemon) -> Result<Option<Self>, LabError> {
        Self::build(tag, hosts, daemon, false)
    }

    /// As [`VrrpLab::new`], with every host also on [`LAN2`] (198.51.100.0/24, `eth1`)
    /// under the same host number.
    pub fn two_links(
        tag: &str,
        hosts: &[(&str, u8)],
        daemon: Daemon,
    ) -> Result<Option<Self>, LabError> {
        Self::build(tag, hosts, daemon, true)
    }

    fn build(
        tag: &str,
        hosts: &[(&str, u8)],
        daemon: Daemon,
        second: bool,
    ) -> Result<Option<Self>, LabError> {
        if let Err(e) = crate::available() {
            // Root that cannot make namespaces is a broken machine, not a reason to skip.
            if crate::unsafe_geteuid() == 0 {
                return Err(e);
            }
            eprintln!("SKIP: {e}");
            return Ok(None);
        }
        let mut b = Lab::builder(&Lab::unique_prefix(tag))
            .network(LAN, "192.0.2.0/24")
            .ipv6(LAN, "2001:db8::/64");
        if second {
            b = b.network(LAN2, "198.51.100.0/24");
        }
        for (name, octet) in hosts {
            b = if second {
                b.host(name, &[(LAN, *octet), (LAN2, *octet)])
            } else {
                b.host(name, &[(LAN, *octet)])
            };
        }
        let lab = b.build()?;
        let names: Vec<&str> = hosts.iter().map(|(h, _)| *h).collect();
        let changes = lab.watch_all(&names, &["ip", "-o", "monitor", "address"])?;
        Ok(Some(VrrpLab {
            lab,
            daemon,
            changes,
            hosts: hosts.iter().map(|(h, _)| h.to_string()).collect(),
            services: Vec::new(),
            probes: Vec::new(),
        }))
    }

    /// Writes a file into the lab's folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf, LabError> {
        let p = self.dir().join(name);
        std::fs::write(&p, text).map_err(|e| LabError::io(format!("writing {name}"), e))?;
        Ok(p)
    }

    /// Waits (up to `within`) for the previous process named `name` to have exited, so a
    /// restart right after a SIGTERM does not find it still finishing its shutdown.
    fn settle(&self, name: &str, within: Duration) -> Result<(), LabError> {
        match self.lab.wait_exit(name, within) {
            Ok(st) if st.is_running() => Err(LabError::AlreadyRunning(name.to_string())),
            Ok(_) | Err(LabError::UnknownProcess(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Starts `tether vrrp` in `host` with `config`, as process `tether-<host>` (its log
    /// is `tether-<host>`; a restart appends to it).
    pub fn start_tether(&self, host: &str, config: &str) -> Result<u32, LabError> {
        let name = format!("tether-{host}");
        let cfg = self.write(&format!("{name}.toml"), config)?;
        let cfg = cfg.to_string_lossy().to_string();
        let spec = match &self.daemon {
            Daemon::Binary(bin) => ProcSpec::new(&name, host, bin).args(["vrrp", "--config", &cfg]),
            Daemon::ReExec { test, env } => {
                let exe = std::env::current_exe()
                    .map_err(|e| LabError::io("finding the test binary", e))?;
                ProcSpec::new(&name, host, exe)
                    .args(["--exact", test, "--nocapture", "--test-threads=1"])
                    .env(env, &cfg)
            }
        };
        self.settle(&name, Duration::from_secs(10))?;
        self.start(spec.env("RUST_LOG", "info"))
    }

    /// Starts `program args...` in `host` as process `name`, and writes its pid to
    /// `<name>.pid` (keepalived track scripts read it).
    pub fn start_process(
        &self,
        host: &str,
        name: &str,
        program: &Path,
        args: &[&str],
    ) -> Result<u32, LabError> {
        self.settle(name, Duration::from_secs(10))?;
        let pid = self.start(ProcSpec::new(name, host, program).args(args.iter().copied()))?;
        self.write(&format!("{name}.pid"), &pid.to_string())?;
        Ok(pid)
    }

    /// Starts keepalived (VRRP only, in the foreground) in `host` as process `ka-<host>`.
    pub fn start_keepalived(&self, host: &str, config: &str) -> Result<u32, LabError> {
        let name = format!("ka-{host}");
        let cfg = self.write(&format!("{name}.conf"), config)?;
        let (pid, vpid) = (
            self.dir().join(format!("{name}.pid")),
            self.dir().join(format!("{name}.vrrp.pid")),
        );
        self.settle(&name, Duration::from_secs(10))?;
        // keepalived takes a pid file left by a killed run for a running daemon.
        let _ = std::fs::remove_file(&pid);
        let _ = std::fs::remove_file(&vpid);
        let path = |p: &Path| p.to_string_lossy().to_string();
        self.start(ProcSpec::new(&name, host, "keepalived").args([
            "-n",
            "-l",
            "-D",
            "-G",
            "-P",
            "-f",
            &path(&cfg),
            "-p",
            &path(&pid),
            "-r",
            &path(&vpid),
        ]))
    }

    /// keepalived's VRRP child pid in `host` (from its -r file).
    pub fn keepalived_vrrp_pid(&self, host: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir().join(format!("ka-{host}.vrrp.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Which hosts hold `vip` on any of their interfaces right now, sorted.
    pub fn holders(&self, vip: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| {
                self.lab
                    .exec(h, &["ip", "-br", "addr", "show"])
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .split_whitespace()
                            .any(|w| w.split('/').next() == Some(vip))
                    })
                    .unwrap_or(false)
            })
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Forgets the address changes seen so far (the next read covers them).
    fn drain_changes(&self) {
        while self.changes.lines.try_recv().is_ok() {}
    }

    /// Waits until exactly `want` hold `vip`, re-reading on every address change in any
    /// host; the time it took, or who held it at the end.
    pub fn wait_holders(
        &self,
        vip: &str,
        want: &[&str],
        timeout: Duration,
    ) -> Result<Duration, String> {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        self.wait_holders_until(vip, |now| now == want.as_slice(), timeout)
            .map_err(|now| format!("after {timeout:?} {vip} held by {now:?}, wanted {want:?}"))
    }

    /// Waits until the (sorted) holders of `vip` satisfy `done`, re-reading on every
    /// address change in any host; the time it took, or the holders at the end.
    pub fn wait_holders_until(
        &self,
        vip: &str,
        done: impl Fn(&[String]) -> bool,
        timeout: Duration,
    ) -> Result<Duration, Vec<String>> {
        let start = Instant::now();
        loop {
            self.drain_changes();
            let now = self.holders(vip);
            if done(&now) {
                return Ok(start.elapsed());
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() || !matches!(self.changes.next_line(left), Ok(Some(_))) {
                return Err(now);
            }
        }
    }

    /// Checks that exactly `want` hold `vip` during the whole `window` (a peer that
    /// rejected our adverts would claim it within its Master_Down_Interval).
    pub fn hold_steady(&self, vip: &str, want: &[&str], window: Duration) -> Result<(), String> {
        let start = Instant::now();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        loop {
            self.drain_changes();
            let now = self.holders(vip);
            if now != want {
                return Err(format!(
                    "after {:?} {vip} held by {now:?}, wanted {want:?}",
                    start.elapsed()
                ));
            }
            let left = window.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(());
            }
            match self.changes.next_line(left) {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                // Without address events the window proves nothing.
                Err(e) => return Err(format!("watching the addresses of {vip}: {e}")),
            }
        }
    }

    /// HTTP/1.0 GET from inside `host` (admin endpoints listen on its loopback); the whole
    /// response, or "" when nothing answered.
    pub fn http_get(&self, host: &str, addr: &str, path: &str) -> String {
        self.http(host, addr, "GET", path)
    }

    /// HTTP/1.0 POST without a body, as `curl -X POST -H 'X-Tether-Request: 1'` sends it
    /// (the header an admin API asks of a write); the whole response, or "".
    pub fn http_post(&self, host: &str, addr: &str, path: &str) -> String {
        self.http(host, addr, "POST", path)
    }

    fn http(&self, host: &str, addr: &str, method: &str, path: &str) -> String {
        let Ok(addr) = addr.parse::<SocketAddr>() else {
            return String::new();
        };
        let Ok(mut s) = self.connect(host, addr, Duration::from_secs(1)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nX-Tether-Request: 1\r\nContent-Length: 0\r\n\r\n"
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// Starts the host's TCP service on `[::]` port [`SERVICE_PORT`]: it answers with its name.
    pub fn start_service(&mut self, host: &str) -> Result<(), LabError> {
        let listener = self.listen(host, SocketAddr::from(([0u16; 8], SERVICE_PORT)))?;
        let serving = listener
            .try_clone()
            .map_err(|e| LabError::io("cloning a listener", e))?;
        let name = host.to_string();
        let t = std::thread::spawn(move || {
            // Ends when the lab shuts the listener down (accept fails).
            while let Ok((mut s, _)) = serving.accept() {
                let _ = s.write_all(name.as_bytes());
            }
            Ok(())
        });
        self.services.push((listener, t));
        Ok(())
    }

    /// Starts a client in `host` that connects to `vip` every 10 ms and records who
    /// answered, until the lab is dropped.
    pub fn start_probe(&mut self, host: &str, vip: SocketAddr) -> Result<Probe, LabError> {
        let probe = Probe::default();
        let samples = probe.samples.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let t = self.spawn_in(host, move || probe::run(vip, &samples, &stopped))?;
        self.probes.push((stop, t));
        Ok(probe)
    }
}

impl Drop for VrrpLab {
    fn drop(&mut self) {
        for (l, _) in &self.services {
            // SAFETY: shutdown(2) on a listener we own; it wakes the blocked accept.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
        }
        for (stop, _) in &self.probes {
            stop.store(true, Ordering::Relaxed);
        }
        for (_, t) in self.services.drain(..) {
            let _ = t.join();
        }
        for (_, t) in self.probes.drain(..) {
            let _ = t.join();
        }
    }
}

/// Installs keepalived and tshark (idempotent) with the repository's script.
pub fn install_peers() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-vrrp-deps.sh");
    let ok = std::process::Command::new("sh")
        .arg(&script)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{} failed", script.display());
}

/// A `tether vrrp` config with one instance on eth0.
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

/// What a keepalived instance is: its router id, instance name, VRID, priority,
/// version and advert interval (keepalived's syntax, "1" or "0.1").
#[derive(Debug, Clone, Copy)]
pub struct Keepalived<'a> {
    /// `router_id`.
    pub router: &'a str,
    /// The instance's name.
    pub name: &'a str,
    /// `virtual_router_id`.
    pub vrid: u8,
    /// `priority`.
    pub prio: u8,
    /// `vrrp_version`.
    pub version: u8,
    /// `advert_int`.
    pub interval: &'a str,
}

impl Keepalived<'_> {
    /// keepalived.conf for this instance on eth0 with `vips`; `extra` goes into the
    /// instance block (unicast peers, track scripts).
    pub fn config(&self, vips: &[&str], extra: &str) -> String {
        let Keepalived {
            router,
            name,
            vrid,
            prio,
            version,
            interval,
        } = self;
        let vips = vips
            .iter()
            .map(|v| format!("        {v} dev eth0\n"))
            .collect::<String>();
        format!(
            "global_defs {{\n    router_id {router}\n    vrrp_version {version}\n}}\nvrrp_instance {name} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    priority {prio}\n    advert_int {interval}\n{extra}    virtual_ipaddress {{\n{vips}    }}\n}}\n"
        )
    }
}
