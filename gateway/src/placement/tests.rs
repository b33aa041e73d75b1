//! Tests of [`super`].

use super::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

pub(super) fn roster(ids: &[&str]) -> Vec<RosterEntry> {
    ids.iter()
        .map(|id| RosterEntry {
            node_id: id.to_string(),
            sni: format!("{id}.gw.example.com"),
            draining: false,
        })
        .collect()
}

pub(super) fn dials(actions: &[Action]) -> Vec<(DialId, Target, Option<String>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dial {
                dial,
                target,
                for_node,
            } => Some((*dial, target.clone(), for_node.clone())),
            Action::Recycle { .. } => None,
        })
        .collect()
}

#[test]
fn bootstrap_dials_the_vip_once() {
    let mut p = Placement::new(2, true, Duration::from_secs(2));
    let t = Instant::now();
    let a = dials(&p.poll(t));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].1, Target::Vip);
    assert_eq!(a[0].2, None);
    // Only one bootstrap dial at a time.
    assert!(p.poll(t).is_empty());
    let mut rng = StdRng::seed_from_u64(1);
    p.dial_failed(t, a[0].0, Duration::ZERO, &mut rng);
    let next = p.next_deadline().expect("retry scheduled");
    assert!(next <= t + Duration::from_millis(200));
    assert_eq!(p.poll(next).len(), 1);
}

#[test]
fn sni_pinning_covers_every_node_with_quota() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut p = Placement::new(2, true, Duration::from_secs(2));
    let t = Instant::now();
    let boot = dials(&p.poll(t));
    assert_eq!(
        p.session_up(
            t,
            boot[0].0,
            100,
            "cloud1",
            &roster(&["cloud1", "cloud2"]),
            &mut rng
        ),
        Landed::Keep
    );
    let a = dials(&p.poll(t));
    // cloud1 needs 1 more, cloud2 needs 2.
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for (_, target, for_node) in &a {
        let Target::Node { node, sni } = target else {
            panic!("pinned dials name their node")
        };
        assert_eq!(Some(node), for_node.as_ref());
        assert_eq!(sni, &format!("{node}.gw.example.com"));
        *by_node.entry(node.clone()).or_default() += 1;
    }
    assert_eq!(
        by_node,
        BTreeMap::from([("cloud1".into(), 1), ("cloud2".into(), 2)])
    );
    // Nothing more while dials are in flight.
    assert!(p.poll(t).is_empty());
    for (i, (dial, target, _)) in a.iter().enumerate() {
        let Target::Node { node, .. } = target else {
            unreachable!()
        };
        assert_eq!(
            p.session_up(t, *dial, 200 + i as u64, node, &[], &mut rng),
            Landed::Keep
        );
    }
    assert_eq!(
        p.coverage(),
        BTreeMap::from([("cloud1".into(), 2), ("cloud2".into(), 2)])
    );
    assert!(p.deficits().values().all(|d| *d == 0));
    assert!(p.poll(t + Duration::from_secs(60)).is_empty());
    assert_eq!(p.next_deadline(), None);
}

#[test]
fn dial_limits_per_node_and_total() {
    let mut p = Placement::new(8, true, Duration::from_secs(2));
    let t = Instant::now();
    p.apply_roster(&roster(&["c1", "c2", "c3"]));
    let a = p.poll(t);
    assert_eq!(a.len(), 4);
    assert_eq!(p.dials_in_flight(), 4);
}

