//! The loop that runs a checker at a jittered interval and feeds [`RiseFall`].

use std::time::{Duration, Instant};

use rand::Rng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::kinds::{CheckError, Checker};
use super::risefall::{Health, RiseFall, Transition};

/// How to monitor one target.
#[derive(Debug, Clone)]
pub struct MonitorSpec {
    /// The check to run.
    pub checker: Checker,
    /// Time between the starts of two checks while the state is settled and not down
    /// (jittered by up to ±10%, as the two below).
    pub interval: Duration,
    /// Time between checks while a rise or a fall is under way (HAProxy's `fastinter`), so
    /// a change is confirmed quickly.
    pub fast_interval: Duration,
    /// Time between checks while down (HAProxy's `downinter`), so a server that comes back
    /// is seen quickly.
    pub down_interval: Duration,
    /// Consecutive successes to go up.
    pub rise: u32,
    /// Consecutive failures to go down.
    pub fall: u32,
    /// The state to start in ([`Health::Unknown`] unless carried over from a reload).
    pub initial: Health,
}

impl MonitorSpec {
    /// A spec that checks at `interval` whatever the state, starting unknown.
    pub fn new(checker: Checker, interval: Duration, rise: u32, fall: u32) -> MonitorSpec {
        MonitorSpec {
            checker,
            interval,
            fast_interval: interval,
            down_interval: interval,
            rise,
            fall,
            initial: Health::Unknown,
        }
    }

    /// The time before the next check, by what `machine` knows now.
    pub fn interval_for(&self, machine: &RiseFall) -> Duration {
        if !machine.settled() {
            self.fast_interval
        } else if machine.state() == Health::Down {
            self.down_interval
        } else {
            self.interval
        }
    }
}

/// One finished check, handed to the monitor's callback.
#[derive(Debug, Clone)]
pub struct HealthEvent {
    /// The check's outcome.
    pub result: Result<(), CheckError>,
    /// How long the check took.
    pub took: Duration,
    /// The state change this result caused, if any.
    pub transition: Option<Transition>,
    /// The state after this result.
    pub state: Health,
}

/// Runs `spec` until `shutdown` is cancelled, calling `on_event` after every check.
///
/// The first check starts at once; later ones are spaced by the interval with ±10% jitter so
/// that many monitors started together do not check in lock-step.
pub fn spawn_monitor<F>(
    spec: MonitorSpec,
    shutdown: CancellationToken,
    mut on_event: F,
) -> JoinHandle<()>
where
    F: FnMut(HealthEvent) + Send + 'static,
{
    tokio::spawn(async move {
        let mut machine = RiseFall::with_state(spec.rise, spec.fall, spec.initial);
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = spec.checker.check() => r,
                _ = shutdown.cancelled() => return,
            };
            let took = started.elapsed();
            let transition = machine.observe(result.is_ok());
            on_event(HealthEvent {
                result,
                took,
                transition,
                state: machine.state(),
            });
            let wait = jittered(spec.interval_for(&machine)).saturating_sub(took);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    })
}

fn jittered(interval: Duration) -> Duration {
    let factor = rand::rng().random_range(0.9..=1.1);
    interval.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::CheckKind;

    #[test]
    fn checks_come_faster_while_down_and_while_a_change_is_under_way() {
        let checker = Checker {
            kind: CheckKind::Tcp,
            target: "192.0.2.21:80".parse().unwrap(),
            timeout: Duration::from_secs(1),
        };
        let spec = MonitorSpec {
            fast_interval: Duration::from_millis(250),
            down_interval: Duration::from_millis(500),
            ..MonitorSpec::new(checker, Duration::from_secs(2), 2, 3)
        };
        let mut m = RiseFall::new(2, 3);
        m.observe(true);
        assert_eq!(spec.interval_for(&m), Duration::from_secs(2), "up");
        m.observe(false);
        assert_eq!(spec.interval_for(&m), Duration::from_millis(250), "falling");
        m.observe(false);
        m.observe(false);
        assert_eq!(m.state(), Health::Down);
        assert_eq!(spec.interval_for(&m), Duration::from_millis(500), "down");
        m.observe(true);
        assert_eq!(spec.interval_for(&m), Duration::from_millis(250), "rising");
        m.observe(true);
        assert_eq!(m.state(), Health::Up);
        assert_eq!(spec.interval_for(&m), Duration::from_secs(2), "up again");
    }
}
