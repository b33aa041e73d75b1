use super::*;
use tether_health::config::Source;
use tether_vrrp::config::{TrackKind, Vip};
use tether_vrrp::packet::{Auth, Version};

/// Two instances (IPv4 v2 with unicast and PASS, IPv6), a script, a sync group and an LVS
/// direct-routing virtual server, as a keepalived 2.2 user writes them.
const PAIR: &str = r#"! lb1
global_defs {
    router_id LB1
    vrrp_garp_master_delay 2
}

vrrp_script chk_lb {
    script "/usr/bin/curl -sf 'http://127.0.0.1:9090/readyz'"
    interval 2
    timeout 1
    weight -20
    rise 2
    fall 3
}

vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    nopreempt
    authentication {
        auth_type PASS
        auth_pass s3cret
    }
    unicast_src_ip 192.0.2.1
    unicast_peer {
        192.0.2.2
    }
    virtual_ipaddress {
        192.0.2.100/24 dev eth0
        192.0.2.101/24 dev eth1 label eth1:0
    }
    track_script {
        chk_lb weight -30
    }
    track_interface {
        eth1 weight -10
    }
    notify "/bin/true"
    notify_master /etc/keepalived/master.sh
}

vrrp_instance VI_6
{
    state BACKUP
    interface eth0
    virtual_router_id 52
    priority 100
    advert_int 0.5
    preempt_delay 5
    virtual_ipaddress {
        2001:db8::100/64
    }
    track_script { chk_lb }
    use_vmac
}

vrrp_sync_group G1 {
    group {
        VI_1
        VI_6
    }
}

virtual_server 192.0.2.100 80 {
    delay_loop 6
    lb_algo wlc
    lb_kind DR
    protocol TCP
    persistence_timeout 50
    real_server 192.0.2.11 80 {
        weight 2
        HTTP_GET {
            url {
                path /healthz
                status_code 200
            }
            connect_port 8080
            connect_timeout 3
            retry 2
            delay_before_retry 1
        }
    }
    real_server 192.0.2.12 80 {
        weight 1
        HTTP_GET { url { path /healthz } }
    }
    sorry_server 192.0.2.50 80
}

virtual_server 198.51.100.10 443 {
    lb_kind NAT
    real_server 10.0.0.1 443 { weight 1 }
}

virtual_server 203.0.113.5 25 {
    lb_kind DR
    real_server 203.0.113.20 25 {
        SMTP_CHECK { helo_name x }
    }
}
"#;

fn vrrp(toml: &str) -> tether_vrrp::Config {
    match tether_vrrp::config::parse(&Source::from_text("vrrp.toml", toml)) {
        Ok(c) => c,
        Err(e) => panic!("{e}\n{toml}"),
    }
}

/// Every `vrrp_instance`'s (name, priority, VIPs) read straight from the keepalived text.
fn keepalived_vips_and_priorities(text: &str) -> Vec<(String, u8, Vec<String>)> {
    let tree = parse(text).unwrap();
    tree.iter()
        .filter(|n| n.key() == "vrrp_instance")
        .map(|n| {
            let prio = n
                .children()
                .iter()
                .find(|c| c.key() == "priority")
                .map_or(100, |c| c.arg(1).parse().unwrap());
            let vips = n
                .children()
                .iter()
                .find(|c| c.key() == "virtual_ipaddress")
                .map(|c| c.items().iter().map(|(_, w)| w[0].clone()).collect())
                .unwrap_or_default();
            (n.arg(1).to_string(), prio, vips)
        })
        .collect()
}

#[test]
fn instances_keep_their_vips_and_priorities_and_pass_tether_vrrp_validation() {
    let c = convert(PAIR, "keepalived.conf").unwrap();
    let cfg = vrrp(c.file("vrrp.toml").unwrap());
    let converted: Vec<(String, u8, Vec<String>)> = cfg
        .instances
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                i.priority,
                i.vips
                    .iter()
                    .map(|v| format!("{}/{}", v.addr, v.prefix))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(converted, keepalived_vips_and_priorities(PAIR));
}

