//! Failover benchmark, Tether vs keepalived 2.2.7, same lab, same `tether lb`, one run.
//! Not a test: `#[ignore]`d, run by `bench/vrrp-failover/run.sh`, prints medians and
//! ratios. Client-visible outage = longest gap between answered connections of a client
//! that opens one through the VIP every 10 ms.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tether_lab::Sig;
use tether_lab::vrrp::{Daemon, Keepalived, LAN, VrrpLab as Lab, install_peers, tether_config};

const TETHER: &str = env!("CARGO_BIN_EXE_tether");
const VIP: &str = "192.0.2.100";

#[derive(Clone, Copy, PartialEq)]
enum Imp {
    Tether,
    Keepalived,
}

#[derive(Clone, Copy)]
struct Ver {
    v: u8,
    tether_int: &'static str,
    ka_int: &'static str,
    timeout: Duration,
}

const EVENTS: [&str; 6] = [
    "VRRP daemon stopped (priority 0 sent)",
    "master's link cut",
    "balancer killed on the master (tracked)",
    "link restored, master preempts back",
    "VRRP daemon SIGKILLed (old master keeps the VIP): client gap",
    "SIGKILL: stale VIP removed after restart",
];

fn lb_config() -> String {
    "[admin]\nlisten = \"127.0.0.1:9090\"\n\n[[frontend]]\nname = \"svc\"\nbind = [\"0.0.0.0:5551\"]\nbackend = \"svc\"\n\n[[backend]]\nname = \"svc\"\n\n[backend.health]\nkind = \"tcp\"\ninterval = \"500ms\"\ntimeout = \"300ms\"\nrise = 2\nfall = 2\n\n[[backend.server]]\nname = \"s\"\naddress = \"192.0.2.20:7000\"\n".to_string()
}

struct Bench {
    lab: Lab,
    imp: Imp,
    ver: Ver,
}

impl Bench {
    fn start_lb(&self, node: &str) {
        let cfg = self
            .lab
            .write(&format!("lb-{node}.toml"), &lb_config())
            .unwrap();
        let cfg = cfg.to_string_lossy().to_string();
        self.lab
            .start_process(
                node,
                &format!("lb-{node}"),
                &PathBuf::from(TETHER),
                &["lb", "--config", &cfg],
            )
            .unwrap();
    }

    /// The lab's name of node a's VRRP daemon.
    fn vrrp_a(&self) -> &'static str {
        match self.imp {
            Imp::Tether => "tether-a",
            Imp::Keepalived => "ka-a",
        }
    }

    fn start_vrrp(&self, node: &str, prio: u8) {
        let vip = format!("{VIP}/24");
        match self.imp {
            Imp::Tether => {
                let track = "\n[[instance.track]]\nkind = \"http\"\nurl = \"http://127.0.0.1:9090/readyz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2\nrise = 2\nweight = 0\n";
                let cfg = tether_config(
                    "VI_1",
                    51,
                    prio,
                    self.ver.v,
                    self.ver.tether_int,
                    &[&vip],
                    track,
                );
                self.lab.start_tether(node, &cfg).unwrap();
            }
            Imp::Keepalived => {
                // The classic keepalived setup: a script checks the balancer's process.
                let pidfile = self.lab.dir().join(format!("lb-{node}.pid"));
                let script = self.lab.write(
                    &format!("chk-lb-{node}.sh"),
                    &format!(
                        "#!/bin/sh\nkill -0 \"$(cat {})\" 2>/dev/null\n",
                        pidfile.display()
                    ),
                );
                let script = script.unwrap();
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                        .unwrap();
                }
                let mut cfg = format!(
                    "vrrp_script chk_lb {{\n    script \"{}\"\n    interval 1\n    fall 1\n    rise 1\n}}\n",
                    script.display()
                );
                let ka = Keepalived {
                    router: &format!("ka_{node}"),
                    name: "VI_1",
                    vrid: 51,
                    prio,
                    version: self.ver.v,
                    interval: self.ver.ka_int,
                };
                cfg.push_str(&ka.config(&[&vip], "    track_script {\n        chk_lb\n    }\n"));
                self.lab.start_keepalived(node, &cfg).unwrap();
            }
        }
    }

    fn backup_log(&self) -> (&'static str, &'static str) {
        match self.imp {
            Imp::Tether => ("tether-b", "-> BACKUP"),
            Imp::Keepalived => ("ka-b", "Entering BACKUP STATE"),
        }
    }

    fn stop_vrrp_a(&self, sig: Sig) {
        if self.imp == Imp::Keepalived && sig == Sig::Kill {
            // A hard crash of keepalived: freeze the parent so it cannot respawn its
            // VRRP child, kill the child (the parent's death would send it SIGTERM,
            // a clean stop), then the parent.
            self.lab.signal(self.vrrp_a(), Sig::Stop).unwrap();
            if let Some(p) = self.lab.keepalived_vrrp_pid("a") {
                // Not the lab's own child but keepalived's: killed inside its host.
                let _ = self.lab.exec("a", &["kill", "-KILL", &p.to_string()]);
            }
        }
        self.lab.signal(self.vrrp_a(), sig).unwrap();
        let _ = self.lab.wait_exit(self.vrrp_a(), self.ver.timeout);
    }
}