#[test]
fn vip_only_closes_surplus_until_covered() {
    let mut p = Placement::new(2, false, Duration::from_secs(2));
    let t = Instant::now();
    let mut rng = StdRng::seed_from_u64(9);
    let boot = dials(&p.poll(t));
    let r = roster(&["cloud1", "cloud2"]);
    assert_eq!(
        p.session_up(t, boot[0].0, 1, "cloud2", &r, &mut rng),
        Landed::Keep
    );
    // A balancer that keeps answering cloud2 (say cloud1 is still down) ...
    let mut now = t;
    let mut session = 10;
    let mut surplus = 0;
    for _ in 0..20 {
        for (dial, target, _) in dials(&p.poll(now)) {
            assert_eq!(target, Target::Vip);
            session += 1;
            if p.session_up(now, dial, session, "cloud2", &r, &mut rng) == Landed::Surplus {
                surplus += 1;
            }
        }
        now += Duration::from_millis(250);
    }
    assert_eq!(p.coverage()["cloud2"], 2);
    assert_eq!(p.coverage()["cloud1"], 0);
    assert!(surplus >= 1);
    // ... then cloud1 gets the next dials (least_conn): coverage completes.
    for _ in 0..20 {
        for (dial, _, _) in dials(&p.poll(now)) {
            session += 1;
            assert_eq!(
                p.session_up(now, dial, session, "cloud1", &r, &mut rng),
                Landed::Keep
            );
        }
        now += Duration::from_millis(250);
    }
    assert_eq!(
        p.coverage(),
        BTreeMap::from([("cloud1".into(), 2), ("cloud2".into(), 2)])
    );
}

#[test]
fn round_robin_balancer_converges() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut p = Placement::new(2, false, Duration::from_secs(2));
    let mut now = Instant::now();
    let r = roster(&["cloud1", "cloud2"]);
    let nodes = ["cloud1", "cloud2"];
    let mut rr = 0usize;
    let mut session = 0;
    for _ in 0..40 {
        for (dial, _, _) in dials(&p.poll(now)) {
            session += 1;
            let landed = nodes[rr % 2];
            rr += 1;
            p.session_up(now, dial, session, landed, &r, &mut rng);
        }
        now += Duration::from_millis(250);
    }
    assert_eq!(
        p.coverage(),
        BTreeMap::from([("cloud1".into(), 2), ("cloud2".into(), 2)])
    );
}

#[test]
fn node_restart_is_recovered_within_the_backoff_cap() {
    let cap = Duration::from_secs(2);
    let mut p = Placement::new(2, true, cap);
    let mut rng = StdRng::seed_from_u64(5);
    let t0 = Instant::now();
    let r = roster(&["cloud1", "cloud2"]);
    p.apply_roster(&r);
    let mut s = 0;
    for (dial, target, _) in dials(&p.poll(t0)) {
        let Target::Node { node, .. } = target else {
            unreachable!()
        };
        s += 1;
        p.session_up(t0, dial, s, &node, &[], &mut rng);
    }
    // cloud1 dies after a long healthy life: both its sessions end.
    let t1 = t0 + Duration::from_secs(60);
    p.session_down(t1, 1, &mut rng);
    p.session_down(t1, 2, &mut rng);
    let first_retry = p.next_deadline().expect("retry");
    assert!(
        first_retry <= t1 + Duration::from_millis(200),
        "first retry is quick"
    );
    // It stays down for a minute: dials fail, spaced at most `cap` apart.
    let mut now = first_retry;
    let mut attempts = 0;
    while now < t1 + Duration::from_secs(60) {
        let a = dials(&p.poll(now));
        for (dial, _, for_node) in &a {
            assert_eq!(for_node.as_deref(), Some("cloud1"));
            p.dial_failed(now, *dial, Duration::ZERO, &mut rng);
            attempts += 1;
        }
        let next = p.next_deadline().expect("always retrying");
        assert!(next <= now + cap, "gap {:?} above cap", next - now);
        now = next;
    }
    assert!(attempts >= 30, "{attempts} attempts in a minute");
    // It is back: the next dial comes within the cap and covers it.
    let back = now;
    let mut covered_at = None;
    while covered_at.is_none() {
        for (dial, _, _) in dials(&p.poll(now)) {
            s += 1;
            p.session_up(now, dial, s, "cloud1", &[], &mut rng);
        }
        if p.coverage()["cloud1"] == 2 {
            covered_at = Some(now);
            break;
        }
        now = p.next_deadline().unwrap_or(now + Duration::from_millis(10));
    }
    assert!(covered_at.is_some_and(|c| c <= back + cap));
    // cloud2 was never disturbed.
    assert_eq!(p.coverage()["cloud2"], 2);
}

