//! `tether demo` as root: the reference scenario in network namespaces, driven the way the
//! tutorial tells a user to (the printed commands, `--kill`, `--start`, `--status`), and
//! nothing left behind after SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TETHER: &str = env!("CARGO_BIN_EXE_tether");

/// The demo process; stopped with SIGTERM (so its lab tears down) when the test ends, even
/// on failure, and SIGKILLed if that does not work in time.
struct Demo {
    child: Child,
    prefix: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Our own child, by pid.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A SIGKILLed lab is reclaimed by the next one of its prefix; do that now.
        for ns in tether_lab::existing_namespaces(&self.prefix) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// The lab directory (configs, logs, the demo's CA and node keys) of a demo run by `pid`.
fn lab_dir(prefix: &str, pid: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{prefix}-lab-{pid}"))
}

/// What a demo left behind: namespaces of its prefix, its lab directory, its control socket.
fn leftovers(prefix: &str, pid: u32) -> Vec<String> {
    let mut left = tether_lab::existing_namespaces(prefix);
    let dir = lab_dir(prefix, pid);
    let sock = std::path::PathBuf::from(format!("/run/tether-lab/{prefix}-demo.sock"));
    for p in [dir, sock] {
        if p.exists() {
            left.push(p.display().to_string());
        }
    }
    left
}

/// A demo expected to end by itself. When the test ends (also on failure) it is killed if
/// still running, and whatever it left is removed after the test has looked at it.
struct SelfEndingDemo {
    child: Child,
    prefix: String,
}

impl SelfEndingDemo {
    /// Waits for the demo to exit by itself, at most `limit`.
    fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for SelfEndingDemo {
    fn drop(&mut self) {
        // Our own child, not yet reaped (so its pid is still ours).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for ns in tether_lab::existing_namespaces(&self.prefix) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        let _ = std::fs::remove_dir_all(lab_dir(&self.prefix, self.child.id()));
        for f in [
            format!("/run/tether-lab/{}-demo.sock", self.prefix),
            format!("/run/tether-lab/{}.lab", self.prefix),
        ] {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// `tether demo | head -n 5`: head exits after five lines and the demo's stdout breaks.
/// It used to panic there, leaving 14 namespaces and the lab directory with the CA key.
#[test]
fn demo_piped_into_head_cleans_up_when_head_exits() {
    let Some((mut child, prefix)) = spawn_demo("tp") else {
        return;
    };
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let pid = child.id();
    let mut demo = SelfEndingDemo {
        child,
        prefix: prefix.clone(),
    };
    let head = Command::new("head")
        .args(["-n", "5"])
        .stdin(Stdio::from(out))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout).lines().count(), 5);
    let status = demo.exited_within(Duration::from_secs(120));
    let mut stderr = String::new();
    if status.is_some() {
        use std::io::Read;
        let _ = BufReader::new(err).read_to_string(&mut stderr);
    }
    let left = leftovers(&prefix, pid);
    assert!(
        status.is_some(),
        "the demo kept running with nobody reading it"
    );
    assert_eq!(left, Vec::<String>::new(), "left behind; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Closing the terminal sends SIGHUP: the demo must remove everything, as on Ctrl-C.
#[test]
fn demo_cleans_up_on_sighup() {
    let Some((mut child, prefix)) = spawn_demo("th") else {
        return;
    };
    let out = child.stdout.take().unwrap();
    let pid = child.id();
    let mut demo = SelfEndingDemo {
        child,
        prefix: prefix.clone(),
    };
    // Up when the tutorial is printed; keep reading so stdout never blocks the demo.
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("Ctrl-C stops everything") => break,
            Ok(_) => {}
            Err(_) => panic!("the demo did not come up"),
        }
    }
    assert!(!tether_lab::existing_namespaces(&prefix).is_empty());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let status = demo.exited_within(Duration::from_secs(60));
    assert!(status.is_some(), "the demo ignored SIGHUP");
    assert_eq!(leftovers(&prefix, pid), Vec::<String>::new());
}

/// Starts `tether demo` with a namespace prefix of its own (`<tag><pid>`), stdout and
/// stderr piped; `None` (the test is skipped) where namespaces cannot be made.
fn spawn_demo(tag: &str) -> Option<(Child, String)> {
    spawn_demo_with(tag, &[])
}

/// [`spawn_demo`] with more arguments.
fn spawn_demo_with(tag: &str, args: &[&str]) -> Option<(Child, String)> {
    if let Err(e) = tether_lab::available() {
        assert!(!nix::unistd::geteuid().is_root(), "root, but {e}");
        eprintln!("SKIP: {e}");
        return None;
    }
    let prefix = format!("{tag}{}", std::process::id() % 100_000);
    let child = Command::new(TETHER)
        .args(["demo", "--prefix", &prefix])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Some((child, prefix))
}

fn demo_cmd(prefix: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(TETHER)
        .args(["demo", "--prefix", prefix])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn probe(prefix: &str, host: &str, target: &str, every: &str, dur: &str) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("{prefix}-{host}"), TETHER])
        .args([
            "probe",
            "--json",
            "--connect",
            target,
            "--every",
            every,
            "--for",
            dur,
        ])
        .args(["--timeout", "500ms"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe gave no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Follows a running demo's stdout and stderr (stderr lines marked) until the tutorial
/// has been printed; returns what it printed. Panics after 60 s.
fn read_tutorial(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(format!("stderr: {l}"));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    while !text.contains("Ctrl-C stops everything") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                text.push_str(&l);
                text.push('\n');
            }
            Err(_) => panic!("the demo did not come up:\n{text}"),
        }
    }
    text
}

/// `tether demo --ipv6`: the same scenario on 2001:db8::/32 (VRRPv3 over IPv6, dr
/// balancers, gateways' sessions and services over IPv6), and the firewall closes on-prem
/// to IPv6 as it does to IPv4.
#[test]
fn demo_on_ipv6_comes_up_with_every_path_and_the_firewall_closed() {
    let Some((mut child, prefix)) = spawn_demo_with("t6", &["--ipv6"]) else {
        return;
    };
    let text = read_tutorial(&mut child);
    let demo = Demo {
        child,
        prefix: prefix.clone(),
    };
    assert!(text.contains("share VIP 2001:db8:2::100"), "{text}");
    let target = text
        .split("--connect ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("a probe command in the tutorial")
        .to_string();
    assert!(target.starts_with("[2001:db8:2::100]:"), "{target}");

    let (ok, status) = demo_cmd(&prefix, &["--status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains("VIP 2001:db8:2::100 held by: lb1\n"),
        "{status}"
    );
    assert!(status.contains("ok, answered by server-"), "{status}");
    assert!(!status.contains("FAILS"), "{status}");

    let r = probe(&prefix, "client-a", &target, "20ms", "1s");
    assert_eq!(r["failures"], 0, "{r}");
    let server_a = "[2001:db8:100::31]:5000";
    let r = probe(&prefix, "client-b", server_a, "50ms", "300ms");
    assert_eq!(r["failures"], 0, "{r}");
    for host in ["cloud1", "lb1", "client-a"] {
        let r = probe(&prefix, host, server_a, "100ms", "300ms");
        assert_eq!(
            r["successes"], 0,
            "{host} reached on-prem over IPv6 through the firewall: {r}"
        );
    }

    drop(demo);
    assert_eq!(
        tether_lab::existing_namespaces(&prefix),
        Vec::<String>::new()
    );
}

#[test]
fn demo_in_namespaces_follows_the_tutorial_survives_a_balancer_loss_and_cleans_up() {
    let Some((mut child, prefix)) = spawn_demo("td") else {
        return;
    };
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let demo = Demo {
        child,
        prefix: prefix.clone(),
    };
    let (tx, rx) = mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(format!("stderr: {l}"));
        }
    });
    // Wait for the tutorial; collect the printed commands.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    while !text.contains("Ctrl-C stops everything") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                text.push_str(&l);
                text.push('\n');
            }
            Err(_) => panic!("the demo did not come up:\n{text}"),
        }
    }
    assert!(text.contains("The scenario is up"), "{text}");
    // The first step probes client A's path: take its target from the printed command.
    let target = text
        .split("--connect ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("a probe command in the tutorial")
        .to_string();
    assert!(target.starts_with("192.0.2.100:"), "{target}");

    let (ok, status) = demo_cmd(&prefix, &["--status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains("VIP 192.0.2.100 held by: lb1\n"),
        "{status}"
    );
    assert!(status.contains("ok, answered by server-"), "{status}");
    assert!(!status.contains("FAILS"), "{status}");

    // The firewall: nothing in the cloud or on the internet opens a connection into on-prem,
    // while on-prem reaches its own server.
    let r = probe(&prefix, "client-b", "198.51.100.31:5000", "50ms", "300ms");
    assert_eq!(r["failures"], 0, "{r}");
    for host in ["cloud1", "lb1", "client-a"] {
        let r = probe(&prefix, host, "198.51.100.31:5000", "100ms", "300ms");
        assert_eq!(
            r["successes"], 0,
            "{host} reached on-prem through the firewall: {r}"
        );
    }

    // A power cut of the VIP holder while client A probes every 20 ms, then its return.
    let (p2, t2) = (prefix.clone(), target.clone());
    let prober = std::thread::spawn(move || probe(&p2, "client-a", &t2, "20ms", "9s"));
    std::thread::sleep(Duration::from_secs(2));
    let (ok, out) = demo_cmd(&prefix, &["--kill", "lb1"]);
    assert!(ok, "{out}");
    let (_, status) = demo_cmd(&prefix, &["--status"]);
    assert!(status.contains("lb1       lb DOWN"), "{status}");
    std::thread::sleep(Duration::from_secs(3));
    let (ok, out) = demo_cmd(&prefix, &["--start", "lb1"]);
    assert!(ok, "{out}");
    let r = prober.join().unwrap();
    let gap = r["longest_gap_s"].as_f64().unwrap();
    let failed = r["failures"].as_u64().unwrap();
    println!("lb1 power cut and return, 20 ms probes: {r}");
    assert!(r["successes"].as_u64().unwrap() > 300, "{r}");
    // Failures only within the VIP takeover window: 3 x 100 ms adverts plus skew, with slack
    // for a loaded machine; and the return of lb1 (preempting back) must not add another.
    assert!(gap < 1.5, "longest gap {gap} s: {r}");
    assert!(failed <= 100, "{failed} failed probes: {r}");

    // lb1 took the VIP back, alone, and every path answers again without a nudge.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status) = demo_cmd(&prefix, &["--status"]);
        if status.contains("VIP 192.0.2.100 held by: lb1\n") && !status.contains("FAILS") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lb1 did not take the VIP back: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A clean stop of a box and a bad request.
    let (ok, out) = demo_cmd(&prefix, &["--kill", "server-b", "--signal", "term"]);
    assert!(ok, "{out}");
    let (ok, out) = demo_cmd(&prefix, &["--start", "server-b"]);
    assert!(ok, "{out}");
    let (ok, out) = demo_cmd(&prefix, &["--kill", "nosuchbox"]);
    assert!(!ok && out.contains("no host named \"nosuchbox\""), "{out}");

    // SIGTERM: everything goes, namespaces and control socket alike.
    drop(demo);
    assert_eq!(
        tether_lab::existing_namespaces(&prefix),
        Vec::<String>::new()
    );
    assert!(!std::path::Path::new(&format!("/run/tether-lab/{prefix}-demo.sock")).exists());
    let (ok, out) = demo_cmd(&prefix, &["--status"]);
    assert!(!ok && out.contains("no running namespace demo"), "{out}");
}

/// Starts `cmd`, waits for the loopback demo's instructions, checks them, stops it.
fn loopback_demo(mut cmd: Command) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = Demo {
        child,
        prefix: "tether-loopback-none".into(),
    };
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while !seen.contains("Ctrl-C stops everything") {
        assert!(Instant::now() < deadline, "{seen}");
        match lines.next() {
            Some(Ok(l)) => {
                seen.push_str(&l);
                seen.push('\n');
            }
            _ => panic!("the loopback demo exited: {seen}"),
        }
    }
    assert!(seen.contains("127.0.0.1:5551"), "{seen}");
    drop(guard);
    seen
}

