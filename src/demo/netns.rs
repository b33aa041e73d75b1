//! The namespace demo: the reference scenario built with `tether-lab`, a tutorial of
//! commands to try, a live status table, and a control socket to take boxes down.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::CommandFactory;
use tether_lab::Sig;
use tether_lab::scenario::{BOXES, Features, LbMode, Scenario};

/// The daemons this build of `tether` has: the scenario runs what exists.
fn features() -> Features {
    let cli = crate::Cli::command();
    Features {
        vrrp: cli.find_subcommand("vrrp").is_some(),
        gateway: cli.find_subcommand("gateway").is_some(),
    }
}

/// The reference scenario's boxes.
struct Boxes<'a>(&'a Scenario);

impl super::control::Boxes for Boxes<'_> {
    fn status(&self) -> String {
        self.0.status().to_string()
    }
    fn kill(&self, name: &str, sig: Sig) -> Result<(), tether_lab::LabError> {
        self.0.kill_box(name, sig)
    }
    fn start(&self, name: &str) -> Result<(), tether_lab::LabError> {
        self.0.start_box(name)
    }
    fn names(&self) -> Vec<&'static str> {
        BOXES.to_vec()
    }
}

pub(super) fn log_tails(lab: &tether_lab::Lab) -> String {
    let mut out = String::new();
    for (name, _, st) in lab.processes() {
        let log = lab.log(&name);
        let tail: Vec<&str> = log.lines().rev().take(4).collect();
        out.push_str(&format!("--- {name} ({st})\n"));
        for l in tail.iter().rev() {
            out.push_str(&format!("    {l}\n"));
        }
    }
    out
}

/// Tears the lab down however `main` ends: returning, an error, or a panic. The lab's own
/// `Drop` is not enough: the control thread holds the scenario too, so it would never run.
pub(super) struct TeardownOnExit<L: AsRef<tether_lab::Lab>>(pub(super) Arc<L>);

impl<L: AsRef<tether_lab::Lab>> Drop for TeardownOnExit<L> {
    fn drop(&mut self) {
        (*self.0).as_ref().teardown();
    }
}

/// Stdout could not be written: its reader is gone (`tether demo | head`, a closed
/// terminal).
#[derive(Debug)]
pub(super) struct OutputClosed(pub(super) std::io::Error);

impl std::fmt::Display for OutputClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "output closed ({})", self.0)
    }
}

impl std::error::Error for OutputClosed {}

/// Whether stdout is a pipe whose reader has gone (poll reports an error on its write end).
pub(super) fn output_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd on our own stdout, zero timeout: no blocking, no pointers kept.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Writes a line to stdout, reporting a closed reader instead of panicking as `println!`
/// does, so the demo can clean up and stop.
pub(super) fn say(text: &str) -> Result<(), OutputClosed> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(OutputClosed)
}

pub fn main(prefix: &str, lb_mode: LbMode) -> anyhow::Result<ExitCode> {
    let features = features();
    let tether = std::env::current_exe().context("finding the tether executable")?;
    if say(&format!(
        "tether demo: building the reference scenario in network namespaces {prefix}-* ..."
    ))
    .is_err()
    {
        return Ok(ExitCode::SUCCESS);
    }
    // The lab's own signal handling tears everything down on Ctrl-C, SIGTERM or SIGHUP.
    let mut sc = Scenario::build(prefix, &tether, features, true).map_err(|e| match e {
        tether_lab::LabError::InUse { pid, .. } => anyhow::anyhow!(
            "another demo (pid {pid}) is running: use `tether demo --status` or stop it with Ctrl-C"
        ),
        e => anyhow::anyhow!("building the namespaces: {e}"),
    })?;
    sc.lb_mode = lb_mode;
    let sc = Arc::new(sc);
    let _teardown = TeardownOnExit(sc.clone());
    match run(prefix, &sc, features, &tether) {
        Err(e) if e.downcast_ref::<OutputClosed>().is_some() => {
            eprintln!("tether demo: {e}; stopping and removing the namespaces {prefix}-*");
            Ok(ExitCode::SUCCESS)
        }
        other => other,
    }
}

/// Starts the scenario, prints the tutorial, then the status table whenever it changes;
/// returns only on an error ([`OutputClosed`] when nobody reads the output any more).
fn run(
    prefix: &str,
    sc: &Arc<Scenario>,
    features: Features,
    tether: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    if let Err(e) = sc.start(Duration::from_secs(30)) {
        eprintln!("{}", log_tails(&sc.lab));
        anyhow::bail!("{e}");
    }
    let listener = super::control::bind(prefix)?;
    sc.lab
        .remove_on_teardown(super::control::socket_path(prefix));
    let sc2 = sc.clone();
    std::thread::Builder::new()
        .name("demo-control".into())
        .spawn(move || {
            super::control::serve(listener, |line| super::control::answer(&Boxes(&sc2), line))
        })
        .context("starting the control thread")?;

    say(&format!(
        "\nThe scenario is up ({:.1} s): lb1 and lb2 share VIP 192.0.2.100{}{}; server A is on-prem \
         behind a firewall that drops every connection into 198.51.100.0/24.",
        started.elapsed().as_secs_f64(),
        match sc.lb_mode {
            LbMode::Proxy => " as proxies",
            LbMode::Dr => {
                " forwarding in the kernel (mode = dr: the cloud nodes hold the VIP on lo and answer clients directly)"
            }
        },
        if features.vrrp {
            " with tether vrrp"
        } else {
            " (held by lb1: this build has no `tether vrrp`)"
        }
    ))?;
    if !features.gateway {
        say(
            "This build has no `tether gateway`: the cloud and on-prem gateways are left out, so \
             service A cannot be reached from the cloud (nothing may dial into on-prem); the \
             balancers serve server B directly on VIP:6000.",
        )?;
    }
    say(&format!("Logs and configs: {}\n", sc.lab.dir().display()))?;
    let exe = if std::env::args()
        .next()
        .is_some_and(|a| a.contains("target/"))
    {
        tether.display().to_string()
    } else {
        "tether".to_string()
    };
    for (i, (what, cmd)) in sc.steps(&exe).iter().enumerate() {
        say(&format!("{}. {what}\n     {cmd}", i + 1))?;
    }
    say(&format!(
        "\n`{exe} demo --kill BOX [--signal term]`, `--start BOX`, `--status`. \
         Ctrl-C stops everything and removes the namespaces.\n"
    ))?;
    let mut last = String::new();
    loop {
        // Its reader may be gone while the table stays the same and nothing is written.
        if output_gone() {
            return Err(OutputClosed(std::io::ErrorKind::BrokenPipe.into()).into());
        }
        let table = sc.status().to_string();
        if table != last {
            let t = started.elapsed().as_secs_f64();
            say(&format!("[{t:7.1} s]\n{table}"))?;
            last = table;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
