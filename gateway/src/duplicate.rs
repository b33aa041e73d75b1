//! Two live on-prem gateways with one id (sans-IO).
//!
//! A HELLO with a new boot epoch purges the sessions of the gateway's older epoch: that is
//! how a restarted gateway replaces its old incarnation at once. Two processes started with
//! the same id look like endless restarts: each purges the other, and client flows are cut
//! on every purge. A restarted process never comes back with a purged epoch (epochs are
//! random per start), so a purged epoch that registers again means two live processes. Then
//! the incumbent (the epoch holding the sessions) is kept for a hold-down period and the
//! other is refused; the driver logs it once as an error and counts every refusal.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How long the incumbent is kept once a duplicate id is detected.
pub const HOLD_DOWN: Duration = Duration::from_secs(60);

/// Purged epochs remembered per gateway (restarts within the hold-down are rare).
const REMEMBERED: usize = 16;

/// The verdict on a HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Register it (purging an older epoch, if any, as a restart).
    Admit,
    /// Another live process holds this id: refuse the HELLO.
    Refuse {
        /// The epoch kept.
        incumbent: u64,
        /// The conflict was detected just now (log it); later refusals in the same
        /// hold-down are only counted.
        first: bool,
    },
}

#[derive(Debug, Default)]
struct IdState {
    purged: VecDeque<(u64, Instant)>,
    hold: Option<(u64, Instant)>,
}

/// Per gateway id: epochs recently purged and a hold-down in force.
#[derive(Debug)]
pub struct DuplicateIds {
    hold_down: Duration,
    ids: BTreeMap<String, IdState>,
}

impl DuplicateIds {
    /// A tracker keeping incumbents for `hold_down`.
    pub fn new(hold_down: Duration) -> DuplicateIds {
        DuplicateIds {
            hold_down,
            ids: BTreeMap::new(),
        }
    }

    /// Decides on a HELLO of `gateway` with `epoch`, while `incumbent` is the epoch that
    /// holds the gateway's registered sessions (if any). Only for authorized gateways, so
    /// the map is bounded by the configuration.
    pub fn admit(
        &mut self,
        now: Instant,
        gateway: &str,
        epoch: u64,
        incumbent: Option<u64>,
    ) -> Admission {
        let hold_down = self.hold_down;
        let st = self.ids.entry(gateway.to_string()).or_default();
        st.purged
            .retain(|(_, at)| now.saturating_duration_since(*at) < hold_down);
        if let Some((held, until)) = st.hold {
            // The hold ends early when the incumbent is gone: nobody is left to protect.
            if now < until && incumbent == Some(held) {
                return if epoch == held {
                    Admission::Admit
                } else {
                    Admission::Refuse {
                        incumbent: held,
                        first: false,
                    }
                };
            }
            st.hold = None;
        }
        let Some(inc) = incumbent.filter(|&inc| inc != epoch) else {
            return Admission::Admit;
        };
        if st.purged.iter().any(|(e, _)| *e == epoch) {
            st.hold = Some((inc, now + hold_down));
            return Admission::Refuse {
                incumbent: inc,
                first: true,
            };
        }
        if st.purged.len() >= REMEMBERED {
            st.purged.pop_front();
        }
        st.purged.push_back((inc, now));
        Admission::Admit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A and B share "onprem1". B's first HELLO looks like a restart and purges A; A
    /// redialing with its (purged) epoch reveals the duplicate: B is kept, A refused, for
    /// the hold-down; after it the cycle may repeat once per hold-down, not per redial.
    #[test]
    fn a_purged_epoch_coming_back_is_a_duplicate_and_the_incumbent_is_kept() {
        let t0 = Instant::now();
        let mut d = DuplicateIds::new(HOLD_DOWN);
        let (a, b) = (0xa, 0xb);
        assert_eq!(d.admit(t0, "onprem1", a, None), Admission::Admit);
        assert_eq!(d.admit(t0, "onprem1", b, Some(a)), Admission::Admit);
        let s = Duration::from_secs(1);
        assert_eq!(
            d.admit(t0 + s, "onprem1", a, Some(b)),
            Admission::Refuse {
                incumbent: b,
                first: true
            }
        );
        // Every later redial of A within the hold-down is refused (and not logged again);
        // B's own sessions still register.
        for i in 2..59 {
            assert_eq!(
                d.admit(t0 + s * i, "onprem1", a, Some(b)),
                Admission::Refuse {
                    incumbent: b,
                    first: false
                }
            );
            assert_eq!(d.admit(t0 + s * i, "onprem1", b, Some(b)), Admission::Admit);
        }
        // Other ids are not affected.
        assert_eq!(d.admit(t0 + s, "onprem2", 7, Some(8)), Admission::Admit);
        // After the hold-down, A may take over again (once).
        assert_eq!(
            d.admit(t0 + s * 62, "onprem1", a, Some(b)),
            Admission::Admit
        );
    }

    #[test]
    fn restarts_are_admitted_and_the_hold_ends_when_the_incumbent_is_gone() {
        let t0 = Instant::now();
        let mut d = DuplicateIds::new(HOLD_DOWN);
        // Three restarts in a row: each new epoch replaces the last.
        assert_eq!(d.admit(t0, "g", 1, Some(0)), Admission::Admit);
        assert_eq!(d.admit(t0, "g", 2, Some(1)), Admission::Admit);
        assert_eq!(d.admit(t0, "g", 3, Some(2)), Admission::Admit);
        // Epoch 2 coming back is a duplicate of 3.
        assert!(matches!(
            d.admit(t0, "g", 2, Some(3)),
            Admission::Refuse { incumbent: 3, .. }
        ));
        // The incumbent's sessions all ended: the other process is let in.
        assert_eq!(d.admit(t0, "g", 2, None), Admission::Admit);
    }
}
