//! The forwarding tier's control core, sans-IO: given what the kernel should do now (a
//! [`Desired`]) it says which transaction to apply, remembers what is installed, and after a
//! failure when to try again. The shell runs `nft` and reports back.

use std::time::{Duration, Instant};

use super::rules::{Desired, Objects};

/// First wait after a failed apply; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between attempts while applying fails.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What is installed and what to do next.
#[derive(Debug, Default)]
pub struct Controller {
    /// The program the kernel runs, when the last apply succeeded.
    installed: Option<Desired>,
    /// The objects in the table: known after a success, unknown after a failure (the next
    /// apply then replaces the table whole).
    objects: Option<Objects>,
    /// The program being applied.
    pending: Option<Desired>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The last failure, until an apply succeeds.
    last_error: Option<String>,
}

/// One transaction to hand to `nft -f -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apply {
    /// The script.
    pub script: String,
    /// The frontends whose rules change (for per-frontend counters).
    pub frontends: Vec<String>,
}

impl Controller {
    /// A controller that knows nothing of the kernel yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers the program wanted now. Returns the transaction to apply, or `None` when the
    /// kernel already runs it, or when a failed apply waits for its retry time.
    pub fn want(&mut self, now: Instant, desired: Desired) -> Option<Apply> {
        if self.installed.as_ref() == Some(&desired) && self.last_error.is_none() {
            return None;
        }
        if let Some(at) = self.retry_at
            && now < at
        {
            // Remembered, so the retry applies the latest wish.
            self.pending = Some(desired);
            return None;
        }
        let frontends = changed_frontends(self.installed.as_ref(), &desired);
        let script = desired.script(self.objects.as_ref());
        self.pending = Some(desired);
        Some(Apply { script, frontends })
    }

    /// At the retry time, the transaction to try again.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Apply> {
        match self.retry_at {
            Some(at) if now >= at => {
                self.retry_at = None;
                let desired = self.pending.take()?;
                self.want(now, desired)
            }
            _ => None,
        }
    }

    /// When [`Controller::handle_timeout`] wants to be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Reports how the last transaction went.
    pub fn applied(&mut self, now: Instant, result: Result<(), String>) {
        let Some(desired) = self.pending.take() else {
            return;
        };
        match result {
            Ok(()) => {
                self.objects = Some(desired.objects());
                self.installed = Some(desired);
                self.retry_at = None;
                self.backoff = Duration::ZERO;
                self.last_error = None;
            }
            Err(e) => {
                // What the table holds is now unknown to us only if the failure was partial;
                // nft transactions are all or nothing, so `objects` stays right. The retry
                // applies the latest wish.
                self.backoff = (self.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                self.retry_at = Some(now + self.backoff);
                self.last_error = Some(e);
                self.pending = Some(desired);
            }
        }
    }

    /// The program the kernel runs (`None` before the first success).
    pub fn installed(&self) -> Option<&Desired> {
        self.installed.as_ref()
    }

    /// Why the last apply failed, while it has not succeeded since.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

fn changed_frontends(old: Option<&Desired>, new: &Desired) -> Vec<String> {
    new.frontends
        .iter()
        .filter(|f| old.is_none_or(|o| !o.frontends.contains(f)))
        .map(|f| f.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dr::rules::{FrontendRules, ServerRule};

    fn desired(slots: Vec<u32>) -> Desired {
        Desired {
            table: "t".into(),
            frontends: vec![FrontendRules {
                name: "svc".into(),
                backend: "be".into(),
                interface: "eth0".into(),
                binds: vec!["192.0.2.100:5551".parse().unwrap()],
                v6: false,
                flow_timeout: Duration::from_secs(900),
                flow_size: 1024,
                live: vec![ServerRule {
                    mark: 1,
                    addr: "192.0.2.21".parse().unwrap(),
                }],
                slots,
            }],
        }
    }

    #[test]
    fn the_first_apply_replaces_the_table_and_an_unchanged_wish_applies_nothing() {
        let now = Instant::now();
        let mut c = Controller::new();
        let a = c.want(now, desired(vec![1; 4])).unwrap();
        assert!(a.script.contains("delete table netdev t"));
        assert_eq!(a.frontends, vec!["svc".to_string()]);
        c.applied(now, Ok(()));
        assert!(c.want(now, desired(vec![1; 4])).is_none());
        let b = c.want(now, desired(vec![1; 8])).unwrap();
        assert!(!b.script.contains("delete table"));
    }

    #[test]
    fn a_failure_keeps_what_runs_and_retries_the_latest_wish_with_backoff() {
        let t0 = Instant::now();
        let mut c = Controller::new();
        c.want(t0, desired(vec![1; 4])).unwrap();
        c.applied(t0, Ok(()));
        c.want(t0, desired(vec![1; 8])).unwrap();
        c.applied(t0, Err("no such device".into()));
        assert_eq!(c.installed(), Some(&desired(vec![1; 4])));
        assert_eq!(c.last_error(), Some("no such device"));
        assert_eq!(c.next_deadline(), Some(t0 + FIRST_BACKOFF));
        // A newer wish before the retry time waits for it...
        assert!(c.want(t0, desired(vec![1; 16])).is_none());
        assert!(c.handle_timeout(t0 + FIRST_BACKOFF / 2).is_none());
        // ...and is what the retry applies, incrementally from what is installed.
        let r = c.handle_timeout(t0 + FIRST_BACKOFF).unwrap();
        assert!(r.script.contains("mod 16"));
        assert!(!r.script.contains("delete table"));
        c.applied(t0 + FIRST_BACKOFF, Err("still".into()));
        assert_eq!(
            c.next_deadline(),
            Some(t0 + FIRST_BACKOFF + FIRST_BACKOFF * 2)
        );
        let r = c.handle_timeout(t0 + FIRST_BACKOFF * 3).unwrap();
        assert!(r.script.contains("mod 16"));
        c.applied(t0 + FIRST_BACKOFF * 3, Ok(()));
        assert_eq!(c.installed(), Some(&desired(vec![1; 16])));
        assert_eq!(c.last_error(), None);
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn the_backoff_stops_growing() {
        let mut now = Instant::now();
        let mut c = Controller::new();
        c.want(now, desired(vec![1; 4])).unwrap();
        for _ in 0..10 {
            c.applied(now, Err("x".into()));
            now = c.next_deadline().unwrap();
            c.handle_timeout(now).unwrap();
        }
        c.applied(now, Err("x".into()));
        assert_eq!(c.next_deadline(), Some(now + MAX_BACKOFF));
    }
}
