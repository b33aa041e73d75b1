//! `tether lb` with `mode = "dr"` in a namespace lab (root): balancers forward packets in the
//! kernel, servers answer the client directly from the VIP on their loopback
//! (`tether dr-server`), and a balancer's death costs a retransmission, not a connection.
//!
//! One bridge: balancers lb1 (.11) and lb2 (.12), servers s1..s3 (.21..23), client c (.50),
//! VIP 192.0.2.100; the bridge also has 2001:db8::/64 (hosts at 2001:db8::<octet>, VIP
//! 2001:db8::100).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tether_lab::{Lab, Sig};

const VIP: &str = "192.0.2.100";
const PORT: u16 = 5551;

fn lab(tag: &str) -> Lab {
    Lab::builder(&Lab::unique_prefix(tag))
        .network("lan", "192.0.2.0/24")
        .ipv6("lan", "2001:db8::/64")
        .host("lb1", &[("lan", 11)])
        .host("lb2", &[("lan", 12)])
        .host("s1", &[("lan", 21)])
        .host("s2", &[("lan", 22)])
        .host("s3", &[("lan", 23)])
        .host("c", &[("lan", 50)])
        .build()
        .expect("building the lab")
}

fn lb_config(vip: &str, servers: &[(&str, &str)], extra_backend: &str) -> String {
    let mut s = format!(
        "[admin]\nlisten = \"127.0.0.1:9090\"\n\n[defaults]\nstop_delay = \"1s\"\n\n[[frontend]]\nname = \"svc\"\nmode = \"dr\"\nbind = [\"{vip}\"]\ninterface = \"eth0\"\nbackend = \"be\"\n\n[[backend]]\nname = \"be\"\n{extra_backend}\n[backend.health]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 2\nfall = 2\n"
    );
    for (name, addr) in servers {
        s.push_str(&format!(
            "\n[[backend.server]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
    }
    s
}

fn three_servers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("s1", "192.0.2.21:5551"),
        ("s2", "192.0.2.22:5551"),
        ("s3", "192.0.2.23:5551"),
    ]
}

