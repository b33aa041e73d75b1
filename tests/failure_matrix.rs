//! The failure matrix of the reference scenario, as root in network namespaces: while
//! clients probe every path every 20 ms, each box in turn is taken down (SIGKILL with its
//! cable pulled, and SIGTERM) and brought back. Prints a table of figures per case; the
//! measured table is kept in docs/ha.md. The matrix runs twice: with the balancers as
//! proxies (`mode = "proxy"`) and as the kernel forwarding tier (`mode = "dr"`); and both
//! again with the scenario on IPv6 (`Family::V6`: VRRPv3 over IPv6, every address in
//! 2001:db8::/32), against the same bar.
//!
//! Which boxes are in the matrix follows the binary: the gateway rows join when
//! `tether gateway` exists.

use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod support;

use support::probe;
use tether_lab::Sig;
use tether_lab::scenario::{Family, Features, LbMode, Scenario};

use support::TETHER;

fn features() -> Features {
    let out = Command::new(TETHER).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let has = |cmd: &str| {
        help.lines()
            .any(|l| l.trim_start().starts_with(&format!("{cmd} ")))
    };
    Features {
        vrrp: has("vrrp"),
        gateway: has("gateway"),
    }
}

struct Row {
    case: String,
    /// Long-lived connections on this path that survived the case intact, of how many,
    /// and the bytes they echoed correctly.
    streams_kept: u32,
    streams: u32,
    stream_bytes: u64,
    /// The client's entry point is the box taken down: its failures are expected.
    through_dead: bool,
    first_failure: String,
    failed: u64,
    /// Failed probes that started after the box was taken down: new connections. Those
    /// started before were in flight through it when it died, like the long-lived ones.
    failed_new: u64,
    attempts: u64,
    gap_ms: f64,
    recover_ms: f64,
    /// Sessions the on-prem gateways dialed during the case.
    redials: u64,
    mode: LbMode,
}

/// The matrices run one at a time: side by side on a 2-core machine, each would measure
/// the other's load.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn every_single_failure_is_survived() {
    run_matrices(Family::V4);
}

#[test]
fn every_single_failure_is_survived_over_ipv6() {
    run_matrices(Family::V6);
}

