//! `tether demo`: the scenario a user tries first, with no configuration.
//!
//! As root on Linux it builds the reference scenario in network namespaces (`netns`); where
//! namespaces cannot be made it runs a balancer and two echo servers on loopback
//! (`loopback`) and says why. `--kill`, `--start` and `--status` talk to a running
//! namespace demo over its control socket.

mod bgp;
mod control;
mod live;
mod loopback;
mod netns;

use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `tether demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Run the loopback demo even where namespaces are available.
    #[arg(long)]
    loopback: bool,
    /// Take a box of the running demo down (lb1, lb2, cloud1, cloud2, onprem1, onprem2,
    /// server-a, server-b; with --tier bgp: lb1, lb2, lb3).
    #[arg(long, value_name = "BOX", conflicts_with_all = ["start", "status"])]
    kill: Option<String>,
    /// With --kill: `kill` (SIGKILL, a power cut) or `term` (SIGTERM, a clean stop).
    #[arg(long, default_value = "kill", value_parser = ["kill", "term"])]
    signal: String,
    /// Bring a box of the running demo back.
    #[arg(long, value_name = "BOX", conflicts_with = "status")]
    start: Option<String>,
    /// Print the running demo's status table once.
    #[arg(long)]
    status: bool,
    /// Namespace prefix: the demo's namespaces are `<prefix>-<box>` (tests use their own).
    #[arg(long, default_value = "tether", hide = true)]
    prefix: String,
    /// How the balancers forward: `dr` (the kernel forwards packets to the cloud nodes,
    /// which answer directly: a balancer's death cuts no connection; the default, as the
    /// failure matrix measures it better) or `proxy` (terminate TCP and relay, with retries
    /// and SNI routing).
    #[arg(long, default_value = "dr", value_parser = ["proxy", "dr"])]
    lb_mode: String,
    /// How the balancer tier shares the VIP: `vrrp` (the reference scenario: one active
    /// balancer, the VIP floats with VRRP) or `bgp` (three active balancers announced to a
    /// router over BGP with BIRD, which spreads flows over them with ECMP).
    #[arg(long, default_value = "vrrp", value_parser = ["vrrp", "bgp"])]
    tier: String,
    /// Build the scenario on IPv6 (2001:db8::/32): VRRPv3 over IPv6, the balancers (either
    /// mode), the gateways' sessions and services, the firewall's rule, all in IPv6.
    #[arg(long, conflicts_with = "loopback")]
    ipv6: bool,
    /// Loopback demo: time before an echo server that was killed is started again.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    restart_after: Duration,
}

pub fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // The BGP demo has a prefix of its own, so both demos can run side by side.
    let prefix = if args.tier == "bgp" {
        format!("{}-bgp", args.prefix)
    } else {
        args.prefix.clone()
    };
    if let Some(b) = &args.kill {
        return control::request(&prefix, &format!("kill {b} {}", args.signal));
    }
    if let Some(b) = &args.start {
        return control::request(&prefix, &format!("start {b}"));
    }
    if args.status {
        return control::request(&prefix, "status");
    }
    if args.tier == "bgp" {
        if args.ipv6 {
            anyhow::bail!("--ipv6 runs the reference scenario (--tier vrrp) only");
        }
        tether_lab::available().map_err(|why| {
            anyhow::anyhow!("the BGP demo needs network namespaces and BIRD, and {why}")
        })?;
        return bgp::main(&prefix);
    }
    if args.loopback {
        return loopback::main(args.restart_after);
    }
    match tether_lab::available() {
        Ok(()) => netns::main(
            &args.prefix,
            if args.lb_mode == "dr" {
                tether_lab::scenario::LbMode::Dr
            } else {
                tether_lab::scenario::LbMode::Proxy
            },
            if args.ipv6 {
                tether_lab::scenario::Family::V6
            } else {
                tether_lab::scenario::Family::V4
            },
        ),
        Err(why) if args.ipv6 => {
            anyhow::bail!("the IPv6 demo needs network namespaces, and {why}")
        }
        Err(why) => {
            println!(
                "tether demo: the full scenario needs network namespaces, and {why}.\n\
                 Running the loopback demo instead: one balancer and two echo servers on \
                 127.0.0.1, without VRRP, gateways or a firewall. Run as root on Linux for \
                 the whole scenario."
            );
            loopback::main(args.restart_after)
        }
    }
}
