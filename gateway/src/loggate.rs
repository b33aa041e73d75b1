//! Bounds the log lines that peers without credentials can cause (handshake timeouts,
//! refused handshakes, garbage after the handshake): a port scanner or a flood of stalled
//! connections must not write a WARN line each. Every event is still counted in a metric.
//!
//! A few lines of our own rather than a rate-limiting crate: one gate per kind of event
//! and no token bucket are needed, only "at most one line per interval, saying how many
//! were held back".

use std::time::{Duration, Instant};

/// At most one log line per interval (sans-IO: the caller passes the time).
#[derive(Debug)]
pub struct LogGate {
    every: Duration,
    next: Option<Instant>,
    held: u64,
}

impl LogGate {
    /// A gate letting one line through per `every`.
    pub fn new(every: Duration) -> LogGate {
        LogGate {
            every,
            next: None,
            held: 0,
        }
    }

    /// An event happened at `now`: `Some(n)` means log it, mentioning the `n` events held
    /// back since the last line; `None` means count it only.
    pub fn pass(&mut self, now: Instant) -> Option<u64> {
        match self.next {
            Some(t) if now < t => {
                self.held += 1;
                None
            }
            _ => {
                self.next = Some(now + self.every);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let t0 = Instant::now();
        let mut g = LogGate::new(Duration::from_secs(10));
        assert_eq!(g.pass(t0), Some(0));
        // A flood of 10,000 events in the next few seconds: not one more line.
        let lines = (1..=10_000u32)
            .filter(|i| {
                g.pass(t0 + Duration::from_micros(u64::from(*i) * 500))
                    .is_some()
            })
            .count();
        assert_eq!(lines, 0);
        assert_eq!(g.pass(t0 + Duration::from_secs(10)), Some(10_000));
        assert_eq!(g.pass(t0 + Duration::from_secs(30)), Some(0));
    }
}
