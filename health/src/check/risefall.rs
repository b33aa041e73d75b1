//! The rise/fall hysteresis shared by every checker (sans-IO).

use serde::Serialize;

/// What a monitored target is believed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No check has finished yet.
    Unknown,
    /// `rise` consecutive checks succeeded (or the first check did).
    Up,
    /// `fall` consecutive checks failed (or the first check did).
    Down,
}

impl Health {
    /// The name used in metrics labels, JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// A change of [`Health`] caused by one check result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before the result.
    pub from: Health,
    /// The state after it.
    pub to: Health,
}

/// Rise/fall hysteresis: a target goes down after `fall` consecutive failures and up after
/// `rise` consecutive successes.
///
/// The first result decides at once, so a daemon that starts (or restarts) knows the truth
/// after one check instead of `rise` of them; this is what lets a restarted balancer become
/// ready without waiting several intervals.
#[derive(Debug, Clone)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    state: Health,
    /// Consecutive results that disagree with `state`.
    streak: u32,
}

impl RiseFall {
    /// A new machine in [`Health::Unknown`]. `rise` and `fall` below 1 are treated as 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            state: Health::Unknown,
            streak: 0,
        }
    }

    /// A machine that starts in a known state, as when a reload carries health over.
    pub fn with_state(rise: u32, fall: u32, state: Health) -> Self {
        Self {
            state,
            ..Self::new(rise, fall)
        }
    }

    /// The current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// No rise or fall is under way: the last result agreed with the state.
    pub fn settled(&self) -> bool {
        self.streak == 0
    }

    /// Feeds one check result; returns the transition it caused, if any.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        let from = self.state;
        let to = match (from, ok) {
            (Health::Unknown, true) => Health::Up,
            (Health::Unknown, false) => Health::Down,
            (Health::Up, true) | (Health::Down, false) => {
                self.streak = 0;
                return None;
            }
            (Health::Up, false) => {
                self.streak += 1;
                if self.streak < self.fall {
                    return None;
                }
                Health::Down
            }
            (Health::Down, true) => {
                self.streak += 1;
                if self.streak < self.rise {
                    return None;
                }
                Health::Up
            }
        };
        self.state = to;
        self.streak = 0;
        Some(Transition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(rf: &mut RiseFall, results: &[bool]) -> Vec<Health> {
        results
            .iter()
            .map(|&ok| {
                rf.observe(ok);
                rf.state()
            })
            .collect()
    }

    #[test]
    fn first_result_decides() {
        assert_eq!(
            RiseFall::new(3, 3).observe(true).map(|t| t.to),
            Some(Health::Up)
        );
        assert_eq!(
            RiseFall::new(3, 3).observe(false).map(|t| t.to),
            Some(Health::Down)
        );
    }

    #[test]
    fn falls_after_fall_consecutive_failures() {
        use Health::*;
        let mut rf = RiseFall::with_state(2, 3, Up);
        assert_eq!(feed(&mut rf, &[false, false, false]), [Up, Up, Down]);
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        use Health::*;
        let mut rf = RiseFall::with_state(2, 3, Up);
        assert_eq!(
            feed(&mut rf, &[false, false, true, false, false, false]),
            [Up, Up, Up, Up, Up, Down]
        );
    }

    #[test]
    fn rises_after_rise_consecutive_successes() {
        use Health::*;
        let mut rf = RiseFall::with_state(2, 3, Down);
        assert_eq!(
            feed(&mut rf, &[true, false, true, true]),
            [Down, Down, Down, Up]
        );
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_result() {
        use Health::*;
        let mut rf = RiseFall::with_state(1, 1, Up);
        assert_eq!(feed(&mut rf, &[false, true, false]), [Down, Up, Down]);
    }

    #[test]
    fn zero_is_treated_as_one() {
        let mut rf = RiseFall::with_state(0, 0, Health::Up);
        assert_eq!(
            rf.observe(false),
            Some(Transition {
                from: Health::Up,
                to: Health::Down
            })
        );
    }
}
