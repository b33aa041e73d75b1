//! What both namespace demos do around their scenario: tear the lab down however the demo
//! ends, write to a terminal that may go away, serve the control socket, print the
//! tutorial, and reprint the status table when it changes.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

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
fn output_gone() -> bool {
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

/// What the control socket does with a scenario: its status table, taking a box down
/// (`Sig::Kill`: a power cut; `Sig::Term`: a clean stop), and bringing one back.
pub(super) type Ops<S> = (
    fn(&S) -> String,
    fn(&S, &str, tether_lab::Sig) -> Result<(), tether_lab::LabError>,
    fn(&S, &str) -> Result<(), tether_lab::LabError>,
);

/// Binds the demo's control socket (removed with the lab) and answers its commands on a
/// thread of its own with the scenario's [`Ops`].
pub(super) fn serve_control<S: Send + Sync + 'static>(
    prefix: &str,
    lab: &tether_lab::Lab,
    sc: Arc<S>,
    boxes: &'static [&'static str],
    ops: Ops<S>,
) -> anyhow::Result<()> {
    let listener = super::control::bind(prefix)?;
    lab.remove_on_teardown(super::control::socket_path(prefix));
    let (table, kill, start) = ops;
    std::thread::Builder::new()
        .name("demo-control".into())
        .spawn(move || {
            super::control::serve(listener, |line| {
                super::control::answer(
                    line,
                    || table(&sc),
                    |b, sig| kill(&sc, b, sig),
                    |b| start(&sc, b),
                    boxes,
                )
            })
        })
        .context("starting the control thread")?;
    Ok(())
}

/// Prints where the logs are, each step of the tutorial with its command, and how to take
/// boxes down (`demo{flags} --kill BOX`).
pub(super) fn tutorial(
    lab: &tether_lab::Lab,
    tether: &Path,
    flags: &str,
    steps: impl Fn(&str) -> Vec<(String, String)>,
) -> Result<(), OutputClosed> {
    say(&format!("Logs and configs: {}\n", lab.dir().display()))?;
    // A user who ran the binary from the build tree gets commands that work as printed.
    let exe = if std::env::args()
        .next()
        .is_some_and(|a| a.contains("target/"))
    {
        tether.display().to_string()
    } else {
        "tether".to_string()
    };
    for (i, (what, cmd)) in steps(&exe).iter().enumerate() {
        say(&format!("{}. {what}\n     {cmd}", i + 1))?;
    }
    say(&format!(
        "\n`{exe} demo{flags} --kill BOX [--signal term]`, `--start BOX`, `--status`. \
         Ctrl-C stops everything and removes the namespaces.\n"
    ))
}

/// Prints `table()` whenever it changes, calling `wait()` between looks, until the output
/// cannot be written (its reader is gone): the error that ends the demo.
pub(super) fn status_loop(
    started: Instant,
    table: impl Fn() -> String,
    mut wait: impl FnMut(),
) -> anyhow::Error {
    let mut last = String::new();
    loop {
        // The reader may be gone while the table stays the same and nothing is written.
        if output_gone() {
            return OutputClosed(std::io::ErrorKind::BrokenPipe.into()).into();
        }
        let t = table();
        if t != last {
            let secs = started.elapsed().as_secs_f64();
            if let Err(e) = say(&format!("[{secs:7.1} s]\n{t}")) {
                return e.into();
            }
            last = t;
        }
        wait();
    }
}
