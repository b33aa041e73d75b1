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
    // Thread per core, as HAProxy's threads and nginx's workers: every worker is a
    // current-thread runtime with its own listening sockets (SO_REUSEPORT), and a connection
    // stays on the thread that accepted it. No work-stealing queues, cross-thread wake-ups
    // or atomics on the task path: measurably cheaper per connection than tokio's
    // multi-threaded scheduler (bench/results). The main thread is worker 0 and also runs
    // the admin listener, health checks and reloads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let workers_stop = tokio_util::sync::CancellationToken::new();
    let mut runtimes = vec![runtime.handle().clone()];
    let mut threads = Vec::new();
    for i in 1..workers {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = workers_stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tether-worker-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(stop.cancelled());
            })
            .context("starting a worker thread")?;
        let handle = rx
            .recv()
            .context("a worker thread ended at start")?
            .context("starting a worker's runtime")?;
        runtimes.push(handle);
        threads.push(thread);
    }
    let result = run(&runtime, config, args, workers, runtimes);
    workers_stop.cancel();
    for t in threads {
        let _ = t.join();
    }
    result
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
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
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
