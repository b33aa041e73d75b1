//! Two `tether vrrp` nodes in network namespaces (root): the higher priority wins;
//! SIGTERM, SIGKILL and a link cut of the master; heal and preempt back; exactly one VIP
//! holder after each step; a client namespace probing the VIP sees the gap. Also unicast
//! peers and an IPv6 instance.

mod support;

use std::time::Duration;

use tether_lab::Sig;
use tether_lab::vrrp::{LAN, LAN2, SERVICE_PORT, VrrpLab as Lab, tether_config};

const VIP: &str = "192.0.2.100";
const T: Duration = Duration::from_secs(10);

/// Not a test of its own: the lab re-executes this binary with this test selected and
/// TETHER_VRRP_CHILD_CONFIG set, to get a real `tether vrrp` process in a namespace.
#[test]
fn daemon_child() {
    support::run_daemon_child_if_asked();
}

fn cfg(prio: u8, extra: &str) -> String {
    tether_config("VI_1", 51, prio, 3, "100ms", &[&format!("{VIP}/24")], extra)
}

fn lab_ab() -> Option<Lab> {
    let mut lab = support::lab("vrrp", &[("a", 1), ("b", 2), ("c", 10)])?;
    lab.start_service("a").unwrap();
    lab.start_service("b").unwrap();
    Some(lab)
}

fn vip_sock() -> std::net::SocketAddr {
    format!("{VIP}:{SERVICE_PORT}").parse().unwrap()
}

/// Starts a (150) then b (100), waits for a master / b backup.
fn two_nodes(lab: &mut Lab, extra_a: &str, extra_b: &str) {
    lab.start_tether("a", &cfg(150, extra_a)).unwrap();
    lab.start_tether("b", &cfg(100, extra_b)).unwrap();
    lab.wait_holders(VIP, &["a"], T).unwrap();
    assert!(
        lab.wait_log("tether-b", "-> BACKUP", T),
        "b never became backup:\n{}",
        lab.log("tether-b")
    );
    // Stable: still exactly one holder a moment later.
    lab.wait_holders(VIP, &["a"], T).unwrap();
}

#[test]
fn higher_priority_wins_and_sigterm_hands_over_then_preempts_back() {
    let Some(mut lab) = lab_ab() else { return };
    two_nodes(&mut lab, "", "");
    let probe = lab.start_probe("c", vip_sock()).unwrap();
    assert!(
        probe.wait_answer("a", T),
        "client never reached a through the VIP"
    );

    let mark = probe.mark();
    lab.signal("tether-a", Sig::Term).unwrap();
    assert!(
        !lab.wait_exit("tether-a", T).unwrap().is_running(),
        "a did not stop on SIGTERM"
    );
    lab.wait_holders(VIP, &["b"], T).unwrap();
    assert!(probe.wait_answer("b", T), "client never reached b");
    eprintln!(
        "FIGURE tether v3 100ms SIGTERM gap: {:?}",
        probe.gap_since(mark)
    );
    assert!(
        lab.log("tether-a").contains("MASTER -> STOP"),
        "{}",
        lab.log("tether-a")
    );

    // a comes back and preempts; exactly one holder again.
    let mark = probe.mark();
    lab.start_tether("a", &cfg(150, "")).unwrap();
    lab.wait_holders(VIP, &["a"], T).unwrap();
    assert!(probe.wait_answer("a", T));
    eprintln!(
        "FIGURE tether v3 100ms preempt-back gap: {:?}",
        probe.gap_since(mark)
    );
}

#[test]
fn sigkill_leaves_the_vip_until_the_restart_cleans_it_up() {
    let Some(mut lab) = lab_ab() else { return };
    two_nodes(&mut lab, "", "");
    let probe = lab.start_probe("c", vip_sock()).unwrap();
    assert!(probe.wait_answer("a", T));
    let mark = probe.mark();
    lab.signal("tether-a", Sig::Kill).unwrap();
    assert!(!lab.wait_exit("tether-a", T).unwrap().is_running());
    // The dead node keeps its VIP: two holders until it restarts.
    lab.wait_holders(VIP, &["a", "b"], T).unwrap();
    assert!(
        probe.wait_answer("b", T),
        "client never reached b after SIGKILL of a"
    );
    eprintln!(
        "FIGURE tether v3 100ms SIGKILL gap: {:?}",
        probe.gap_since(mark)
    );
    // Restart: a removes the stale VIP first (logged), then preempts back.
    lab.start_tether("a", &cfg(150, "")).unwrap();
    assert!(
        lab.wait_log("tether-a", "left by an unclean stop", T),
        "{}",
        lab.log("tether-a")
    );
    lab.wait_holders(VIP, &["a"], T).unwrap();
    assert!(probe.wait_answer("a", T));
}

