//! Tests of [`super`]: recycling sessions at their maximum age, make before break.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::JITTER;
use crate::placement::tests::{dials, roster};
use crate::placement::{Action, Landed, Placement, SessionId, Target};

const AGE: Duration = Duration::from_secs(100);

fn recycles(actions: &[Action]) -> Vec<(SessionId, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Recycle { session, node } => Some((*session, node.clone())),
            Action::Dial { .. } => None,
        })
        .collect()
}

/// A gateway pinned to `nodes`, each covered with `quota` sessions kept at `t`, with the
/// maximum age set. Session ids count from 1.
fn covered(quota: usize, nodes: &[&str], t: Instant, rng: &mut StdRng) -> (Placement, SessionId) {
    let mut p = Placement::new(quota, true, Duration::from_secs(2));
    p.set_max_session_age(Some(AGE), t, rng);
    p.apply_roster(&roster(nodes));
    let mut s = 0;
    while p.coverage().values().any(|n| *n < quota) {
        let a = p.poll(t);
        assert!(!a.is_empty(), "no dial while a node is short");
        for (dial, target, _) in dials(&a) {
            let Target::Node { node, .. } = target else {
                unreachable!("pinned")
            };
            s += 1;
            assert_eq!(p.session_up(t, dial, s, &node, &[], rng), Landed::Keep);
        }
    }
    (p, s)
}

#[test]
fn a_session_at_its_age_is_replaced_before_it_is_recycled() {
    let mut rng = StdRng::seed_from_u64(1);
    let t0 = Instant::now();
    let (mut p, mut s) = covered(2, &["c1"], t0, &mut rng);
    assert!(
        p.poll(t0 + AGE.mul_f64(1.0 - JITTER) - Duration::from_millis(1))
            .is_empty()
    );
    // The first session to reach its age asks for one dial more; nothing is recycled yet.
    let due = p.next_deadline().expect("an age deadline");
    assert!(due >= t0 + AGE.mul_f64(1.0 - JITTER) && due <= t0 + AGE.mul_f64(1.0 + JITTER));
    let a = p.poll(due);
    assert!(recycles(&a).is_empty(), "{a:?}");
    let d = dials(&a);
    assert_eq!(d.len(), 1, "{a:?}");
    assert_eq!(d[0].2.as_deref(), Some("c1"));
    assert_eq!(p.aged_sessions(), 1);
    // The old session still counts meanwhile.
    assert_eq!(p.coverage()["c1"], 2);
    assert_eq!(p.deficits()["c1"], 0);
    assert!(p.poll(due).is_empty(), "one replacement per aged session");
    // The replacement is kept (not surplus), and the old one is then recycled.
    s += 1;
    assert_eq!(
        p.session_up(due, d[0].0, s, "c1", &[], &mut rng),
        Landed::Keep
    );
    let a = p.poll(due);
    let r = recycles(&a);
    assert_eq!(r.len(), 1, "{a:?}");
    assert!(r[0].0 <= 2, "an original session is recycled: {r:?}");
    assert_eq!(r[0].1, "c1");
    assert!(dials(&a).is_empty());
    assert_eq!(p.coverage()["c1"], 2);
    assert_eq!(p.aged_sessions(), 0);
    // Its end, reported later, is not a loss: no retry is scheduled for the node, only
    // the next session's age.
    p.session_down(due + Duration::from_secs(5), r[0].0, &mut rng);
    assert_eq!(p.coverage()["c1"], 2);
    let next = p.next_deadline().expect("the other sessions' ages");
    assert!(next > due + Duration::from_secs(5), "{:?}", next - due);
    assert!(p.poll(due + Duration::from_secs(5)).is_empty());
}

