//! The reload plan, one row per kind of edit: parsed from TOML as an operator writes it,
//! no sockets.

use tether_health::config::Source;

use super::*;
use crate::config::parse;

/// One instance block with `extra` lines; the base is what every row edits.
fn inst(name: &str, extra: &str) -> String {
    format!(
        "[[instance]]\nname = \"{name}\"\ninterface = \"eth0\"\nvrid = {vrid}\npriority = 100\n\
         advert_interval = \"100ms\"\nvirtual_addresses = [\"192.0.2.{vrid}/24\"]\n{extra}\n",
        vrid = 10 + name.len()
    )
}

fn cfg(text: &str) -> Config {
    parse(&Source::from_text("vrrp.toml", text)).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The base instance VI_1 with `lines` overriding or adding keys (the base keys are
/// dropped when a line sets them).
fn vi1(lines: &[&str]) -> String {
    let mut base = vec![
        "interface = \"eth0\"",
        "vrid = 51",
        "priority = 100",
        "advert_interval = \"100ms\"",
        "virtual_addresses = [\"192.0.2.100/24\"]",
    ];
    for l in lines {
        let key = l.split('=').next().unwrap_or("").trim();
        base.retain(|b| b.split('=').next().unwrap_or("").trim() != key);
    }
    let mut s = String::from("[[instance]]\nname = \"VI_1\"\n");
    for l in base.iter().chain(lines) {
        s.push_str(l);
        s.push('\n');
    }
    s
}

fn one(old: &[&str], new: &[&str]) -> Plan {
    plan(&cfg(&vi1(old)), &cfg(&vi1(new)))
}

fn changed(c: Vec<Change>) -> Plan {
    Plan {
        changed: vec![("VI_1".into(), c)],
        ..Plan::default()
    }
}

fn restarted(r: Restart) -> Plan {
    Plan {
        restarted: vec![("VI_1".into(), r)],
        ..Plan::default()
    }
}

fn vip(s: &str) -> Vip {
    crate::config::parse_vip(s).unwrap()
}

#[test]
fn the_same_file_changes_nothing() {
    let p = one(&[], &[]);
    assert_eq!(
        p,
        Plan {
            unchanged: vec!["VI_1".into()],
            ..Plan::default()
        }
    );
    assert!(p.is_noop());
}

#[test]
fn in_place_changes_one_row_each() {
    let rows: Vec<(&[&str], &[&str], Vec<Change>)> = vec![
        (
            &[],
            &["priority = 120"],
            vec![Change::Priority { from: 100, to: 120 }],
        ),
        (
            &[],
            &["virtual_addresses = [\"192.0.2.100/24\", \"192.0.2.101/24\"]"],
            vec![Change::VipsAdded(vec![vip("192.0.2.101/24")])],
        ),
        (
            &["virtual_addresses = [\"192.0.2.100/24\", \"192.0.2.101/24\"]"],
            &[],
            vec![Change::VipsRemoved(vec![vip("192.0.2.101/24")])],
        ),
        (
            &[],
            &["virtual_addresses = [\"192.0.2.100/25\"]"],
            vec![
                Change::VipsRemoved(vec![vip("192.0.2.100/24")]),
                Change::VipsAdded(vec![vip("192.0.2.100/25")]),
            ],
        ),
        (
            &["virtual_addresses = [\"192.0.2.100/24\", \"192.0.2.101/24\"]"],
            &["virtual_addresses = [\"192.0.2.101/24\", \"192.0.2.100/24\"]"],
            vec![Change::Wire],
        ),
        (&[], &["advert_interval = \"200ms\""], vec![Change::Timers]),
        (&[], &["preempt = false"], vec![Change::Timers]),
        (&[], &["preempt_delay = \"2s\""], vec![Change::Timers]),
        (&[], &["garp_delay = \"0s\""], vec![Change::Timers]),
        (&[], &["garp_repeat = 2"], vec![Change::Wire]),
        (&[], &["v3_checksum = \"rfc9568\""], vec![Change::Wire]),
        (&[], &["notify = \"/bin/true\""], vec![Change::Notify]),
        (
            &["notify = \"/bin/true\""],
            &["notify = \"/bin/true\"", "notify_timeout = \"1s\""],
            vec![Change::Notify],
        ),
        (
            &["unicast_peers = [\"192.0.2.2\"]"],
            &["unicast_peers = [\"192.0.2.3\"]"],
            vec![Change::Wire],
        ),
        (
            &[],
            &[
                "priority = 90",
                "advert_interval = \"1s\"",
                "virtual_addresses = [\"192.0.2.101/24\"]",
            ],
            vec![
                Change::Priority { from: 100, to: 90 },
                Change::VipsAdded(vec![vip("192.0.2.101/24")]),
                Change::VipsRemoved(vec![vip("192.0.2.100/24")]),
                Change::Timers,
            ],
        ),
    ];
    for (old, new, want) in rows {
        assert_eq!(one(old, new), changed(want), "{old:?} -> {new:?}");
    }
}

#[test]
fn tracks_added_removed_or_edited_are_a_track_change() {
    let track = |w: i32| {
        format!("[[instance.track]]\nkind = \"interface\"\ninterface = \"eth1\"\nweight = {w}\n")
    };
    let base = vi1(&[]);
    let with = |w| format!("{base}{}", track(w));
    let p = |a: &str, b: &str| plan(&cfg(a), &cfg(b));
    assert_eq!(p(&base, &with(-10)), changed(vec![Change::Tracks]));
    assert_eq!(p(&with(-10), &base), changed(vec![Change::Tracks]));
    assert_eq!(p(&with(-10), &with(-20)), changed(vec![Change::Tracks]));
    assert!(p(&with(-10), &with(-10)).is_noop());
}

#[test]
fn what_gives_an_instance_its_sockets_restarts_it_alone() {
    let rows: Vec<(&[&str], &[&str], Restart)> = vec![
        (&[], &["interface = \"eth1\""], Restart::Interface),
        (&[], &["vrid = 52"], Restart::Vrid),
        (
            &[],
            &["virtual_addresses = [\"2001:db8::100/64\"]"],
            Restart::Family,
        ),
        (
            &[],
            &["version = 2", "advert_interval = \"1s\""],
            Restart::Version,
        ),
        (
            &["unicast_peers = [\"192.0.2.2\"]"],
            &[
                "unicast_peers = [\"192.0.2.2\"]",
                "unicast_src = \"192.0.2.9\"",
            ],
            Restart::UnicastSource,
        ),
        (&[], &["unicast_peers = [\"192.0.2.2\"]"], Restart::CastMode),
        (&["unicast_peers = [\"192.0.2.2\"]"], &[], Restart::CastMode),
    ];
    for (old, new, want) in rows {
        assert_eq!(one(old, new), restarted(want), "{old:?} -> {new:?}");
    }
    // A restart-class change wins over in-place ones in the same edit.
    assert_eq!(
        one(&[], &["vrid = 52", "priority = 120"]),
        restarted(Restart::Vrid)
    );
}

#[test]
fn instances_are_matched_by_name_whatever_their_order() {
    let a = inst("A", "");
    let bb = inst("BB", "");
    let ccc = inst("CCC", "");
    let old = cfg(&format!("{a}{bb}{ccc}"));
    // Reordered, BB edited, CCC removed, DDDD added.
    let bb2 = inst("BB", "preempt = false");
    let dddd = inst("DDDD", "");
    let new = cfg(&format!("{dddd}{bb2}{a}"));
    assert_eq!(
        plan(&old, &new),
        Plan {
            unchanged: vec!["A".into()],
            changed: vec![("BB".into(), vec![Change::Timers])],
            added: vec!["DDDD".into()],
            removed: vec!["CCC".into()],
            ..Plan::default()
        }
    );
}

#[test]
fn a_rename_is_a_removal_and_an_addition() {
    let old = cfg(&vi1(&[]));
    let new = cfg(&vi1(&[]).replace("VI_1", "VI_9"));
    let p = plan(&old, &new);
    assert_eq!(p.added, vec!["VI_9".to_string()]);
    assert_eq!(p.removed, vec!["VI_1".to_string()]);
}

#[test]
fn sync_group_membership_restarts_the_members_whose_group_changed() {
    let a = inst("A", "");
    let bb = inst("BB", "");
    let ccc = inst("CCC", "");
    let group = |m: &str| format!("[[sync_group]]\nname = \"G\"\ninstances = [{m}]\n");
    let old = cfg(&format!("{a}{bb}{ccc}{}", group("\"A\", \"BB\"")));
    // Same group, same members: nothing.
    assert!(plan(&old, &old.clone()).is_noop());
    // CCC joins: every member's view of the group changes.
    let new = cfg(&format!("{a}{bb}{ccc}{}", group("\"A\", \"BB\", \"CCC\"")));
    let p = plan(&old, &new);
    let names: Vec<&str> = p.restarted.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["A", "BB", "CCC"]);
    assert!(p.restarted.iter().all(|(_, r)| *r == Restart::SyncGroup));
    // The group dissolved: its members restart, outside any group.
    let new = cfg(&format!("{a}{bb}{ccc}"));
    let names: Vec<String> = plan(&old, &new)
        .restarted
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["A", "BB"]);
}

#[test]
fn an_admin_address_change_is_reported_not_applied() {
    let base = vi1(&[]);
    let with_admin = format!("[admin]\nlisten = \"127.0.0.1:9101\"\n{base}");
    let p = plan(&cfg(&base), &cfg(&with_admin));
    assert!(p.admin_changed);
    assert!(p.is_noop());
}

#[test]
fn the_summary_names_every_instance_and_what_changed() {
    let p = one(&[], &["priority = 120", "vrid = 51"]);
    assert_eq!(
        p.to_string(),
        "0 unchanged; VI_1 changed (priority 100 -> 120)"
    );
    let p = one(&[], &["vrid = 52"]);
    assert_eq!(p.to_string(), "0 unchanged; VI_1 restarted (vrid changed)");
}
