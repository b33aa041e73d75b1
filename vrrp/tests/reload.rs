//! Reload on SIGHUP in network namespaces (root): two `tether vrrp` nodes share a VIP, a
//! third host probes a service through it every 10 ms, and the master is reloaded 20
//! times (unchanged files, priority changes on the backup and on the master, an added
//! VIP on both, one invalid file) while tshark captures the adverts and ARPs. The probe
//! never fails, the master's adverts never pause longer than one interval (plus slack),
//! only the new VIP is announced, the invalid file is refused and counted, and the
//! backup never takes over.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::tshark_fields;
use tether_lab::kit::metric;
use tether_lab::vrrp::{Keepalived, SERVICE_PORT, VrrpLab, install_peers};
use tether_lab::{ProcSpec, Sig};

const VIP: &str = "192.0.2.100";
const VIP2: &str = "192.0.2.101";
const ADMIN: &str = "127.0.0.1:9101";
const T: Duration = Duration::from_secs(10);
/// The advert interval of both nodes.
const INTERVAL: Duration = Duration::from_millis(100);
/// What timer and scheduling jitter may add to one interval on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(50);
/// keepalived's default `garp_master_repeat`, which Tether shares.
const GARP_REPEAT: usize = 5;

/// Same child entry point as in netns.rs: this binary re-executed as a daemon.
/// Starts tshark on the client's link (every advert and every ARP) into `file` in the
/// lab's directory, and waits until it captures.
fn capture(lab: &VrrpLab, file: &str) -> std::path::PathBuf {
    let pcap = lab.dir().join(file);
    lab.start(ProcSpec::new("tshark-c", "c", "tshark").args([
        "-i",
        "eth0",
        "-n",
        "-f",
        "ip proto 112 or arp",
        "-w",
        &pcap.to_string_lossy(),
    ]))
    .unwrap();
    assert!(
        lab.wait_log("tshark-c", "Capturing on", T),
        "{}",
        lab.log("tshark-c")
    );
    pcap
}

#[test]
fn daemon_child() {
    support::run_daemon_child_if_asked();
}

/// The instance both nodes run, with the admin API on the host's loopback. No second
/// ARP burst (`garp_delay = "0s"`), so the capture sees only what a reload announces.
fn config(prio: u8, vips: &[&str]) -> String {
    let vips = vips
        .iter()
        .map(|v| format!("\"{v}/24\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[admin]\nlisten = \"{ADMIN}\"\n\n[[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\n\
         vrid = 51\npriority = {prio}\nversion = 3\nadvert_interval = \"100ms\"\n\
         virtual_addresses = [{vips}]\ngarp_delay = \"0s\"\n"
    )
}

fn sock(vip: &str) -> SocketAddr {
    format!("{vip}:{SERVICE_PORT}").parse().unwrap()
}

/// What one reload step writes and whom it reloads.
struct Step {
    /// The master's file (`None`: an invalid one).
    a: Option<(u8, &'static [&'static str])>,
    /// The backup's new file, reloaded right after the master's (within one interval,
    /// so the two VIP lists never differ for a Master_Down_Interval).
    b: Option<(u8, &'static [&'static str])>,
}

const ONE: &[&str] = &[VIP];
const TWO: &[&str] = &[VIP, VIP2];

fn steps() -> Vec<Step> {
    let same = |p, v| Step {
        a: Some((p, v)),
        b: None,
    };
    let both = |pa, pb, v| Step {
        a: Some((pa, v)),
        b: Some((pb, v)),
    };
    vec![
        same(150, ONE),
        same(150, ONE),
        same(150, ONE),
        both(150, 110, ONE), // the backup's priority rises, still below the master's
        same(150, ONE),
        both(150, 120, ONE),
        same(150, ONE),
        same(160, ONE), // the master's own priority: carried by its next advert
        same(160, ONE),
        both(160, 120, TWO), // a VIP added on both
        same(160, TWO),
        Step { a: None, b: None }, // an invalid file: refused
        same(160, TWO),            // the valid file again: nothing to change
        both(160, 100, TWO),
        same(160, TWO),
        same(160, TWO),
        same(160, TWO),
        same(160, TWO),
        same(160, TWO),
        same(160, TWO),
    ]
}

/// How many adverts came less than half an interval after the previous one: adverts a
/// reload sent off the schedule.
fn early_adverts(times: &[f64]) -> usize {
    times
        .windows(2)
        .filter(|w| w[1] - w[0] < INTERVAL.as_secs_f64() / 2.0)
        .count()
}

