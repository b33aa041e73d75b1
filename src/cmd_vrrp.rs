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
    runtime.block_on(async {
        // Installed first, so an early SIGHUP cannot kill the process.
        crate::signals::reload_not_supported("vrrp")?;
        let shutdown = crate::signals::shutdown_on_signals()?;
        tether_vrrp::run(config, shutdown)
            .await
            .with_context(|| format!("{}", args.config.display()))?;
        Ok(ExitCode::SUCCESS)
    })
}
