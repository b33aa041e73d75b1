//! `tether echo` and `tether probe`: the small tools of the demo, the tests and compose.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tether_health::tools::{echo, probe};

/// Arguments of `tether echo`.
#[derive(clap::Args)]
pub struct EchoArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:7001")]
    listen: SocketAddr,
    /// A line written first on every connection, to tell servers apart.
    #[arg(long)]
    banner: Option<String>,
}

/// Arguments of `tether probe`.
#[derive(clap::Args)]
pub struct ProbeArgs {
    /// Where to connect (ip:port or host:port).
    #[arg(long)]
    connect: String,
    /// Time between two new connections.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    every: Duration,
    /// How long to probe.
    #[arg(long = "for", default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long one probe may take.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

pub fn echo_main(args: EchoArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let shutdown = crate::signals::shutdown_on_signals()?;
        let e = echo::start(args.listen, args.banner, shutdown.clone())
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        tracing::info!(listen = %e.addr, "echo server ready");
        shutdown.cancelled().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn probe_main(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let target = tokio::net::lookup_host(&args.connect)
            .await
            .with_context(|| format!("resolving {}", args.connect))?
            .next()
            .with_context(|| format!("{} resolves to no address", args.connect))?;
        let spec = probe::ProbeSpec {
            target,
            every: args.every,
            duration: args.duration,
            timeout: args.timeout,
        };
        let report = probe::run(&spec).await;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{report}");
        }
        Ok(if report.failures == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