#[test]
fn twenty_sighup_reloads_of_the_master_cost_no_probe_and_no_advert_gap() {
    install_peers();
    let Some(mut lab) = support::lab("vreload", &[("a", 1), ("b", 2), ("c", 10)]) else {
        return;
    };
    lab.start_service("a").unwrap();
    lab.start_service("b").unwrap();
    lab.start_tether("a", &config(150, ONE)).unwrap();
    lab.start_tether("b", &config(100, ONE)).unwrap();
    lab.wait_holders(VIP, &["a"], T).unwrap();
    assert!(
        lab.wait_log("tether-b", "-> BACKUP", T),
        "{}",
        lab.log("tether-b")
    );
    let probe = lab.start_probe("c", sock(VIP)).unwrap();
    assert!(probe.wait_answer("a", T), "the client never reached a");

    // The capture, on the client's link: every advert of both nodes and every ARP.
    let pcap = capture(&lab, "reload.pcap");
    // From an answered probe after the capture runs.
    let start = Instant::now();
    assert!(probe.wait_streak(start, 3, T));

    let (mut ok_a, mut failed_a, mut ok_b) = (0, 0, 0);
    let mut probe2 = None;
    let mut reload_times = Vec::new();
    for (n, step) in steps().into_iter().enumerate() {
        let text = match step.a {
            Some((p, v)) => config(p, v),
            // Out of range: refused with the file, line and key.
            None => config(160, TWO).replace("priority = 160", "priority = 300"),
        };
        lab.write("tether-a.toml", &text).unwrap();
        if let Some((p, v)) = step.b {
            lab.write("tether-b.toml", &config(p, v)).unwrap();
        }
        let at = Instant::now();
        // The invalid file goes through the admin API, which answers with its errors; the
        // others through SIGHUP.
        let posted = match step.a {
            Some(_) => {
                lab.signal("tether-a", Sig::Hup).unwrap();
                None
            }
            None => Some(lab.http_post("a", ADMIN, "/api/reload")),
        };
        if step.b.is_some() {
            lab.signal("tether-b", Sig::Hup).unwrap();
            ok_b += 1;
        }
        if step.a.is_some() {
            ok_a += 1;
            assert!(
                lab.wait_log_count("tether-a", "reload applied: ", ok_a, T),
                "reload {n}: {}",
                lab.log("tether-a")
            );
        } else {
            failed_a += 1;
            assert!(
                lab.wait_log_count("tether-a", "reload refused", failed_a, T),
                "reload {n}: {}",
                lab.log("tether-a")
            );
            let log = lab.log("tether-a");
            assert!(
                log.contains("tether-a.toml:") && log.contains("priority"),
                "the refusal names the file, line and key:\n{log}"
            );
            let answer = posted.unwrap_or_default();
            assert!(
                answer.starts_with("HTTP/1.0 400") || answer.starts_with("HTTP/1.1 400"),
                "{answer}"
            );
            assert!(
                answer.contains("\"result\":\"failed\"") && answer.contains("priority"),
                "{answer}"
            );
            let m = lab.http_get("a", ADMIN, "/metrics");
            assert_eq!(
                metric(&m, "tether_vrrp_reloads_total{result=\"failed\"}"),
                Some(1.0),
                "{m}"
            );
            assert_eq!(metric(&m, "tether_vrrp_last_reload_success"), Some(0.0));
            let last = lab.http_get("a", ADMIN, "/api/reload");
            assert!(last.contains("\"result\":\"failed\""), "{last}");
            assert_eq!(lab.holders(VIP), ["a"], "the running configuration serves");
        }
        if step.b.is_some() {
            assert!(
                lab.wait_log_count("tether-b", "reload applied: ", ok_b, T),
                "reload {n}: {}",
                lab.log("tether-b")
            );
        }
        reload_times.push(at.elapsed());
        if step.a.is_some_and(|(_, v)| v.len() == 2) && probe2.is_none() {
            // The added VIP: held by the master alone and answering through it.
            lab.wait_holders(VIP2, &["a"], T).unwrap();
            let p = lab.start_probe("c", sock(VIP2)).unwrap();
            assert!(p.wait_answer("a", T), "the added VIP never answered");
            probe2 = Some(p);
        }
        // Spread the reloads over the advert cycle: wait for about one interval of fresh
        // answered probes (one every 10 ms) before the next.
        assert!(
            probe.wait_streak(Instant::now(), 10, T),
            "reload {n}: the probe stopped answering"
        );
    }
    let end = Instant::now();
    lab.hold_steady(VIP, &["a"], INTERVAL * 4).unwrap();
    assert_eq!(lab.holders(VIP2), ["a"]);
    // SIGINT: tshark closes the capture file cleanly.
    lab.signal("tshark-c", Sig::Int).unwrap();
    assert!(!lab.wait_exit("tshark-c", T).unwrap().is_running());

    // The probe saw every reload through.
    let failures = probe.failures_since(start);
    eprintln!(
        "FIGURE 20 reloads over {:?}: {failures} failed probes, longest probe gap {:?}, \
         slowest reload (signal to logged) {:?}",
        end - start,
        probe.gap_since(start),
        reload_times.iter().max().unwrap()
    );
    assert_eq!(failures, 0, "probes failed during the reloads");
    assert!(
        !lab.log("tether-b").contains("BACKUP -> MASTER"),
        "the backup took over:\n{}",
        lab.log("tether-b")
    );
    let m = lab.http_get("a", ADMIN, "/metrics");
    assert_eq!(
        metric(&m, "tether_vrrp_reloads_total{result=\"ok\"}"),
        Some(19.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "tether_vrrp_reloads_total{result=\"failed\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&m, "tether_vrrp_last_reload_success"), Some(1.0));
    assert!(
        !lab.log("tether-a").contains("MASTER ->"),
        "the master left MASTER:\n{}",
        lab.log("tether-a")
    );

    // The master's adverts: no gap beyond one interval, the new priority carried.
    let rows = tshark_fields(
        &pcap,
        "vrrp && ip.src == 192.0.2.1",
        &[],
        &["frame.time_epoch", "vrrp.prio"],
    );
    let times: Vec<f64> = rows.iter().filter_map(|r| r[0].parse().ok()).collect();
    assert!(
        times.len() >= 20,
        "too few adverts captured: {}",
        times.len()
    );
    let worst = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0_f64, f64::max);
    let early = early_adverts(&times);
    eprintln!(
        "FIGURE master adverts during 20 reloads: {} captured, longest gap {:.1} ms \
         (interval {INTERVAL:?}), {early} sent early (under half an interval after the last)",
        times.len(),
        worst * 1000.0
    );
    assert!(
        worst <= (INTERVAL + SLACK).as_secs_f64(),
        "an advert gap of {:.1} ms",
        worst * 1000.0
    );
    assert_eq!(
        early, 0,
        "a reload made the master advertise off its schedule"
    );
    let prios: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(prios.first(), Some(&"150"));
    assert_eq!(
        prios.last(),
        Some(&"160"),
        "the new priority was advertised"
    );
    let b_adverts = tshark_fields(&pcap, "vrrp && ip.src == 192.0.2.2", &[], &["vrrp.prio"]);
    assert!(b_adverts.is_empty(), "the backup advertised: {b_adverts:?}");

    // Gratuitous ARPs (sender = target) from the master: the new VIP's burst only.
    let garps = tshark_fields(
        &pcap,
        "arp.opcode == 1",
        &[],
        &["arp.src.proto_ipv4", "arp.dst.proto_ipv4"],
    );
    let count = |vip: &str| garps.iter().filter(|r| r[0] == vip && r[1] == vip).count();
    eprintln!(
        "FIGURE gratuitous ARPs during 20 reloads: {} for {VIP}, {} for {VIP2}",
        count(VIP),
        count(VIP2)
    );
    assert_eq!(count(VIP), 0, "an unchanged VIP was announced again");
    assert_eq!(count(VIP2), GARP_REPEAT, "the added VIP's burst");
}

/// The same 20 reloads (unchanged files) with keepalived 2.2.7 on both nodes, for the
/// comparison in docs/vrrp.md: it prints what the capture and the probe saw and asserts
/// only what makes those figures meaningful.
#[test]
fn keepalived_reloads_for_comparison() {
    install_peers();
    let Some(mut lab) = support::lab("vkareload", &[("a", 1), ("b", 2), ("c", 10)]) else {
        return;
    };
    lab.start_service("a").unwrap();
    lab.start_service("b").unwrap();
    let ka = |router, prio| {
        Keepalived {
            router,
            name: "VI_1",
            vrid: 51,
            prio,
            version: 3,
            interval: "0.1",
        }
        .config(&[&format!("{VIP}/24")], "    garp_master_delay 0\n")
    };
    let conf_a = ka("a", 150);
    lab.start_keepalived("a", &conf_a).unwrap();
    lab.start_keepalived("b", &ka("b", 100)).unwrap();
    lab.wait_holders(VIP, &["a"], T).unwrap();
    assert!(
        lab.wait_log("ka-b", "Entering BACKUP STATE", T),
        "{}",
        lab.log("ka-b")
    );
    let probe = lab.start_probe("c", sock(VIP)).unwrap();
    assert!(probe.wait_answer("a", T), "the client never reached a");
    let pcap = capture(&lab, "ka-reload.pcap");
    let start = Instant::now();
    assert!(probe.wait_streak(start, 3, T));
    for n in 1..=20 {
        lab.signal("ka-a", Sig::Hup).unwrap();
        assert!(
            lab.wait_log_count("ka-a", "Reload complete", n, T),
            "reload {n}: {}",
            lab.log("ka-a")
        );
        assert!(
            probe.wait_streak(Instant::now(), 10, T),
            "reload {n}: the probe stopped answering"
        );
    }
    let end = Instant::now();
    lab.signal("tshark-c", Sig::Int).unwrap();
    assert!(!lab.wait_exit("tshark-c", T).unwrap().is_running());
    let rows = tshark_fields(
        &pcap,
        "vrrp && ip.src == 192.0.2.1",
        &[],
        &["frame.time_epoch"],
    );
    let times: Vec<f64> = rows.iter().filter_map(|r| r[0].parse().ok()).collect();
    assert!(
        times.len() >= 20,
        "too few adverts captured: {}",
        times.len()
    );
    let worst = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0_f64, f64::max);
    let garps = tshark_fields(
        &pcap,
        "arp.opcode == 1",
        &[],
        &["arp.src.proto_ipv4", "arp.dst.proto_ipv4"],
    );
    let count = garps.iter().filter(|r| r[0] == VIP && r[1] == VIP).count();
    let b_adverts = tshark_fields(&pcap, "vrrp && ip.src == 192.0.2.2", &[], &["vrrp.prio"]);
    eprintln!(
        "FIGURE keepalived 20 reloads over {:?}: {} failed probes, longest probe gap {:?}, \
         {} master adverts, longest gap {:.1} ms, {} sent early, {count} gratuitous ARPs \
         for {VIP}, {} adverts from the backup",
        end - start,
        probe.failures_since(start),
        probe.gap_since(start),
        times.len(),
        worst * 1000.0,
        early_adverts(&times),
        b_adverts.len()
    );
}