fn measure(imp: Imp, ver: Ver) -> Option<[Duration; 6]> {
    let hosts = [("a", 1), ("b", 2), ("c", 10), ("s", 20)];
    let lab = Lab::new("vfo", &hosts, Daemon::Binary(PathBuf::from(TETHER))).unwrap()?;
    let mut b = Bench { lab, imp, ver };
    b.lab.start_service("s").unwrap();
    b.start_lb("a");
    b.start_lb("b");
    b.start_vrrp("a", 150);
    b.start_vrrp("b", 100);
    let t = ver.timeout;
    b.lab.wait_holders(VIP, &["a"], t).ok()?;
    let (log, needle) = b.backup_log();
    assert!(b.lab.wait_log(log, needle, t), "{}", b.lab.log(log));
    let probe = b
        .lab
        .start_probe("c", format!("{VIP}:5551").parse().ok()?)
        .unwrap();
    assert!(
        probe.wait_streak(Instant::now(), 30, t),
        "client never got through"
    );
    let settle = |b: &Bench, who: &[&str]| {
        b.lab.wait_holders(VIP, who, t).unwrap();
        assert!(
            probe.wait_streak(Instant::now(), 30, t),
            "client did not recover"
        );
    };
    let mut out = [Duration::ZERO; 6];

    // 1. VRRP daemon stopped on the master.
    let m = probe.mark();
    b.stop_vrrp_a(Sig::Term);
    settle(&b, &["b"]);
    out[0] = probe.gap_since(m);
    b.start_vrrp("a", 150);
    settle(&b, &["a"]);

    // 2. Link cut; held until a's balancer has marked the server down.
    let m = probe.mark();
    b.lab.cut("a", LAN).unwrap();
    settle(&b, &["b"]);
    out[1] = probe.gap_since(m);
    assert!(b.lab.wait_log("lb-a", "server down", t));

    // 3. Link restored: the master preempts back.
    let m = probe.mark();
    b.lab.heal("a", LAN).unwrap();
    settle(&b, &["a"]);
    out[3] = probe.gap_since(m);

    // 4. Balancer killed on the master.
    let m = probe.mark();
    b.lab.signal("lb-a", Sig::Kill).unwrap();
    // Reaped at once, as its init would on a real host: a zombie still passes the
    // `kill -0` of keepalived's check script.
    let _ = b.lab.wait_exit("lb-a", t);
    settle(&b, &["b"]);
    out[2] = probe.gap_since(m);
    b.start_lb("a");
    settle(&b, &["a"]);

    // 5. SIGKILL of the VRRP daemon: the VIP stays on a, so both hold it.
    let m = probe.mark();
    b.stop_vrrp_a(Sig::Kill);
    b.lab.wait_holders(VIP, &["a", "b"], t).unwrap();
    assert!(probe.wait_streak(Instant::now(), 30, t));
    out[4] = probe.gap_since(m);
    let restart = Instant::now();
    b.start_vrrp("a", 150);
    // Until a removed its stale copy: no longer two holders.
    let _ = b.lab.wait_holders_until(VIP, |h| h.len() != 2, t);
    out[5] = restart.elapsed();
    settle(&b, &["a"]);
    Some(out)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[test]
#[ignore = "benchmark: run bench/vrrp-failover/run.sh"]
fn vrrp_failover_bench() {
    install_peers();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let vers = [
        Ver {
            v: 2,
            tether_int: "1s",
            ka_int: "1",
            timeout: Duration::from_secs(20),
        },
        Ver {
            v: 3,
            tether_int: "100ms",
            ka_int: "0.1",
            timeout: Duration::from_secs(10),
        },
    ];
    // results[ver][imp][event] = samples
    let mut res = vec![vec![vec![Vec::new(); 6]; 2]; 2];
    // BENCH_ONLY=keepalived|tether and BENCH_VERSION=2|3 narrow a run while debugging.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let only_v = std::env::var("BENCH_VERSION").unwrap_or_default();
    for (vi, ver) in vers.iter().enumerate() {
        if !only_v.is_empty() && only_v != ver.v.to_string() {
            continue;
        }
        for (ii, imp) in [Imp::Tether, Imp::Keepalived].into_iter().enumerate() {
            let name = if ii == 0 { "tether" } else { "keepalived" };
            if !only.is_empty() && only != name {
                continue;
            }
            for run in 0..runs {
                let Some(r) = measure(imp, *ver) else {
                    eprintln!("SKIP: no network namespaces");
                    return;
                };
                eprintln!(
                    "v{} {} run {}: {}",
                    ver.v,
                    name,
                    run + 1,
                    r.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
                );
                for (e, d) in r.iter().enumerate() {
                    res[vi][ii][e].push(*d);
                }
            }
        }
    }
    println!();
    println!(
        "VRRP failover, client-visible outage (median of {runs}), tether lb in front of one server:"
    );
    println!("| event | v2 1s tether | v2 1s keepalived | v3 100ms tether | v3 100ms keepalived |");
    println!("|---|---|---|---|---|");
    for (e, name) in EVENTS.iter().enumerate() {
        let mut cells = Vec::new();
        for vr in res.iter_mut() {
            for ir in vr.iter_mut() {
                cells.push(if ir[e].is_empty() {
                    "-".to_string()
                } else {
                    ms(median(&mut ir[e]))
                });
            }
        }
        println!("| {name} | {} |", cells.join(" | "));
    }
}
