//! `tether demo --tier bgp`: three active balancers announced over BGP with BIRD to a router
//! that spreads the VIP's flows over them (`tether_lab::scale_out`), a tutorial, a live
//! status table, and the control socket to take balancers down.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tether_lab::scale_out::{BALANCERS, ScaleOut, VIP};

use super::live::{
    OutputClosed, TeardownOnExit, log_tails, say, serve_control, status_loop, tutorial,
};

pub fn main(prefix: &str) -> anyhow::Result<ExitCode> {
    let tether = std::env::current_exe().context("finding the tether executable")?;
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("bird").is_file()));
    if !on_path {
        anyhow::bail!(
            "the BGP demo runs BIRD 2 on the router and every balancer, and `bird` is not on PATH: install it (Debian: apt-get install bird2)"
        );
    }
    if say(&format!(
        "tether demo --tier bgp: building three balancers, two servers, a router and a client in network namespaces {prefix}-* ..."
    ))
    .is_err()
    {
        return Ok(ExitCode::SUCCESS);
    }
    let sc = ScaleOut::build(prefix, &tether, true).map_err(|e| match e {
        tether_lab::LabError::InUse { pid, .. } => anyhow::anyhow!(
            "another BGP demo (pid {pid}) is running: use `tether demo --tier bgp --status` or stop it with Ctrl-C"
        ),
        e => anyhow::anyhow!("building the namespaces: {e}"),
    })?;
    let sc = Arc::new(sc);
    let _teardown = TeardownOnExit(sc.clone());
    match run(prefix, &sc, &tether) {
        Err(e) if e.downcast_ref::<OutputClosed>().is_some() => {
            eprintln!("tether demo: {e}; stopping and removing the namespaces {prefix}-*");
            Ok(ExitCode::SUCCESS)
        }
        other => other,
    }
}

fn run(prefix: &str, sc: &Arc<ScaleOut>, tether: &std::path::Path) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let routes = sc.watch_routes().context("following the router's routes")?;
    sc.start()
        .and_then(|()| {
            sc.wait_paths(&routes, &BALANCERS, Duration::from_secs(30))
                .map_err(tether_lab::LabError::Spec)
        })
        .map_err(|e| {
            eprintln!("{}", log_tails(&sc.lab));
            anyhow::anyhow!("{e}")
        })?;
    serve_control(
        prefix,
        &sc.lab,
        sc.clone(),
        &BALANCERS,
        (
            |s| s.status().to_string(),
            ScaleOut::kill_box,
            ScaleOut::start_box,
        ),
    )?;
    say(&format!(
        "\nThe tier is up ({:.1} s): lb1, lb2 and lb3 each run `tether lb` (mode = dr) and BIRD, \
         and announce VIP {VIP} to the router over BGP while they can forward it. The router \
         spreads flows over every balancer that announces (ECMP); each balancer sends a flow to \
         the same server, so a flow may move between balancers without being cut.",
        started.elapsed().as_secs_f64()
    ))?;
    tutorial(&sc.lab, tether, " --tier bgp", |exe| sc.steps(exe))?;
    // A route change shows at once; flows and processes are looked at every second.
    Err(status_loop(
        started,
        || sc.status().to_string(),
        || {
            if routes.next_line(Duration::from_secs(1)).is_err() {
                // Without route events, look every second all the same.
                std::thread::sleep(Duration::from_secs(1));
            }
        },
    ))
}