#[test]
fn loopback_demo_runs_when_asked_and_where_namespaces_cannot_be_made() {
    // Asked for directly.
    let mut cmd = Command::new(TETHER);
    cmd.args(["demo", "--loopback"]);
    let seen = loopback_demo(cmd);
    assert!(!seen.contains("needs network namespaces"), "{seen}");

    // As a user who may not make namespaces (root drops to nobody for this), the demo
    // says why and runs on loopback instead. The binary is copied where nobody may run it.
    let copy = std::env::temp_dir().join(format!("tether-demo-nonroot-{}", std::process::id()));
    std::fs::copy(TETHER, &copy).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&copy);
        c
    } else {
        Command::new(&copy)
    };
    cmd.arg("demo").current_dir(std::env::temp_dir());
    let seen = loopback_demo(cmd);
    let _ = std::fs::remove_file(&copy);
    assert!(
        seen.contains("the full scenario needs network namespaces")
            && seen.contains("Running the loopback demo instead"),
        "{seen}"
    );
}

/// `tether demo --tier bgp`: three balancers announce the VIP to a BIRD router, a power cut
/// of one takes it out of the router's paths, `--start` brings it back, SIGTERM removes
/// everything. Waits on the demo's own status table (it prints one on every change).
#[test]
fn bgp_demo_announces_loses_and_regains_a_balancer_and_cleans_up() {
    if let Err(e) = tether_lab::available() {
        assert!(!nix::unistd::geteuid().is_root(), "root, but {e}");
        eprintln!("SKIP: {e}");
        return;
    }
    let base = format!("tb{}", std::process::id() % 100_000);
    let prefix = format!("{base}-bgp");
    let mut child = Command::new(TETHER)
        .args(["demo", "--tier", "bgp", "--prefix", &base])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let demo = Demo {
        child,
        prefix: prefix.clone(),
    };
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut seen = String::new();
    let mut wait_line = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(want) => return,
                Ok(l) => {
                    seen.push_str(&l);
                    seen.push('\n');
                }
                Err(_) => panic!("no line with {want:?} from the demo:\n{seen}"),
            }
        }
    };
    wait_line("Ctrl-C stops everything");
    wait_line("router: 192.0.2.100 via lb1, lb2, lb3");
    let bgp = |args: &[&str]| {
        let mut a = vec!["--tier", "bgp"];
        a.extend_from_slice(args);
        demo_cmd(&base, &a)
    };
    let (ok, status) = bgp(&["--status"]);
    assert!(ok, "{status}");
    assert_eq!(status.matches("announced").count(), 3, "{status}");
    assert_eq!(status.matches("up Established").count(), 3, "{status}");
    assert!(status.contains("ok, answered by s"), "{status}");

    let (ok, out) = bgp(&["--kill", "lb2"]);
    assert!(ok, "{out}");
    wait_line("router: 192.0.2.100 via lb1, lb3");
    let (_, status) = bgp(&["--status"]);
    assert!(status.contains("lb2   DOWN       DOWN"), "{status}");
    assert!(status.contains("ok, answered by s"), "{status}");
    let (ok, out) = bgp(&["--start", "lb2"]);
    assert!(ok, "{out}");
    wait_line("router: 192.0.2.100 via lb1, lb2, lb3");
    let (ok, out) = bgp(&["--kill", "lb9"]);
    assert!(!ok && out.contains("lb9"), "{out}");

    drop(demo);
    assert_eq!(
        tether_lab::existing_namespaces(&prefix),
        Vec::<String>::new()
    );
    let (ok, out) = bgp(&["--status"]);
    assert!(!ok && out.contains("no running namespace demo"), "{out}");
}
