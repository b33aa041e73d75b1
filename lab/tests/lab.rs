//! Tests of the lab itself, as root: networks, routing, the firewall, processes, and that
//! nothing is left behind after drop, panic, SIGTERM or SIGKILL.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tether_lab::{Lab, LabError, ProcSpec, ProcState, Sig, existing_namespaces};

/// Namespace tests must run wherever they can: only a non-root user may skip them.
fn can_run() -> bool {
    match tether_lab::available() {
        Ok(()) => true,
        Err(e) => {
            // SAFETY: geteuid(2) cannot fail.
            assert_ne!(unsafe { libc::geteuid() }, 0, "running as root but {e}");
            eprintln!("SKIP: {e}");
            false
        }
    }
}

/// The reference scenario's three networks, joined by a firewalled router.
fn three_networks(prefix: &str) -> Result<Lab, LabError> {
    Lab::builder(prefix)
        .network("cloud", "192.0.2.0/24")
        .network("onprem", "198.51.100.0/24")
        .network("inet", "203.0.113.0/24")
        .router("fw", &[("cloud", 254), ("onprem", 254), ("inet", 254)])
        .firewall("fw", "onprem")
        .host("c", &[("cloud", 10)])
        .host("o", &[("onprem", 10)])
        .host("i", &[("inet", 10)])
        .build()
}

/// Accepts connections on a thread and echoes what it reads, until the listener is dropped
/// with the test (bounded: at most `n` connections).
fn echo(l: TcpListener, n: usize) {
    std::thread::spawn(move || {
        for s in l.incoming().take(n) {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 64];
            if let Ok(k) = s.read(&mut buf) {
                let _ = s.write_all(&buf[..k]);
            }
        }
    });
}

fn exchange(lab: &Lab, from: &str, to: SocketAddr) -> Result<String, String> {
    let mut s = lab
        .connect(from, to, Duration::from_millis(500))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"hello").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The machine's own links, addresses and routes, minus what other labs running beside