#[test]
fn link_cut_faults_the_master_and_heal_preempts_back() {
    let Some(mut lab) = lab_ab() else { return };
    two_nodes(&mut lab, "", "");
    let probe = lab.start_probe("c", vip_sock()).unwrap();
    assert!(probe.wait_answer("a", T));
    let mark = probe.mark();
    // From before the `ip link set down` command starts: an upper bound on the reaction.
    let cut = seconds_of_day(std::time::SystemTime::now());
    lab.cut("a", LAN).unwrap();
    // a sees carrier loss (a link event): FAULT, VIP removed; b takes over.
    assert!(
        lab.wait_log("tether-a", "link down: FAULT", T),
        "{}",
        lab.log("tether-a")
    );
    // The daemon's own timestamp on the line, against the moment the cable was pulled.
    if let Some(at) = lab
        .log("tether-a")
        .lines()
        .find(|l| l.contains("link down: FAULT"))
        .and_then(log_seconds_of_day)
    {
        eprintln!(
            "FIGURE tether link cut -> FAULT within {:.1} ms",
            (at - cut) * 1000.0
        );
    }
    lab.wait_holders(VIP, &["b"], T).unwrap();
    assert!(
        lab.wait_log("tether-a", "MASTER -> FAULT", T),
        "{}",
        lab.log("tether-a")
    );
    assert!(probe.wait_answer("b", T));
    eprintln!(
        "FIGURE tether v3 100ms link-cut gap: {:?}",
        probe.gap_since(mark)
    );
    let mark = probe.mark();
    lab.heal("a", LAN).unwrap();
    assert!(
        lab.wait_log("tether-a", "FAULT -> BACKUP", T),
        "{}",
        lab.log("tether-a")
    );
    lab.wait_holders(VIP, &["a"], T).unwrap();
    assert!(probe.wait_answer("a", T));
    eprintln!(
        "FIGURE tether v3 100ms heal/preempt gap: {:?}",
        probe.gap_since(mark)
    );
    lab.wait_holders(VIP, &["a"], Duration::from_secs(2))
        .unwrap();
}

#[test]
fn unicast_peers_elect_and_fail_over() {
    let Some(lab) = lab_ab() else { return };
    lab.start_tether("a", &cfg(150, "unicast_peers = [\"192.0.2.2\"]"))
        .unwrap();
    lab.start_tether("b", &cfg(100, "unicast_peers = [\"192.0.2.1\"]"))
        .unwrap();
    lab.wait_holders(VIP, &["a"], T).unwrap();
    assert!(lab.wait_log("tether-b", "-> BACKUP", T));
    lab.wait_holders(VIP, &["a"], T).unwrap();
    lab.signal("tether-a", Sig::Term).unwrap();
    lab.wait_holders(VIP, &["b"], T).unwrap();
}

#[test]
fn ipv6_instance_elects_and_fails_over() {
    let Some(mut lab) = lab_ab() else { return };
    let vips = ["fe80::53/64", "2001:db8::101/64"];
    let c6 = |p| tether_config("VI_6", 53, p, 3, "100ms", &vips, "");
    lab.start_tether("a", &c6(150)).unwrap();
    lab.start_tether("b", &c6(100)).unwrap();
    lab.wait_holders("2001:db8::101", &["a"], T).unwrap();
    assert!(
        lab.wait_log("tether-b", "-> BACKUP", T),
        "{}",
        lab.log("tether-b")
    );
    lab.wait_holders("2001:db8::101", &["a"], T).unwrap();
    let probe = lab
        .start_probe(
            "c",
            format!("[2001:db8::101]:{SERVICE_PORT}").parse().unwrap(),
        )
        .unwrap();
    assert!(probe.wait_answer("a", T));
    lab.signal("tether-a", Sig::Term).unwrap();
    lab.wait_holders("2001:db8::101", &["b"], T).unwrap();
    // The unsolicited NA moved the client's neighbour entry.
    assert!(
        probe.wait_answer("b", T),
        "client never reached b over IPv6"
    );
}

