//! A network-namespace lab: test hosts with their own addresses on one machine.
//!
//! A [`Lab`] is built from a [`LabBuilder`]: networks (each a bridge living in a namespace
//! of its own), hosts (one namespace each, joined to networks by veth pairs), routers that
//! forward between networks, and a firewall on a router that drops connections *into* a
//! protected network, as a corporate firewall does to an on-premise site. Processes run inside
//! hosts with `ip netns exec`.
//!
//! Safety rails, because this runs as root on a developer's machine:
//! - every address comes from the documentation ranges (192.0.2.0/24, 198.51.100.0/24,
//!   203.0.113.0/24, and 2001:db8::/32 for a network given an IPv6 prefix); anything else is
//!   refused before a single command runs;
//! - nothing is ever added to the machine's own namespace: veth pairs are created directly
//!   inside the lab's namespaces (`ip link add ... netns A type veth peer ... netns B`);
//! - everything is torn down on drop (also while a panic unwinds), on SIGINT/SIGTERM (a
//!   signal thread tears down every live lab, then exits), and, after a SIGKILL, by the next
//!   lab with the same prefix (a manifest under `/run/tether-lab` lists what to remove);
//! - processes started in a lab get `PR_SET_PDEATHSIG`, so they die with the lab's process.
//!
//! Modules: `build` (the builder and the commands that make a lab), `proc` (processes and
//! [`Watch`]), `addr` (documentation-range addresses), `teardown` (what a lab owns, its
//! manifest, and removing it), `signals` (teardown on signals), `cmd` and `error`,
//! [`client`] (an echo exchange and an admin GET from inside a host), [`kit`] (what the
//! test suites share besides labs: free ports, an echo server, Prometheus text), and the scenarios
//! built on it: [`scenario`] (the reference scenario), [`scale_out`] and [`bird`] (the BGP
//! tier), [`vrrp`] (the VRRP tests' lab).

#![warn(missing_docs)]

mod addr;
pub mod bird;
mod build;
pub mod client;
mod cmd;
mod error;
pub mod kit;
mod proc;
pub mod scale_out;
pub mod scenario;
mod signals;
mod teardown;
pub mod vrrp;

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use addr::{Cidr, Cidr6, DOCUMENTATION_RANGE_V6, DOCUMENTATION_RANGES};
pub use proc::{ProcSpec, ProcState, Sig, Watch, WatchEnded};

pub use build::LabBuilder;
use build::{HostSpec, NetSpec};
use cmd::run;
pub use error::LabError;
use teardown::{Inner, lock};

