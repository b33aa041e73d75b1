//! `tether lb`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tether_lb::{Config, Options};

/// Arguments of `tether lb`.
#[derive(clap::Args)]
pub struct LbArgs {
    /// The configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// Worker threads, each with its own accept loop per bind (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Validate the configuration and exit: 0 when valid, 1 with the errors.
    #[arg(long)]
    check: bool,
}

pub fn main(args: LbArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config) {
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
    let workers = args
        .workers
        .unwrap_or_else(tether_lb::workers::default_count)
        .max(1);
    let pool = tether_lb::workers::Pool::start(workers)?;
    run(&pool.main, config, args, workers, pool.handles.clone())
}

fn run(
    runtime: &tokio::runtime::Runtime,
    config: Config,
    args: LbArgs,
    workers: usize,
    runtimes: Vec<tokio::runtime::Handle>,
) -> anyhow::Result<ExitCode> {
    runtime.block_on(async {
        let shutdown = crate::signals::shutdown_on_signals()?;
        // Installed before anything listens, so an early SIGHUP cannot kill the process.
        let mut hup = crate::signals::reloads()?;
        let opts = Options {
            workers,
            runtimes,
            config_path: Some(args.config.clone()),
        };
        let running = tether_lb::start(config, opts, shutdown.clone())
            .await
            .with_context(|| format!("{}", args.config.display()))?;
        crate::systemd::ready();
        // SIGHUP reloads in-process: unchanged listeners keep their sockets and no open
        // connection is cut; an invalid file is refused and the running config keeps serving.
        let lb = running.lb.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match lb.reload().await {
                    Ok(_) => {}
                    Err(e) => {
                        lb.metrics.reload_failures.inc();
                        tracing::error!(
                            "reload refused, still running the previous configuration:\n{e}"
                        );
                    }
                }
            }
        });
        running.wait().await;
        Ok(ExitCode::SUCCESS)
    })
}
