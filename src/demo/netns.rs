//! The namespace demo: the reference scenario built with `tether-lab`, a tutorial of
//! commands to try, a live status table, and a control socket to take boxes down.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::CommandFactory;
use tether_lab::scenario::{BOXES, Family, Features, LbMode, Scenario};

use super::live::{
    OutputClosed, TeardownOnExit, log_tails, say, serve_control, status_loop, tutorial,
};

/// The daemons this build of `tether` has: the scenario runs what exists.
fn features() -> Features {
    let cli = crate::Cli::command();
    Features {
        vrrp: cli.find_subcommand("vrrp").is_some(),
        gateway: cli.find_subcommand("gateway").is_some(),
    }
}

pub fn main(prefix: &str, lb_mode: LbMode, family: Family) -> anyhow::Result<ExitCode> {
    let features = features();
    let tether = std::env::current_exe().context("finding the tether executable")?;
    if say(&format!(
        "tether demo: building the reference scenario{} in network namespaces {prefix}-* ...",
        if family == Family::V6 { " on IPv6" } else { "" }
    ))
    .is_err()
    {
        return Ok(ExitCode::SUCCESS);
    }
    // The lab's own signal handling tears everything down on Ctrl-C, SIGTERM or SIGHUP.
    let mut sc = Scenario::build_family(prefix, &tether, features, true, family).map_err(|e| match e {
        tether_lab::LabError::InUse { pid, .. } => anyhow::anyhow!(
            "another demo (pid {pid}) is running: use `tether demo --status` or stop it with Ctrl-C"
        ),
        e => anyhow::anyhow!("building the namespaces: {e}"),
    })?;
    sc.lb_mode = lb_mode;
    let sc = Arc::new(sc);
    let _teardown = TeardownOnExit(sc.clone());
    match run(prefix, &sc, features, &tether) {
        Err(e) if e.downcast_ref::<OutputClosed>().is_some() => {
            eprintln!("tether demo: {e}; stopping and removing the namespaces {prefix}-*");
            Ok(ExitCode::SUCCESS)
        }
        other => other,
    }
}

/// Starts the scenario, prints the tutorial, then the status table whenever it changes;
/// returns only on an error ([`OutputClosed`] when nobody reads the output any more).
fn run(
    prefix: &str,
    sc: &Arc<Scenario>,
    features: Features,
    tether: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    if let Err(e) = sc.start(Duration::from_secs(30)) {
        eprintln!("{}", log_tails(&sc.lab));
        anyhow::bail!("{e}");
    }
    serve_control(
        prefix,
        &sc.lab,
        sc.clone(),
        &BOXES,
        (
            |s| s.status().to_string(),
            Scenario::kill_box,
            Scenario::start_box,
        ),
    )?;
    let onprem = match sc.family() {
        Family::V4 => "198.51.100.0/24",
        Family::V6 => "2001:db8:100::/64",
    };
    say(&format!(
        "\nThe scenario is up ({:.1} s): lb1 and lb2 share VIP {}{}{}; server A is on-prem \
         behind a firewall that drops every connection into {onprem}.",
        started.elapsed().as_secs_f64(),
        sc.vip(),
        match sc.lb_mode {
            LbMode::Proxy => " as proxies",
            LbMode::Dr => {
                " forwarding in the kernel (mode = dr: the cloud nodes hold the VIP on lo and answer clients directly)"
            }
        },
        if features.vrrp {
            " with tether vrrp"
        } else {
            " (held by lb1: this build has no `tether vrrp`)"
        }
    ))?;
    if !features.gateway {
        say(
            "This build has no `tether gateway`: the cloud and on-prem gateways are left out, so \
             service A cannot be reached from the cloud (nothing may dial into on-prem); the \
             balancers serve server B directly on VIP:6000.",
        )?;
    }
    tutorial(&sc.lab, tether, "", |exe| sc.steps(exe))?;
    // Its reader may be gone while the table stays the same and nothing is written.
    Err(status_loop(
        started,
        || sc.status().to_string(),
        || std::thread::sleep(Duration::from_millis(500)),
    ))
}
