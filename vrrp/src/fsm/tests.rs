//! The state table of docs/architecture.md, row by row, with a fake clock.

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn params(version: Version, priority: u8, interval: Duration) -> Params {
    Params {
        version,
        priority,
        advert_interval: interval,
        preempt: true,
        preempt_delay: Duration::ZERO,
        primary: ip("192.0.2.1"),
        garp_delay: Duration::from_secs(5),
        sync: false,
    }
}

fn v3(priority: u8) -> Instance {
    Instance::new(params(Version::V3, priority, ms(100)))
}

fn advert(src: &str, priority: u8) -> Input {
    Input::Advert {
        src: ip(src),
        priority,
        interval: ms(100),
    }
}

fn to(s: State) -> impl Fn(&Action) -> bool {
    move |a| matches!(a, Action::Transition { to, .. } if *to == s)
}

/// Starts an instance and runs it to master by letting Master_Down expire.
fn master(priority: u8) -> (Instance, Instant) {
    let t0 = Instant::now();
    let mut i = v3(priority);
    i.handle(t0, Input::Startup);
    let t = i.next_deadline().unwrap();
    i.handle(t, Input::Timer);
    assert_eq!(i.state(), State::Master);
    (i, t)
}

#[test]
fn timers_in_microseconds() {
    // v3 at 100 ms, priority 100: skew = 156 * 100ms / 256 = 60.9375 ms -> 60937 µs.
    assert_eq!(
        skew_time(Version::V3, 100, ms(100)),
        Duration::from_micros(60_937)
    );
    // Reference baseline: 0.361 s to detect a dead master at 10 cs.
    let i = v3(100);
    assert_eq!(i.master_down_interval(), Duration::from_micros(360_937));
    // v2: skew is (256-prio)/256 s whatever the interval: 0.609375 s, down 3.609 s.
    let v2 = Instance::new(params(Version::V2, 100, Duration::from_secs(1)));
    assert_eq!(v2.skew_time(), Duration::from_micros(609_375));
    assert_eq!(v2.master_down_interval(), Duration::from_micros(3_609_375));
    // Small intervals keep their skew (truncating to cs would make it 0).
    assert_eq!(
        skew_time(Version::V3, 250, ms(10)),
        Duration::from_micros(234)
    );
    // A higher-priority backup times out first.
    assert!(skew_time(Version::V3, 150, ms(100)) < skew_time(Version::V3, 100, ms(100)));
}

#[test]
fn initialize_startup_owner_goes_master() {
    let t0 = Instant::now();
    let mut i = v3(255);
    let a = i.handle(t0, Input::Startup);
    assert_eq!(
        a,
        vec![
            Action::SendAdvert { priority: 255 },
            Action::AddVips,
            Action::Garp,
            Action::Transition {
                from: State::Initialize,
                to: State::Master
            },
        ]
    );
    assert_eq!(i.next_deadline(), Some(t0 + ms(100)));
}

#[test]
fn initialize_startup_backup_with_master_down() {
    let t0 = Instant::now();
    let mut i = v3(100);
    let a = i.handle(t0, Input::Startup);
    assert_eq!(
        a,
        vec![Action::Transition {
            from: State::Initialize,
            to: State::Backup
        }]
    );
    assert_eq!(i.next_deadline(), Some(t0 + Duration::from_micros(360_937)));
}

#[test]
fn startup_twice_is_ignored() {
    let t0 = Instant::now();
    let mut i = v3(100);
    i.handle(t0, Input::Startup);
    assert!(i.handle(t0, Input::Startup).is_empty());
}

#[test]
fn backup_master_down_fires_becomes_master_advert_first() {
    let t0 = Instant::now();
    let mut i = v3(100);
    i.handle(t0, Input::Startup);
    // Too early: nothing.
    assert!(i.handle(t0 + ms(300), Input::Timer).is_empty());
    let t = i.next_deadline().unwrap();
    let a = i.handle(t, Input::Timer);
    assert_eq!(a[0], Action::SendAdvert { priority: 100 });
    assert_eq!(a[1], Action::AddVips);
    assert_eq!(a[2], Action::Garp);
    assert!(to(State::Master)(&a[3]));
}