/// An instance added by a reload starts beside the running one (which is not touched),
/// and one removed by a reload hands its VIP over at once (priority 0, as on SIGTERM)
/// rather than after the backup's Master_Down_Interval.
#[test]
fn reload_adds_an_instance_and_a_removed_one_sends_priority_0() {
    const VIP3: &str = "192.0.2.102";
    let Some(mut lab) = support::lab("vreladd", &[("a", 1), ("b", 2), ("c", 10)]) else {
        return;
    };
    lab.start_service("a").unwrap();
    lab.start_service("b").unwrap();
    lab.start_tether("a", &config(150, ONE)).unwrap();
    lab.start_tether("b", &config(100, ONE)).unwrap();
    lab.wait_holders(VIP, &["a"], T).unwrap();
    assert!(lab.wait_log("tether-b", "-> BACKUP", T));
    let probe = lab.start_probe("c", sock(VIP)).unwrap();
    assert!(probe.wait_answer("a", T));
    let second = |prio: u8| {
        format!(
            "\n[[instance]]\nname = \"VI_2\"\ninterface = \"eth0\"\nvrid = 52\n\
             priority = {prio}\nversion = 3\nadvert_interval = \"100ms\"\n\
             virtual_addresses = [\"{VIP3}/24\"]\ngarp_delay = \"0s\"\n"
        )
    };
    // b first: its VI_2 starts as backup and takes VIP3 until a's VI_2 preempts it.
    lab.write("tether-b.toml", &(config(100, ONE) + &second(100)))
        .unwrap();
    lab.signal("tether-b", Sig::Hup).unwrap();
    assert!(
        lab.wait_log("tether-b", "VI_2 added", T),
        "{}",
        lab.log("tether-b")
    );
    lab.wait_holders(VIP3, &["b"], T).unwrap();
    let start = Instant::now();
    lab.write("tether-a.toml", &(config(150, ONE) + &second(150)))
        .unwrap();
    lab.signal("tether-a", Sig::Hup).unwrap();
    assert!(
        lab.wait_log("tether-a", "VI_2 added", T),
        "{}",
        lab.log("tether-a")
    );
    assert!(
        lab.wait_log("tether-a", "1 unchanged; VI_2 added", T),
        "VI_1 was touched: {}",
        lab.log("tether-a")
    );
    lab.wait_holders(VIP3, &["a"], T).unwrap();
    let probe3 = lab.start_probe("c", sock(VIP3)).unwrap();
    assert!(probe3.wait_answer("a", T), "VI_2's VIP never answered on a");

    // VI_2 removed from a only: priority 0, so b takes VIP3 after its Skew_Time.
    lab.write("tether-a.toml", &config(150, ONE)).unwrap();
    let removed = Instant::now();
    lab.signal("tether-a", Sig::Hup).unwrap();
    lab.wait_holders(VIP3, &["b"], T).unwrap();
    let handover = removed.elapsed();
    assert!(
        lab.wait_log("tether-a", "VI_2 removed", T),
        "{}",
        lab.log("tether-a")
    );
    let stopped = lab
        .log("tether-a")
        .lines()
        .any(|l| l.contains("MASTER -> STOP") && l.contains("VI_2"));
    assert!(stopped, "{}", lab.log("tether-a"));
    eprintln!("FIGURE instance removed by reload: its VIP on the backup after {handover:?}");
    // Master_Down_Interval at priority 100 and 100 ms is 361 ms; priority 0 makes it 61 ms.
    assert!(
        handover < Duration::from_millis(300),
        "the backup waited for Master_Down ({handover:?}): no priority 0?"
    );
    assert!(probe3.wait_answer("b", T));
    // VI_1 went on untouched all along.
    assert_eq!(probe.failures_since(start), 0);
    assert_eq!(lab.holders(VIP), ["a"]);
    let b_took_vi1 = lab
        .log("tether-b")
        .lines()
        .any(|l| l.contains("BACKUP -> MASTER") && l.contains("VI_1"));
    assert!(!b_took_vi1, "{}", lab.log("tether-b"));
}

