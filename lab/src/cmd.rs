//! Running the setup commands (`ip`, `nft`, ...): a failure carries the command line and
//! what it printed.

use std::process::{Command, Output, Stdio};

use crate::LabError;

/// Runs `args` with no input.
pub(crate) fn run(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::io(format!("running {}", args[0]), e))?;
    succeeded(args, out)
}

/// Runs `args` with `stdin` as its input (an `nft -f -` script).
pub(crate) fn run_stdin(args: &[&str], stdin: &str) -> Result<(), LabError> {
    use std::io::Write;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::io(format!("running {}", args[0]), e))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes())
            .map_err(|e| LabError::io(format!("writing to {}", args[0]), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::io(format!("running {}", args[0]), e))?;
    succeeded(args, out)
}

fn succeeded(args: &[&str], out: Output) -> Result<(), LabError> {
    if out.status.success() {
        return Ok(());
    }
    Err(LabError::Command {
        cmd: args.join(" "),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}
