//! The admission policy, one packet at a time: each row is what arrived and what the
//! instance does with it (admit, count under a reason, ignore), and whether it is logged.

use std::net::IpAddr;

use super::*;
use crate::config::parse;
use crate::packet::{Advert, ChecksumMode, MCAST_V4, MCAST_V6, decode_vrrp};
use tether_health::config::Source;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// VI_1 (VRID 51) and VI_2 (VRID 52) on eth0, both v3 over IPv4, and VI_6 (VRID 53) on
/// eth0 over IPv6; VI_P is a v2 instance with a password on eth1.
const CONFIG: &str = r#"
[[instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
advert_interval = "100ms"
virtual_addresses = ["192.0.2.100/24"]

[[instance]]
name = "VI_2"
interface = "eth0"
vrid = 52
virtual_addresses = ["192.0.2.101/24"]

[[instance]]
name = "VI_6"
interface = "eth0"
vrid = 53
virtual_addresses = ["fe80::53/64", "2001:db8::101/64"]

[[instance]]
name = "VI_P"
interface = "eth1"
vrid = 54
version = 2
advert_interval = "1s"
auth_pass = "secret"
virtual_addresses = ["198.51.100.100/24"]
"#;

/// The admission policy of instance `idx` of [`CONFIG`], sending from `own`.
fn admission(idx: usize, own: &str) -> Admission {
    let cfg = parse(&Source::from_text("vrrp.toml", CONFIG)).unwrap();
    let all: Vec<_> = cfg
        .instances
        .iter()
        .map(|i| (i.interface.clone(), i.vrid, i.is_v6()))
        .collect();
    Admission::new(idx, &all, &cfg.instances[idx], ip(own))
}

/// A v3 advert for VRID `vrid` at priority 200, 1 s, announcing `vips`.
fn v3(vrid: u8, vips: &[&str]) -> Advert {
    Advert {
        version: Version::V3,
        vrid,
        priority: 200,
        interval_field: 100,
        addrs: vips.iter().map(|v| ip(v)).collect(),
        auth: Auth::None,
    }
}

/// What the socket would deliver for `ad` sent from `src` to its group with `ttl`.
fn arrives(ad: &Advert, src: &str, ttl: u8, mode: ChecksumMode) -> Result<Received, DropReason> {
    let src = ip(src);
    let dst = if src.is_ipv6() {
        IpAddr::V6(MCAST_V6)
    } else {
        IpAddr::V4(MCAST_V4)
    };
    decode_vrrp(&ad.encode(src, dst, mode), src, dst, ttl)
}

fn pseudo(ad: &Advert, src: &str, ttl: u8) -> Result<Received, DropReason> {
    arrives(ad, src, ttl, ChecksumMode::PseudoHeader)
}

fn dropped(reason: DropReason, warn: Option<&str>) -> Decision {
    Decision::Drop {
        reason,
        warn: warn.map(ip),
    }
}

fn admitted(src: &str, convention: &'static str, note_convention: bool) -> Decision {
    Decision::Admit {
        src: ip(src),
        priority: 200,
        interval: Duration::from_secs(1),
        convention,
        note_convention,
    }
}

#[test]
fn a_valid_advert_is_admitted_and_an_unusual_checksum_noted_once() {
    let mut vi1 = admission(0, "192.0.2.1");
    let ad = v3(51, &["192.0.2.100"]);
    let peer = "192.0.2.2";
    assert_eq!(
        vi1.decide(pseudo(&ad, peer, 255)),
        admitted(peer, "pseudo-header", true)
    );
    assert_eq!(
        vi1.decide(pseudo(&ad, peer, 255)),
        admitted(peer, "pseudo-header", false)
    );
    let rfc = arrives(&ad, peer, 255, ChecksumMode::Rfc9568);
    assert_eq!(vi1.decide(rfc.clone()), admitted(peer, "rfc9568", true));
    assert_eq!(vi1.decide(rfc), admitted(peer, "rfc9568", false));
}

#[test]
fn every_rejected_advert_is_counted_under_its_reason() {
    let vi1_vip = ["192.0.2.100"];
    let mut bad_interval = v3(51, &vi1_vip);
    bad_interval.interval_field = 0;
    let v4_rows: Vec<(&str, usize, Result<Received, DropReason>, Decision)> = vec![
        (
            "the wrong VRID, counted by the first instance on the interface",
            0,
            pseudo(&v3(77, &vi1_vip), "192.0.2.9", 255),
            dropped(DropReason::UnknownVrid, None),
        ),
        (
            "the wrong VRID, left to the first instance by the second",
            1,
            pseudo(&v3(77, &vi1_vip), "192.0.2.9", 255),
            Decision::Ignore,
        ),
        (
            "a sibling's advert, neither counted nor admitted",
            0,
            pseudo(&v3(52, &["192.0.2.101"]), "192.0.2.9", 255),
            Decision::Ignore,
        ),
        (
            "TTL 254 on a multicast advert",
            0,
            pseudo(&v3(51, &vi1_vip), "192.0.2.9", 254),
            dropped(DropReason::BadTtl, Some("192.0.2.9")),
        ),
        (
            "an advert interval of 0",
            0,
            pseudo(&bad_interval, "192.0.2.9", 255),
            dropped(DropReason::BadInterval, None),
        ),
        (
            "another virtual address list",
            0,
            pseudo(&v3(51, &["192.0.2.199"]), "192.0.2.9", 255),
            dropped(DropReason::AddressMismatch, Some("192.0.2.9")),
        ),
        (
            "our own advert looped back, counted but never logged",
            0,
            pseudo(&v3(51, &vi1_vip), "192.0.2.1", 255),
            dropped(DropReason::Own, None),
        ),
        (
            "a v2 advert on a v3 instance",
            0,
            pseudo(
                &Advert {
                    version: Version::V2,
                    interval_field: 1,
                    ..v3(51, &vi1_vip)
                },
                "192.0.2.9",
                255,
            ),
            dropped(DropReason::BadVersion, Some("192.0.2.9")),
        ),
    ];
    for (what, idx, got, want) in v4_rows {
        assert_eq!(admission(idx, "192.0.2.1").decide(got), want, "{what}");
    }
}

#[test]
fn ipv6_adverts_must_come_from_a_link_local_source() {
    let vips = ["fe80::53", "2001:db8::101"];
    let mut vi6 = admission(2, "fe80::1");
    assert_eq!(
        vi6.decide(pseudo(&v3(53, &vips), "2001:db8::9", 255)),
        dropped(DropReason::SourceNotLinkLocal, None),
    );
    assert_eq!(
        vi6.decide(pseudo(&v3(53, &vips), "fe80::9", 255)),
        admitted("fe80::9", "only", false),
    );
}

#[test]
fn a_v2_password_or_interval_that_differs_is_an_auth_or_interval_mismatch() {
    let vip = ["198.51.100.100"];
    let v2 = |auth: Auth, interval_field: u16| Advert {
        version: Version::V2,
        vrid: 54,
        priority: 200,
        interval_field,
        addrs: vip.iter().map(|v| ip(v)).collect(),
        auth,
    };
    let peer = "198.51.100.2";
    let mut vip_p = admission(3, "198.51.100.1");
    assert_eq!(
        vip_p.decide(pseudo(&v2(Auth::pass("wrong"), 1), peer, 255)),
        dropped(DropReason::AuthMismatch, Some(peer)),
    );
    assert_eq!(
        vip_p.decide(pseudo(&v2(Auth::None, 1), peer, 255)),
        dropped(DropReason::AuthMismatch, None),
        "the same peer for the same reason is logged once"
    );
    assert_eq!(
        vip_p.decide(pseudo(&v2(Auth::pass("secret"), 2), peer, 255)),
        dropped(DropReason::IntervalMismatch, Some(peer)),
    );
    assert_eq!(
        vip_p.decide(pseudo(&v2(Auth::pass("secret"), 1), peer, 255)),
        admitted(peer, "only", false),
    );
}

#[test]
fn a_misconfigured_peer_is_logged_once_per_reason_and_a_flood_of_sources_is_bounded() {
    let mut vi1 = admission(0, "192.0.2.1");
    let foreign = v3(51, &["192.0.2.199"]);
    let mut warned = 0;
    for round in 0..3 {
        for host in 2..=200u8 {
            let src = format!("192.0.2.{host}");
            match vi1.decide(pseudo(&foreign, &src, 255)) {
                Decision::Drop {
                    reason: DropReason::AddressMismatch,
                    warn,
                } => warned += usize::from(warn.is_some()),
                other => panic!("round {round}, {src}: {other:?}"),
            }
        }
    }
    assert_eq!(warned, NOTED_MAX);
}