/// A change that cannot be applied in place (here a VRID) restarts that instance alone:
/// the other instance of the daemon keeps its state and its VIP throughout.
#[test]
fn a_vrid_change_restarts_that_instance_only() {
    const VIP3: &str = "192.0.2.102";
    let Some(mut lab) = support::lab("vrelrst", &[("a", 1), ("c", 10)]) else {
        return;
    };
    lab.start_service("a").unwrap();
    let second = |vrid: u8| {
        format!(
            "\n[[instance]]\nname = \"VI_2\"\ninterface = \"eth0\"\nvrid = {vrid}\n\
             priority = 150\nversion = 3\nadvert_interval = \"100ms\"\n\
             virtual_addresses = [\"{VIP3}/24\"]\ngarp_delay = \"0s\"\n"
        )
    };
    lab.start_tether("a", &(config(150, ONE) + &second(52)))
        .unwrap();
    lab.wait_holders(VIP, &["a"], T).unwrap();
    lab.wait_holders(VIP3, &["a"], T).unwrap();
    let probe = lab.start_probe("c", sock(VIP)).unwrap();
    assert!(probe.wait_answer("a", T));
    let start = Instant::now();
    let masters_before = lab.log("tether-a").matches("BACKUP -> MASTER").count();
    lab.write("tether-a.toml", &(config(150, ONE) + &second(53)))
        .unwrap();
    lab.signal("tether-a", Sig::Hup).unwrap();
    assert!(
        lab.wait_log("tether-a", "1 unchanged; VI_2 restarted (vrid changed)", T),
        "{}",
        lab.log("tether-a")
    );
    // VI_2 went through STOP and back to MASTER on its new VRID; VI_1 never moved.
    assert!(
        lab.wait_log_count("tether-a", "BACKUP -> MASTER", masters_before + 1, T),
        "{}",
        lab.log("tether-a")
    );
    lab.wait_holders(VIP3, &["a"], T).unwrap();
    let log = lab.log("tether-a");
    let vi1_moves = log
        .lines()
        .filter(|l| l.contains(" -> ") && l.contains("VI_1"))
        .count();
    assert_eq!(vi1_moves, 2, "VI_1: STOP -> BACKUP -> MASTER once:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("MASTER -> STOP") && l.contains("VI_2")),
        "{log}"
    );
    assert!(probe.wait_streak(Instant::now(), 5, T));
    assert_eq!(probe.failures_since(start), 0);
}
