//! Jittered, capped reconnect backoff (sans-IO: the caller passes the random source).
//!
//! The first retry waits uniformly 0..=`first` so that a fleet of gateways that lost the same
//! node does not re-dial in lock-step; later retries use "full jitter" up to a ceiling that
//! doubles per attempt and is capped low (2 s by default) for roster nodes, because a
//! restarted cloud node must be re-covered within seconds without any client traffic.

use std::time::Duration;

use rand::Rng;

/// Backoff state of one dial target.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    attempts: u32,
}

impl Backoff {
    /// A backoff whose first retry waits up to `first` and whose ceiling never exceeds `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap: cap.max(first),
            attempts: 0,
        }
    }

    /// The ceiling of the next delay: `first * 2^attempts`, at most `cap`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempts.min(20)).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.cap)
    }

    /// Draws the next delay (uniform in 0..=ceiling) and counts the attempt.
    pub fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let ceiling = self.ceiling();
        self.attempts = self.attempts.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }

    /// Changes the first delay and the cap, keeping the failures counted (a reload).
    pub fn set_limits(&mut self, first: Duration, cap: Duration) {
        self.first = first;
        self.cap = cap.max(first);
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Forgets past failures (after a session proved healthy).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn ceiling_doubles_then_caps() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let mut rng = StdRng::seed_from_u64(1);
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay(&mut rng);
            assert!(d <= Duration::from_secs(2));
        }
        assert_eq!(ceilings, vec![200, 400, 800, 1600, 2000, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(200));
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn delays_are_jittered_and_bounded() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut firsts = Vec::new();
        for _ in 0..200 {
            let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
            let d = b.next_delay(&mut rng);
            assert!(d <= Duration::from_millis(200));
            firsts.push(d);
        }
        let min = firsts.iter().min().copied().unwrap_or_default();
        let max = firsts.iter().max().copied().unwrap_or_default();
        // Spread over the window: no lock-step re-dials.
        assert!(min < Duration::from_millis(20), "{min:?}");
        assert!(max > Duration::from_millis(180), "{max:?}");
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            assert!(b.next_delay(&mut rng) <= Duration::from_secs(30));
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30));
    }

    #[test]
    fn new_limits_keep_the_failures_counted() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..3 {
            b.next_delay(&mut rng);
        }
        assert_eq!(b.ceiling(), Duration::from_millis(1600));
        b.set_limits(Duration::from_millis(100), Duration::from_millis(500));
        assert_eq!(b.attempts(), 3);
        assert_eq!(b.ceiling(), Duration::from_millis(500));
    }
}
