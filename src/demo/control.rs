//! The control socket of a running namespace demo: `tether demo --kill cloud1` in another
//! terminal asks the demo, which started every process, to stop or start a box. One line
//! in, the answer out, then the connection closes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tether_lab::{LabError, Sig};

/// Where the demo with this prefix listens.
pub fn socket_path(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/run/tether-lab/{prefix}-demo.sock"))
}

/// Sends one command to the running demo and prints its answer.
pub fn request(prefix: &str, line: &str) -> anyhow::Result<ExitCode> {
    let path = socket_path(prefix);
    let mut s = UnixStream::connect(&path).with_context(|| {
        format!(
            "no running namespace demo answers on {} (start one with `tether demo` as root)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    writeln!(s, "{line}")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .context("reading the demo's answer")?;
    print!("{answer}");
    Ok(if answer.starts_with("error") {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Binds the control socket (replacing a stale one: the lab already refused to start if
/// another demo with this prefix were alive).
pub fn bind(prefix: &str) -> anyhow::Result<UnixListener> {
    let path = socket_path(prefix);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&path);
    UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))
}

/// Answers one control command (`status`, `kill BOX kill|term`, `start BOX`) with what a
/// running demo does: `status` prints its table, `kill` takes a box down (`Sig::Kill`: a
/// power cut; `Sig::Term`: a clean stop), `start` brings it back; `boxes` names them for
/// errors.
pub fn answer(
    line: &str,
    status: impl FnOnce() -> String,
    kill: impl FnOnce(&str, Sig) -> Result<(), LabError>,
    start: impl FnOnce(&str) -> Result<(), LabError>,
    boxes: &[&str],
) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let result = match words.as_slice() {
        ["status"] => return status(),
        ["kill", b, sig] => {
            let sig = if *sig == "term" { Sig::Term } else { Sig::Kill };
            kill(b, sig).map(|()| format!("ok: {b} is down\n"))
        }
        ["start", b] => start(b).map(|()| format!("ok: {b} started\n")),
        _ => return format!("error: unknown command {line:?}\n"),
    };
    match result {
        Ok(s) => s,
        Err(e) => format!("error: {e} (boxes: {})\n", boxes.join(", ")),
    }
}

/// Serves commands until the listener fails; `handle` turns a command line into an answer.
pub fn serve(listener: UnixListener, handle: impl Fn(&str) -> String) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        let mut reader = BufReader::new(&conn).take(1024);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let answer = handle(line.trim());
        let mut w = &conn;
        let _ = w.write_all(answer.as_bytes());
    }
}