#[test]
fn backup_priority_zero_sets_skew_time() {
    let t0 = Instant::now();
    let mut i = v3(100);
    i.handle(t0, Input::Startup);
    let t1 = t0 + ms(50);
    assert!(i.handle(t1, advert("192.0.2.9", 0)).is_empty());
    assert_eq!(i.next_deadline(), Some(t1 + Duration::from_micros(60_937)));
}

#[test]
fn backup_higher_or_equal_resets_timer_and_learns_interval() {
    let t0 = Instant::now();
    let mut i = v3(100);
    i.handle(t0, Input::Startup);
    let t1 = t0 + ms(200);
    i.handle(
        t1,
        Input::Advert {
            src: ip("192.0.2.9"),
            priority: 150,
            interval: ms(200),
        },
    );
    assert_eq!(i.master_adver_interval(), ms(200));
    // 3 * 200 ms + 156 * 200 / 256 ms = 600 + 121.875 ms.
    assert_eq!(i.next_deadline(), Some(t1 + Duration::from_micros(721_875)));
    let t2 = t1 + ms(100);
    i.handle(t2, advert("192.0.2.9", 100));
    assert_eq!(i.state(), State::Backup);
    assert_eq!(i.next_deadline(), Some(t2 + Duration::from_micros(360_937)));
}

#[test]
fn v2_backup_does_not_learn_interval() {
    let t0 = Instant::now();
    let mut i = Instance::new(params(Version::V2, 100, Duration::from_secs(1)));
    i.handle(t0, Input::Startup);
    i.handle(
        t0,
        Input::Advert {
            src: ip("192.0.2.9"),
            priority: 150,
            interval: Duration::from_secs(3),
        },
    );
    assert_eq!(i.master_adver_interval(), Duration::from_secs(1));
}

#[test]
fn backup_lower_priority_with_preempt_is_discarded() {
    let t0 = Instant::now();
    let mut i = v3(150);
    i.handle(t0, Input::Startup);
    let deadline = i.next_deadline().unwrap();
    // Lower-priority adverts do not reset the timer: we preempt when it runs out.
    for k in 1..=3 {
        assert!(
            i.handle(t0 + ms(100 * k), advert("192.0.2.9", 100))
                .is_empty()
        );
    }
    assert_eq!(i.next_deadline(), Some(deadline));
    let a = i.handle(deadline, Input::Timer);
    assert!(a.iter().any(to(State::Master)));
}

#[test]
fn backup_lower_priority_without_preempt_resets_timer() {
    let t0 = Instant::now();
    let mut p = params(Version::V3, 150, ms(100));
    p.preempt = false;
    let mut i = Instance::new(p);
    i.handle(t0, Input::Startup);
    for k in 1..=10 {
        let t = t0 + ms(100 * k);
        i.handle(t, advert("192.0.2.9", 100));
        assert_eq!(i.next_deadline(), Some(t + i.master_down_interval()));
        i.handle(t, Input::Timer);
        assert_eq!(i.state(), State::Backup);
    }
}

#[test]
fn preempt_delay_tolerates_lower_master_until_it_expires() {
    let t0 = Instant::now();
    let mut p = params(Version::V3, 150, ms(100));
    p.preempt_delay = Duration::from_secs(2);
    let mut i = Instance::new(p);
    i.handle(t0, Input::Startup);
    let mut t = t0;
    // Adverts every 100 ms from a lower master: we stay backup for the delay.
    let mut became = None;
    for _ in 0..40 {
        t += ms(100);
        if let Some(d) = i.next_deadline() {
            if d <= t {
                let a = i.handle(d, Input::Timer);
                if a.iter().any(to(State::Master)) {
                    became = Some(d);
                    break;
                }
            }
        }
        i.handle(t, advert("192.0.2.9", 100));
    }
    let became = became.expect("preempts after the delay");
    assert!(became >= t0 + Duration::from_secs(2), "{:?}", became - t0);
    assert!(
        became <= t0 + Duration::from_secs(2) + ms(500),
        "{:?}",
        became - t0
    );
}