#[test]
fn short_lived_sessions_keep_backing_off() {
    let mut p = Placement::new(1, true, Duration::from_secs(2));
    let mut rng = StdRng::seed_from_u64(2);
    let t = Instant::now();
    p.apply_roster(&roster(&["c1"]));
    let mut now = t;
    let mut ceilings = Vec::new();
    for s in 0..6 {
        let a = dials(&p.poll(now));
        assert_eq!(a.len(), 1);
        p.session_up(now, a[0].0, s, "c1", &[], &mut rng);
        now += Duration::from_millis(100);
        p.session_down(now, s, &mut rng);
        ceilings.push(p.nodes["c1"].backoff.ceiling());
        now = p.next_deadline().expect("retry");
    }
    assert_eq!(ceilings.last().copied(), Some(Duration::from_secs(2)));
}

#[test]
fn draining_node_is_not_dialed_until_retry_after() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut p = Placement::new(1, true, Duration::from_secs(2));
    let t = Instant::now();
    p.apply_roster(&roster(&["c1", "c2"]));
    for (i, (dial, target, _)) in dials(&p.poll(t)).into_iter().enumerate() {
        let Target::Node { node, .. } = target else {
            unreachable!()
        };
        p.session_up(t, dial, i as u64, &node, &[], &mut rng);
    }
    p.node_draining(t, "c1", Duration::from_secs(5));
    assert!(p.is_draining("c1"));
    assert_eq!(p.deficits()["c1"], 1);
    assert!(p.poll(t + Duration::from_secs(4)).is_empty());
    let a = dials(&p.poll(t + Duration::from_secs(5)));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].2.as_deref(), Some("c1"));
    // A REJECT(draining) pushes it out again by the hint.
    p.dial_failed(
        t + Duration::from_secs(5),
        a[0].0,
        Duration::from_secs(3),
        &mut rng,
    );
    assert!(
        p.next_deadline()
            .is_some_and(|n| n >= t + Duration::from_secs(8))
    );
}

#[test]
fn roster_changes_add_and_forget_nodes() {
    let mut p = Placement::new(1, true, Duration::from_secs(2));
    p.apply_roster(&roster(&["c1", "c2"]));
    p.apply_roster(&roster(&["c1", "c3"]));
    assert_eq!(
        p.coverage().keys().cloned().collect::<Vec<_>>(),
        vec!["c1", "c3"]
    );
    p.apply_roster(&[]);
    assert_eq!(p.coverage().len(), 2);
}

#[test]
fn unknown_ids_are_harmless() {
    let mut p = Placement::new(1, true, Duration::from_secs(2));
    let mut rng = StdRng::seed_from_u64(4);
    let t = Instant::now();
    p.dial_failed(t, 77, Duration::ZERO, &mut rng);
    p.session_down(t, 77, &mut rng);
    p.node_draining(t, "nope", Duration::ZERO);
    assert_eq!(p.poll(t).len(), 1);
}

/// A reload that lowers `backoff_cap` bounds the next retries of a node already backing off.
#[test]
fn a_reloaded_backoff_cap_bounds_the_next_retries() {
    let mut p = Placement::new(1, true, Duration::from_secs(30));
    let mut rng = StdRng::seed_from_u64(9);
    p.apply_roster(&roster(&["cloud1"]));
    let mut now = Instant::now();
    // Many failures: the ceiling grows far above a second.
    for _ in 0..10 {
        for (dial, _, _) in dials(&p.poll(now)) {
            p.dial_failed(now, dial, Duration::ZERO, &mut rng);
        }
        now = p.next_deadline().expect("retrying");
    }
    p.set_backoff_cap(Duration::from_millis(500));
    for _ in 0..20 {
        for (dial, _, _) in dials(&p.poll(now)) {
            p.dial_failed(now, dial, Duration::ZERO, &mut rng);
        }
        let next = p.next_deadline().expect("retrying");
        assert!(
            next <= now + Duration::from_millis(500),
            "gap {:?} above the new cap",
            next - now
        );
        now = next;
    }
}