/// The client reaches the VIP through `via` as a router would send it (the balancer does not
/// hold the VIP): what a BGP-announced tier looks like to a balancer.
fn route_vip_via(lab: &Lab, vip: &str, via: &str) {
    let out = lab
        .exec("c", &["ip", "route", "replace", vip, "via", via])
        .expect("ip route");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn vip_holder_dying_with_its_port_up_cuts_no_connection() {
    if !can_run() {
        return;
    }
    let lab = lab("drha");
    for s in ["s1", "s2", "s3"] {
        start_server(&lab, s, &[VIP], "0.0.0.0:5551");
    }
    let to: SocketAddr = format!("{VIP}:{PORT}").parse().unwrap();
    let lb_cfg = write(
        &lab,
        "lb.toml",
        &lb_config(&format!("{VIP}:{PORT}"), &three_servers(), ""),
    );
    let vrrp = |prio: u8| {
        format!(
            "[[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\npriority = {prio}\nversion = 3\nadvert_interval = \"100ms\"\nvirtual_addresses = [\"{VIP}/24\"]\n\n[[instance.track]]\nkind = \"http\"\nurl = \"http://127.0.0.1:9090/readyz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2\nrise = 2\nweight = 0\n"
        )
    };
    let mut lbs = Vec::new();
    for (host, prio) in [("lb1", 150), ("lb2", 100)] {
        let l = start(
            &lab,
            &format!("lb-{host}"),
            host,
            &["lb", "--config", &lb_cfg],
        );
        l.wait(&["forwarding table applied"])
            .expect("rules applied");
        let v = write(&lab, &format!("vrrp-{host}.toml"), &vrrp(prio));
        let f = start(
            &lab,
            &format!("vrrp-{host}"),
            host,
            &["vrrp", "--config", &v],
        );
        lbs.push((l, f));
    }
    lbs[0].1.wait(&["-> MASTER"]).expect("lb1 master");
    // Backups keep the table installed: the takeover needs nothing but the VIP move.
    assert!(tables_in(&lab, "lb2").contains("tether_lb"));

    let mut conns = open_many(&lab, to, 8);
    all_exchange(&mut conns).unwrap();
    eprintln!("FIGURE dr: 8 connections on servers {:?}", servers(&conns));

    // Exchanges on the 8 connections and new connections run through the failure.
    let lab = std::sync::Arc::new(lab);
    let traffic = Traffic::start(lab.clone(), "c", to, conns, Duration::from_secs(3));

    // lb1 dies with its port up: every frame to and from it is dropped, its daemons die.
    let dead = write(
        &lab,
        "dead.nft",
        "table netdev dead {\n chain in { type filter hook ingress device \"eth0\" priority -500; drop; }\n chain out { type filter hook egress device \"eth0\" priority -500; drop; }\n}\n",
    );
    let out = lab.exec("lb1", &["nft", "-f", &dead]).unwrap();
    assert!(out.status.success(), "{out:?}");
    lab.signal("lb-lb1", Sig::Kill).unwrap();
    lab.signal("vrrp-lb1", Sig::Kill).unwrap();
    lbs[1].1.wait(&["-> MASTER"]).expect("lb2 takes over");

    // Keep going a little after the takeover, then stop both loops.
    let _ = Conn::open(&lab, to, Duration::from_secs(3)).and_then(|mut c| c.exchange());
    let conns = traffic
        .stop()
        .check("dr", "VIP holder died with its port up");
    assert_eq!(conns.len(), 8);
    drop(lbs);
    let lab = std::sync::Arc::try_unwrap(lab).unwrap_or_else(|_| panic!("lab still shared"));
    drop(lab);
    assert_host_untouched();
}

#[test]
fn servers_join_die_drain_and_reload_without_cutting_other_flows() {
    if !can_run() {
        return;
    }
    let lab = lab("drops");
    // The balancer does not hold the VIP: the client routes it via lb1.
    route_vip_via(&lab, VIP, "192.0.2.11");
    let to: SocketAddr = format!("{VIP}:{PORT}").parse().unwrap();
    start_server(&lab, "s1", &[VIP], "0.0.0.0:5551");
    start_server(&lab, "s2", &[VIP], "0.0.0.0:5551");
    // s3 is prepared but its service is not running yet.
    start(&lab, "dr-s3", "s3", &["dr-server", "--vip", VIP])
        .wait(&["VIPs on lo"])
        .unwrap();
    let cfg = write(
        &lab,
        "lb.toml",
        &lb_config(&format!("{VIP}:{PORT}"), &three_servers(), ""),
    );
    let lb = start(&lab, "lb", "lb1", &["lb", "--config", &cfg]);
    lb.wait_table(&["s1", "s2"]).unwrap();

    let mut first = open_many(&lab, to, 12);
    all_exchange(&mut first).unwrap();
    assert!(!servers(&first).contains(&"s3".to_string()));

    // A server joins: it takes only new flows.
    start_echo(&lab, "s3", "0.0.0.0:5551");
    lb.wait_table(&["s1", "s2", "s3"]).unwrap();
    all_exchange(&mut first).expect("a joining server cut a flow");
    let mut second = open_many(&lab, to, 30);
    all_exchange(&mut second).unwrap();
    assert!(
        servers(&second).contains(&"s3".to_string()),
        "{:?}",
        servers(&second)
    );

    // A server dies: only its flows are cut.
    lab.stop("echo-s2", Duration::from_secs(2)).unwrap();
    lb.wait_table(&["s1", "s3"]).unwrap();
    let (mut on_s2, mut others): (Vec<Conn>, Vec<Conn>) = first
        .into_iter()
        .chain(second)
        .partition(|c| c.server == "s2");
    all_exchange(&mut others).expect("a dying server cut another server's flow");
    assert!(on_s2.iter_mut().all(|c| c.exchange().is_err()));

    // Drain: no new flows for s1, its open ones continue.
    let r = admin_post(&lab, "lb1", "/api/servers/be/s1", r#"{"state":"drain"}"#);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    lb.wait_table(&["s3"]).unwrap();
    let mut third = open_many(&lab, to, 20);
    all_exchange(&mut third).unwrap();
    assert!(!servers(&third).contains(&"s1".to_string()));
    all_exchange(&mut others).expect("draining cut a flow");

    // Reload (SIGHUP) with new weights: open flows keep their servers.
    std::fs::write(
        &cfg,
        lb_config(
            &format!("{VIP}:{PORT}"),
            &three_servers(),
            "", // the same servers...
        )
        .replace(
            "name = \"s3\"\naddress = \"192.0.2.23:5551\"\n",
            "name = \"s3\"\naddress = \"192.0.2.23:5551\"\nweight = 3\n",
        ),
    )
    .unwrap();
    lab.signal("lb", Sig::Hup).unwrap();
    lb.wait(&["configuration reloaded"]).unwrap();
    all_exchange(&mut others).expect("a reload cut a flow");
    all_exchange(&mut third).expect("a reload cut a flow");

    // The kernel's counters and the flow maps reach /metrics and /api/state.
    let m = admin_get(&lab, "lb1", "/metrics");
    assert!(
        metric(
            &m,
            "tether_lb_dr_forwarded_packets_total{backend=\"be\",server=\"s1\"}"
        ) > 0.0,
        "{m}"
    );
    assert!(metric(&m, "tether_lb_dr_flows{") >= 1.0, "{m}");
    assert!(metric(&m, "tether_lb_dr_table_changes_total") >= 4.0, "{m}");
    let st = admin_get(&lab, "lb1", "/api/state");
    assert!(st.contains("\"mode\":\"dr\""), "{st}");
    assert!(st.contains("\"installed\":true"), "{st}");
    let stats = admin_get(&lab, "lb1", "/stats");
    assert!(
        stats.contains("Forwarding (mode = dr)") && stats.contains("<td>installed</td>"),
        "{stats}"
    );

    // SIGTERM removes the table.
    lab.signal("lb", Sig::Term).unwrap();
    lb.wait(&["forwarding table removed"]).unwrap();
    lab.wait_exit("lb", T).unwrap();
    assert!(!tables_in(&lab, "lb1").contains("tether_lb"));
    drop(lb);
    drop(lab);
    assert_host_untouched();
}

/// A SYN sent to a server that has died but is not yet known down is recorded in the flow
/// map against it; its retransmission, once the server is down, goes to a live server. When
/// the dead server comes back, that connection must stay where it was established: going
/// back would have the returned server answer it with a reset.
#[test]
fn a_flow_rehashed_while_its_server_was_down_stays_when_the_server_returns() {
    if !can_run() {
        return;
    }
    let lab = lab("drback");
    route_vip_via(&lab, VIP, "192.0.2.11");
    let to: SocketAddr = format!("{VIP}:{PORT}").parse().unwrap();
    // Health is checked on its own port, so the test decides when s2 is known down apart
    // from when its service stops answering.
    let check = |name: &str, host: &str| {
        start(
            &lab,
            name,
            host,
            &["echo", "--listen", "0.0.0.0:6000", "--banner", host],
        )
        .wait(&["echo server ready"])
        .expect("check listener");
    };
    for host in ["s1", "s2"] {
        start_server(&lab, host, &[VIP], "0.0.0.0:5551");
        check(&format!("check-{host}"), host);
    }
    let cfg = write(
        &lab,
        "lb.toml",
        &lb_config(&format!("{VIP}:{PORT}"), &three_servers()[..2], "")
            .replace("fall = 2\n", "fall = 2\nport = 6000\n"),
    );
    let lb = start(&lab, "lb", "lb1", &["lb", "--config", &cfg]);
    lb.wait_table(&["s1", "s2"]).unwrap();

    // s2 dies unnoticed: its service drops every packet while its check still answers.
    let blackhole = write(
        &lab,
        "blackhole.nft",
        "table inet blackhole {\n chain in { type filter hook input priority 0; tcp dport 5551 drop; }\n}\n",
    );
    let out = lab.exec("s2", &["nft", "-f", &blackhole]).unwrap();
    assert!(out.status.success(), "{out:?}");
    // Of 16 new flows, those hashed to s2 hang in SYN_SENT (all 16 land on s1 with
    // probability 2^-16).
    let started = start_connects(&lab, "c", to, 16);
    let (on_s1, to_s2) = await_connects(started, Duration::from_millis(500));
    assert!(!to_s2.is_empty(), "no flow hashed to s2");

    // s2 is found down; the retransmitted SYNs go to s1.
    lab.stop("check-s2", Duration::from_secs(2)).unwrap();
    lb.wait_table(&["s1"]).unwrap();
    let (moved, stuck) = await_connects(to_s2, Duration::from_secs(5));
    assert!(
        stuck.is_empty(),
        "{} connections never established",
        stuck.len()
    );
    let mut conns: Vec<Conn> = on_s1
        .into_iter()
        .chain(moved)
        .map(|s| Conn::from_stream(s).expect("banner"))
        .collect();
    assert_eq!(servers(&conns), ["s1"]);
    all_exchange(&mut conns).unwrap();

    // s2 comes back: new flows reach it again, and every open flow stays on s1.
    let out = lab
        .exec("s2", &["nft", "delete", "table", "inet", "blackhole"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    check("check-s2-again", "s2");
    lb.wait_table(&["s1", "s2"]).unwrap();
    all_exchange(&mut conns).expect("a flow went back to the server that returned");
    let fresh = open_many(&lab, to, 16);
    assert!(servers(&fresh).contains(&"s2".to_string()));
    drop(lb);
    drop(lab);
    assert_host_untouched();
}

#[test]
fn ipv6_vip_is_forwarded_with_fwd_ip6() {
    if !can_run() {
        return;
    }
    let lab = lab("dr6");
    let vip6 = "2001:db8::100";
    route_vip_via(&lab, &format!("{vip6}/128"), "2001:db8::11");
    for s in ["s1", "s2"] {
        start_server(&lab, s, &[vip6], "[::]:5551");
    }
    let cfg = write(
        &lab,
        "lb.toml",
        &lb_config(
            &format!("[{vip6}]:{PORT}"),
            &[("s1", "[2001:db8::21]:5551"), ("s2", "[2001:db8::22]:5551")],
            "",
        ),
    );
    let lb = start(&lab, "lb", "lb1", &["lb", "--config", &cfg]);
    lb.wait(&["forwarding table applied"]).unwrap();
    let to: SocketAddr = format!("[{vip6}]:{PORT}").parse().unwrap();
    let mut conns = open_many(&lab, to, 16);
    all_exchange(&mut conns).unwrap();
    assert_eq!(servers(&conns), vec!["s1".to_string(), "s2".to_string()]);
    drop(lb);
    drop(lab);
    assert_host_untouched();
}

#[test]
fn start_errors_name_what_is_missing() {
    if !can_run() {
        return;
    }
    let lab = lab("drerr");
    let bad_if = write(
        &lab,
        "bad-if.toml",
        &lb_config(&format!("{VIP}:{PORT}"), &three_servers(), "")
            .replace("interface = \"eth0\"", "interface = \"nope0\""),
    );
    let off_link = write(
        &lab,
        "off-link.toml",
        &lb_config(
            &format!("{VIP}:{PORT}"),
            &[("far", "198.51.100.7:5551")],
            "",
        ),
    );
    for (name, cfg, want) in [
        ("lb-if", &bad_if, "interface \"nope0\" does not exist"),
        ("lb-off", &off_link, "not on the link of interface \"eth0\""),
    ] {
        let f = start(&lab, name, "lb1", &["lb", "--config", cfg]);
        let st = lab.wait_exit(name, T).unwrap();
        assert!(!st.is_running(), "{name}: {st}");
        f.wait(&[want])
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", lab.log(name)));
        assert!(!tables_in(&lab, "lb1").contains("tether_lb"));
    }
    drop(lab);
    assert_host_untouched();
}
