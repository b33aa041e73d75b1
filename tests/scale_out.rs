//! Three active balancers announced over BGP (root): each runs `tether lb` in dr mode with
//! `[announce]` and BIRD, a router running BIRD spreads the VIP's flows over them with ECMP,
//! and a balancer dying, joining, draining or losing only its `tether lb` cuts no connection,
//! because every balancer maps a flow to the same server. The scenario is the one
//! `tether demo --tier bgp` runs (`tether_lab::scale_out`).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;
use tether_lab::scale_out::{BALANCERS, PORT, ScaleOut, VIP};
use tether_lab::{Lab, Sig};

/// Flows each balancer's flow map holds (on a fresh map: the flows it has carried).
fn split(sc: &ScaleOut, lbs: &[&str]) -> Vec<(String, u64)> {
    lbs.iter().map(|l| (l.to_string(), sc.flows(l))).collect()
}

#[test]
fn balancers_die_join_drain_and_crash_without_cutting_a_connection() {
    if !can_run() {
        return;
    }
    assert_eq!(
        tether_lab::bird::PROTO_DEGRADED,
        tether_lb::announce::device::PROTO_DEGRADED
    );
    let sc = ScaleOut::build(&Lab::unique_prefix("bgp"), Path::new(TETHER), true)
        .expect("building the lab");
    let routes = sc.watch_routes().expect("ip monitor");
    let within = Duration::from_secs(30);
    sc.start().expect("starting the tier");
    let took = sc
        .wait_paths(&routes, &BALANCERS, within)
        .expect("three paths");
    eprintln!("FIGURE scale-out: the router had three paths {took:?} after the start");
    let lab = &sc.lab;

    // The API says what is announced and how BIRD's session is.
    let state = admin_get(lab, "lb1", "/api/state");
    assert!(state.contains("\"state\":\"announced\""), "{state}");
    assert!(
        state.contains("\"name\":\"upstream\",\"proto\":\"BGP\",\"state\":\"up\""),
        "{state}"
    );
    let m = admin_get(lab, "lb1", "/metrics");
    assert!(
        m.lines()
            .any(|l| l.starts_with("tether_lb_bird_protocol_up{")
                && l.contains("protocol=\"upstream\"")
                && l.ends_with(" 1")),
        "{m}"
    );

    // 16 long-lived connections, and more (up to 48) until every balancer carries some.
    let to: SocketAddr = format!("{VIP}:{PORT}").parse().unwrap();
    let mut conns = open_many(lab, to, 16);
    while split(&sc, &BALANCERS).iter().any(|(_, n)| *n == 0) && conns.len() < 48 {
        conns.push(Conn::open(lab, to, Duration::from_secs(3)).expect("one more"));
    }
    let s = split(&sc, &BALANCERS);
    eprintln!(
        "FIGURE scale-out: {} connections, flows per balancer {s:?}, servers {:?}",
        conns.len(),
        servers(&conns)
    );
    assert!(
        s.iter().all(|(_, n)| *n > 0),
        "the router did not spread: {s:?}"
    );
    let sc = Arc::new(sc);
    let patience = Duration::from_secs(3);

    // lb2 loses power: its cable is cut, tether lb and BIRD die.
    let traffic = Traffic::start(sc.clone(), "c", to, conns, patience);
    sc.kill_box("lb2", Sig::Kill).unwrap();
    let took = sc
        .wait_paths(&routes, &["lb1", "lb3"], within)
        .expect("lb2 withdrawn");
    eprintln!("FIGURE scale-out: power cut: the router dropped lb2 after {took:?}");
    traffic.wait_rounds(10);
    let conns = traffic.stop().check("scale-out", "power cut of lb2");

    // lb2 comes back and joins: the router moves part of the flows to it.
    let traffic = Traffic::start(sc.clone(), "c", to, conns, patience);
    sc.start_box("lb2").unwrap();
    let took = sc
        .wait_paths(&routes, &BALANCERS, within)
        .expect("lb2 back");
    eprintln!("FIGURE scale-out: join: lb2 back in the router's paths after {took:?}");
    traffic.wait_rounds(10);
    let conns = traffic.stop().check("scale-out", "lb2 joining");
    eprintln!(
        "FIGURE scale-out: after the join, flows per balancer {:?}",
        split(&sc, &BALANCERS)
    );

    // lb3 drains: SIGTERM withdraws first, then it forwards for stop_delay and stops.
    let traffic = Traffic::start(sc.clone(), "c", to, conns, patience);
    let t = Instant::now();
    sc.lab.signal("lb-lb3", Sig::Term).unwrap();
    let took = sc
        .wait_paths(&routes, &["lb1", "lb2"], within)
        .expect("lb3 withdrawn");
    // Withdrawn first: the route went while tether lb was still forwarding (stop_delay 2 s).
    let still = sc.lab.state("lb-lb3").unwrap();
    assert!(
        still.is_running(),
        "lb3 exited ({still:?}) before its route was withdrawn"
    );
    assert!(took < Duration::from_secs(2), "withdrawn after {took:?}");
    let exit = sc.lab.wait_exit("lb-lb3", T).unwrap();
    assert!(!exit.is_running(), "lb3 still running after its stop");
    eprintln!(
        "FIGURE scale-out: drain: lb3 withdrawn after {took:?}, stopped after {:?} ({exit:?})",
        t.elapsed()
    );
    traffic.wait_rounds(10);
    let conns = traffic.stop().check("scale-out", "lb3 draining");

    // lb1's balancer is SIGKILLed while its host and BIRD stay up: its announcement dies
    // with the process. Its rules stay in the kernel, so what still arrives is forwarded.
    let traffic = Traffic::start(sc.clone(), "c", to, conns, patience);
    sc.lab.signal("lb-lb1", Sig::Kill).unwrap();
    let took = sc
        .wait_paths(&routes, &["lb2"], within)
        .expect("lb1 withdrawn");
    eprintln!("FIGURE scale-out: crash: lb1's route gone from the router after {took:?}");
    // A restart takes over the table the dead process left, and announces again.
    sc.lab.wait_exit("lb-lb1", T).unwrap();
    sc.start_box("lb1").unwrap();
    let took = sc
        .wait_paths(&routes, &["lb1", "lb2"], within)
        .expect("lb1 back");
    eprintln!("FIGURE scale-out: crash: lb1 announced again {took:?} after its restart");
    traffic.wait_rounds(10);
    let conns = traffic
        .stop()
        .check("scale-out", "lb1's balancer crashing and restarting");
    assert!(conns.len() >= 16);
    drop(routes);
    let sc = Arc::try_unwrap(sc).unwrap_or_else(|_| panic!("lab still shared"));
    drop(sc);
    assert_host_untouched();
}

