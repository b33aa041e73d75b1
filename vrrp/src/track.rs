//! Tracking arithmetic (keepalived's `effective_priority`): checks, interfaces and
//! commands each carry a weight; the result is a priority or a fault.

/// The state of one tracked object, as the arithmetic needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// keepalived semantics: 0 = FAULT while failing; < 0 subtract while failing;
    /// > 0 add while up.
    pub weight: i32,
    /// Whether the object currently passes.
    pub up: bool,
}

/// Effective priority from a base priority and tracked objects: `None` means FAULT.
///
/// An address owner (255) never moves, as in keepalived, but still faults on a failing
/// weight-0 track. Everyone else is clamped to 1..=254 so tracking can neither make a
/// router an owner nor send the reserved priority 0.
pub fn effective_priority(base: u8, tracked: &[Tracked]) -> Option<u8> {
    if tracked.iter().any(|t| t.weight == 0 && !t.up) {
        return None;
    }
    if base == 255 {
        return Some(255);
    }
    let delta: i64 = tracked
        .iter()
        .map(|t| match (t.weight, t.up) {
            (w, true) if w > 0 => i64::from(w),
            (w, false) if w < 0 => i64::from(w),
            _ => 0,
        })
        .sum();
    let p = (i64::from(base) + delta).clamp(1, 254);
    u8::try_from(p).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(weight: i32, up: bool) -> Tracked {
        Tracked { weight, up }
    }

    #[test]
    fn no_tracks_is_base() {
        assert_eq!(effective_priority(100, &[]), Some(100));
        assert_eq!(effective_priority(255, &[]), Some(255));
    }

    #[test]
    fn weight_zero_faults_only_while_failing() {
        assert_eq!(effective_priority(150, &[t(0, true)]), Some(150));
        assert_eq!(effective_priority(150, &[t(0, false)]), None);
        assert_eq!(effective_priority(255, &[t(0, false)]), None);
    }

    #[test]
    fn negative_weight_subtracts_while_failing() {
        assert_eq!(effective_priority(150, &[t(-60, true)]), Some(150));
        assert_eq!(effective_priority(150, &[t(-60, false)]), Some(90));
    }

    #[test]
    fn positive_weight_adds_while_up() {
        assert_eq!(effective_priority(100, &[t(20, true)]), Some(120));
        assert_eq!(effective_priority(100, &[t(20, false)]), Some(100));
    }

    #[test]
    fn sums_and_clamps() {
        assert_eq!(
            effective_priority(100, &[t(20, true), t(-30, false)]),
            Some(90)
        );
        assert_eq!(effective_priority(200, &[t(100, true)]), Some(254));
        assert_eq!(effective_priority(10, &[t(-253, false)]), Some(1));
        // Owner does not move with weights.
        assert_eq!(effective_priority(255, &[t(-100, false)]), Some(255));
    }
}
