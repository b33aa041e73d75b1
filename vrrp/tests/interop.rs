//! Interop with Debian's keepalived 2.2.7 in network namespaces (root), for v2 at 1 s and
//! v3 at 100 ms, with Tether as the higher and as the lower priority: the right node wins
//! and failover works both ways. tshark decodes Tether's adverts with a good checksum.

mod support;

use std::time::Duration;

use support::tshark_fields;
use tether_lab::Sig;
use tether_lab::vrrp::{Keepalived, VrrpLab as Lab, install_peers, tether_config};

/// Same child entry point as in netns.rs: this binary re-executed as a daemon.
#[test]
fn daemon_child() {
    support::run_daemon_child_if_asked();
}

struct Case {
    version: u8,
    vrid: u8,
    vip: &'static str,
    tether_int: &'static str,
    ka_int: &'static str,
    timeout: Duration,
    /// Longer than the peer's Master_Down_Interval (3 x interval + skew).
    steady: Duration,
}

const V2: Case = Case {
    version: 2,
    vrid: 51,
    vip: "192.0.2.100",
    tether_int: "1s",
    ka_int: "1",
    timeout: Duration::from_secs(15),
    steady: Duration::from_millis(4500),
};
const V3: Case = Case {
    version: 3,
    vrid: 52,
    vip: "192.0.2.101",
    tether_int: "100ms",
    ka_int: "0.1",
    timeout: Duration::from_secs(8),
    steady: Duration::from_millis(700),
};

fn lab() -> Option<Lab> {
    let lab = support::lab("ka", &[("a", 1), ("b", 2), ("c", 10)])?;
    install_peers();
    Some(lab)
}

fn tether(c: &Case, prio: u8) -> String {
    tether_config(
        "VI_1",
        c.vrid,
        prio,
        c.version,
        c.tether_int,
        &[&format!("{}/24", c.vip)],
        "",
    )
}

fn keepalived(c: &Case, node: &str, prio: u8) -> String {
    Keepalived {
        router: &format!("ka_{node}"),
        name: "VI_1",
        vrid: c.vrid,
        prio,
        version: c.version,
        interval: c.ka_int,
    }
    .config(&[&format!("{}/24", c.vip)], "")
}

/// Tether on a (150), keepalived on b (100).
fn tether_higher(c: &Case) {
    let Some(lab) = lab() else { return };
    lab.start_tether("a", &tether(c, 150)).unwrap();
    lab.start_keepalived("b", &keepalived(c, "b", 100)).unwrap();
    lab.wait_holders(c.vip, &["a"], c.timeout).unwrap();
    assert!(
        lab.wait_log("ka-b", "Entering BACKUP STATE", c.timeout),
        "keepalived never became backup:\n{}",
        lab.log("ka-b")
    );
    // keepalived accepts our adverts: it stays backup past its Master_Down_Interval.
    lab.hold_steady(c.vip, &["a"], c.steady).unwrap();
    assert!(
        !lab.log("ka-b").contains("Entering MASTER STATE"),
        "{}",
        lab.log("ka-b")
    );
    // Our SIGTERM sends priority 0: keepalived takes over.
    lab.signal("tether-a", Sig::Term).unwrap();
    lab.wait_holders(c.vip, &["b"], c.timeout).unwrap();
    // Back again: we preempt keepalived, and it lets go.
    lab.start_tether("a", &tether(c, 150)).unwrap();
    lab.wait_holders(c.vip, &["a"], c.timeout).unwrap();
    let ka = lab.log("ka-b");
    assert!(ka.contains("Entering MASTER STATE"), "{ka}");
    assert!(
        !ka.contains("Invalid"),
        "keepalived complained about our packets:\n{ka}"
    );
}

