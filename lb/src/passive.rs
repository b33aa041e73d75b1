//! Which failed connects of the data path count toward a server's `fall`.
//!
//! Failed connects take a server out after `fall` of them (HAProxy's `observe layer4`), but
//! connects that were in flight together fail together: a burst of clients, or the server's
//! listen queue overflowing under that burst, is one event, not `fall` of them. So a failure
//! counts only when its connect started after the last failure that counted; a server that
//! stopped answering still earns one per round of clients.

use std::time::Instant;

/// Remembers when a failure last counted; sans-IO (the caller gives the times).
#[derive(Debug, Default)]
pub struct FailureGate {
    last_counted: Option<Instant>,
}

impl FailureGate {
    /// A connect started at `started` failed at `now`: whether it counts toward `fall`.
    pub fn counts(&mut self, started: Instant, now: Instant) -> bool {
        if self.last_counted.is_some_and(|t| started < t) {
            return false;
        }
        self.last_counted = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn connects_in_flight_together_count_once_and_later_ones_count_again() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut g = FailureGate::default();
        // 2,000 connects started within 50 ms, all failing at their 2 s timeout.
        let counted = (0..2000)
            .filter(|i| g.counts(ms(i % 50), ms(2000 + i % 50)))
            .count();
        assert_eq!(counted, 1);
        // Clients one after the other, each after the last failure: every one counts.
        assert!(g.counts(ms(2100), ms(4100)));
        assert!(g.counts(ms(4200), ms(6200)));
        assert!(!g.counts(ms(6000), ms(8000)));
    }
}