#[test]
fn every_session_is_recycled_in_turn_and_coverage_never_drops() {
    let mut rng = StdRng::seed_from_u64(2);
    let t0 = Instant::now();
    let (mut p, mut s) = covered(2, &["c1", "c2"], t0, &mut rng);
    let mut now = t0;
    let mut recycled = Vec::new();
    // Three ages' worth of time, every dial succeeding at once.
    while now < t0 + AGE * 3 {
        now = p.next_deadline().expect("always a next age");
        let a = p.poll(now);
        for (session, _) in recycles(&a) {
            recycled.push(session);
        }
        for (dial, target, _) in dials(&a) {
            let Target::Node { node, .. } = target else {
                unreachable!()
            };
            s += 1;
            assert_eq!(
                p.session_up(now, dial, s, &node, &[], &mut rng),
                Landed::Keep
            );
        }
        for (session, _) in recycles(&p.poll(now)) {
            recycled.push(session);
        }
        assert!(p.coverage().values().all(|n| *n >= 2), "{:?}", p.coverage());
        assert!(p.coverage().values().all(|n| *n <= 3), "{:?}", p.coverage());
    }
    // Each of the 4 sessions lives 85..115 s: 2 or 3 generations in 300 s.
    assert!(recycled.len() >= 8, "{recycled:?}");
    let unique: std::collections::BTreeSet<_> = recycled.iter().collect();
    assert_eq!(unique.len(), recycled.len(), "a session recycled twice");
}

#[test]
fn jitter_spreads_the_ages_of_sessions_made_together() {
    let mut rng = StdRng::seed_from_u64(3);
    let t0 = Instant::now();
    let (mut p, _) = covered(16, &["c1"], t0, &mut rng);
    let mut deadlines = Vec::new();
    let mut now = t0;
    while deadlines.len() < 16 {
        let due = p.next_deadline().expect("ages left");
        assert!(due >= now);
        now = due;
        // Each poll marks the sessions due by then; without replacements none recycles.
        let a = p.poll(now);
        assert!(recycles(&a).is_empty());
        let aged = p.aged_sessions();
        while deadlines.len() < aged {
            deadlines.push(now - t0);
        }
        // Dials fail: sessions stay, no retry storm (backoff only).
        for (dial, _, _) in dials(&a) {
            p.dial_failed(now, dial, Duration::ZERO, &mut rng);
        }
    }
    let (first, last) = (deadlines[0], deadlines[15]);
    assert!(first >= AGE.mul_f64(1.0 - JITTER), "{first:?}");
    assert!(last <= AGE.mul_f64(1.0 + JITTER), "{last:?}");
    // 16 uniform draws over ±15 %: spread over more than a tenth of the age (the chance
    // of less is below 1e-6; the seed is fixed anyway).
    assert!(last - first > AGE / 10, "{deadlines:?}");
    // Never recycled without a replacement.
    assert_eq!(p.coverage()["c1"], 16);
}

#[test]
fn a_failed_replacement_keeps_the_old_session_and_retries() {
    let mut rng = StdRng::seed_from_u64(4);
    let t0 = Instant::now();
    let (mut p, mut s) = covered(1, &["c1"], t0, &mut rng);
    let due = p.next_deadline().expect("age");
    let d = dials(&p.poll(due));
    assert_eq!(d.len(), 1);
    p.dial_failed(due, d[0].0, Duration::ZERO, &mut rng);
    assert_eq!(p.coverage()["c1"], 1, "the old session keeps serving");
    let retry = p.next_deadline().expect("a retry");
    assert!(
        retry <= due + Duration::from_millis(200),
        "{:?}",
        retry - due
    );
    let d = dials(&p.poll(retry));
    assert_eq!(d.len(), 1);
    s += 1;
    assert_eq!(
        p.session_up(retry, d[0].0, s, "c1", &[], &mut rng),
        Landed::Keep
    );
    assert_eq!(recycles(&p.poll(retry)), vec![(1, "c1".to_string())]);
}

