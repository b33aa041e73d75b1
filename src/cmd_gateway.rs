//! `tether gateway`: run a cloud node or an on-prem gateway, or make test certificates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

/// Arguments of `tether gateway`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GatewayArgs {
    #[command(subcommand)]
    command: Option<GatewayCommand>,
    /// The configuration file (TOML); `[node] role` says cloud or onprem.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Validate the configuration and exit: 0 when valid, 1 with the errors.
    #[arg(long)]
    check: bool,
}

#[derive(clap::Subcommand)]
enum GatewayCommand {
    /// Make a test CA and a certificate per name (for demos and tests; not for production).
    Certs(CertsArgs),
}

#[derive(clap::Args)]
struct CertsArgs {
    /// Directory to write ca.pem, ca.key and NAME.pem / NAME.key into.
    #[arg(long)]
    out: PathBuf,
    /// Common name of the test CA.
    #[arg(long, default_value = "Tether test CA")]
    ca: String,
    /// Names to issue certificates for (gateway ids and node ids), comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    names: Vec<String>,
    /// Domain: each certificate also carries NAME.DOMAIN and DOMAIN (the VIP name).
    #[arg(long, default_value = "gw.example.com")]
    domain: String,
}

pub fn main(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    if let Some(GatewayCommand::Certs(c)) = args.command {
        let files = tether_gateway::certs::generate(&c.out, &c.ca, &c.domain, &c.names)
            .context("generating certificates")?;
        for f in files {
            println!("{}", f.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(path) = args.config else {
        anyhow::bail!("--config FILE is required (or use `tether gateway certs`)");
    };
    let config = match tether_gateway::config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if args.check {
        println!("{}: configuration is valid", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        // Installed first, so an early SIGHUP cannot kill the process.
        let mut hup = crate::signals::reloads()?;
        let shutdown = crate::signals::shutdown_on_signals()?;
        let gateway = tether_gateway::start(config, shutdown)
            .await
            .with_context(|| format!("{}", path.display()))?;
        let gateway = Arc::new(gateway);
        crate::systemd::ready();
        // SIGHUP re-reads the file and its TLS files: sessions whose peer is still allowed
        // stay up, new handshakes use the new certificates. What cannot be applied is
        // refused whole (logged by the gateway) and the running configuration keeps serving.
        let g = gateway.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!(file = %path.display(), "SIGHUP: reloading the configuration");
                let (g, path) = (g.clone(), path.clone());
                // The file and the TLS files are read from disk.
                let _ = tokio::task::spawn_blocking(move || g.reload_from(&path)).await;
            }
        });
        gateway.wait().await;
        Ok(ExitCode::SUCCESS)
    })
}
