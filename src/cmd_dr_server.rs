//! `tether dr-server`: prepares a server behind `mode = "dr"` frontends, the way LVS-DR
//! servers are prepared: each VIP on the loopback (so the kernel accepts the forwarded
//! frames and answers from the VIP), and ARP restricted (`arp_ignore = 1`: answer only for
//! addresses of the asking link; `arp_announce = 2`: never announce the VIP as a source), so
//! the server never steals the VIP from the balancers. Undone when it stops.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

/// Arguments of `tether dr-server`.
#[derive(clap::Args)]
pub struct DrServerArgs {
    /// A VIP of a dr frontend that sends to this server (repeat for several).
    #[arg(long = "vip", required = true)]
    vips: Vec<IpAddr>,
    /// Remove the VIPs from the loopback and exit (after a crash left them; the ARP
    /// settings are left as they are).
    #[arg(long)]
    remove: bool,
}

const SYSCTLS: [(&str, &str); 2] = [
    ("/proc/sys/net/ipv4/conf/all/arp_ignore", "1"),
    ("/proc/sys/net/ipv4/conf/all/arp_announce", "2"),
];

pub fn main(args: DrServerArgs) -> anyhow::Result<ExitCode> {
    if args.remove {
        for vip in &args.vips {
            if let Err(e) = ip(&["addr", "del", &prefix(*vip), "dev", "lo"]) {
                eprintln!("tether dr-server: {vip}: {e:#}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut restore = Vec::new();
    for (path, value) in SYSCTLS {
        let old = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let old = old.trim().to_string();
        // Already set (a container's `sysctls:`, where /proc/sys is read-only): nothing
        // to write, and nothing to restore.
        if old == value {
            continue;
        }
        std::fs::write(path, value).with_context(|| {
            format!(
                "writing {path} (tether dr-server needs root with a writable /proc/sys; in a container, set the sysctl there)"
            )
        })?;
        restore.push((path, old));
    }
    let mut added = Vec::new();
    let mut result = Ok(());
    for vip in &args.vips {
        // `replace`, not `add`: a VIP left on lo by a crashed run is adopted, not an error.
        match ip(&["addr", "replace", &prefix(*vip), "dev", "lo"]) {
            Ok(()) => added.push(*vip),
            Err(e) => {
                result = Err(e).with_context(|| format!("adding {vip} to lo"));
                break;
            }
        }
    }
    if result.is_ok() {
        tracing::info!(vips = ?added, "VIPs on lo, arp_ignore=1, arp_announce=2; stop to undo");
        result = wait_for_stop();
    }
    for vip in added {
        if let Err(e) = ip(&["addr", "del", &prefix(vip), "dev", "lo"]) {
            tracing::error!(%vip, error = %e, "removing the VIP from lo");
        }
    }
    for (path, old) in restore {
        if let Err(e) = std::fs::write(Path::new(path), &old) {
            tracing::error!(path, error = %e, "restoring the ARP setting");
        }
    }
    tracing::info!("undone");
    result.map(|()| ExitCode::SUCCESS)
}

fn prefix(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(_) => format!("{vip}/32"),
        IpAddr::V6(_) => format!("{vip}/128"),
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn wait_for_stop() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let stop = crate::signals::shutdown_on_signals()?;
        stop.cancelled().await;
        Ok(())
    })
}
