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
    /// Time between the starts of two checks (jittered by up to ±10%).
    pub interval: Duration,
    /// Consecutive successes to go up.
    pub rise: u32,
    /// Consecutive failures to go down.
    pub fall: u32,
    /// The state to start in ([`Health::Unknown`] unless carried over from a reload).
    pub initial: Health,
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
            let wait = jittered(spec.interval).saturating_sub(took);
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
