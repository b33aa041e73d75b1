//! `tether vrrp`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `tether vrrp`.
#[derive(clap::Args)]
pub struct VrrpArgs {
    /// The configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// Validate the configuration and exit: 0 when valid, 1 with the errors.
    #[arg(long)]
    check: bool,
    /// Remove the configured virtual addresses still on their interfaces and exit: what a
    /// killed daemon could not do itself (systemd's ExecStopPost).
    #[arg(long, conflicts_with = "check")]
    cleanup: bool,
}

pub fn main(args: VrrpArgs) -> anyhow::Result<ExitCode> {
    let config = match tether_vrrp::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if args.check {
        println!("{}: configuration is valid", args.config.display());
        return Ok(ExitCode::SUCCESS);
    }
    // VRRP is a few packets a second: one thread keeps every timer on one clock and
    // keeps netlink and raw sockets in the namespace the process started in.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    if args.cleanup {
        return runtime.block_on(cleanup(&config));
    }
    runtime.block_on(async {
        // Installed first, so an early SIGHUP cannot kill the process.
        let hup = crate::signals::reloads()?;
        let shutdown = crate::signals::shutdown_on_signals()?;
        let daemon = tether_vrrp::start(config, shutdown)
            .await
            .with_context(|| format!("{}", args.config.display()))?;
        // SIGHUP reloads in place: unchanged instances keep running untouched, changed
        // ones are changed with the least disturbance; an invalid file is refused and the
        // running configuration keeps serving.
        // POST /api/reload does the same.
        daemon.reload_from(args.config.clone(), hup);
        crate::systemd::ready();
        daemon.wait().await;
        Ok(ExitCode::SUCCESS)
    })
}

async fn cleanup(config: &tether_vrrp::Config) -> anyhow::Result<ExitCode> {
    let nl = tether_vrrp::netlink::Netlink::open().context("opening rtnetlink")?;
    for i in &config.instances {
        let Some(link) = nl
            .link(&i.interface)
            .await
            .with_context(|| format!("looking up {}", i.interface))?
        else {
            continue;
        };
        let addrs = nl
            .addrs(link.index)
            .await
            .with_context(|| format!("listing the addresses of {}", i.interface))?;
        for v in i
            .vips
            .iter()
            .filter(|v| addrs.iter().any(|a| a.addr == v.addr))
        {
            nl.del_vip(link.index, *v)
                .await
                .with_context(|| format!("removing {} from {}", v.addr, i.interface))?;
            println!(
                "{}: removed {}/{} from {}",
                i.name, v.addr, v.prefix, i.interface
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
