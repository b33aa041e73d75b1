//! What the test suites share besides labs: free ports, a thread echo server, reading
//! Prometheus text, and a real DNS server (dnsmasq). The root tests, the lb's and vrrp's
//! tests and the gateway's loopback harness all take these from here, so a fix to one is a
//! fix to all.

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A port free on `ip` a moment ago (bound, then released): for a daemon's configuration
/// file when the daemon must be told its port before it starts.
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
}

/// An echo server on 127.0.0.1 in threads of this test process; its port. It lives as long
/// as the test binary.
pub fn spawn_echo() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("echo bind");
    let port = l.local_addr().expect("echo addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// The value of the sample whose series is exactly `series` (a name, or a name with its
/// labels as Prometheus writes them: `name{a="x",b="y"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.starts_with(' ').then(|| rest.trim().parse().ok())?
    })
}

/// The sum of every sample in `text` whose line starts with `prefix` (a metric name, or a
/// name and the start of its labels).
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of every sample of metric `name` that carries each of `labels` (in any order,
/// among others).
pub fn metric_with(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            let ok = n == name
                && labels.iter().all(|(k, v)| {
                    rest.split(',')
                        .any(|p| p.trim_end_matches('}') == format!("{k}=\"{v}\""))
                });
            ok.then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A DNS server for tests that follow host names (`tether lb`'s servers, the gateway's
/// exports): dnsmasq from Debian (package `dnsmasq-base`) on a loopback address, answering
/// from a hosts file with TTL 0 and nothing else (no upstream, no `/etc/hosts`). Killed on
/// drop.
pub struct Dnsmasq {
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    child: std::process::Child,
    hosts: PathBuf,
    /// Its log lines (stderr), read by a thread: what [`Dnsmasq::answer`] waits on.
    log: mpsc::Receiver<String>,
}

/// How long dnsmasq may take to start or to read its hosts file again.
const DNSMASQ_WAIT: Duration = Duration::from_secs(10);

impl Dnsmasq {
    /// Starts dnsmasq on a free port of `ip` (a loopback address), answering `hosts` (the
    /// hosts-file format: `127.0.0.2 svc.test`), its file written in `dir`. Returns once it
    /// has read the file, which it does after binding its sockets.
    pub fn start(dir: &Path, ip: &str, hosts: &str) -> Dnsmasq {
        let bin = ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join("dnsmasq"))
            .find(|p| p.exists())
            .unwrap_or_else(|| {
                panic!("dnsmasq is not installed: run scripts/install-test-deps.sh as root (Debian package dnsmasq-base)")
            });
        let hosts_path = dir.join("hosts");
        std::fs::write(&hosts_path, hosts).expect("write the hosts file");
        let port = free_port(ip);
        let mut child = std::process::Command::new(bin)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--local-ttl=0",
                "--user=root",
                "--pid-file=",
                "--log-facility=-",
            ])
            .arg(format!("--addn-hosts={}", hosts_path.display()))
            .arg(format!("--listen-address={ip}"))
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start dnsmasq");
        let (tx, log) = mpsc::channel();
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(err).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        let addr = SocketAddr::new(ip.parse().expect("an IP address"), port);
        let d = Dnsmasq {
            addr,
            child,
            hosts: hosts_path,
            log,
        };
        d.wait_read();
        d
    }

    /// Answers `hosts` from now on: rewrites the file and makes dnsmasq read it again
    /// (SIGHUP, to our own child); returns once it has.
    pub fn answer(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).expect("write the hosts file");
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) with our own child's pid and a valid signal.
        let r = unsafe { libc::kill(pid, libc::SIGHUP) };
        assert_eq!(
            r,
            0,
            "SIGHUP to dnsmasq: {}",
            std::io::Error::last_os_error()
        );
        self.wait_read();
    }

    /// Waits for the log line saying the hosts file was read.
    fn wait_read(&self) {
        let want = format!("read {}", self.hosts.display());
        let deadline = Instant::now() + DNSMASQ_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(&want) => return,
                Ok(_) => {}
                Err(e) => panic!(
                    "dnsmasq did not read {} within {DNSMASQ_WAIT:?}: {e}",
                    self.hosts.display()
                ),
            }
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"1\",b=\"3\"} 4\nx_total_other 9\ny 5\n";

    #[test]
    fn series_are_read_exactly_summed_by_prefix_or_matched_by_labels() {
        assert_eq!(metric(TEXT, "y"), Some(5.0));
        assert_eq!(metric(TEXT, "x_total{a=\"1\",b=\"2\"}"), Some(3.0));
        assert_eq!(metric(TEXT, "x_total"), None);
        assert_eq!(metric_sum(TEXT, "x_total{"), 7.0);
        assert_eq!(metric_with(TEXT, "x_total", &[("b", "3")]), 4.0);
        assert_eq!(metric_with(TEXT, "x_total", &[("a", "1")]), 7.0);
        assert_eq!(metric_with(TEXT, "x_total", &[]), 7.0);
        assert_eq!(metric_with(TEXT, "x_total", &[("a", "2")]), 0.0);
    }
}
