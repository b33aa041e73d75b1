//! The loop that runs a checker at a jittered interval and feeds [`RiseFall`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::watch;
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

/// Where a following monitor checks: the address a host name resolved to, or why it has
/// not resolved yet.
pub type Target = Result<SocketAddr, String>;

/// Runs `spec` until `shutdown` is cancelled, calling `on_event` after every check.
///
/// The first check starts at once; later ones are spaced by the interval with ±10% jitter so
/// that many monitors started together do not check in lock-step.
pub fn spawn_monitor<F>(
    spec: MonitorSpec,
    shutdown: CancellationToken,
    on_event: F,
) -> JoinHandle<()>
where
    F: FnMut(HealthEvent) + Send + 'static,
{
    tokio::spawn(run(spec, None, shutdown, on_event))
}

/// Runs `spec` as [`spawn_monitor`] does, but against the address `target` holds at each
/// check rather than `spec.checker.target`: for a target given by host name and resolved
/// again and again. While it holds an error (the name never resolved) every check fails
/// as [`CheckError::Unresolved`]; when it changes to a new address, that address is checked
/// at once instead of at the end of the interval. The rise/fall state carries over an
/// address change, as HAProxy keeps a server's state when DNS moves it.
pub fn spawn_following_monitor<F>(
    spec: MonitorSpec,
    target: watch::Receiver<Target>,
    shutdown: CancellationToken,
    on_event: F,
) -> JoinHandle<()>
where
    F: FnMut(HealthEvent) + Send + 'static,
{
    tokio::spawn(run(spec, Some(target), shutdown, on_event))
}

async fn run<F>(
    spec: MonitorSpec,
    mut target: Option<watch::Receiver<Target>>,
    shutdown: CancellationToken,
    mut on_event: F,
) where
    F: FnMut(HealthEvent) + Send + 'static,
{
    let mut machine = RiseFall::with_state(spec.rise, spec.fall, spec.initial);
    let mut checker = spec.checker.clone();
    // The address the last check went to; `None` after an unresolved one.
    let mut checked: Option<SocketAddr> = None;
    loop {
        let now_at = target.as_mut().map(|t| t.borrow_and_update().clone());
        let started = Instant::now();
        let result = match now_at {
            Some(Err(why)) => {
                checked = None;
                Err(CheckError::Unresolved(why))
            }
            Some(Ok(addr)) => {
                checker.target = addr;
                checked = Some(addr);
                tokio::select! {
                    r = checker.check() => r,
                    _ = shutdown.cancelled() => return,
                }
            }
            None => tokio::select! {
                r = checker.check() => r,
                _ = shutdown.cancelled() => return,
            },
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
        let moved = async {
            match target.as_mut() {
                // Only a new address cuts the wait short: another resolution failure of a
                // name that never resolved changes nothing worth checking.
                Some(t) => loop {
                    if t.changed().await.is_err() {
                        // Nobody resolves any more: the address is final.
                        return std::future::pending().await;
                    }
                    if matches!(&*t.borrow(), Ok(a) if Some(*a) != checked) {
                        return;
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = moved => {}
            _ = shutdown.cancelled() => return,
        }
    }
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

    /// A name that has not resolved fails its checks with the lookup's error; once it
    /// resolves, the new address is checked at once, not an interval (a minute here) later.
    #[tokio::test]
    async fn a_following_monitor_checks_a_new_address_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let checker = Checker {
            kind: CheckKind::Tcp,
            target: addr,
            timeout: Duration::from_secs(1),
        };
        let spec = MonitorSpec::new(checker, Duration::from_secs(60), 1, 1);
        let (tx, rx) = watch::channel::<Target>(Err("no address".into()));
        let (events, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let _guard = stop.clone().drop_guard();
        spawn_following_monitor(spec, rx, stop, move |ev| {
            let _ = events.send(ev);
        });
        let first = seen.recv().await.unwrap();
        assert_eq!(
            first.result,
            Err(CheckError::Unresolved("no address".into()))
        );
        assert_eq!(first.state, Health::Down);
        // Another failure of the lookup is no reason to check again before the interval.
        tx.send(Err("timed out".into()))
            .expect("the monitor listens");
        tx.send(Ok(addr)).expect("the monitor listens");
        let next = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .expect("checked at once")
            .unwrap();
        assert_eq!(next.result, Ok(()));
        assert_eq!(next.state, Health::Up);
    }
}