/// Both balancer modes in `family`; fails with every case that fell short.
fn run_matrices(family: Family) {
    if let Err(e) = tether_lab::available() {
        assert!(!nix::unistd::geteuid().is_root(), "root, but {e}");
        eprintln!("SKIP: {e}");
        return;
    }
    let features = features();
    assert!(features.vrrp, "tether vrrp is part of the binary");
    // A panic in the other matrix poisons the lock; this one still runs.
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut failed = Vec::new();
    for mode in [LbMode::Proxy, LbMode::Dr] {
        failed.extend(matrix(features, mode, family));
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Runs every case with the balancers in `mode`, in `family`; prints the table and returns
/// the cases that fell short.
fn matrix(features: Features, mode: LbMode, family: Family) -> Vec<String> {
    let prefix = tether_lab::Lab::unique_prefix("fm");
    let mut sc = Scenario::build_family(
        &prefix,
        std::path::Path::new(TETHER),
        features,
        true,
        family,
    )
    .expect("building the scenario");
    sc.lb_mode = mode;
    sc.start(Duration::from_secs(60)).unwrap_or_else(|e| {
        for (name, _, st) in sc.lab.processes() {
            eprintln!("--- {name} {st}\n{}", sc.lab.log(&name));
        }
        panic!("{e}")
    });

    // Cases start from a settled scenario: with dr, a flow keeps its server across balancers
    // only while the servers stay the same, and at start the cloud nodes' readiness still
    // follows the sessions landing.
    settle(&sc, "the start");
    let mut boxes = vec!["lb1", "lb2"];
    if features.gateway {
        boxes.extend(["cloud1", "cloud2", "onprem1", "onprem2"]);
    }
    let mut rows = Vec::new();
    for b in boxes {
        for sig in [Sig::Kill, Sig::Term] {
            let first = run_case(&sc, b, sig, "");
            // A failure must show twice to count: one run on a loaded 2-core machine can
            // lose a probe to scheduling alone. Both runs are in the table.
            let confirm = first.iter().any(|r| acceptable(r).is_err());
            rows.extend(first);
            if confirm {
                rows.extend(run_case(&sc, b, sig, ", re-run"));
            }
        }
    }
    println!(
        "\n{mode:?} mode, {family:?}\n\n| case | failed probes (started after the failure) | longest gap | back and serving after start | open connections kept | sessions re-dialed | first failure |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} of {} ({}) | {:.0} ms | {:.0} ms | {} of {} ({} KiB echoed intact) | {} | {} |",
            r.case,
            r.failed,
            r.attempts,
            r.failed_new,
            r.gap_ms,
            r.recover_ms,
            r.streams_kept,
            r.streams,
            r.stream_bytes / 1024,
            r.redials,
            r.first_failure
        );
    }
    // Each case's verdict is its last run (the re-run when the first one failed).
    let mut verdicts: Vec<(String, Result<(), String>)> = Vec::new();
    for r in &rows {
        let key = r.case.replace(", re-run", "");
        verdicts.retain(|(k, _)| *k != key);
        verdicts.push((key, acceptable(r)));
    }
    verdicts
        .into_iter()
        .filter_map(|(_, v)| v.err().map(|e| format!("{mode:?} {family:?}: {e}")))
        .collect()
}

/// Waits (bounded) until both balancers see every server up and lb1 holds the VIP.
fn settle(sc: &Scenario, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = sc.status();
        let all_up = st
            .boxes
            .iter()
            .filter(|x| x.name == "lb1" || x.name == "lb2")
            .all(|x| {
                x.detail.contains("servers up:")
                    && x.detail
                        .split([',', ' '])
                        .filter_map(|w| w.split_once('/'))
                        .all(|(up, all)| up == all)
            });
        if all_up && st.vip_holders == ["lb1"] && st.paths.iter().all(|(_, r)| r.is_ok()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not settled after {after}:\n{st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sessions dialed so far by the on-prem gateways.
fn dials(sc: &Scenario) -> u64 {
    if !sc.features.gateway {
        return 0;
    }
    ["onprem1", "onprem2"]
        .iter()
        .filter_map(|h| {
            sc.http_get(h, tether_lab::scenario::GW_ADMIN, "/metrics")
                .ok()
        })
        .map(|(_, m)| {
            m.lines()
                .filter(|l| l.starts_with("tether_gateway_dials_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        })
        .sum()
}

/// Takes box `b` down with `sig` while every path is probed, brings it back, and waits
/// until it serves again.
fn run_case(sc: &Scenario, b: &str, sig: Sig, note: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    // dr: a SYN lost with a dead balancer is retransmitted after 1 s; 3 s of patience.
    let patience = match sc.lb_mode {
        LbMode::Proxy => Duration::from_secs(1),
        LbMode::Dr => Duration::from_secs(3),
    };
    let dials_before = dials(sc);
    // Two long-lived connections per path, exchanging numbered chunks through the case.
    let stop = Arc::new(AtomicBool::new(false));
    let streams: Vec<_> = sc
        .paths()
        .iter()
        .flat_map(|p| [p.clone(), p.clone()])
        .map(|p| (p.name.clone(), stream(sc, &p, stop.clone())))
        .collect();
    let probes: Vec<_> = sc
        .paths()
        .into_iter()
        .map(|p| {
            (
                p.name.clone(),
                probe(
                    sc.lab.ns(&p.from),
                    p.to.to_string(),
                    Duration::from_secs(7),
                    patience,
                ),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let killed_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    sc.kill_box(b, sig).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let back = Instant::now();
    sc.start_box(b).unwrap();
    // Recovered: every path answers, lb1 holds the VIP alone, and the returned box
    // reports itself ready, with no client traffic of ours needed for that.
    let deadline = back + Duration::from_secs(10);
    loop {
        let st = sc.status();
        let ready = st.boxes.iter().find(|x| x.name == b).is_some_and(|x| {
            x.procs.iter().all(|(_, s)| s.is_running())
                && !x.detail.contains("not answering")
                && !x.detail.contains("NOT ready")
        });
        if ready && st.vip_holders == ["lb1"] && st.paths.iter().all(|(_, r)| r.is_ok()) {
            break;
        }
        assert!(Instant::now() < deadline, "{b} did not recover:\n{st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let recover_ms = back.elapsed().as_secs_f64() * 1000.0;
    settle(sc, &format!("{b} {sig:?}"));
    let redials = dials(sc).saturating_sub(dials_before);
    stop.store(true, Ordering::Relaxed);
    let mut kept = std::collections::HashMap::<String, (u32, u32, u64)>::new();
    for (name, h) in streams {
        let r = h.join().unwrap_or_else(|_| StreamReport {
            bytes: 0,
            broke: Some("thread panicked".into()),
            corrupted: None,
        });
        // Whatever happened to the box, no connection may ever deliver wrong bytes.
        assert!(
            r.corrupted.is_none(),
            "{b} {sig:?}: {name}: corrupted stream: {:?}",
            r.corrupted
        );
        let e = kept.entry(name).or_default();
        e.1 += 1;
        e.2 += r.bytes;
        if r.broke.is_none() {
            e.0 += 1;
        }
    }
    for (name, h) in probes {
        let r = h.join().unwrap();
        assert!(r.get("error").is_none(), "{r}");
        let through_dead = name.contains(&format!("-> {b}:"));
        let case = format!(
            "{b} {} ({name}{}{note})",
            if sig == Sig::Kill {
                "SIGKILL+unplug"
            } else {
                "SIGTERM"
            },
            if through_dead {
                ", enters through the dead box"
            } else {
                ""
            }
        );
        let (streams_kept, streams, stream_bytes) = kept.get(&name).copied().unwrap_or_default();
        rows.push(Row {
            case,
            through_dead,
            streams_kept,
            streams,
            stream_bytes,
            first_failure: r["failure_samples"][0].as_str().unwrap_or("").to_string(),
            failed: r["failures"].as_u64().unwrap_or(u64::MAX),
            failed_new: r["failed_started_unix_ms"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|t| t.as_f64().is_none_or(|t| t >= killed_unix_ms))
                        .count() as u64
                })
                .unwrap_or(u64::MAX),
            attempts: r["attempts"].as_u64().unwrap_or(0),
            gap_ms: r["longest_gap_s"].as_f64().unwrap_or(f64::MAX) * 1000.0,
            recover_ms,
            redials,
            mode: sc.lb_mode,
        });
    }
    if rows.iter().any(|r| acceptable(r).is_err()) {
        // What the gateways said about it, for a failure seen only in CI.
        for (name, _, _) in sc.lab.processes() {
            if !(name.contains("cloud") || name.contains("onprem")) {
                continue;
            }
            for line in sc
                .lab
                .log(&name)
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("rejected"))
            {
                eprintln!("  {name}: {line}");
            }
        }
    }
    rows
}

/// Whether a row meets the bar; `Err` says why not.
fn acceptable(r: &Row) -> Result<(), String> {
    if r.through_dead {
        return Ok(());
    }
    if r.attempts <= 200 {
        return Err(format!("{}: only {} probes", r.case, r.attempts));
    }
    if r.mode == LbMode::Dr && r.case.starts_with("lb") {
        // The forwarding tier: a balancer's death costs a retransmission, never a
        // connection, and the gateways' prepared sessions stay where they are.
        if r.failed > 0 || r.streams_kept < r.streams || r.redials > 0 {
            return Err(format!(
                "{}: {} failed probes, {} of {} open connections cut, {} sessions re-dialed ({})",
                r.case,
                r.failed,
                r.streams - r.streams_kept,
                r.streams,
                r.redials,
                r.first_failure
            ));
        }
    } else if r.case.starts_with("lb") {
        // Within the VIP takeover window: 3 x 100 ms adverts plus skew, with slack for a
        // loaded 2-core machine.
        if r.gap_ms >= 1500.0 {
            return Err(format!("{}: gap {:.0} ms", r.case, r.gap_ms));
        }
    } else if r.failed_new > 0 {
        // Gateways: retries, readiness and gating make the loss invisible to clients that
        // connect after it. (A probe already in flight through the box when it lost power
        // dies with it, as the long-lived connections through it do.)
        return Err(format!(
            "{}: {} failed probes started after the failure ({})",
            r.case, r.failed_new, r.first_failure
        ));
    }
    // Nothing passes through the backup balancer: its loss must not cut a connection.
    if r.case.starts_with("lb2") && r.streams_kept < r.streams {
        return Err(format!(
            "{}: {} of {} open connections cut",
            r.case,
            r.streams - r.streams_kept,
            r.streams
        ));
    }
    if r.case.starts_with("cloud1") && r.recover_ms >= 3000.0 {
        return Err(format!("{}: ready after {:.0} ms", r.case, r.recover_ms));
    }
    Ok(())
}

/// What a long-lived connection saw.
struct StreamReport {
    /// Bytes echoed back exactly.
    bytes: u64,
    /// Why it ended early, if it did (cut by the failure: allowed).
    broke: Option<String>,
    /// The first wrong byte, if any (never allowed).
    corrupted: Option<String>,
}

/// A connection along `p` that sends a numbered 512-byte chunk every 20 ms and checks its
/// echo, until `stop` (bounded: at most 2000 chunks).
fn stream(
    sc: &Scenario,
    p: &tether_lab::scenario::ClientPath,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<StreamReport> {
    let conn = sc.lab.connect(&p.from, p.to, Duration::from_secs(1));
    std::thread::spawn(move || {
        let mut rep = StreamReport {
            bytes: 0,
            broke: None,
            corrupted: None,
        };
        let mut s = match conn {
            Ok(s) => s,
            Err(e) => {
                rep.broke = Some(e.to_string());
                return rep;
            }
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        // The server's banner line comes first.
        let mut b = [0u8; 1];
        loop {
            match s.read(&mut b) {
                Ok(1) if b[0] == b'\n' => break,
                Ok(1) => {}
                Ok(_) => {
                    rep.broke = Some("closed before the banner".into());
                    return rep;
                }
                Err(e) => {
                    rep.broke = Some(format!("banner: {e}"));
                    return rep;
                }
            }
        }
        for seq in 0u64..2000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let chunk: Vec<u8> = (0..512u64)
                .map(|i| (seq.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8)
                .collect();
            if let Err(e) = s.write_all(&chunk) {
                rep.broke = Some(format!("write: {e}"));
                return rep;
            }
            let mut back = vec![0u8; 512];
            if let Err(e) = s.read_exact(&mut back) {
                rep.broke = Some(format!("read: {e}"));
                return rep;
            }
            if back != chunk {
                let at = back
                    .iter()
                    .zip(&chunk)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                rep.corrupted = Some(format!("chunk {seq}, byte {at}"));
                return rep;
            }
            rep.bytes += 512;
            std::thread::sleep(Duration::from_millis(20));
        }
        rep
    })
}
