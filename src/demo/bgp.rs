//! `tether demo --tier bgp`: three active balancers announced over BGP with BIRD to a router
//! that spreads the VIP's flows over them (`tether_lab::scale_out`), a tutorial, a live
//! status table, and the control socket to take balancers down.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tether_lab::Sig;
use tether_lab::scale_out::{BALANCERS, ScaleOut, VIP};

use super::netns::{OutputClosed, TeardownOnExit, log_tails, output_gone, say};

/// The BGP tier's boxes are its balancers.
struct Tier<'a>(&'a ScaleOut);

impl super::control::Boxes for Tier<'_> {
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
        BALANCERS.to_vec()
    }
}

pub fn main(prefix: &str) -> anyhow::Result<ExitCode> {
    let tether = std::env::current_exe().context("finding the tether executable")?;
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("bird").is_file()));
    if !on_path {
        anyhow::bail!(
            "the BGP demo runs BIRD 2 on the router and every balancer, and `bird` is not on PATH: install it (Debian: apt-get install bird2)"
        );
    }
    if say(&format!(
        "tether demo --tier bgp: building three balancers, two servers, a router and a client in network namespaces {prefix}-* ..."
    ))
    .is_err()
    {
        return Ok(ExitCode::SUCCESS);
    }
    let sc = ScaleOut::build(prefix, &tether, true).map_err(|e| match e {
        tether_lab::LabError::InUse { pid, .. } => anyhow::anyhow!(
            "another BGP demo (pid {pid}) is running: use `tether demo --tier bgp --status` or stop it with Ctrl-C"
        ),
        e => anyhow::anyhow!("building the namespaces: {e}"),
    })?;
    let sc = Arc::new(sc);
    let _teardown = TeardownOnExit(sc.clone());
    match run(prefix, &sc, &tether) {
        Err(e) if e.downcast_ref::<OutputClosed>().is_some() => {
            eprintln!("tether demo: {e}; stopping and removing the namespaces {prefix}-*");
            Ok(ExitCode::SUCCESS)
        }
        other => other,
    }
}

fn run(prefix: &str, sc: &Arc<ScaleOut>, tether: &std::path::Path) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let routes = sc.watch_routes().context("following the router's routes")?;
    sc.start()
        .and_then(|()| {
            sc.wait_paths(&routes, &BALANCERS, Duration::from_secs(30))
                .map_err(tether_lab::LabError::Spec)
        })
        .map_err(|e| {
            eprintln!("{}", log_tails(&sc.lab));
            anyhow::anyhow!("{e}")
        })?;
    let listener = super::control::bind(prefix)?;
    sc.lab
        .remove_on_teardown(super::control::socket_path(prefix));
    let sc2 = sc.clone();
    std::thread::Builder::new()
        .name("demo-control".into())
        .spawn(move || {
            super::control::serve(listener, |line| super::control::answer(&Tier(&sc2), line))
        })
        .context("starting the control thread")?;
    say(&format!(
        "\nThe tier is up ({:.1} s): lb1, lb2 and lb3 each run `tether lb` (mode = dr) and BIRD, \
         and announce VIP {VIP} to the router over BGP while they can forward it. The router \
         spreads flows over every balancer that announces (ECMP); each balancer sends a flow to \
         the same server, so a flow may move between balancers without being cut.",
        started.elapsed().as_secs_f64()
    ))?;
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
        "\n`{exe} demo --tier bgp --kill BOX [--signal term]`, `--start BOX`, `--status`. \
         Ctrl-C stops everything and removes the namespaces.\n"
    ))?;
    let mut last = String::new();
    loop {
        if output_gone() {
            return Err(OutputClosed(std::io::ErrorKind::BrokenPipe.into()).into());
        }
        let table = sc.status().to_string();
        if table != last {
            let t = started.elapsed().as_secs_f64();
            say(&format!("[{t:7.1} s]\n{table}"))?;
            last = table;
        }
        // A route change shows at once; flows and processes are looked at every second.
        let _ = routes.next_line(Duration::from_secs(1));
    }
}
