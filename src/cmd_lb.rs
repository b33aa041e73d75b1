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
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let shutdown = crate::signals::shutdown_on_signals()?;
        // Installed before anything listens, so an early SIGHUP cannot kill the process.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let opts = Options {
            workers,
            config_path: Some(args.config.clone()),
        };
        let running = tether_lb::start(config, opts, shutdown.clone())
            .await
            .with_context(|| format!("{}", args.config.display()))?;
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
