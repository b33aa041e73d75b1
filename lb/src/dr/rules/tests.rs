use super::*;

fn fe(name: &str, v6: bool) -> FrontendRules {
    let (vip, s1, s2): (IpAddr, IpAddr, IpAddr) = if v6 {
        (
            "2001:db8::100".parse().unwrap(),
            "2001:db8::21".parse().unwrap(),
            "2001:db8::22".parse().unwrap(),
        )
    } else {
        (
            "192.0.2.100".parse().unwrap(),
            "192.0.2.21".parse().unwrap(),
            "192.0.2.22".parse().unwrap(),
        )
    };
    FrontendRules {
        name: name.into(),
        backend: "be".into(),
        interface: "eth0".into(),
        binds: vec![SocketAddr::new(vip, 5551)],
        v6,
        flow_timeout: Duration::from_secs(900),
        flow_size: 65536,
        live: vec![
            ServerRule { mark: 11, addr: s1 },
            ServerRule { mark: 27, addr: s2 },
        ],
        slots: vec![11, 27, 11, 27],
    }
}

fn desired(frontends: Vec<FrontendRules>) -> Desired {
    Desired {
        table: "tether_lb".into(),
        frontends,
    }
}

#[test]
fn a_first_apply_replaces_the_table_in_the_same_transaction() {
    let s = desired(vec![fe("svc-a", false)]).script(None);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "add table netdev tether_lb");
    assert_eq!(lines[1], "delete table netdev tether_lb");
    assert_eq!(lines[2], "add table netdev tether_lb");
}

#[test]
fn the_frontend_chain_looks_up_checks_hashes_records_and_forwards() {
    let f = fe("svc-a", false);
    let s = desired(vec![f.clone()]).script(None);
    let c = format!("add rule netdev tether_lb {} ", frontend_chain(&f));
    let rules: Vec<&str> = s.lines().filter_map(|l| l.strip_prefix(&c)).collect();
    let map = flow_map(&f);
    assert_eq!(rules[0], "meta mark set 0");
    assert_eq!(
        rules[1],
        format!("meta mark set tcp sport . tcp dport . ip saddr map @{map}")
    );
    assert_eq!(
        rules[2],
        format!(
            "meta mark != 0 meta mark != {{ 0x0000000b, 0x0000001b }} delete @{map} {{ tcp sport . tcp dport . ip saddr : meta mark }} meta mark set 0"
        )
    );
    assert_eq!(
        rules[3],
        "meta mark 0 meta mark set jhash ip saddr . tcp sport mod 4 seed 0x74657468 map { 0 : 0x0000000b, 1 : 0x0000001b, 2 : 0x0000000b, 3 : 0x0000001b }"
    );
    assert!(rules[4].starts_with("meta mark != 0 update @"));
    assert_eq!(
        rules[5],
        "meta mark 0x0000000b counter name \"s_0000000b\" fwd ip to 192.0.2.21 device \"eth0\""
    );
    assert!(rules[7].ends_with(" drop"));
    assert_eq!(rules.len(), 8);
}

#[test]
fn ipv6_frontends_use_ip6_everywhere() {
    let s = desired(vec![fe("svc6", true)]).script(None);
    assert!(s.contains("fwd ip6 to 2001:db8::21 device \"eth0\""));
    assert!(s.contains("jhash ip6 saddr . tcp sport"));
    assert!(s.contains("ip6 daddr . tcp dport vmap { 2001:db8::100 . 5551 : jump"));
    assert!(s.contains(": mark ; flags dynamic,timeout"));
    assert!(s.contains("inet_service . inet_service . ipv6_addr"));
}

#[test]
fn without_any_server_every_packet_is_counted_and_dropped() {
    let mut f = fe("svc-a", false);
    f.live.clear();
    f.slots.clear();
    let s = desired(vec![f.clone()]).script(None);
    let c = format!("add rule netdev tether_lb {} ", frontend_chain(&f));
    let rules: Vec<&str> = s.lines().filter_map(|l| l.strip_prefix(&c)).collect();
    assert_eq!(
        rules,
        vec![
            "meta mark set 0".to_string(),
            format!("counter name \"{}\" drop", no_server_counter("svc-a"))
        ]
    );
}

#[test]
fn a_draining_server_keeps_its_flows_but_takes_no_slot() {
    let mut f = fe("svc-a", false);
    f.slots = vec![11, 11, 11, 11];
    let s = desired(vec![f]).script(None);
    assert!(s.contains("fwd ip to 192.0.2.22"));
    assert!(s.contains("meta mark != { 0x0000000b, 0x0000001b }"));
}

#[test]
fn a_change_keeps_flow_maps_and_removes_only_what_went_away() {
    let before = desired(vec![fe("svc-a", false), fe("svc-b", false)]);
    let mut after_fe = fe("svc-a", false);
    after_fe.live.pop();
    after_fe.slots = vec![11; 4];
    let after = desired(vec![after_fe.clone()]);
    let s = after.script(Some(&before.objects()));
    assert!(!s.contains("delete table"));
    assert!(s.contains(&format!(
        "add map netdev tether_lb {} ",
        flow_map(&after_fe)
    )));
    let gone = fe("svc-b", false);
    assert!(s.contains(&format!(
        "delete chain netdev tether_lb {}",
        frontend_chain(&gone)
    )));
    assert!(s.contains(&format!("delete map netdev tether_lb {}", flow_map(&gone))));
    assert!(s.contains("delete counter netdev tether_lb s_0000001b"));
    assert!(!s.contains(&format!(
        "delete map netdev tether_lb {}",
        flow_map(&after_fe)
    )));
    // The stale chain is emptied before it is deleted, and deleted after the base
    // chain that jumped to it was flushed.
    let pos = |needle: &str| s.find(needle).unwrap();
    let gone_chain = frontend_chain(&gone);
    assert!(
        pos(&format!(
            "flush chain netdev tether_lb {}",
            base_chain("eth0")
        )) < pos(&format!("delete chain netdev tether_lb {gone_chain}"))
    );
}

#[test]
fn an_interface_that_goes_away_loses_its_base_chain() {
    let before = desired(vec![fe("svc-a", false)]);
    let mut moved = fe("svc-a", false);
    moved.interface = "eth1".into();
    let s = desired(vec![moved]).script(Some(&before.objects()));
    let old = base_chain("eth0");
    let flush = s
        .find(&format!("flush chain netdev tether_lb {old}"))
        .unwrap();
    let delete = s
        .find(&format!("delete chain netdev tether_lb {old}"))
        .unwrap();
    assert!(flush < delete);
    assert!(s.contains("device \"eth1\" priority 0"));
}

#[test]
fn names_are_nft_identifiers() {
    for name in ["svc-a", "a.b_c", "x"] {
        let f = fe(name, false);
        for n in [frontend_chain(&f), flow_map(&f), no_server_counter(name)] {
            assert!(
                n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{n}"
            );
        }
    }
    assert_eq!(
        base_chain("eth0.100"),
        format!("in_eth0_100_{}", &tag("eth0.100")[..4])
    );
}
