//! Tests of [`super`].

use super::*;

const DEBOUNCE: Duration = Duration::from_millis(500);

fn info(gateway: &str, epoch: u64, slot: u32, exports: &[(&str, bool)]) -> SessionInfo {
    SessionInfo {
        gateway: gateway.into(),
        epoch,
        slot,
        exports: exports.iter().map(|(s, up)| (s.to_string(), *up)).collect(),
    }
}

fn core() -> CloudCore {
    CloudCore::new(["svc-a".to_string(), "svc-b".to_string()], DEBOUNCE, 1)
}

fn ready(service: &str, ready: bool) -> Action {
    Action::Readiness {
        service: service.into(),
        ready,
    }
}

#[test]
fn not_ready_without_sessions() {
    let mut c = core();
    let t = Instant::now();
    assert!(c.handle_timeout(t).is_empty());
    assert!(!c.is_ready("svc-a"));
    assert!(!c.all_ready());
    assert!(!c.is_ready("nope"));
    assert_eq!(c.pick("svc-a", &[], &BTreeSet::new()), None);
}

#[test]
fn ready_at_once_when_an_up_export_arrives() {
    let mut c = core();
    let t = Instant::now();
    let a = c.session_up(t, 1, info("onprem1", 1, 0, &[("svc-a", true)]));
    assert_eq!(a, vec![ready("svc-a", true)]);
    assert!(c.is_ready("svc-a"));
    assert!(!c.is_ready("svc-b"));
    assert!(!c.all_ready());
    assert_eq!(c.capacity("svc-a"), (1, 1));
    assert_eq!(c.pick("svc-a", &[], &BTreeSet::new()), Some(1));
    assert_eq!(c.pick("svc-b", &[], &BTreeSet::new()), None);
}

#[test]
fn export_with_server_down_is_no_capacity() {
    let mut c = core();
    let t = Instant::now();
    assert!(
        c.session_up(t, 1, info("onprem1", 1, 0, &[("svc-a", false)]))
            .is_empty()
    );
    assert!(!c.is_ready("svc-a"));
    assert_eq!(
        c.service_state(t, 1, "svc-a", true),
        vec![ready("svc-a", true)]
    );
    // Down: debounced.
    assert!(c.service_state(t, 1, "svc-a", false).is_empty());
    assert!(c.is_ready("svc-a"));
    assert_eq!(c.next_deadline(), Some(t + DEBOUNCE));
    assert!(
        c.handle_timeout(t + DEBOUNCE - Duration::from_millis(1))
            .is_empty()
    );
    assert_eq!(c.handle_timeout(t + DEBOUNCE), vec![ready("svc-a", false)]);
    assert_eq!(c.next_deadline(), None);
}

#[test]
fn session_swap_within_debounce_does_not_flap() {
    let mut c = core();
    let t = Instant::now();
    c.session_up(t, 1, info("onprem1", 1, 0, &[("svc-a", true)]));
    assert!(c.session_down(t, 1).is_empty());
    assert!(c.is_ready("svc-a"));
    // Not usable while no session: pick finds nothing even though still "ready".
    assert_eq!(c.pick("svc-a", &[], &BTreeSet::new()), None);
    assert!(
        c.session_up(
            t + Duration::from_millis(100),
            2,
            info("onprem1", 1, 1, &[("svc-a", true)])
        )
        .is_empty()
    );
    assert!(c.handle_timeout(t + Duration::from_secs(5)).is_empty());
    assert!(c.is_ready("svc-a"));
}

#[test]
fn new_boot_epoch_purges_old_sessions_at_once() {
    let mut c = core();
    let t = Instant::now();
    c.session_up(t, 1, info("onprem1", 10, 0, &[("svc-a", true)]));
    c.session_up(t, 2, info("onprem1", 10, 1, &[("svc-a", true)]));
    c.session_up(t, 3, info("onprem2", 20, 0, &[("svc-a", true)]));
    let a = c.session_up(t, 4, info("onprem1", 11, 0, &[("svc-a", true)]));
    assert_eq!(
        a,
        vec![
            Action::Close {
                session: 1,
                reason: CloseReason::StaleEpoch
            },
            Action::Close {
                session: 2,
                reason: CloseReason::StaleEpoch
            },
        ]
    );
    assert_eq!(c.sessions_of("onprem1"), vec![4]);
    assert_eq!(c.sessions_of_epoch("onprem1", 11), 1);
    assert_eq!(c.sessions_of_epoch("onprem1", 10), 0);
    assert_eq!(c.sessions_of("onprem2"), vec![3]);
    assert_eq!(c.session_count(), 2);
}