/// Brings every dial `p` wants up as a session on the node it was meant for, with `r` as
/// the roster in each HELLO_ACK; returns the session ids by node.
fn cover(
    p: &mut Placement,
    t: Instant,
    r: &[RosterEntry],
    next_sid: &mut SessionId,
    rng: &mut StdRng,
) -> Vec<(String, SessionId)> {
    let mut up = Vec::new();
    for (dial, _, node) in dials(&p.poll(t)) {
        let node = node.expect("a roster is known");
        *next_sid += 1;
        assert_eq!(
            p.session_up(t, dial, *next_sid, &node, r, rng),
            Landed::Keep
        );
        up.push((node, *next_sid));
    }
    up
}

/// A node added to the roster (a pushed ROSTER) is dialed at once; one removed is not
/// dialed again, keeps its sessions while they live, and is forgotten with its last one.
#[test]
fn a_pushed_roster_adds_and_retires_nodes() {
    let mut rng = StdRng::seed_from_u64(21);
    let mut p = Placement::new(1, true, Duration::from_secs(2));
    let t = Instant::now();
    let mut sid = 0;
    let two = roster(&["cloud1", "cloud2"]);
    p.apply_roster(&two);
    let first = cover(&mut p, t, &two, &mut sid, &mut rng);
    assert_eq!(first.len(), 2);
    assert!(p.poll(t).is_empty());

    // cloud3 joins: only it is dialed.
    let three = roster(&["cloud1", "cloud2", "cloud3"]);
    p.apply_roster(&three);
    let d = dials(&p.poll(t));
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0].1,
        Target::Node {
            node: "cloud3".into(),
            sni: "cloud3.gw.example.com".into()
        }
    );
    sid += 1;
    assert_eq!(
        p.session_up(t, d[0].0, sid, "cloud3", &three, &mut rng),
        Landed::Keep
    );
    assert_eq!(p.deficits().values().sum::<usize>(), 0);

    // cloud2 leaves: its session stays, it drops out of coverage and deficits, and it is
    // not dialed when that session ends.
    let without2 = roster(&["cloud1", "cloud3"]);
    p.apply_roster(&without2);
    assert_eq!(
        p.coverage().keys().cloned().collect::<Vec<_>>(),
        ["cloud1", "cloud3"]
    );
    assert!(p.deficits().keys().all(|n| n != "cloud2"));
    assert!(
        p.take_forgotten().is_empty(),
        "cloud2 still holds a session"
    );
    let c2 = first.iter().find(|(n, _)| n == "cloud2").expect("cloud2").1;
    p.session_down(t, c2, &mut rng);
    assert_eq!(p.take_forgotten(), ["cloud2"]);
    let later = t + Duration::from_secs(60);
    assert!(p.poll(later).is_empty(), "cloud2 dialed after it left");
    assert!(p.next_deadline().is_none());
}

/// A dial in flight to a node that leaves the roster, or a VIP dial the balancer sends to
/// such a node, lands as surplus: it is closed, not kept.
#[test]
fn a_session_landing_on_a_retired_node_is_surplus() {
    let mut rng = StdRng::seed_from_u64(22);
    let mut p = Placement::new(1, false, Duration::from_secs(2));
    let t = Instant::now();
    let two = roster(&["cloud1", "cloud2"]);
    p.apply_roster(&two);
    let d = dials(&p.poll(t));
    assert_eq!(d.len(), 2);
    p.apply_roster(&roster(&["cloud1"]));
    // The dial that was meant for cloud2 lands there after it left.
    let landed_on_2 = p.session_up(t, d[0].0, 1, "cloud2", &roster(&["cloud1"]), &mut rng);
    assert_eq!(landed_on_2, Landed::Surplus);
    assert_eq!(
        p.session_up(t, d[1].0, 2, "cloud1", &roster(&["cloud1"]), &mut rng),
        Landed::Keep
    );
    assert_eq!(p.take_forgotten(), ["cloud2"]);
    assert_eq!(p.coverage().len(), 1);
}