/// keepalived on a (150), Tether on b (100).
fn tether_lower(c: &Case) {
    let Some(lab) = lab() else { return };
    lab.start_keepalived("a", &keepalived(c, "a", 150)).unwrap();
    lab.start_tether("b", &tether(c, 100)).unwrap();
    lab.wait_holders(c.vip, &["a"], c.timeout).unwrap();
    assert!(
        lab.wait_log("tether-b", "-> BACKUP", c.timeout),
        "{}",
        lab.log("tether-b")
    );
    // We accept keepalived's adverts: we stay backup past our Master_Down_Interval.
    lab.hold_steady(c.vip, &["a"], c.steady).unwrap();
    // keepalived stops (priority 0): we take over.
    lab.signal("ka-a", Sig::Term).unwrap();
    assert!(!lab.wait_exit("ka-a", c.timeout).unwrap().is_running());
    lab.wait_holders(c.vip, &["b"], c.timeout).unwrap();
    assert!(
        lab.log("tether-b").contains("BACKUP -> MASTER"),
        "{}",
        lab.log("tether-b")
    );
    // keepalived returns and preempts: we step down.
    lab.start_keepalived("a", &keepalived(c, "a", 150)).unwrap();
    lab.wait_holders(c.vip, &["a"], c.timeout).unwrap();
    assert!(
        lab.wait_log("tether-b", "MASTER -> BACKUP", c.timeout),
        "{}",
        lab.log("tether-b")
    );
    assert!(!lab.log("ka-a").contains("Invalid"), "{}", lab.log("ka-a"));
}

#[test]
fn keepalived_v3_100ms_tether_higher() {
    tether_higher(&V3);
}

#[test]
fn keepalived_v3_100ms_tether_lower() {
    tether_lower(&V3);
}

#[test]
fn keepalived_v2_1s_tether_higher() {
    tether_higher(&V2);
}

#[test]
fn keepalived_v2_1s_tether_lower() {
    tether_lower(&V2);
}

#[test]
fn keepalived_v3_unicast_interop() {
    let Some(lab) = lab() else { return };
    let vip = "192.0.2.102";
    let extra_ka = "    unicast_src_ip 192.0.2.2\n    unicast_peer {\n        192.0.2.1\n    }\n";
    let ka = Keepalived {
        router: "ka_b",
        name: "VI_UC",
        vrid: 54,
        prio: 100,
        version: 3,
        interval: "0.1",
    };
    lab.start_keepalived("b", &ka.config(&[&format!("{vip}/24")], extra_ka))
        .unwrap();
    lab.start_tether(
        "a",
        &tether_config(
            "VI_UC",
            54,
            150,
            3,
            "100ms",
            &[&format!("{vip}/24")],
            "unicast_peers = [\"192.0.2.2\"]",
        ),
    )
    .unwrap();
    lab.wait_holders(vip, &["a"], V3.timeout).unwrap();
    assert!(
        lab.wait_log("ka-b", "Entering BACKUP STATE", V3.timeout),
        "{}",
        lab.log("ka-b")
    );
    lab.hold_steady(vip, &["a"], V3.steady).unwrap();
    lab.signal("tether-a", Sig::Term).unwrap();
    lab.wait_holders(vip, &["b"], V3.timeout).unwrap();
}

