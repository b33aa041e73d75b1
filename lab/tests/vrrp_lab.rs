//! Tests of the VRRP lab itself, as root: both address families on the LAN, VIP holders
//! followed through address changes, a log followed as it grows, the service and the
//! probe, and an IPv6 prefix outside 2001:db8::/32 refused.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tether_lab::vrrp::{Daemon, LAN, SERVICE_PORT, VrrpLab};
use tether_lab::{Lab, LabError, ProcSpec};

const T: Duration = Duration::from_secs(5);
/// How long a wait that must fail is given.
const SHORT: Duration = Duration::from_millis(300);

fn lab() -> Option<VrrpLab> {
    // No daemon is started by these tests.
    let daemon = Daemon::Binary("/bin/false".into());
    VrrpLab::new("vlab", &[("a", 1), ("b", 2), ("c", 10)], daemon).unwrap()
}

fn ip(lab: &VrrpLab, host: &str, args: &str) {
    let args: Vec<&str> = args.split(' ').collect();
    let out = lab.exec(host, &args).unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
}

#[test]
fn holders_follow_a_vip_moving_between_hosts() {
    let Some(lab) = lab() else { return };
    assert_eq!(lab.holders("192.0.2.100"), Vec::<String>::new());
    ip(&lab, "a", "ip addr add 192.0.2.100/24 dev eth0");
    lab.wait_holders("192.0.2.100", &["a"], T).unwrap();
    let err = lab.wait_holders("192.0.2.100", &["b"], SHORT).unwrap_err();
    assert!(err.contains("held by [\"a\"]"), "{err}");
    lab.hold_steady("192.0.2.100", &["a"], SHORT).unwrap();
    ip(&lab, "b", "ip addr add 192.0.2.100/24 dev eth0");
    lab.wait_holders_until("192.0.2.100", |h| h.len() == 2, T)
        .unwrap();
    assert!(lab.hold_steady("192.0.2.100", &["a"], SHORT).is_err());
    ip(&lab, "a", "ip addr del 192.0.2.100/24 dev eth0");
    lab.wait_holders("192.0.2.100", &["b"], T).unwrap();
}

#[test]
fn the_lan_has_both_families_and_the_probe_reaches_the_service_over_each() {
    let Some(mut lab) = lab() else { return };
    assert_eq!(lab.addr6("a", LAN).unwrap().to_string(), "2001:db8::1");
    assert_eq!(lab.addr6("c", LAN).unwrap().to_string(), "2001:db8::10");
    lab.start_service("a").unwrap();
    for to in ["192.0.2.1", "[2001:db8::1]"] {
        let vip: SocketAddr = format!("{to}:{SERVICE_PORT}").parse().unwrap();
        let probe = lab.start_probe("c", vip).unwrap();
        assert!(probe.wait_answer("a", T), "no answer from a at {vip}");
    }
    // A link-local address exists at once (no DAD), as a VRRP advert source needs.
    let out = lab
        .exec("a", &["ip", "-6", "addr", "show", "dev", "eth0"])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fe80::"), "{text}");
    assert!(!text.contains("tentative"), "{text}");
}

#[test]
fn a_log_is_followed_as_it_grows() {
    let Some(lab) = lab() else { return };
    let spec = ProcSpec::new("talker", "a", "/bin/sh")
        .args(["-c", "echo one; echo two; echo two; exec sleep 30"]);
    lab.start(spec).unwrap();
    assert!(
        lab.wait_log_count("talker", "two", 2, T),
        "{}",
        lab.log("talker")
    );
    assert!(!lab.wait_log_count("talker", "two", 3, SHORT));
    assert!(!lab.wait_log("talker", "three", SHORT));
}

#[test]
fn an_ipv6_prefix_outside_the_documentation_range_is_refused() {
    let e = Lab::builder("vlab6")
        .network(LAN, "192.0.2.0/24")
        .ipv6(LAN, "fd00::/64")
        .build()
        .unwrap_err();
    assert!(matches!(e, LabError::NotDocumentation(_)), "{e}");
    let e = Lab::builder("vlab6")
        .ipv6("nowhere", "2001:db8::/64")
        .build()
        .unwrap_err();
    assert!(matches!(e, LabError::Spec(_)), "{e}");
    assert!(!Path::new("/run/netns/vlab6-net-lan").exists());
}