#[test]
fn preempt_delay_cleared_by_higher_master() {
    let t0 = Instant::now();
    let mut p = params(Version::V3, 150, ms(100));
    p.preempt_delay = Duration::from_secs(1);
    let mut i = Instance::new(p);
    i.handle(t0, Input::Startup);
    i.handle(t0 + ms(10), advert("192.0.2.9", 200));
    assert_eq!(i.preempt_time, None);
}

#[test]
fn backup_shutdown_goes_initialize_silently() {
    let t0 = Instant::now();
    let mut i = v3(100);
    i.handle(t0, Input::Startup);
    let a = i.handle(t0, Input::Shutdown);
    assert_eq!(
        a,
        vec![Action::Transition {
            from: State::Backup,
            to: State::Initialize
        }]
    );
    assert_eq!(i.next_deadline(), None);
}

#[test]
fn master_adver_timer_sends_and_restarts() {
    let (mut i, t) = master(100);
    assert_eq!(i.next_deadline(), Some(t + ms(100)));
    let a = i.handle(t + ms(100), Input::Timer);
    assert_eq!(a, vec![Action::SendAdvert { priority: 100 }]);
    assert_eq!(i.next_deadline(), Some(t + ms(200)));
}

#[test]
fn master_priority_zero_readvertises_at_once() {
    let (mut i, t) = master(100);
    let a = i.handle(t + ms(30), advert("192.0.2.9", 0));
    assert_eq!(a, vec![Action::SendAdvert { priority: 100 }]);
    assert_eq!(i.next_deadline(), Some(t + ms(130)));
}

#[test]
fn master_higher_priority_steps_down() {
    let (mut i, t) = master(100);
    let a = i.handle(
        t + ms(30),
        Input::Advert {
            src: ip("192.0.2.9"),
            priority: 150,
            interval: ms(200),
        },
    );
    assert_eq!(
        a,
        vec![
            Action::RemoveVips,
            Action::Transition {
                from: State::Master,
                to: State::Backup
            },
        ]
    );
    assert_eq!(i.master_adver_interval(), ms(200));
    assert_eq!(
        i.next_deadline(),
        Some(t + ms(30) + i.master_down_interval())
    );
}

#[test]
fn master_equal_priority_higher_ip_wins() {
    let (mut i, t) = master(100);
    // Our primary is 192.0.2.1; .2 is greater: we step down.
    let a = i.handle(t, advert("192.0.2.2", 100));
    assert!(a.iter().any(to(State::Backup)));

    let (mut j, t) = master(100);
    let mut p = j.params.clone();
    p.primary = ip("192.0.2.5");
    j.params = p;
    let a = j.handle(t, advert("192.0.2.2", 100));
    assert_eq!(a, vec![Action::SendAdvert { priority: 100 }]);
    assert_eq!(j.state(), State::Master);
}

#[test]
fn master_lower_priority_readvertises() {
    let (mut i, t) = master(150);
    let a = i.handle(t + ms(10), advert("192.0.2.9", 100));
    assert_eq!(a, vec![Action::SendAdvert { priority: 150 }]);
    assert_eq!(i.next_deadline(), Some(t + ms(110)));
}

#[test]
fn master_shutdown_sends_priority_zero_then_removes_vips() {
    let (mut i, t) = master(150);
    let a = i.handle(t, Input::Shutdown);
    assert_eq!(
        a,
        vec![
            Action::SendAdvert { priority: 0 },
            Action::RemoveVips,
            Action::Transition {
                from: State::Master,
                to: State::Initialize
            },
        ]
    );
    assert_eq!(i.next_deadline(), None);
}

#[test]
fn second_garp_burst_after_delay() {
    let (mut i, t) = master(150);
    let mut t2 = t;
    let mut garps = 0;
    // Run the adver timer for 6 s and count GARP bursts from timers.
    for _ in 0..100 {
        let d = i.next_deadline().unwrap();
        if d > t + Duration::from_secs(6) {
            break;
        }
        t2 = d;
        garps += i
            .handle(d, Input::Timer)
            .iter()
            .filter(|a| **a == Action::Garp)
            .count();
    }
    assert_eq!(garps, 1);
    assert!(t2 >= t + Duration::from_secs(5));
}