#[test]
fn sync_group_members_fault_together() {
    let Some(lab) = lab_ab() else { return };
    let flag = lab.dir().join("fail");
    let track = format!(
        "\n[[instance.track]]\nkind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"test ! -e {}\"]\ninterval = \"100ms\"\nweight = 0\n",
        flag.display()
    );
    let two = |prio: u8, track: &str| {
        format!(
            "{}\n{}\n[[sync_group]]\nname = \"edge\"\ninstances = [\"VI_1\", \"VI_2\"]\n",
            tether_config("VI_1", 51, prio, 3, "100ms", &["192.0.2.100/24"], track),
            tether_config("VI_2", 52, prio, 3, "100ms", &["192.0.2.101/24"], "")
        )
    };
    lab.start_tether("a", &two(150, &track)).unwrap();
    lab.start_tether("b", &two(100, "")).unwrap();
    lab.wait_holders("192.0.2.100", &["a"], T).unwrap();
    lab.wait_holders("192.0.2.101", &["a"], T).unwrap();
    assert!(lab.wait_log("tether-b", "-> BACKUP", T));
    // Only VI_1's track fails, but the whole group moves to b.
    std::fs::write(&flag, "x").unwrap();
    lab.wait_holders("192.0.2.100", &["b"], T).unwrap();
    lab.wait_holders("192.0.2.101", &["b"], T).unwrap();
    // And comes back together.
    std::fs::remove_file(&flag).unwrap();
    lab.wait_holders("192.0.2.100", &["a"], T).unwrap();
    lab.wait_holders("192.0.2.101", &["a"], T).unwrap();
}

#[test]
fn notify_runs_with_keepalived_arguments_and_a_hung_one_is_killed() {
    let Some(lab) = lab_ab() else { return };
    let out = lab.dir().join("notify.out");
    let script = lab
        .write(
            "notify.sh",
            &format!(
                "#!/bin/sh\necho \"$*\" >> {}\n[ \"$4\" = BACKUP ] && exec sleep 30\nexit 0\n",
                out.display()
            ),
        )
        .unwrap();
    support::make_executable(&script);
    let extra = format!(
        "notify = \"{} a\"\nnotify_timeout = \"300ms\"",
        script.display()
    );
    lab.start_tether("a", &cfg(150, &extra)).unwrap();
    lab.wait_holders(VIP, &["a"], T).unwrap();
    // BACKUP's notify hangs; it is killed after 300 ms and the machine went on regardless.
    assert!(
        lab.wait_log("tether-a", "still running after", T),
        "{}",
        lab.log("tether-a")
    );
    lab.signal("tether-a", Sig::Term).unwrap();
    assert!(!lab.wait_exit("tether-a", T).unwrap().is_running());
    let got = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(got.contains("a INSTANCE VI_1 BACKUP 150"), "{got}");
    assert!(got.contains("a INSTANCE VI_1 MASTER 150"), "{got}");
}

