//! The probing client of a VRRP lab: it connects to a VIP every 10 ms, records who
//! answered, and wakes whoever waits on what it saw.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::lock;

/// (when, who answered) for every probe, and a signal for each new one.
pub(super) type Samples = Arc<(Mutex<Vec<(Instant, Option<String>)>>, Condvar)>;

/// What a probing client saw.
#[derive(Default, Clone)]
pub struct Probe {
    pub(super) samples: Samples,
}

impl Probe {
    /// Waits until `done` holds for the samples so far, woken by each new sample.
    fn wait(&self, timeout: Duration, done: impl Fn(&[(Instant, Option<String>)]) -> bool) -> bool {
        let (v, arrived) = &*self.samples;
        let deadline = Instant::now() + timeout;
        let mut g = lock(v);
        loop {
            if done(&g) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = arrived
                .wait_timeout(g, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Waits until the last sample was answered by `who`.
    pub fn wait_answer(&self, who: &str, timeout: Duration) -> bool {
        self.wait(timeout, |v| {
            v.last().and_then(|s| s.1.as_deref()) == Some(who)
        })
    }

    /// Waits until the last `streak` probes, all after `after`, were answered.
    pub fn wait_streak(&self, after: Instant, streak: usize, timeout: Duration) -> bool {
        self.wait(timeout, |v| {
            v.len() >= streak
                && v[v.len() - streak..]
                    .iter()
                    .all(|(t, w)| *t >= after && w.is_some())
        })
    }

    /// How many probes after `since` failed.
    pub fn failures_since(&self, since: Instant) -> usize {
        lock(&self.samples.0)
            .iter()
            .filter(|(t, w)| *t >= since && w.is_none())
            .count()
    }

    /// Marks now; `gap_since(mark)` measures the outage after it.
    pub fn mark(&self) -> Instant {
        Instant::now()
    }

    /// The longest client-visible outage after `since`: from the last answered probe
    /// before a failure run to the first answered probe after it.
    pub fn gap_since(&self, since: Instant) -> Duration {
        let v = lock(&self.samples.0);
        let mut last_ok: Option<Instant> = None;
        let mut worst = Duration::ZERO;
        let mut in_gap = false;
        for (t, who) in v.iter() {
            match (who, *t < since) {
                (Some(_), true) => last_ok = Some(*t),
                (None, true) => {}
                (Some(_), false) => {
                    if in_gap && let Some(l) = last_ok {
                        worst = worst.max(*t - l);
                    }
                    in_gap = false;
                    last_ok = Some(*t);
                }
                (None, false) => in_gap = true,
            }
        }
        worst
    }
}

/// The probing loop, run on a thread inside the client's host until `stop` is set
/// (bounded: at most 10 minutes of samples).
pub(super) fn run(vip: SocketAddr, samples: &Samples, stop: &AtomicBool) {
    let debug = std::env::var_os("TETHER_PROBE_DEBUG").is_some();
    for _ in 0..60_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let t = Instant::now();
        let who = ask(vip);
        if debug && let Err(e) = &who {
            eprintln!("probe +{:?}: {e}", t.elapsed());
        }
        let (v, arrived) = &**samples;
        lock(v).push((t, who.ok()));
        arrived.notify_all();
        // The probing rate, not a wait for a condition.
        if let Some(rest) = Duration::from_millis(10).checked_sub(t.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// One probe: connect, read the banner.
fn ask(vip: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&vip, Duration::from_millis(20))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let mut b = String::new();
    s.read_to_string(&mut b).map_err(|e| format!("read: {e}"))?;
    if b.is_empty() {
        return Err("closed without an answer".to_string());
    }
    Ok(b)
}