#[test]
fn tracking_fault_from_master_sends_priority_zero() {
    let (mut i, t) = master(150);
    let a = i.handle(t, Input::Tracking(None));
    assert_eq!(
        a,
        vec![
            Action::SendAdvert { priority: 0 },
            Action::RemoveVips,
            Action::Transition {
                from: State::Master,
                to: State::Fault
            },
        ]
    );
    assert_eq!(i.next_deadline(), None);
    assert_eq!(i.effective_priority(), 0);
    // Adverts are ignored in fault.
    assert!(i.handle(t, advert("192.0.2.9", 100)).is_empty());
    // Recovery goes through Backup, never straight to Master.
    let a = i.handle(t + ms(10), Input::Tracking(Some(150)));
    assert_eq!(
        a,
        vec![Action::Transition {
            from: State::Fault,
            to: State::Backup
        }]
    );
}

#[test]
fn tracking_fault_from_backup_and_at_startup() {
    let t0 = Instant::now();
    let mut i = v3(100);
    i.handle(t0, Input::Startup);
    let a = i.handle(t0, Input::Tracking(None));
    assert_eq!(
        a,
        vec![Action::Transition {
            from: State::Backup,
            to: State::Fault
        }]
    );
    assert_eq!(i.next_deadline(), None);

    let mut j = v3(100);
    j.handle(t0, Input::Tracking(None));
    let a = j.handle(t0, Input::Startup);
    assert_eq!(
        a,
        vec![Action::Transition {
            from: State::Initialize,
            to: State::Fault
        }]
    );
    // A priority update while still in fault changes nothing.
    let mut k = v3(100);
    k.handle(t0, Input::Startup);
    assert!(k.handle(t0, Input::Tracking(Some(90))).is_empty());
}

#[test]
fn tracking_priority_changes_skew_and_advert() {
    let (mut i, t) = master(150);
    i.handle(t, Input::Tracking(Some(90)));
    let a = i.handle(t + ms(100), Input::Timer);
    assert_eq!(a, vec![Action::SendAdvert { priority: 90 }]);
    // A backup at 100 now sees a lower-priority master and preempts.
    let t0 = Instant::now();
    let mut b = v3(100);
    b.handle(t0, Input::Startup);
    b.handle(t0 + ms(10), advert("192.0.2.9", 150));
    let d = b.next_deadline().unwrap();
    b.handle(t0 + ms(110), advert("192.0.2.9", 90));
    assert_eq!(
        b.next_deadline(),
        Some(d),
        "lower priority does not reset the timer"
    );
}

#[test]
fn owner_never_sits_in_backup_and_preempts_at_startup() {
    let t0 = Instant::now();
    let mut i = v3(255);
    i.handle(t0, Input::Startup);
    // Even an equal-priority advert from a lower IP keeps it master.
    let a = i.handle(t0, advert("192.0.2.0", 254));
    assert_eq!(a, vec![Action::SendAdvert { priority: 255 }]);
}

#[test]
fn two_instances_converge_to_one_master() {
    // Two machines talking through an ideal wire: exactly one master after each step.
    let t0 = Instant::now();
    let mut a = v3(150);
    let mut b = Instance::new(Params {
        primary: ip("192.0.2.2"),
        ..params(Version::V3, 100, ms(100))
    });
    let mut t = t0;
    a.handle(t, Input::Startup);
    b.handle(t, Input::Startup);
    for _ in 0..200 {
        let d = [a.next_deadline(), b.next_deadline()]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        t = d;
        let (oa, ob) = (a.handle(t, Input::Timer), b.handle(t, Input::Timer));
        for x in oa {
            if let Action::SendAdvert { priority } = x {
                b.handle(
                    t,
                    Input::Advert {
                        src: ip("192.0.2.1"),
                        priority,
                        interval: ms(100),
                    },
                );
            }
        }
        for x in ob {
            if let Action::SendAdvert { priority } = x {
                a.handle(
                    t,
                    Input::Advert {
                        src: ip("192.0.2.2"),
                        priority,
                        interval: ms(100),
                    },
                );
            }
        }
    }
    assert_eq!(a.state(), State::Master);
    assert_eq!(b.state(), State::Backup);
}