#[test]
fn tshark_decodes_tether_adverts_with_good_checksums() {
    let Some(lab) = lab() else { return };
    // Four instances on one node: v2, v3 keepalived-style, v3 RFC 9568-style, v3 IPv6.
    let cfg = [
        tether_config("V2", 51, 150, 2, "1s", &["192.0.2.100/24"], ""),
        tether_config("V3", 52, 150, 3, "100ms", &["192.0.2.101/24"], ""),
        tether_config(
            "V3R",
            55,
            150,
            3,
            "100ms",
            &["192.0.2.105/24"],
            "v3_checksum = \"rfc9568\"",
        ),
        tether_config(
            "V6",
            53,
            150,
            3,
            "100ms",
            &["fe80::53/64", "2001:db8::101/64"],
            "",
        ),
    ]
    .join("\n");
    lab.start_tether("a", &cfg).unwrap();
    // Every instance master before the capture starts: the 1 s v2 one takes about 3.5 s
    // (three missed adverts plus skew), and a capture begun on the 100 ms ones alone
    // caught a single v2 advert.
    lab.wait_holders("192.0.2.101", &["a"], V3.timeout).unwrap();
    lab.wait_holders("192.0.2.100", &["a"], V2.timeout).unwrap();
    let pcap = lab.dir().join("adverts.pcapng");
    // Bounded capture: 3.5 s of protocol 112 (at least 3 v2 adverts at 1 s).
    let st = lab
        .exec(
            "c",
            &[
                "tshark",
                "-q",
                "-i",
                "eth0",
                "-n",
                "-a",
                "duration:3.5",
                "-f",
                "ip proto 112 or ip6 proto 112",
                "-w",
                &pcap.to_string_lossy(),
            ],
        )
        .expect("tshark capture");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let f = [
        "vrrp.virt_rtr_id",
        "vrrp.version",
        "vrrp.checksum.status",
        "ip.ttl",
        "ip.len",
        "ipv6.hlim",
        "ipv6.src",
        "vrrp.prio",
    ];
    let rows = tshark_fields(&pcap, "vrrp", &[], &f);
    let by = |vrid: &str| {
        rows.iter()
            .filter(|r| r[0] == vrid)
            .cloned()
            .collect::<Vec<_>>()
    };
    let (v2, v3, v3r, v6) = (by("51"), by("52"), by("55"), by("53"));
    assert!(
        v2.len() >= 2 && v3.len() >= 10 && v3r.len() >= 10 && v6.len() >= 10,
        "{rows:?}"
    );
    for r in v2.iter().chain(&v3).chain(&v6) {
        assert_eq!(r[2], "1", "checksum not Good under tshark's default: {r:?}");
        assert_eq!(r[7], "150");
    }
    for r in v2.iter().chain(&v3).chain(&v3r) {
        assert_eq!(r[3], "255", "TTL {r:?}");
    }
    assert!(v2.iter().all(|r| r[1] == "2" && r[4] == "40"), "{v2:?}");
    assert!(v3.iter().all(|r| r[1] == "3" && r[4] == "32"), "{v3:?}");
    for r in &v6 {
        assert_eq!(r[5], "255", "hop limit {r:?}");
        assert!(
            r[6].starts_with("fe80::"),
            "IPv6 source must be link-local: {r:?}"
        );
    }
    // The RFC 9568 instance is Bad under the default and Good with tshark's
    // "checksum as in v2" preference; the keepalived-style one is the other way round.
    assert!(v3r.iter().all(|r| r[2] == "0"), "{v3r:?}");
    let alt = tshark_fields(&pcap, "vrrp && ip", &["vrrp.v3_checksum_as_in_v2:TRUE"], &f);
    for r in alt.iter().filter(|r| r[0] == "55") {
        assert_eq!(r[2], "1", "{r:?}");
    }
    for r in alt.iter().filter(|r| r[0] == "52") {
        assert_eq!(r[2], "0", "{r:?}");
    }
}

#[test]
fn keepalived_v3_ipv6_interop_both_ways() {
    let Some(lab) = lab() else { return };
    let vips = ["fe80::53/64", "2001:db8::101/64"];
    let probe_vip = "2001:db8::101";
    let ka = |prio| Keepalived {
        router: "ka_a",
        name: "VI_V3_6",
        vrid: 53,
        prio,
        version: 3,
        interval: "0.1",
    };
    // keepalived higher, Tether lower.
    lab.start_keepalived("a", &ka(150).config(&vips, ""))
        .unwrap();
    lab.start_tether(
        "b",
        &tether_config("VI_V3_6", 53, 100, 3, "100ms", &vips, ""),
    )
    .unwrap();
    lab.wait_holders(probe_vip, &["a"], V3.timeout).unwrap();
    assert!(
        lab.wait_log("tether-b", "-> BACKUP", V3.timeout),
        "{}",
        lab.log("tether-b")
    );
    lab.hold_steady(probe_vip, &["a"], V3.steady).unwrap();
    lab.signal("ka-a", Sig::Term).unwrap();
    assert!(!lab.wait_exit("ka-a", V3.timeout).unwrap().is_running());
    lab.wait_holders(probe_vip, &["b"], V3.timeout).unwrap();
    // keepalived comes back at a lower priority than ours: it stays backup, accepting
    // our IPv6 adverts (link-local source, pseudo-header checksum, hop limit 255).
    lab.start_keepalived("a", &ka(50).config(&vips, ""))
        .unwrap();
    assert!(
        lab.wait_log_count("ka-a", "Entering BACKUP STATE", 2, V3.timeout),
        "{}",
        lab.log("ka-a")
    );
    lab.hold_steady(probe_vip, &["b"], Duration::from_millis(1500))
        .unwrap();
    lab.signal("tether-b", Sig::Term).unwrap();
    lab.wait_holders(probe_vip, &["a"], V3.timeout).unwrap();
    assert!(!lab.log("ka-a").contains("Invalid"), "{}", lab.log("ka-a"));
}