/// The kernel side of `[announce]` without BIRD: a route per VIP, IPv4 and IPv6, marked
/// degraded (protocol 217) while its frontend has no live server with `degraded =
/// "announce"`, and normal (216) once a server is up.
#[test]
fn degraded_and_ipv6_vips_are_offered_with_their_marks() {
    if !can_run() {
        return;
    }
    let lab = Lab::builder(&Lab::unique_prefix("ann"))
        .network("lan", "203.0.113.0/24")
        .ipv6("lan", "2001:db8::/64")
        .host("lb1", &[("lan", 11)])
        .host("s1", &[("lan", 21)])
        .build()
        .expect("building the lab");
    let cfg = write(
        &lab,
        "lb.toml",
        "[admin]\nlisten = \"127.0.0.1:9090\"\n\n[announce]\ndegraded = \"announce\"\n\n\
         [[frontend]]\nname = \"v4\"\nmode = \"dr\"\nbind = [\"192.0.2.100:5551\"]\ninterface = \"eth0\"\nbackend = \"be4\"\n\n\
         [[frontend]]\nname = \"v6\"\nmode = \"dr\"\nbind = [\"[2001:db8::100]:5551\"]\ninterface = \"eth0\"\nbackend = \"be6\"\n\n\
         [[backend]]\nname = \"be4\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 1\n\
         [[backend.server]]\nname = \"s1\"\naddress = \"203.0.113.21:5551\"\n\n\
         [[backend]]\nname = \"be6\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 1\n\
         [[backend.server]]\nname = \"s1\"\naddress = \"[2001:db8::21]:5551\"\n",
    );
    let lb = start(&lab, "lb", "lb1", &["lb", "--config", &cfg]);
    let routes = |v: &str| {
        let out = lab
            .exec("lb1", &["ip", v, "route", "show", "table", "7474"])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // Both VIPs reach `what`, in either order.
    let reach = |what: &str| {
        let mut left = vec!["vip=192.0.2.100", "vip=2001:db8::100"];
        while !left.is_empty() {
            let l = lb.wait_for(what, |l| l.contains(what)).unwrap();
            left.retain(|v| !l.contains(v));
        }
    };
    // No server yet: both offered, marked degraded.
    reach("VIP announced as degraded");
    assert!(
        routes("-4").contains("192.0.2.100 dev tether-vip proto 217"),
        "{}",
        routes("-4")
    );
    assert!(
        routes("-6").contains("2001:db8::100 dev tether-vip proto 217"),
        "{}",
        routes("-6")
    );
    // The server comes up: both announced normally.
    start_echo(&lab, "s1", "[::]:5551");
    reach("VIP announced vip=");
    assert!(
        routes("-4").contains("192.0.2.100 dev tether-vip proto 216"),
        "{}",
        routes("-4")
    );
    assert!(
        routes("-6").contains("2001:db8::100 dev tether-vip proto 216"),
        "{}",
        routes("-6")
    );
    let state = admin_get(&lab, "lb1", "/api/state");
    assert!(
        state.contains("\"device\":\"tether-vip\",\"table\":7474"),
        "{state}"
    );
    // A clean stop withdraws both and the device goes.
    lab.signal("lb", Sig::Term).unwrap();
    assert!(!lab.wait_exit("lb", T).unwrap().is_running());
    let out = lab
        .exec("lb1", &["ip", "link", "show", "tether-vip"])
        .unwrap();
    assert!(!out.status.success(), "the device outlived the process");
    drop(lab);
    assert_host_untouched();
}