#[test]
fn same_slot_replaces_older_session() {
    let mut c = core();
    let t = Instant::now();
    c.session_up(t, 1, info("onprem1", 10, 0, &[("svc-a", true)]));
    let a = c.session_up(t, 2, info("onprem1", 10, 0, &[("svc-a", true)]));
    assert_eq!(
        a,
        vec![Action::Close {
            session: 1,
            reason: CloseReason::Replaced
        }]
    );
    assert_eq!(c.session_count(), 1);
}

#[test]
fn pick_balances_by_active_streams() {
    let mut c = core();
    let t = Instant::now();
    c.session_up(t, 1, info("onprem1", 1, 0, &[("svc-a", true)]));
    c.session_up(t, 2, info("onprem2", 2, 0, &[("svc-a", true)]));
    c.stream_started(1);
    assert_eq!(c.pick("svc-a", &[], &BTreeSet::new()), Some(2));
    c.stream_started(2);
    c.stream_started(2);
    assert_eq!(c.pick("svc-a", &[], &BTreeSet::new()), Some(1));
    c.stream_ended(2);
    c.stream_ended(2);
    c.stream_ended(1);
    // Ties rotate.
    let picks: BTreeSet<SessionId> = (0..4)
        .filter_map(|_| c.pick("svc-a", &[], &BTreeSet::new()))
        .collect();
    assert_eq!(picks, BTreeSet::from([1, 2]));
}

#[test]
fn retry_prefers_another_gateway() {
    let mut c = core();
    let t = Instant::now();
    c.session_up(t, 1, info("onprem1", 1, 0, &[("svc-a", true)]));
    c.session_up(t, 2, info("onprem1", 1, 1, &[("svc-a", true)]));
    c.session_up(t, 3, info("onprem2", 2, 0, &[("svc-a", true)]));
    c.stream_started(3);
    c.stream_started(3);
    for _ in 0..4 {
        assert_eq!(c.pick("svc-a", &[1], &BTreeSet::new()), Some(3));
    }
    // Only one gateway left: another session of the same gateway is still better than none.
    c.session_down(t, 3);
    assert_eq!(c.pick("svc-a", &[1], &BTreeSet::new()), Some(2));
    assert_eq!(c.pick("svc-a", &[1, 2], &BTreeSet::new()), None);
}

#[test]
fn retry_avoids_the_gateway_of_an_ejected_session() {
    let mut c = core();
    let t = Instant::now();
    c.session_up(t, 1, info("onprem1", 1, 0, &[("svc-a", true)]));
    c.session_up(t, 2, info("onprem1", 1, 1, &[("svc-a", true)]));
    c.session_up(t, 3, info("onprem2", 2, 0, &[("svc-a", true)]));
    // Session 1 was silent and is gone; its gateway is still the one to avoid.
    c.open_silent(t, 1);
    let avoid = BTreeSet::from(["onprem1".to_string()]);
    for _ in 0..4 {
        assert_eq!(c.pick("svc-a", &[1], &avoid), Some(3));
    }
    c.session_down(t, 3);
    assert_eq!(c.pick("svc-a", &[1], &avoid), Some(2));
}

#[test]
fn server_down_behind_one_gateway_steers_to_the_other() {
    let mut c = core();
    let t = Instant::now();
    c.session_up(t, 1, info("onprem1", 1, 0, &[("svc-a", true)]));
    c.session_up(t, 2, info("onprem2", 2, 0, &[("svc-a", true)]));
    assert!(c.service_state(t, 1, "svc-a", false).is_empty());
    for _ in 0..6 {
        assert_eq!(c.pick("svc-a", &[], &BTreeSet::new()), Some(2));
    }
    assert_eq!(c.capacity("svc-a"), (1, 1));
    assert!(c.is_ready("svc-a"));
}

#[test]
fn silent_open_ejects_and_readiness_follows() {
    let mut c = CloudCore::new(["svc-a".to_string()], DEBOUNCE, 2);
    let t = Instant::now();
    c.session_up(t, 1, info("onprem1", 1, 0, &[("svc-a", true)]));
    assert!(c.open_silent(t, 1).is_empty());
    c.open_answered(1);
    assert!(c.open_silent(t, 1).is_empty());
    let a = c.open_silent(t, 1);
    assert_eq!(
        a,
        vec![Action::Close {
            session: 1,
            reason: CloseReason::Silent
        }]
    );
    assert_eq!(c.pick("svc-a", &[], &BTreeSet::new()), None);
    assert_eq!(c.handle_timeout(t + DEBOUNCE), vec![ready("svc-a", false)]);
    // Events for unknown sessions are harmless.
    assert!(c.open_silent(t, 99).is_empty());
    assert!(c.service_state(t, 99, "svc-a", true).is_empty());
    c.stream_started(99);
    c.stream_ended(99);
    c.open_answered(99);
}