/// Without SNI pinning the replacement lands wherever the balancer sends it: on a full
/// node it is surplus (and the aged session waits); on the aged session's node it
/// replaces it.
#[test]
fn vip_dials_replace_only_where_they_land() {
    let mut rng = StdRng::seed_from_u64(5);
    let t0 = Instant::now();
    let mut p = Placement::new(1, false, Duration::from_secs(2));
    p.set_max_session_age(Some(AGE), t0, &mut rng);
    let r = roster(&["c1", "c2"]);
    let boot = dials(&p.poll(t0));
    assert_eq!(
        p.session_up(t0, boot[0].0, 1, "c1", &r, &mut rng),
        Landed::Keep
    );
    let d = dials(&p.poll(t0));
    assert_eq!(d.len(), 1);
    // c2's session comes a little later: its age is due after c1's in most draws, and
    // both are far apart from the first poll below.
    let t1 = t0 + Duration::from_secs(40);
    assert_eq!(
        p.session_up(t1, d[0].0, 2, "c2", &r, &mut rng),
        Landed::Keep
    );
    // c1's session reaches its age first.
    let due = t0 + AGE.mul_f64(1.0 + JITTER);
    let a = p.poll(due);
    assert_eq!(p.aged_sessions(), 1);
    let d = dials(&a);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].1, Target::Vip);
    assert_eq!(d[0].2.as_deref(), Some("c1"));
    // It lands on c2, which has its quota: surplus, and c1 keeps its old session.
    assert_eq!(
        p.session_up(due, d[0].0, 3, "c2", &r, &mut rng),
        Landed::Surplus
    );
    assert!(recycles(&p.poll(due)).is_empty());
    assert_eq!(
        p.coverage(),
        BTreeMap::from([("c1".into(), 1), ("c2".into(), 1)])
    );
    // The retry lands on c1: the old one is recycled.
    let retry = p.next_deadline().expect("retry");
    assert!(retry <= due + Duration::from_secs(2));
    let a = p.poll(retry);
    let d = dials(&a);
    assert_eq!(d.len(), 1, "{a:?}");
    assert_eq!(
        p.session_up(retry, d[0].0, 4, "c1", &r, &mut rng),
        Landed::Keep
    );
    assert_eq!(recycles(&p.poll(retry)), vec![(1, "c1".to_string())]);
}

/// An aged session that ends on its own is an ordinary loss: re-dialed with the usual
/// backoff, and nothing is recycled when its replacement lands.
#[test]
fn an_aged_session_that_dies_is_not_recycled() {
    let mut rng = StdRng::seed_from_u64(6);
    let t0 = Instant::now();
    let (mut p, _) = covered(1, &["c1"], t0, &mut rng);
    let due = p.next_deadline().expect("age");
    let d = dials(&p.poll(due));
    assert_eq!(d.len(), 1);
    p.session_down(due, 1, &mut rng);
    assert_eq!(p.aged_sessions(), 0);
    assert_eq!(p.coverage()["c1"], 0);
    assert_eq!(
        p.session_up(due, d[0].0, 2, "c1", &[], &mut rng),
        Landed::Keep
    );
    assert!(recycles(&p.poll(due)).is_empty());
    assert_eq!(p.coverage()["c1"], 1);
}

/// A node that drains takes its sessions out of the count, aged or not.
#[test]
fn a_draining_node_forgets_its_ages() {
    let mut rng = StdRng::seed_from_u64(7);
    let t0 = Instant::now();
    let (mut p, _) = covered(1, &["c1", "c2"], t0, &mut rng);
    p.node_draining(t0, "c1", Duration::from_secs(5));
    p.node_draining(t0, "c2", Duration::from_secs(5));
    assert_eq!(p.next_deadline(), Some(t0 + Duration::from_secs(5)));
}

/// A reload turns the age on with sessions older than it: they are spread over the next
/// 30 % of the age instead of all recycling at once; off again, nothing is recycled.
#[test]
fn a_reload_spreads_sessions_already_past_the_age() {
    let mut rng = StdRng::seed_from_u64(8);
    let t0 = Instant::now();
    let (mut p, _) = covered(8, &["c1"], t0, &mut rng);
    p.set_max_session_age(None, t0, &mut rng);
    assert_eq!(p.next_deadline(), None);
    let later = t0 + AGE * 5;
    assert!(p.poll(later).is_empty());
    p.set_max_session_age(Some(AGE), later, &mut rng);
    let first = p.next_deadline().expect("ages");
    assert!(first >= later && first <= later + AGE.mul_f64(2.0 * JITTER));
    // Shortly after the reload only the sessions drawn early are past it.
    let a = p.poll(later + AGE / 20);
    assert!(dials(&a).len() < 8, "{a:?}");
    p.set_max_session_age(None, later, &mut rng);
    assert_eq!(p.aged_sessions(), 0);
    assert_eq!(p.next_deadline(), None);
}