/// Reload: a new priority is carried by the master's next scheduled advert; nothing is
/// sent at reload time (no extra advert, no gratuitous ARP, no transition).
#[test]
fn configure_keeps_a_master_and_its_advert_schedule() {
    let (mut i, t) = master(150);
    let next = i.next_deadline().unwrap();
    let mut p = params(Version::V3, 160, ms(100));
    p.garp_delay = Duration::ZERO;
    assert_eq!(i.handle(t + ms(30), Input::Configure(p)), vec![]);
    assert_eq!(i.state(), State::Master);
    assert_eq!(
        i.next_deadline(),
        Some(next),
        "the scheduled advert keeps its time"
    );
    // The driver recomputes the effective priority from the new configured one.
    assert_eq!(i.handle(t + ms(30), Input::Tracking(Some(160))), vec![]);
    assert_eq!(
        i.handle(next, Input::Timer),
        vec![Action::SendAdvert { priority: 160 }]
    );
    assert_eq!(i.next_deadline(), Some(next + ms(100)));
}

#[test]
fn configure_a_longer_interval_applies_after_the_scheduled_advert() {
    let (mut i, t) = master(150);
    let next = i.next_deadline().unwrap();
    assert_eq!(
        i.handle(t, Input::Configure(params(Version::V3, 150, ms(300)))),
        vec![]
    );
    assert_eq!(i.next_deadline(), Some(next));
    i.handle(next, Input::Timer);
    assert_eq!(i.next_deadline(), Some(next + ms(300)));
}

#[test]
fn configure_a_shorter_interval_brings_the_next_advert_forward() {
    let (mut i, t) = master(150);
    let mut p = params(Version::V3, 150, ms(20));
    p.garp_delay = Duration::from_secs(5);
    i.handle(t + ms(10), Input::Configure(p));
    // The GARP timer (5 s) is later; the advert comes at now + 20 ms, not t + 100 ms.
    assert_eq!(i.next_deadline(), Some(t + ms(30)));
}

#[test]
fn configure_a_backup_above_the_master_takes_over_when_its_down_timer_runs_out() {
    let t0 = Instant::now();
    let mut i = v3(100);
    i.handle(t0, Input::Startup);
    i.handle(t0, advert("192.0.2.2", 150));
    assert_eq!(i.state(), State::Backup);
    assert_eq!(
        i.handle(
            t0 + ms(10),
            Input::Configure(params(Version::V3, 200, ms(100)))
        ),
        vec![]
    );
    assert_eq!(i.handle(t0 + ms(10), Input::Tracking(Some(200))), vec![]);
    // The master's adverts at 150 are now lower: discarded (preempt), so its down timer
    // runs out and it takes over, advertising 200.
    assert_eq!(i.handle(t0 + ms(100), advert("192.0.2.2", 150)), vec![]);
    let down = i.next_deadline().unwrap();
    let acts = i.handle(down, Input::Timer);
    assert_eq!(acts.first(), Some(&Action::SendAdvert { priority: 200 }));
    assert!(acts.iter().any(to(State::Master)));
}

#[test]
fn configure_a_master_below_the_backup_steps_down_on_the_backups_advert() {
    let (mut i, t) = master(150);
    i.handle(t, Input::Configure(params(Version::V3, 90, ms(100))));
    i.handle(t, Input::Tracking(Some(90)));
    let next = i.next_deadline().unwrap();
    assert_eq!(
        i.handle(next, Input::Timer),
        vec![Action::SendAdvert { priority: 90 }]
    );
    // The backup (100) preempts; its advert sends us to backup.
    let acts = i.handle(next + ms(300), advert("192.0.2.2", 100));
    assert!(acts.contains(&Action::RemoveVips));
    assert!(acts.iter().any(to(State::Backup)));
}