#[test]
fn admin_reports_state_metrics_and_stale_vips() {
    let Some(lab) = lab_ab() else { return };
    // A VIP left behind by a "crash" before the daemon starts.
    support::run_in(
        &lab,
        "a",
        &["ip", "addr", "add", &format!("{VIP}/24"), "dev", "eth0"],
    );
    let admin = "[admin]\nlisten = \"127.0.0.1:9091\"\n";
    lab.start_tether("a", &format!("{admin}{}", cfg(150, "")))
        .unwrap();
    lab.start_tether("b", &cfg(100, "")).unwrap();
    assert!(
        lab.wait_log("tether-a", "left by an unclean stop", T),
        "{}",
        lab.log("tether-a")
    );
    lab.wait_holders(VIP, &["a"], T).unwrap();
    assert!(lab.wait_log("tether-b", "-> BACKUP", T));
    // The metrics are updated in the same step as this log line, before the daemon's
    // single-threaded runtime can answer a request.
    assert!(
        lab.wait_log("tether-a", "BACKUP -> MASTER", T),
        "{}",
        lab.log("tether-a")
    );
    let m = lab.http_get("a", "127.0.0.1:9091", "/metrics");
    assert!(
        m.contains("tether_vrrp_state{instance=\"VI_1\",state=\"master\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tether_vrrp_stale_vips_removed_total{instance=\"VI_1\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tether_vrrp_effective_priority{instance=\"VI_1\"} 150"),
        "{m}"
    );
    assert!(
        m.contains("tether_vrrp_time_since_transition_seconds{instance=\"VI_1\"}"),
        "{m}"
    );
    assert!(
        m.contains(
            "tether_vrrp_transitions_total{from=\"backup\",instance=\"VI_1\",to=\"master\"} 1"
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "tether_vrrp_dropped_packets_total{instance=\"VI_1\",reason=\"bad_checksum\"} 0"
        ),
        "{m}"
    );
    let sent = m
        .lines()
        .find(|l| l.starts_with("tether_vrrp_adverts_sent_total{instance=\"VI_1\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(sent > 0, "{m}");
    let st = lab.http_get("a", "127.0.0.1:9091", "/api/state");
    assert!(
        st.contains("\"state\":\"master\"") && st.contains("\"name\":\"VI_1\""),
        "{st}"
    );
    let ready = lab.http_get("a", "127.0.0.1:9091", "/readyz");
    assert!(
        ready.starts_with("HTTP/1.") && ready.contains(" 200 "),
        "{ready}"
    );
}

#[test]
fn a_missing_interface_is_reported_and_retried_not_fatal() {
    let Some(lab) = lab_ab() else { return };
    let admin = "[admin]\nlisten = \"127.0.0.1:9091\"\n";
    let c = cfg(150, "").replace("interface = \"eth0\"", "interface = \"vrrp9\"");
    lab.start_tether("a", &format!("{admin}{c}")).unwrap();
    assert!(
        lab.wait_log("tether-a", "interface vrrp9 not found", T),
        "{}",
        lab.log("tether-a")
    );
    // The problem /readyz reports is recorded in the same step as that log line.
    let ready = lab.http_get("a", "127.0.0.1:9091", "/readyz");
    assert!(ready.contains(" 503 "), "{ready}");
    assert!(ready.contains("interface vrrp9 not found"), "{ready}");
    // The interface appears (a veth pair inside the lab namespace): the instance starts.
    for cmd in [
        "ip link add vrrp9 type veth peer name vrrp9p",
        "ip addr add 198.51.100.1/24 dev vrrp9",
        "ip link set vrrp9p up",
        "ip link set vrrp9 up",
    ] {
        support::run_in(&lab, "a", &cmd.split(' ').collect::<Vec<_>>());
    }
    assert!(
        lab.wait_log("tether-a", "BACKUP -> MASTER", T),
        "{}",
        lab.log("tether-a")
    );
    // Logged once, not once per retry.
    assert_eq!(
        lab.log("tether-a")
            .matches("interface vrrp9 not found")
            .count(),
        1
    );
}

/// Sends raw VRRP messages from node c to 224.0.0.18 (inside the lab only).
fn send_from_c(lab: &Lab, msgs: Vec<(Vec<u8>, u32)>) {
    lab.in_ns("c", move || {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        s.set_multicast_if_v4(&"192.0.2.10".parse().unwrap())
            .unwrap();
        let to: std::net::SocketAddr = "224.0.0.18:0".parse().unwrap();
        for (m, ttl) in msgs {
            s.set_multicast_ttl_v4(ttl).unwrap();
            s.send_to(&m, &to.into()).unwrap();
        }
    })
    .unwrap();
}

fn metric(m: &str, series: &str) -> u64 {
    tether_lab::kit::metric(m, series).unwrap_or(0.0) as u64
}

#[test]
fn receive_checks_drop_by_reason_and_accept_both_checksums() {
    use std::net::IpAddr;
    use tether_vrrp::packet::{Advert, Auth, ChecksumMode, Version};
    let Some(lab) = lab_ab() else { return };
    let admin = "[admin]\nlisten = \"127.0.0.1:9091\"\n";
    lab.start_tether("a", &format!("{admin}{}", cfg(150, "")))
        .unwrap();
    lab.wait_holders(VIP, &["a"], T).unwrap();
    let src: IpAddr = "192.0.2.10".parse().unwrap();
    let grp: IpAddr = "224.0.0.18".parse().unwrap();
    let ad = |prio: u8, vips: &[&str]| Advert {
        version: Version::V3,
        vrid: 51,
        priority: prio,
        interval_field: 10,
        addrs: vips.iter().map(|v| v.parse().unwrap()).collect(),
        auth: Auth::None,
    };
    let mut carp = vec![0x21, 51, 0, 1, 0, 1, 0, 0];
    carp.resize(36, 0);
    let foreign = ad(200, &["192.0.2.199"]).encode(src, grp, ChecksumMode::PseudoHeader);
    let low_ttl = ad(200, &[VIP]).encode(src, grp, ChecksumMode::PseudoHeader);
    let mut bad_sum = low_ttl.clone();
    bad_sum[7] ^= 0xff;
    let mut msgs = Vec::new();
    for _ in 0..3 {
        msgs.push((foreign.clone(), 255));
        msgs.push((carp.clone(), 255));
        msgs.push((low_ttl.clone(), 254));
        msgs.push((bad_sum.clone(), 255));
    }
    // Last, a v2 advert on our v3 VRID: dropped and logged (once), so its log line says
    // every packet before it on the same socket was counted.
    let v2 = Advert {
        version: Version::V2,
        interval_field: 1,
        ..ad(200, &[VIP])
    };
    msgs.push((v2.encode(src, grp, ChecksumMode::PseudoHeader), 255));
    send_from_c(&lab, msgs);
    assert!(
        lab.wait_log("tether-a", "wrong VRRP version", T),
        "{}",
        lab.log("tether-a")
    );
    let m = lab.http_get("a", "127.0.0.1:9091", "/metrics");
    let drops = |r: &str| {
        metric(
            &m,
            &format!("tether_vrrp_dropped_packets_total{{instance=\"VI_1\",reason=\"{r}\"}}"),
        )
    };
    assert_eq!(drops("address_mismatch"), 3, "{m}");
    assert_eq!(drops("bad_length"), 3, "{m}");
    assert_eq!(drops("bad_ttl"), 3, "{m}");
    assert_eq!(drops("bad_checksum"), 3, "{m}");
    // None of them moved the master.
    assert!(
        m.contains("tether_vrrp_state{instance=\"VI_1\",state=\"master\"} 1"),
        "{m}"
    );
    // Logged once per source and reason, CARP not at all.
    let log = lab.log("tether-a");
    assert_eq!(
        log.matches("virtual address list mismatch").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("does not match the address count"), "{log}");

    // An RFC 9568-style advert with a higher priority is accepted: a steps down, and
    // takes over again once the probes stop.
    let rfc = ad(200, &[VIP]).encode(src, grp, ChecksumMode::Rfc9568);
    send_from_c(&lab, vec![(rfc, 255)]);
    assert!(
        lab.wait_log("tether-a", "MASTER -> BACKUP", T),
        "{}",
        lab.log("tether-a")
    );
    assert!(lab.wait_log("tether-a", "rfc9568 v3 checksum convention", T));
    lab.wait_holders(VIP, &["a"], T).unwrap();
    assert!(lab.wait_log("tether-a", "BACKUP -> MASTER", T));
}

/// Seconds since midnight UTC.
fn seconds_of_day(t: std::time::SystemTime) -> f64 {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_micros()) / 1e6
}

/// Seconds since midnight UTC of a log line's `2026-12-06T04:10:57.838296Z` timestamp (the
/// daemon runs inside this test binary, whose log lines may carry colour codes).
fn log_seconds_of_day(line: &str) -> Option<f64> {
    let start = line.find("20")?;
    let t = line[start..]
        .split(['Z', ' ', '\u{1b}'])
        .next()?
        .split_once('T')?
        .1;
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Sync groups as keepalived does them, on two links: a groups an outside instance (eth0)
/// and an inside one (eth1); b runs the same two instances without a group, so each of
/// its instances can move alone and pull on one of a's. The two VIPs never end up on two
/// different hosts: a master that steps down takes its group down (BACKUP), a member that
/// wants MASTER waits until every member does (MASTER), and a fault faults the group.
#[test]
fn sync_group_masters_backups_and_faults_together_on_two_links() {
    const OUT: &str = "192.0.2.100";
    const IN: &str = "198.51.100.100";
    let Some(mut lab) = support::lab_two_links("vsync", &[("a", 1), ("b", 2), ("c", 10)]) else {
        return;
    };
    lab.start_service("a").unwrap();
    lab.start_service("b").unwrap();
    let two = |out: u8, inside: u8, group: bool| {
        let mut s = tether_config("VI_out", 51, out, 3, "100ms", &[&format!("{OUT}/24")], "");
        s += &tether_config("VI_in", 52, inside, 3, "100ms", &[&format!("{IN}/24")], "")
            .replace("interface = \"eth0\"", "interface = \"eth1\"");
        if group {
            s += "\n[[sync_group]]\nname = \"edge\"\ninstances = [\"VI_out\", \"VI_in\"]\n";
        }
        s
    };
    let both = |lab: &Lab, who: &str| {
        lab.wait_holders(OUT, &[who], T).unwrap();
        lab.wait_holders(IN, &[who], T).unwrap();
    };
    lab.start_tether("a", &two(150, 150, true)).unwrap();
    lab.start_tether("b", &two(100, 100, false)).unwrap();
    both(&lab, "a");
    let probe_out = lab
        .start_probe("c", format!("{OUT}:{SERVICE_PORT}").parse().unwrap())
        .unwrap();
    let probe_in = lab
        .start_probe("c", format!("{IN}:{SERVICE_PORT}").parse().unwrap())
        .unwrap();
    assert!(probe_out.wait_answer("a", T) && probe_in.wait_answer("a", T));

    // BACKUP follows: b's inside instance outranks a's, a's VI_in steps down, and a's
    // VI_out follows it (priority 0), so b takes both.
    lab.write("tether-b.toml", &two(100, 200, false)).unwrap();
    lab.signal("tether-b", Sig::Hup).unwrap();
    both(&lab, "b");
    assert!(
        lab.wait_log("tether-a", "a member stepped down to BACKUP", T),
        "{}",
        lab.log("tether-a")
    );
    // MASTER waits for the group: a's VI_out outranks b's (150 > 100) and its timer runs
    // out, but a's VI_in does not want MASTER, so nothing moves (alone, it would split).
    assert!(
        lab.wait_log("tether-a", "waiting for its sync group", T),
        "{}",
        lab.log("tether-a")
    );
    lab.hold_steady(OUT, &["b"], Duration::from_secs(1))
        .unwrap();
    assert_eq!(lab.holders(IN), ["b"]);
    assert!(probe_out.wait_answer("b", T) && probe_in.wait_answer("b", T));

    // MASTER together: b's inside priority back to 100, both of a's members want MASTER.
    lab.write("tether-b.toml", &two(100, 100, false)).unwrap();
    lab.signal("tether-b", Sig::Hup).unwrap();
    both(&lab, "a");
    assert!(
        lab.wait_log("tether-a", "every member wants MASTER", T),
        "{}",
        lab.log("tether-a")
    );

    // FAULT: the inside link of a goes down; its outside instance faults too.
    let mark = probe_out.mark();
    lab.cut("a", LAN2).unwrap();
    both(&lab, "b");
    let faults = lab
        .log("tether-a")
        .lines()
        .filter(|l| l.contains("MASTER -> FAULT"))
        .count();
    assert_eq!(faults, 2, "{}", lab.log("tether-a"));
    assert!(probe_out.wait_answer("b", T));
    eprintln!(
        "FIGURE sync group: outside VIP gap when the inside link of its master is cut: {:?}",
        probe_out.gap_since(mark)
    );
    // Healed: a's members leave FAULT, both want MASTER, both come back.
    lab.heal("a", LAN2).unwrap();
    both(&lab, "a");
    lab.hold_steady(OUT, &["a"], Duration::from_millis(500))
        .unwrap();
    assert_eq!(lab.holders(IN), ["a"]);
}
