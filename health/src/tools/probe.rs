//! The connection prober: opens a new connection every interval, sends a line and expects
//! it echoed back. Its longest gap between successes is the yardstick for failover.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// What to probe and for how long.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// The address to connect to.
    pub target: SocketAddr,
    /// Time between the starts of two probes.
    pub every: Duration,
    /// How long to keep probing.
    pub duration: Duration,
    /// How long one probe may take (connect, send, echo).
    pub timeout: Duration,
}

/// The outcome of a probing run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbeReport {
    /// Probes started.
    pub attempts: u64,
    /// Probes that got their line back.
    pub successes: u64,
    /// Probes that did not.
    pub failures: u64,
    /// The longest time without a successful probe (start, end and between), in seconds.
    pub longest_gap_s: f64,
    /// The first few failure reasons, for the operator.
    pub failure_samples: Vec<String>,
    /// When each failed probe started (Unix time, milliseconds; the first 1,000), so a
    /// test can tell connections opened after a failure from those in flight through it.
    pub failed_started_unix_ms: Vec<f64>,
}

impl std::fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} probes: {} ok, {} failed, longest gap {:.0} ms",
            self.attempts,
            self.successes,
            self.failures,
            self.longest_gap_s * 1000.0
        )?;
        for s in &self.failure_samples {
            write!(f, "\n  failure: {s}")?;
        }
        Ok(())
    }
}

/// At most this many probes are in flight; a tick finding that many is counted as a failure
/// rather than piling up without bound.
const MAX_IN_FLIGHT: usize = 256;
const MAX_SAMPLES: usize = 5;
const MAX_FAILED_STARTS: usize = 1000;

fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Runs one probe: connect, send a line, read until the line comes back.
pub async fn probe_once(
    target: SocketAddr,
    seq: u64,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let line = format!("tether-probe {seq}\n");
        stream
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut got = Vec::with_capacity(64);
        let mut buf = [0u8; 512];
        // The reply may be preceded by a banner; look for our line anywhere in it.
        while !contains(&got, line.as_bytes()) {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed before the echo".to_string());
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() > 4096 {
                return Err("no echo in the first 4 KiB".to_string());
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Probes for `spec.duration` and reports. Stops by itself.
pub async fn run(spec: &ProbeSpec) -> ProbeReport {
    let start = Instant::now();
    let deadline = start + spec.duration;
    let (tx, mut rx) = mpsc::channel::<(Instant, f64, Result<Duration, String>)>(MAX_IN_FLIGHT);
    let mut report = ProbeReport::default();
    let mut last_success = start;
    let mut longest = Duration::ZERO;
    let mut in_flight = 0usize;
    let mut ticker = tokio::time::interval(spec.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut record = |report: &mut ProbeReport,
                      finished: Instant,
                      started_ms: f64,
                      result: Result<Duration, String>| match result {
        Ok(_) => {
            report.successes += 1;
            longest = longest.max(finished.saturating_duration_since(last_success));
            last_success = last_success.max(finished);
        }
        Err(e) => {
            report.failures += 1;
            if report.failed_started_unix_ms.len() < MAX_FAILED_STARTS {
                report.failed_started_unix_ms.push(started_ms);
            }
            if report.failure_samples.len() < MAX_SAMPLES {
                report.failure_samples.push(e);
            }
        }
    };
    loop {
        tokio::select! {
            _ = ticker.tick(), if Instant::now() < deadline => {
                seq += 1;
                report.attempts += 1;
                if in_flight >= MAX_IN_FLIGHT {
                    record(&mut report, Instant::now(), unix_ms(), Err("too many probes in flight".into()));
                    continue;
                }
                in_flight += 1;
                let tx = tx.clone();
                let (target, timeout) = (spec.target, spec.timeout);
                let started_ms = unix_ms();
                tokio::spawn(async move {
                    let r = probe_once(target, seq, timeout).await;
                    let _ = tx.send((Instant::now(), started_ms, r)).await;
                });
            }
            Some((finished, started_ms, result)) = rx.recv() => {
                in_flight -= 1;
                record(&mut report, finished, started_ms, result);
            }
            else => break,
        }
        if Instant::now() >= deadline && in_flight == 0 {
            break;
        }
    }
    let end = Instant::now().min(deadline.max(last_success));
    let tail = end.saturating_duration_since(last_success);
    report.longest_gap_s = longest.max(tail).as_secs_f64();
    report
}