/// this test may be doing (they touch nothing here either, but docker may).
fn root_view() -> String {
    let mut v = String::new();
    for args in [&["-br", "addr"][..], &["route"][..]] {
        let out = Command::new("ip").args(args).output().unwrap();
        v.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    v.lines()
        .filter(|l| !l.contains("docker") && !l.contains("br-") && !l.contains("veth"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn routes_between_networks_and_the_firewall_drops_inbound_to_onprem() {
    if !can_run() {
        return;
    }
    let prefix = Lab::unique_prefix("net");
    let before = root_view();
    let lab = three_networks(&prefix).expect("building the lab");
    assert_eq!(lab.addr("c", "cloud").unwrap().to_string(), "192.0.2.10");
    assert_eq!(
        lab.addr("o", "onprem").unwrap().to_string(),
        "198.51.100.10"
    );
    assert_eq!(lab.addr("fw", "inet").unwrap().to_string(), "203.0.113.254");
    let c: SocketAddr = "192.0.2.10:7000".parse().unwrap();
    let o: SocketAddr = "198.51.100.10:7000".parse().unwrap();
    echo(lab.listen("c", c).unwrap(), 10);
    echo(lab.listen("o", o).unwrap(), 10);

    // Outbound from on-prem and in from the internet reach the cloud, through the router.
    assert_eq!(exchange(&lab, "o", c).as_deref(), Ok("hello"));
    assert_eq!(exchange(&lab, "i", c).as_deref(), Ok("hello"));
    assert_eq!(exchange(&lab, "c", c).as_deref(), Ok("hello"));
    // Nothing may open a connection into on-prem from outside; inside it works.
    for from in ["c", "i"] {
        let err = exchange(&lab, from, o).expect_err("the firewall must drop this");
        assert!(
            err.contains("timed out") || err.contains("unreachable"),
            "{from}: {err}"
        );
    }
    // The listener in `o` really is there: the firewall, not a missing server, dropped them.
    let out = lab
        .exec("o", &["ip", "-br", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("198.51.100.10/24"));

    // The machine's own namespace gained nothing: the same links, addresses and routes.
    assert_eq!(
        root_view(),
        before,
        "the lab changed the machine's own namespace"
    );

    // A cut cable isolates the host; healing it restores the path.
    lab.cut("c", "cloud").unwrap();
    assert!(exchange(&lab, "o", c).is_err());
    lab.heal("c", "cloud").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while exchange(&lab, "o", c).is_err() {
        assert!(Instant::now() < deadline, "no path after heal");
    }

    let made = lab.namespaces();
    assert_eq!(made.len(), 3 + 4, "{made:?}");
    drop(lab);
    assert_eq!(existing_namespaces(&prefix), Vec::<String>::new());
}

#[test]
fn ipv6_routes_between_networks_and_the_firewall_drops_inbound_to_onprem_too() {
    if !can_run() {
        return;
    }
    let prefix = Lab::unique_prefix("net6");
    let lab = Lab::builder(&prefix)
        .network("cloud", "192.0.2.0/24")
        .network("onprem", "198.51.100.0/24")
        .network("inet", "203.0.113.0/24")
        .ipv6("cloud", "2001:db8:2::/64")
        .ipv6("onprem", "2001:db8:100::/64")
        .ipv6("inet", "2001:db8:113::/64")
        .router("fw", &[("cloud", 254), ("onprem", 254), ("inet", 254)])
        .firewall("fw", "onprem")
        .host("c", &[("cloud", 10)])
        .host("o", &[("onprem", 10)])
        .host("i", &[("inet", 10)])
        .build()
        .expect("building the lab");
    assert_eq!(
        lab.addr6("o", "onprem").unwrap().to_string(),
        "2001:db8:100::10"
    );
    let c: SocketAddr = "[2001:db8:2::10]:7000".parse().unwrap();
    let o: SocketAddr = "[2001:db8:100::10]:7000".parse().unwrap();
    echo(lab.listen("c", c).unwrap(), 10);
    echo(lab.listen("o", o).unwrap(), 10);

    // The router forwards IPv6 and every host has an IPv6 default route through it. The
    // first IPv6 path of a fresh lab often answers only after about a second (measured:
    // 3 of 4 runs, 1.02 s, at the neighbour solicitation's first retransmission), so the
    // first exchange may be retried within a bound.
    let deadline = Instant::now() + Duration::from_secs(5);
    while exchange(&lab, "o", c).is_err() {
        assert!(Instant::now() < deadline, "no IPv6 path from o to c");
    }
    assert_eq!(exchange(&lab, "i", c).as_deref(), Ok("hello"));
    // The firewall's rule holds for the IPv6 prefix as for the IPv4 one.
    for from in ["c", "i"] {
        let err = exchange(&lab, from, o).expect_err("the firewall must drop this");
        assert!(
            err.contains("timed out") || err.contains("unreachable"),
            "{from}: {err}"
        );
    }
    drop(lab);
    assert_eq!(existing_namespaces(&prefix), Vec::<String>::new());
}

#[test]
fn processes_run_inside_their_host_and_stop_restart_and_die_with_the_lab() {
    if !can_run() {
        return;
    }
    let prefix = Lab::unique_prefix("proc");
    let lab = Lab::builder(&prefix)
        .network("n", "198.51.100.0/24")
        .host("a", &[("n", 1)])
        .build()
        .unwrap();
    // A process sees the host's network, not the machine's.
    lab.start(ProcSpec::new("addr", "a", "ip").args(["-br", "addr"]))
        .unwrap();
    let st = lab.wait_exit("addr", Duration::from_secs(5)).unwrap();
    assert_eq!(
        st,
        ProcState::Exited {
            code: Some(0),
            signal: None
        }
    );
    assert!(
        lab.log("addr").contains("198.51.100.1/24"),
        "{}",
        lab.log("addr")
    );

    let pid = lab
        .start(ProcSpec::new("sleeper", "a", "sleep").args(["60"]))
        .unwrap();
    assert_eq!(lab.state("sleeper").unwrap(), ProcState::Running(pid));
    assert!(matches!(
        lab.start(ProcSpec::new("sleeper", "a", "sleep").args(["60"])),
        Err(LabError::AlreadyRunning(_))
    ));
    let st = lab.stop("sleeper", Duration::from_secs(5)).unwrap();
    assert_eq!(
        st,
        ProcState::Exited {
            code: None,
            signal: Some(15)
        }
    );
    let pid2 = lab.restart("sleeper").unwrap();
    assert_ne!(pid, pid2);
    lab.signal("sleeper", Sig::Kill).unwrap();
    let st = lab.wait_exit("sleeper", Duration::from_secs(5)).unwrap();
    assert_eq!(
        st,
        ProcState::Exited {
            code: None,
            signal: Some(9)
        }
    );
    let pid3 = lab.restart("sleeper").unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid3}")).exists());
    assert!(matches!(
        lab.state("nope"),
        Err(LabError::UnknownProcess(_))
    ));
    assert!(matches!(
        lab.start(ProcSpec::new("x", "nohost", "true")),
        Err(LabError::UnknownHost(_))
    ));

    drop(lab);
    // Reaped by the teardown: the pid is gone (it was our child, so it cannot be reused
    // before we reaped it).
    assert!(!std::path::Path::new(&format!("/proc/{pid3}/exe")).exists());
    assert_eq!(existing_namespaces(&prefix), Vec::<String>::new());
}

#[test]
fn refuses_anything_outside_the_documentation_ranges_before_touching_the_system() {
    let prefix = Lab::unique_prefix("bad");
    for cidr in [
        "10.0.0.0/24",
        "192.168.1.0/24",
        "172.16.0.0/16",
        "192.0.2.0/16",
    ] {
        let r = Lab::builder(&prefix)
            .network("n", cidr)
            .host("a", &[("n", 1)])
            .build();
        assert!(
            matches!(r, Err(LabError::NotDocumentation(_))),
            "{cidr}: {r:?}"
        );
    }
    let r = Lab::builder(&prefix)
        .network("n", "192.0.2.0/24")
        .host("a", &[("m", 1)])
        .build();
    assert!(matches!(r, Err(LabError::Spec(_))), "{r:?}");
    let r = Lab::builder(&prefix)
        .network("n", "192.0.2.0/24")
        .host("a", &[("n", 1)])
        .host("b", &[("n", 1)])
        .build();
    assert!(matches!(r, Err(LabError::Spec(_))), "{r:?}");
    assert_eq!(existing_namespaces(&prefix), Vec::<String>::new());
}

#[test]
fn a_panicking_test_leaves_no_namespace() {
    if !can_run() {
        return;
    }
    let prefix = Lab::unique_prefix("pan");
    let p2 = prefix.clone();
    let r = std::panic::catch_unwind(move || {
        let lab = three_networks(&p2).unwrap();
        assert_eq!(existing_namespaces(&p2).len(), 7);
        lab.start(ProcSpec::new("s", "o", "sleep").args(["60"]))
            .unwrap();
        panic!("a test failing half-way");
    });
    assert!(r.is_err());
    assert_eq!(existing_namespaces(&prefix), Vec::<String>::new());
}

/// Not a test on its own: the child process of the signal tests. Builds a lab with the
/// prefix it is given, starts a process in it, reports, and waits to be signalled.
#[test]
fn lab_child_process() {
    let Ok(prefix) = std::env::var("TETHER_LAB_CHILD_PREFIX") else {
        return;
    };
    let lab = three_networks(&prefix).unwrap();
    let pid = lab
        .start(ProcSpec::new("s", "o", "sleep").args(["60"]))
        .unwrap();
    println!("READY {pid}");
    let _ = std::io::stdout().flush();
    // Bounded: the parent signals long before this.
    std::thread::sleep(Duration::from_secs(60));
    drop(lab);
}

fn spawn_child(prefix: &str) -> (std::process::Child, u32) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lab_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TETHER_LAB_CHILD_PREFIX", prefix)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text.contains('\n') || !text.contains("READY") {
        assert!(Instant::now() < deadline, "child never got ready: {text}");
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "child exited early: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let pid = text
        .split("READY ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    (child, pid)
}

fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        // A zombie still has /proc/pid but no exe link.
        if !std::path::Path::new(&format!("/proc/{pid}/exe")).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn sigterm_and_sigint_tear_the_lab_down() {
    if !can_run() {
        return;
    }
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let prefix = Lab::unique_prefix("sig");
        let (mut child, pid) = spawn_child(&prefix);
        assert_eq!(existing_namespaces(&prefix).len(), 7);
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(128 + sig), "exit status {st:?}");
        assert_eq!(existing_namespaces(&prefix), Vec::<String>::new());
        assert!(wait_gone(pid), "the lab's process {pid} survived");
    }
}

#[test]
fn after_a_sigkill_processes_die_and_the_next_lab_reclaims_the_namespaces() {
    if !can_run() {
        return;
    }
    let prefix = Lab::unique_prefix("kil");
    let (mut child, pid) = spawn_child(&prefix);
    // The running lab is protected from a second one with its name.
    assert!(matches!(
        three_networks(&prefix),
        Err(LabError::InUse { .. })
    ));
    // The killed lab's working directory (named after its process).
    let dead_dir = std::env::temp_dir().join(format!("{prefix}-lab-{}", child.id()));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(wait_gone(pid), "PR_SET_PDEATHSIG did not stop {pid}");
    // Nothing could clean up after a SIGKILL...
    assert_eq!(existing_namespaces(&prefix).len(), 7);
    assert!(dead_dir.exists(), "{}", dead_dir.display());
    // ...so the next lab of that name does, then builds afresh.
    let lab = three_networks(&prefix).unwrap();
    assert_eq!(existing_namespaces(&prefix).len(), 7);
    assert!(!dead_dir.exists(), "{} left behind", dead_dir.display());
    drop(lab);
    assert_eq!(existing_namespaces(&prefix), Vec::<String>::new());
}
