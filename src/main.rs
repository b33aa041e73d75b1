//! The `tether` binary: parses the command line, sets up logging and signals, and hands a
//! validated configuration to the daemon's crate. Everything else lives in the crates.

mod cmd_dr_server;
mod cmd_gateway;
mod cmd_generate;
mod cmd_lb;
mod cmd_tools;
mod cmd_vrrp;
mod demo;
mod import;
mod logging;
mod signals;
mod systemd;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

/// Keeps TCP services reachable when any single box dies.
#[derive(Parser)]
#[command(name = "tether", version, about)]
struct Cli {
    /// Log format: `text` for people, `json` for machines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the layer-4 load balancer.
    Lb(cmd_lb::LbArgs),
    /// Run the VRRP daemon that floats virtual IPs (keepalived-compatible).
    Vrrp(cmd_vrrp::VrrpArgs),
    /// Run a cloud or on-prem gateway (prepared reverse connections), or make test certificates.
    Gateway(cmd_gateway::GatewayArgs),
    /// Prepare this host as a server behind `mode = "dr"` frontends (VIPs on lo, ARP
    /// restricted) until stopped.
    DrServer(cmd_dr_server::DrServerArgs),
    /// Run a small echo server (tests, demo, compose).
    Echo(cmd_tools::EchoArgs),
    /// Open a new connection every interval and report failures and the longest gap.
    Probe(cmd_tools::ProbeArgs),
    /// Run the demo scenario on this machine, with no configuration.
    Demo(demo::DemoArgs),
    /// Convert an haproxy.cfg or keepalived.conf into Tether's TOML (reports what has no
    /// equivalent on stderr).
    Import(import::ImportArgs),
    /// Write man pages and shell completions (packaging).
    #[command(hide = true)]
    Generate(cmd_generate::GenerateArgs),
}

fn init_logging(format: LogFormat, default_filter: &str) {
    logging::init(format, default_filter);
}

/// Daemons take the hard descriptor limit as their soft one, so the admin listener's cap
/// (an eighth of it) leaves a large reserve for health checks and the data path.
fn raise_fd_limit() {
    match tether_health::admin::raise_fd_limit() {
        Ok(n) => tracing::debug!(limit = n, "descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the descriptor limit"),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lb(args) => {
            init_logging(cli.log_format, "info");
            raise_fd_limit();
            cmd_lb::main(args)
        }
        Command::Vrrp(args) => {
            init_logging(cli.log_format, "info");
            raise_fd_limit();
            cmd_vrrp::main(args)
        }
        Command::Gateway(args) => {
            init_logging(cli.log_format, "info");
            raise_fd_limit();
            cmd_gateway::main(args)
        }
        Command::DrServer(args) => {
            init_logging(cli.log_format, "info");
            cmd_dr_server::main(args)
        }
        Command::Echo(args) => {
            init_logging(cli.log_format, "info");
            cmd_tools::echo_main(args)
        }
        Command::Probe(args) => {
            init_logging(cli.log_format, "warn");
            cmd_tools::probe_main(args)
        }
        Command::Import(args) => import::main(args),
        Command::Generate(args) => cmd_generate::main(args, Cli::command()),
        Command::Demo(args) => {
            init_logging(cli.log_format, "info,tether_lb::conn=warn");
            demo::main(args)
        }
    };
    logging::flush();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tether: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