#[test]
fn configure_without_preempt_delay_clears_a_pending_one() {
    let t0 = Instant::now();
    let mut p = params(Version::V3, 150, ms(100));
    p.preempt_delay = Duration::from_secs(60);
    let mut i = Instance::new(p);
    i.handle(t0, Input::Startup);
    // A lower master is tolerated for 60 s.
    i.handle(t0, advert("192.0.2.2", 100));
    assert_eq!(i.state(), State::Backup);
    i.handle(
        t0 + ms(10),
        Input::Configure(params(Version::V3, 150, ms(100))),
    );
    // Now a lower master's advert is discarded: the down timer runs out.
    i.handle(t0 + ms(100), advert("192.0.2.2", 100));
    let down = i.next_deadline().unwrap();
    assert!(down < t0 + Duration::from_secs(1));
    assert!(i.handle(down, Input::Timer).iter().any(to(State::Master)));
}

fn synced(priority: u8) -> Instance {
    Instance::new(Params {
        sync: true,
        ..params(Version::V3, priority, ms(100))
    })
}

/// Sync group member: its Master_Down timer only makes it want MASTER; the group decides.
#[test]
fn sync_member_wants_master_and_waits_for_the_group() {
    let t0 = Instant::now();
    let mut i = synced(150);
    i.handle(t0, Input::Startup);
    let down = i.next_deadline().unwrap();
    assert_eq!(
        i.handle(down, Input::Timer),
        vec![],
        "no advert, no VIPs yet"
    );
    assert_eq!(i.state(), State::Backup);
    assert!(i.wants_master());
    assert_eq!(
        i.next_deadline(),
        None,
        "waiting for the group, not a timer"
    );
    let acts = i.handle(down + ms(5), Input::Sync(Order::Master));
    assert_eq!(
        acts,
        vec![
            Action::SendAdvert { priority: 150 },
            Action::AddVips,
            Action::Garp,
            Action::Transition {
                from: State::Backup,
                to: State::Master
            },
        ]
    );
    assert!(!i.wants_master());
}

#[test]
fn sync_order_master_is_ignored_by_a_member_that_does_not_want_it() {
    let t0 = Instant::now();
    let mut i = synced(100);
    i.handle(t0, Input::Startup);
    assert_eq!(i.handle(t0, Input::Sync(Order::Master)), vec![]);
    assert_eq!(i.state(), State::Backup);
}

#[test]
fn sync_member_stops_wanting_master_when_a_master_speaks_up() {
    let t0 = Instant::now();
    let mut i = synced(100);
    i.handle(t0, Input::Startup);
    let down = i.next_deadline().unwrap();
    i.handle(down, Input::Timer);
    assert!(i.wants_master());
    // A lower priority (preempt on) does not count: still wanting.
    i.handle(down + ms(1), advert("192.0.2.2", 50));
    assert!(i.wants_master());
    // An equal or higher one does: its down timer runs again.
    i.handle(down + ms(2), advert("192.0.2.2", 150));
    assert!(!i.wants_master());
    assert!(i.next_deadline().is_some());
    assert_eq!(i.handle(down + ms(3), Input::Sync(Order::Master)), vec![]);
}

#[test]
fn sync_step_downs_count_adverts_not_orders() {
    let t0 = Instant::now();
    let mut i = synced(150);
    i.handle(t0, Input::Startup);
    let down = i.next_deadline().unwrap();
    i.handle(down, Input::Timer);
    i.handle(down, Input::Sync(Order::Master));
    assert_eq!(i.state(), State::Master);
    // Ordered down by the group: priority 0, VIPs removed, backup; not a step-down of
    // its own.
    let acts = i.handle(down + ms(10), Input::Sync(Order::Backup));
    assert_eq!(
        acts,
        vec![
            Action::SendAdvert { priority: 0 },
            Action::RemoveVips,
            Action::Transition {
                from: State::Master,
                to: State::Backup
            }
        ]
    );
    assert_eq!(i.step_downs(), 0);
    assert!(i.next_deadline().is_some(), "its down timer runs");
    // Master again, then a higher priority advertises: a step-down the group follows.
    let down = i.next_deadline().unwrap();
    i.handle(down, Input::Timer);
    i.handle(down, Input::Sync(Order::Master));
    let acts = i.handle(down + ms(10), advert("192.0.2.2", 200));
    assert!(acts.iter().any(to(State::Backup)));
    assert_eq!(i.step_downs(), 1);
    // A backup is not ordered down again.
    assert_eq!(i.handle(down + ms(20), Input::Sync(Order::Backup)), vec![]);
}