#[test]
fn every_instance_setting_maps_to_its_tether_key() {
    let c = convert(PAIR, "keepalived.conf").unwrap();
    let cfg = vrrp(c.file("vrrp.toml").unwrap());
    let v4 = &cfg.instances[0];
    assert_eq!(
        (v4.interface.as_str(), v4.vrid, v4.version, v4.preempt),
        ("eth0", 51, Version::V2, false)
    );
    assert_eq!(v4.advert_interval, Duration::from_secs(1));
    assert_eq!(v4.auth, Auth::pass("s3cret"));
    assert_eq!(v4.unicast_src, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(v4.unicast_peers, ["192.0.2.2".parse::<IpAddr>().unwrap()]);
    assert_eq!(v4.notify.as_deref(), Some(&["/bin/true".to_string()][..]));
    assert_eq!(v4.garp_delay, Duration::from_secs(2));
    let exec = &v4.tracks[0];
    assert_eq!(
        exec.kind,
        TrackKind::Exec {
            argv: vec![
                "/usr/bin/curl".into(),
                "-sf".into(),
                "http://127.0.0.1:9090/readyz".into()
            ]
        }
    );
    assert_eq!(
        (
            exec.interval,
            exec.timeout,
            exec.rise,
            exec.fall,
            exec.weight
        ),
        (Duration::from_secs(2), Duration::from_secs(1), 2, 3, -30)
    );
    let link = &v4.tracks[1];
    assert_eq!(
        (&link.kind, link.weight),
        (
            &TrackKind::Interface {
                name: "eth1".into()
            },
            -10
        )
    );

    let v6 = &cfg.instances[1];
    assert_eq!(
        v6.version,
        Version::V3,
        "IPv6 VIPs make a version-3 instance"
    );
    assert_eq!(v6.advert_interval, Duration::from_millis(500));
    assert_eq!(v6.preempt_delay, Duration::from_secs(5));
    assert_eq!(
        v6.vips,
        [Vip {
            addr: "2001:db8::100".parse().unwrap(),
            prefix: 64
        }]
    );
    assert_eq!(v6.tracks[0].weight, -20, "the vrrp_script's own weight");
    assert_eq!(cfg.sync_groups[0].name, "G1");
    assert_eq!(cfg.sync_groups[0].members, [0, 1]);
}

#[test]
fn what_has_no_equivalent_is_reported_by_line() {
    let c = convert(PAIR, "k.conf").unwrap();
    let got: Vec<String> = c.warnings.iter().map(|w| w.render("k.conf")).collect();
    let heads: Vec<&str> = got
        .iter()
        .map(|g| g.split(": not carried").next().unwrap())
        .collect();
    assert_eq!(
        heads,
        [
            "k.conf:3: router_id LB1",
            "k.conf:33: 192.0.2.101/24 dev eth1",
            "k.conf:33: 192.0.2.101/24 label eth1:0",
            "k.conf:42: notify_master",
            "k.conf:57: use_vmac",
            "k.conf:72: persistence_timeout 50",
            "k.conf:83: delay_before_retry 1",
            "k.conf:93: virtual_server 198.51.100.10 443",
            "k.conf:98: virtual_server 203.0.113.5 25",
            "k.conf:101: SMTP_CHECK",
        ],
        "{}",
        got.join("\n")
    );
    assert!(
        got[7].ends_with("NAT and TUN are not converted"),
        "{}",
        got[7]
    );
    assert!(got[8].contains("write this frontend by hand"), "{}", got[8]);
}

/// The text of the dr frontend; `dr_import_passes_tether_lb_check` below validates it.
#[test]
fn a_direct_routing_virtual_server_becomes_a_dr_frontend() {
    let c = convert(PAIR, "keepalived.conf").unwrap();
    let lb = c.file("lb.toml").unwrap();
    let frontend = r#"# keepalived.conf:67: virtual_server 192.0.2.100 80
[[frontend]]
name = "vs_192.0.2.100_80"
mode = "dr"
bind = ["192.0.2.100:80"]
interface = "eth0"  # the link of the vrrp_instance holding the VIP or the servers' subnet
backend = "vs_192.0.2.100_80"
"#;
    let backend = r#"# keepalived.conf:67: virtual_server 192.0.2.100 80
[[backend]]
name = "vs_192.0.2.100_80"
balance = "leastconn"

# keepalived.conf:75: HTTP_GET
[backend.health]
kind = "http"
rise = 1  # keepalived puts a server back on its first good check
path = "/healthz"
expect_status = 200
port = 8080
timeout = "3s"
fall = 3  # retry 2: the failure and 2 retries
interval = "6s"

# keepalived.conf:73: real_server 192.0.2.11 80
[[backend.server]]
name = "rs_192.0.2.11_80"
address = "192.0.2.11:80"
weight = 2

# keepalived.conf:86: real_server 192.0.2.12 80
[[backend.server]]
name = "rs_192.0.2.12_80"
address = "192.0.2.12:80"
weight = 1

# keepalived.conf:90: sorry_server 192.0.2.50 80
[[backend.server]]
name = "rs_192.0.2.50_80"
address = "192.0.2.50:80"
backup = true  # sorry_server: used when no real server is up
"#;
    assert!(lb.contains(frontend), "{lb}");
    assert!(lb.contains(backend), "{lb}");
    assert!(!lb.contains("198.51.100.10"), "NAT is not converted");
}

#[test]
fn dr_import_passes_tether_lb_check() {
    let c = convert(PAIR, "keepalived.conf").unwrap();
    let lb = c.file("lb.toml").unwrap();
    if let Err(e) = tether_lb::Config::from_source(&Source::from_text("lb.toml", lb)) {
        panic!("{e}\n{lb}");
    }
}

#[test]
fn a_dr_frontend_takes_the_link_of_the_instance_on_the_servers_subnet() {
    let conf = "vrrp_instance V { interface bond0\n virtual_router_id 9\n virtual_ipaddress { 10.1.0.5/16 }\n }\n\
                virtual_server 198.51.100.7 443 {\n lb_kind DR\n real_server 10.1.2.3 443 {\n TCP_CHECK { connect_timeout 2 }\n }\n }\n";
    let c = convert(conf, "k").unwrap();
    let lb = c.file("lb.toml").unwrap();
    assert!(lb.contains("interface = \"bond0\""), "{lb}");
    assert!(lb.contains("kind = \"tcp\"\nrise = 1"), "{lb}");
    assert!(
        lb.contains("interval = \"60s\""),
        "keepalived's delay_loop default: {lb}"
    );
}

#[test]
fn v2_sub_second_adverts_are_rounded_and_reported() {
    let conf = "vrrp_instance V {\n interface eth0\n virtual_router_id 9\n advert_int 0.3\n virtual_ipaddress { 192.0.2.5 }\n}\n";
    let c = convert(conf, "k").unwrap();
    let cfg = vrrp(c.file("vrrp.toml").unwrap());
    assert_eq!(cfg.instances[0].advert_interval, Duration::from_secs(1));
    assert_eq!(c.warnings[0].line, 4);
    let conf = conf.replace(" interface", " vrrp_version 3\n interface");
    let c = convert(&conf, "k").unwrap();
    assert_eq!(
        vrrp(c.file("vrrp.toml").unwrap()).instances[0].advert_interval,
        Duration::from_millis(300)
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn input_that_is_not_a_keepalived_conf_is_a_parse_error() {
    for (conf, line) in [
        ("vrrp_instance V {\n interface eth0\n", 1),
        ("}\n", 1),
        ("", 1),
        ("{\n", 1),
        ("vrrp_script s {\n script \"/bin/true\n}\n", 2),
        ("global_defs {\n router_id x\n}\n", 3),
    ] {
        let e = convert(conf, "k").unwrap_err();
        assert_eq!(e.line, line, "{conf:?}: {e}");
    }
}

#[test]
fn blocks_open_on_the_same_or_the_next_line_and_close_anywhere() {
    let tree = parse("a b {\n c\n d { e f }\n}\ng\n{\nh }\n").unwrap();
    let shape: Vec<(String, usize)> = tree
        .iter()
        .map(|n| (n.label(9), n.children().len()))
        .collect();
    assert_eq!(shape, [("a b".to_string(), 2), ("g".to_string(), 1)]);
    assert_eq!(tree[0].children()[1].items()[0].1, ["e", "f"]);
}