/// Checks that this process can create network namespaces (root, and a kernel that allows
/// it), by making and removing one.
pub fn available() -> Result<(), LabError> {
    // Tests call this from several threads of one process at once: the name must differ
    // per call, not only per process.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let probe = format!(
        "tether-probe-{}-{}",
        std::process::id(),
        PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let out = Command::new("ip")
        .args(["netns", "add", &probe])
        .stdout(Stdio::null())
        .output()
        .map_err(|e| LabError::Unavailable(format!("cannot run `ip` (iproute2): {e}")))?;
    if !out.status.success() {
        return Err(LabError::Unavailable(format!(
            "`ip netns add` failed{}: {}",
            if unsafe_geteuid() != 0 {
                " (not root)"
            } else {
                ""
            },
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    Ok(())
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A built lab. Dropping it stops its processes and removes its namespaces.
pub struct Lab {
    inner: Arc<Inner>,
    nets: Vec<NetSpec>,
    hosts: Vec<HostSpec>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.inner.prefix)
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl Lab {
    /// Starts describing a lab whose namespaces are named `<prefix>-<host>` and
    /// `<prefix>-net-<network>`.
    pub fn builder(prefix: &str) -> LabBuilder {
        LabBuilder {
            prefix: prefix.to_string(),
            dir: None,
            nets: Vec::new(),
            hosts: Vec::new(),
            firewalls: Vec::new(),
            signals: true,
            errors: Vec::new(),
        }
    }

    /// A prefix unique to this process and call, for tests that run side by side.
    pub fn unique_prefix(tag: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut t: String = tag.chars().take(4).collect();
        t.push_str(&format!("{}x{n}", std::process::id() % 1_000_000));
        t
    }

    fn net(&self, name: &str) -> Result<&NetSpec, LabError> {
        self.nets
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| LabError::Spec(format!("no network {name:?}")))
    }

    fn host_spec(&self, name: &str) -> Result<&HostSpec, LabError> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| LabError::UnknownHost(name.to_string()))
    }

    fn router_on(&self, net: &str) -> Option<Ipv4Addr> {
        let cidr = self.nets.iter().find(|n| n.name == net)?.cidr;
        self.hosts
            .iter()
            .filter(|h| h.router)
            .find_map(|h| h.ifaces.iter().find(|(n, _)| n == net))
            .and_then(|(_, o)| cidr.host(*o).ok())
    }

    /// The IPv6 address of the router on `net`, when the network has an IPv6 prefix.
    fn router6_on(&self, net: &str) -> Option<Ipv6Addr> {
        let v6 = self.nets.iter().find(|n| n.name == net)?.v6?;
        self.hosts
            .iter()
            .filter(|h| h.router)
            .find_map(|h| h.ifaces.iter().find(|(n, _)| n == net))
            .map(|(_, o)| v6.host(*o))
    }

    /// The lab's prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The folder of the lab's logs and files.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The namespace name of a host: `<prefix>-<host>`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.inner.prefix)
    }

    /// The namespace holding a network's bridge: `<prefix>-net-<network>`.
    pub fn net_ns(&self, net: &str) -> String {
        format!("{}-net-{net}", self.inner.prefix)
    }

    /// Every namespace this lab made.
    pub fn namespaces(&self) -> Vec<String> {
        lock(&self.inner.state).namespaces.clone()
    }

    /// The hosts' names, in the order they were described.
    pub fn hosts(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }

    /// A host's number on a network.
    fn octet(&self, host: &str, net: &str) -> Result<u8, LabError> {
        let h = self.host_spec(host)?;
        h.ifaces
            .iter()
            .find(|(n, _)| n == net)
            .map(|(_, o)| *o)
            .ok_or_else(|| LabError::Spec(format!("host {host:?} is not on {net:?}")))
    }

    /// A host's address on a network.
    pub fn addr(&self, host: &str, net: &str) -> Result<Ipv4Addr, LabError> {
        let octet = self.octet(host, net)?;
        self.net(net)?.cidr.host(octet)
    }

    /// A host's IPv6 address on a network that has an IPv6 prefix.
    pub fn addr6(&self, host: &str, net: &str) -> Result<Ipv6Addr, LabError> {
        let octet = self.octet(host, net)?;
        let v6 = self
            .net(net)?
            .v6
            .ok_or_else(|| LabError::Spec(format!("network {net:?} has no IPv6 prefix")))?;
        Ok(v6.host(octet))
    }

    /// A host's interface name on a network (`eth0`, `eth1`...).
    pub fn iface(&self, host: &str, net: &str) -> Result<String, LabError> {
        let h = self.host_spec(host)?;
        h.ifaces
            .iter()
            .position(|(n, _)| n == net)
            .map(|i| format!("eth{i}"))
            .ok_or_else(|| LabError::Spec(format!("host {host:?} is not on {net:?}")))
    }

    /// Runs a command inside a host (`ip netns exec`) and returns its output.
    pub fn exec(&self, host: &str, args: &[&str]) -> Result<Output, LabError> {
        self.host_spec(host)?;
        Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LabError::io(format!("ip netns exec {host}"), e))
    }

    /// Unplugs a host from a network (its bridge port goes down; the host sees no carrier).
    pub fn cut(&self, host: &str, net: &str) -> Result<(), LabError> {
        self.iface(host, net)?;
        run(&[
            "ip",
            "-n",
            &self.net_ns(net),
            "link",
            "set",
            "dev",
            host,
            "down",
        ])
    }

    /// Plugs a host back into a network.
    pub fn heal(&self, host: &str, net: &str) -> Result<(), LabError> {
        self.iface(host, net)?;
        run(&[
            "ip",
            "-n",
            &self.net_ns(net),
            "link",
            "set",
            "dev",
            host,
            "up",
        ])
    }

    /// Runs `f` on a thread that lives inside the host's network namespace. Sockets made
    /// there stay in that namespace after the thread ends, so they can be used anywhere.
    pub fn in_ns<T: Send>(&self, host: &str, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
        self.host_spec(host)?;
        let path = format!("/run/netns/{}", self.ns(host));
        std::thread::scope(|s| {
            s.spawn(|| {
                enter_ns(&path)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Opens a TCP connection from inside a host.
    pub fn connect(
        &self,
        host: &str,
        to: SocketAddr,
        timeout: Duration,
    ) -> Result<TcpStream, LabError> {
        self.in_ns(host, || TcpStream::connect_timeout(&to, timeout))?
            .map_err(|e| LabError::io(format!("connecting from {host} to {to}"), e))
    }

    /// Binds a TCP listener inside a host.
    pub fn listen(&self, host: &str, addr: SocketAddr) -> Result<TcpListener, LabError> {
        self.in_ns(host, || TcpListener::bind(addr))?
            .map_err(|e| LabError::io(format!("binding {addr} in {host}"), e))
    }

    /// Runs `f` on a new thread that lives inside the host's network namespace, for as long
    /// as `f` runs (a server or a client loop that a test leaves running). The caller stops
    /// it; the thread's sockets stay in the namespace.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        host: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T, LabError>>, LabError> {
        self.host_spec(host)?;
        let path = format!("/run/netns/{}", self.ns(host));
        std::thread::Builder::new()
            .name(format!("lab-{host}"))
            .spawn(move || {
                enter_ns(&path)?;
                Ok(f())
            })
            .map_err(|e| LabError::io(format!("starting a thread in {host}"), e))
    }

    /// Runs `args` in each of `hosts` and follows their output merged, line by line: one
    /// place to wait for an event that may happen in any of them (an address moving
    /// between hosts, seen by `ip monitor address` in each).
    pub fn watch_all(&self, hosts: &[&str], args: &[&str]) -> Result<Watch, LabError> {
        let mut ns = Vec::new();
        for h in hosts {
            self.host_spec(h)?;
            ns.push(self.ns(h));
        }
        self.inner.procs.watch_all(&ns, args)
    }

    /// Runs `args` in `host` and follows its output line by line (an `ip monitor`, a log
    /// stream): what a caller waits on instead of polling.
    pub fn watch(&self, host: &str, args: &[&str]) -> Result<Watch, LabError> {
        self.inner.procs.watch(&self.ns(host), args)
    }

    /// Waits until process `name`'s log holds `needle` at least `n` times (restarts
    /// append to the same log), following the file as it grows.
    pub fn wait_log_count(&self, name: &str, needle: &str, n: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        let path = self.log_path(name).to_string_lossy().to_string();
        let Some(host) = self.hosts.first() else {
            return false;
        };
        // Any host will do: the lab's folder is on the shared file system.
        let Ok(tail) = self.watch(&host.name, &["tail", "-n", "+1", "-F", &path]) else {
            return false;
        };
        let mut seen = 0;
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match tail.next_line(left) {
                Ok(Some(l)) => {
                    seen += l.matches(needle).count();
                    if seen >= n {
                        return true;
                    }
                }
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// Waits until process `name`'s log holds `needle`.
    pub fn wait_log(&self, name: &str, needle: &str, timeout: Duration) -> bool {
        self.wait_log_count(name, needle, 1, timeout)
    }

    /// Starts a process inside a host; its stdout and stderr go to `<dir>/<name>.log`.
    /// Returns its pid.
    pub fn start(&self, spec: ProcSpec) -> Result<u32, LabError> {
        self.host_spec(&spec.host)?;
        let ns = self.ns(&spec.host);
        let log = self.log_path(&spec.name);
        self.inner.procs.start(spec, &ns, &log)
    }

    /// Sends a signal to a process of this lab.
    pub fn signal(&self, name: &str, sig: Sig) -> Result<(), LabError> {
        self.inner.procs.signal(name, sig)
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`. Returns its state after.
    pub fn stop(&self, name: &str, grace: Duration) -> Result<ProcState, LabError> {
        self.inner.procs.stop(name, grace)
    }

    /// Starts a stopped process again with the same command line.
    pub fn restart(&self, name: &str) -> Result<u32, LabError> {
        let spec = self.inner.procs.spec(name)?;
        self.start(spec)
    }

    /// Waits up to `timeout` for a process to exit; returns its state.
    pub fn wait_exit(&self, name: &str, timeout: Duration) -> Result<ProcState, LabError> {
        self.inner.procs.wait_exit(name, timeout)
    }

    /// A process's state (running with its pid, or exited with its status).
    pub fn state(&self, name: &str) -> Result<ProcState, LabError> {
        self.inner.procs.state(name)
    }

    /// Every process of the lab with its host, in start order.
    pub fn processes(&self) -> Vec<(String, String, ProcState)> {
        self.inner.procs.list()
    }

    /// The log file of a process.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.inner.dir.join(format!("{name}.log"))
    }

    /// The log of a process so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// Removes `path` on teardown too (a control socket, a pid file).
    pub fn remove_on_teardown(&self, path: impl Into<PathBuf>) {
        lock(&self.inner.state).files.push(path.into());
    }

    /// The networks a host is plugged into.
    pub fn networks_of(&self, host: &str) -> Vec<String> {
        self.hosts
            .iter()
            .find(|h| h.name == host)
            .map(|h| h.ifaces.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }

    /// Stops everything and removes every namespace now (also what Drop does).
    pub fn teardown(&self) {
        self.inner.teardown();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.inner.teardown();
        signals::unregister(&self.inner);
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter_ns(path: &str) -> Result<(), LabError> {
    let f = File::open(path).map_err(|e| LabError::io(format!("opening {path}"), e))?;
    // SAFETY: setns(2) with a descriptor we just opened; it changes only this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(LabError::io(
            format!("setns {path}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Namespaces of a prefix that exist right now (for tests checking nothing is left).
pub fn existing_namespaces(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    let p = format!("{prefix}-");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&p))
        .map(str::to_string)
        .collect()
}

impl AsRef<Lab> for Lab {
    fn as_ref(&self) -> &Lab {
        self
    }
}