#[test]
fn draining_session_is_not_capacity() {
    let mut c = core();
    let t = Instant::now();
    c.session_up(t, 1, info("onprem1", 1, 0, &[("svc-a", true)]));
    assert!(c.session_draining(t, 1).is_empty());
    assert_eq!(c.pick("svc-a", &[], &BTreeSet::new()), None);
    assert_eq!(c.handle_timeout(t + DEBOUNCE), vec![ready("svc-a", false)]);
}

#[test]
fn node_drain_flips_readiness_at_once() {
    let mut c = core();
    let t = Instant::now();
    c.session_up(
        t,
        1,
        info("onprem1", 1, 0, &[("svc-a", true), ("svc-b", true)]),
    );
    assert!(c.all_ready());
    let mut a = c.drain(t);
    a.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
    assert_eq!(a, vec![ready("svc-a", false), ready("svc-b", false)]);
    assert!(!c.all_ready());
    // New sessions during a drain do not make it ready again.
    assert!(
        c.session_up(t, 2, info("onprem2", 1, 0, &[("svc-a", true)]))
            .is_empty()
    );
}

#[test]
fn unknown_export_is_ignored() {
    let mut c = core();
    let t = Instant::now();
    assert!(
        c.session_up(t, 1, info("onprem1", 1, 0, &[("svc-z", true)]))
            .is_empty()
    );
    assert_eq!(c.services().collect::<Vec<_>>(), vec!["svc-a", "svc-b"]);
}

#[test]
fn a_reloaded_debounce_moves_a_pending_drop() {
    let mut c = core();
    let t = Instant::now();
    c.session_up(t, 1, info("onprem1", 1, 0, &[("svc-a", true)]));
    c.session_down(t, 1);
    assert_eq!(c.next_deadline(), Some(t + DEBOUNCE));
    c.set_down_debounce(Duration::from_millis(100));
    assert_eq!(c.next_deadline(), Some(t + Duration::from_millis(100)));
    assert_eq!(
        c.handle_timeout(t + Duration::from_millis(100)),
        vec![ready("svc-a", false)]
    );
}

/// Exports granted to a live session make their service ready at once; exports it drops
/// take readiness away after the debounce, as a session ending does.
#[test]
fn a_live_session_gains_and_drops_exports() {
    let mut c = core();
    let t = Instant::now();
    c.session_up(t, 1, info("onprem1", 7, 0, &[("svc-a", true)]));
    assert!(c.is_ready("svc-a") && !c.is_ready("svc-b"));
    let both = [("svc-a", true), ("svc-b", true)];
    let a = c.session_exports(
        t,
        1,
        both.iter().map(|(s, u)| (s.to_string(), *u)).collect(),
    );
    assert_eq!(a, [ready("svc-b", true)]);
    let only_b = [("svc-b".to_string(), true)].into_iter().collect();
    assert!(c.session_exports(t, 1, only_b).is_empty());
    assert!(c.is_ready("svc-a"), "held for the debounce");
    assert_eq!(c.handle_timeout(t + DEBOUNCE), [ready("svc-a", false)]);
    assert!(c.is_ready("svc-b"));
    // Unknown sessions are harmless.
    assert!(c.session_exports(t, 99, BTreeMap::new()).is_empty());
}

/// A service a reload adds is ready at once when a live session already exports it up;
/// one removed is not ready at once, without the debounce.
#[test]
fn services_added_and_removed_by_reload() {
    let mut c = CloudCore::new(["svc-a".to_string()], DEBOUNCE, 1);
    let t = Instant::now();
    c.session_up(
        t,
        1,
        info("onprem1", 7, 0, &[("svc-a", true), ("svc-c", true)]),
    );
    assert!(!c.is_ready("svc-c"), "not a service of this node yet");
    assert_eq!(c.add_service(t, "svc-c"), [ready("svc-c", true)]);
    assert_eq!(c.remove_service("svc-a"), [ready("svc-a", false)]);
    assert!(!c.is_ready("svc-a"));
    assert!(c.remove_service("svc-a").is_empty());
    assert!(c.handle_timeout(t + DEBOUNCE).is_empty());
}
