//! Config parsing and every validation error, with file and line.

use super::*;

fn parse_text(text: &str) -> Result<Config, ConfigErrors> {
    parse(&Source::from_text("vrrp.toml", text))
}

fn err(text: &str) -> String {
    parse_text(text).unwrap_err().to_string()
}

const FULL: &str = r#"
[admin]
listen = "127.0.0.1:9091"

[[instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
priority = 150
version = 3
advert_interval = "100ms"
preempt = true
preempt_delay = "0s"
virtual_addresses = ["192.0.2.100/24"]
unicast_peers = []
v3_checksum = "pseudo-header"
notify = "/bin/sh a"
garp_repeat = 5
garp_delay = "5s"

[[instance.track]]
kind = "http"
url = "http://127.0.0.1:9090/readyz"
interval = "200ms"
fall = 2
rise = 2
weight = 0

[[instance]]
name = "VI_2"
interface = "eth0"
vrid = 52
virtual_addresses = ["2001:db8::100/64", "fe80::52/64"]

[[sync_group]]
name = "edge"
instances = ["VI_1", "VI_2"]
"#;

#[test]
fn the_issue_example_parses() {
    let c = parse_text(FULL).unwrap();
    assert_eq!(c.admin, Some("127.0.0.1:9091".parse().unwrap()));
    let i = &c.instances[0];
    assert_eq!(i.vrid, 51);
    assert_eq!(i.priority, 150);
    assert_eq!(i.interval_field(), 10);
    assert_eq!(
        i.notify.as_deref(),
        Some(&["/bin/sh".to_string(), "a".to_string()][..])
    );
    assert_eq!(i.tracks.len(), 1);
    assert_eq!(
        i.tracks[0].kind,
        TrackKind::Http {
            addr: "127.0.0.1:9090".parse().unwrap(),
            path: "/readyz".into(),
            host: "127.0.0.1:9090".into(),
            expect_status: 200
        }
    );
    let j = &c.instances[1];
    assert!(j.is_v6());
    assert_eq!(j.priority, 100);
    assert_eq!(j.advert_interval, Duration::from_secs(1));
    assert_eq!(j.interval_field(), 100);
    assert_eq!(c.sync_groups[0].members, vec![0, 1]);
}

fn one(extra: &str) -> String {
    format!(
        "[[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\nvirtual_addresses = [\"192.0.2.100/24\"]\n{extra}\n"
    )
}

#[test]
fn vrid_out_of_range() {
    let e = err(&one("").replace("vrid = 51", "vrid = 256"));
    assert_eq!(
        e,
        "vrple.toml".replace("vrple", "vrrp")
            + ":4: instance[0].vrid: 256 is out of range; vrid must be 1..=255"
    );
    assert!(err(&one("").replace("vrid = 51", "vrid = 0")).contains("vrid must be 1..=255"));
}

#[test]
fn priority_out_of_range() {
    let e = err(&one("priority = 0"));
    assert!(
        e.starts_with("vrrp.toml:6: instance[0].priority: 0 is out of range"),
        "{e}"
    );
    assert!(err(&one("priority = 300")).contains("priority must be 1..=255"));
}

#[test]
fn v2_with_sub_second_interval() {
    let e = err(&one("version = 2\nadvert_interval = \"400ms\""));
    assert!(
        e.starts_with(
            "vrrp.toml:7: instance[0].advert_interval: 400ms is not allowed with version 2"
        ),
        "{e}"
    );
    assert!(parse_text(&one("version = 2\nadvert_interval = \"2s\"")).is_ok());
}

#[test]
fn v3_interval_steps() {
    assert!(err(&one("advert_interval = \"105ms\"")).contains("steps of 10ms"));
    assert!(err(&one("advert_interval = \"41s\"")).contains("10ms..=40.95s"));
    assert!(err(&one("advert_interval = \"0s\"")).contains("10ms..=40.95s"));
    assert_eq!(
        parse_text(&one("advert_interval = \"40.95s\""))
            .unwrap()
            .instances[0]
            .interval_field(),
        4095
    );
}

#[test]
fn mixed_families() {
    let e = err(&one("").replace(
        "[\"192.0.2.100/24\"]",
        "[\"192.0.2.100/24\", \"2001:db8::1/64\"]",
    ));
    assert!(
        e.contains("instance[0].virtual_addresses: mixes IPv4 and IPv6"),
        "{e}"
    );
    assert!(e.starts_with("vrrp.toml:5:"), "{e}");
}

#[test]
fn v2_ipv6() {
    let e = err(&one("version = 2").replace("192.0.2.100/24", "2001:db8::1/64"));
    assert!(e.contains("VRRPv2 is IPv4 only"), "{e}");
}

#[test]
fn bad_vip_and_prefix() {
    assert!(
        err(&one("").replace("192.0.2.100/24", "192.0.2.300"))
            .contains("virtual_addresses[0]: \"192.0.2.300\" is not an address")
    );
    assert!(
        err(&one("").replace("192.0.2.100/24", "192.0.2.1/33"))
            .contains("prefix length must be 0..=32")
    );
    assert!(
        err(&one("").replace("192.0.2.100/24", "224.0.0.18"))
            .contains("cannot be a virtual address")
    );
    assert!(
        err(&one("").replace("[\"192.0.2.100/24\"]", "[]"))
            .contains("at least one virtual address")
    );
    assert_eq!(parse_vip("192.0.2.1").unwrap().prefix, 32);
}

#[test]
fn unicast_peer_family() {
    let e = err(&one("unicast_peers = [\"2001:db8::2\"]"));
    assert!(
        e.contains("instance[0].unicast_peers[0]: \"2001:db8::2\" must be a unicast IPv4 address"),
        "{e}"
    );
    assert!(err(&one("unicast_src = \"192.0.2.1\"")).contains("without unicast_peers"));
    let c = parse_text(&one(
        "unicast_peers = [\"192.0.2.2\"]\nunicast_src = \"192.0.2.1\"",
    ))
    .unwrap();
    assert_eq!(
        c.instances[0].unicast_peers,
        vec!["192.0.2.2".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn auth_pass_rules() {
    assert!(err(&one("auth_pass = \"x\"")).contains("only in VRRPv2"));
    assert!(err(&one("version = 2\nauth_pass = \"123456789\"")).contains("1..=8 bytes"));
    let c = parse_text(&one("version = 2\nauth_pass = \"s3cret\"")).unwrap();
    assert_eq!(c.instances[0].auth, Auth::pass("s3cret"));
}

#[test]
fn unknown_key_is_named_with_line() {
    let e = err(&one("nopreempt = true"));
    assert!(e.starts_with("vrrp.toml:6:"), "{e}");
    assert!(e.contains("nopreempt"), "{e}");
}

#[test]
fn bad_checksum_mode() {
    let e = err(&one("v3_checksum = \"cisco\""));
    assert!(e.contains("pseudo-header") && e.contains("rfc9568"), "{e}");
    let c = parse_text(&one("v3_checksum = \"rfc9568\"")).unwrap();
    assert_eq!(c.instances[0].checksum, ChecksumMode::Rfc9568);
}

#[test]
fn duplicate_names_and_vrids() {
    let t = format!(
        "{}{}",
        one(""),
        one("").replace("192.0.2.100/24", "192.0.2.101/24")
    );
    let e = err(&t);
    // The error names where the first one is, not just that there are two.
    assert!(
        e.contains(
            "vrrp.toml:8: instance[1].name: \"VI_1\" is already the name of instance[0] (line 2); names must be unique"
        ),
        "{e}"
    );
    assert!(e.contains("vrid 51 is already used on eth0"), "{e}");
}

/// One VIP in two instances: each adds and removes it on its own transitions, so one
/// instance's FAULT removes the address the other still holds as master.
#[test]
fn a_vip_in_two_instances_is_refused() {
    let second = one("")
        .replace("VI_1", "VI_2")
        .replace("vrid = 51", "vrid = 52")
        .replace(
            "[\"192.0.2.100/24\"]",
            "[\"192.0.2.7/24\", \"192.0.2.100/24\"]",
        );
    let e = err(&format!("{}{second}", one("")));
    assert_eq!(
        e,
        "vrrp.toml:11: instance[1].virtual_addresses[1]: 192.0.2.100 is already a virtual address \
         of \"VI_1\", instance[0] (line 5); an address can belong to one instance only"
    );
    // A different prefix length is still the same address.
    let e = err(&format!(
        "{}{}",
        one(""),
        second.replace("192.0.2.100/24", "192.0.2.100/32")
    ));
    assert!(
        e.contains("192.0.2.100 is already a virtual address"),
        "{e}"
    );
}

#[test]
fn notify_must_exist_and_timeout_must_be_positive() {
    let e = err(&one("notify = \"/nonexistent/tether-notify.sh MASTER\""));
    assert!(
        e.starts_with(
            "vrrp.toml:6: instance[0].notify: \"/nonexistent/tether-notify.sh\" cannot be run"
        ),
        "{e}"
    );
    let e = err(&one("notify = \"tether-no-such-notify-command\""));
    assert!(e.contains("is not found in PATH"), "{e}");
    // A file that exists but cannot be executed.
    let plain = std::env::temp_dir().join(format!("tether-notify-{}.sh", std::process::id()));
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    let e = err(&one(&format!("notify = \"{}\"", plain.display())));
    let _ = std::fs::remove_file(&plain);
    assert!(e.contains("is not an executable file"), "{e}");
    let e = err(&one("notify = \"/bin/true\"\nnotify_timeout = \"0s\""));
    assert!(
        e.starts_with(
            "vrrp.toml:7: instance[0].notify_timeout: 0s would kill every notify command"
        ),
        "{e}"
    );
    assert!(parse_text(&one("notify = \"true x\"\nnotify_timeout = \"1s\"")).is_ok());
}

#[test]
fn track_errors() {
    let t = |s: &str| err(&format!("{}\n[[instance.track]]\n{s}\n", one("")));
    assert!(t("kind = \"dns\"").contains(
        "instance[0].track[0].kind: \"dns\" is unknown; kind must be http, tcp, exec or interface"
    ));
    assert!(t("kind = \"http\"").contains("http tracks need url"));
    assert!(t("kind = \"http\"\nurl = \"https://x/\"").contains("must start with http://"));
    assert!(
        t("kind = \"http\"\nurl = \"http://lb.example:80/\"")
            .contains("host must be an IP address")
    );
    assert!(t("kind = \"tcp\"\naddress = \"nope\"").contains("is not IP:PORT"));
    assert!(t("kind = \"tcp\"\nurl = \"http://127.0.0.1/\"").contains("do not take `url`"));
    assert!(t("kind = \"exec\"\ncommand = []").contains("exec tracks need command"));
    assert!(t("kind = \"interface\"").contains("interface tracks need interface"));
    assert!(
        t("kind = \"tcp\"\naddress = \"127.0.0.1:1\"\nweight = 300")
            .contains("weight must be -253..=253")
    );
    // 0 would be quietly turned into 1: say it instead (in the words of the health-check
    // schema the three daemons share).
    assert!(
        t("kind = \"tcp\"\naddress = \"127.0.0.1:1\"\nfall = 0").starts_with(
            "vrrp.toml:11: instance[0].track[0].fall: fall is 0; fall must be 1..=1000"
        )
    );
    assert!(
        t("kind = \"tcp\"\naddress = \"127.0.0.1:1\"\nrise = 0").starts_with(
            "vrrp.toml:11: instance[0].track[0].rise: rise is 0; rise must be 1..=1000"
        )
    );
    let e = t("kind = \"tcp\"\naddress = \"127.0.0.1:1\"\nweight = 300");
    assert!(
        e.starts_with("vrrp.toml:11: instance[0].track[0].weight"),
        "{e}"
    );
}

#[test]
fn track_kinds_parse() {
    let text = format!(
        "{}\n[[instance.track]]\nkind = \"tcp\"\naddress = \"127.0.0.1:5551\"\nweight = -60\n[[instance.track]]\nkind = \"exec\"\ncommand = [\"/bin/true\"]\ntimeout = \"2s\"\n[[instance.track]]\nkind = \"interface\"\ninterface = \"eth1\"\nweight = 10\n",
        one("")
    );
    let c = parse_text(&text).unwrap();
    let tr = &c.instances[0].tracks;
    assert_eq!(
        tr[0].kind,
        TrackKind::Tcp {
            addr: "127.0.0.1:5551".parse().unwrap()
        }
    );
    assert_eq!(tr[0].weight, -60);
    assert_eq!(tr[1].timeout, Duration::from_secs(2));
    assert_eq!(
        tr[2].kind,
        TrackKind::Interface {
            name: "eth1".into()
        }
    );
}

#[test]
fn sync_group_errors() {
    let e = err(&format!(
        "{}\n[[sync_group]]\nname = \"g\"\ninstances = [\"VI_1\", \"nope\"]\n",
        one("")
    ));
    assert!(
        e.contains("sync_group[0].instances[1]: no instance named \"nope\""),
        "{e}"
    );
}

#[test]
fn admin_and_empty() {
    assert!(err("[admin]\nlisten = \"x\"\n").contains("admin.listen: \"x\" is not an address"));
    assert!(err("").contains("at least one is required"));
}

#[test]
fn every_error_is_reported_at_once() {
    let e = parse_text(&one("priority = 0\nversion = 4")).unwrap_err();
    assert_eq!(e.0.len(), 2);
}
