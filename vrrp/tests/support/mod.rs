//! What the vrrp crate's namespace tests share: a `tether_lab::vrrp` lab whose daemon is
//! this test binary re-executed, the daemon side of that re-execution, running a
//! command inside a lab host, and reading a capture with tshark.

#![allow(dead_code)]

use tether_lab::vrrp::{Daemon, VrrpLab};

/// The variable that carries the config file to a re-executed test binary.
const CHILD_ENV: &str = "TETHER_VRRP_CHILD_CONFIG";

/// A lab with hosts `(name, host number)`; `None` (after saying so) when this machine
/// cannot make network namespaces.
pub fn lab(tag: &str, hosts: &[(&str, u8)]) -> Option<VrrpLab> {
    let daemon = Daemon::ReExec {
        test: "daemon_child".into(),
        env: CHILD_ENV.into(),
    };
    VrrpLab::new(tag, hosts, daemon).unwrap_or_else(|e| panic!("building the lab: {e}"))
}

/// As [`lab`], with every host also on a second link (`LAN2`, `eth1`).
pub fn lab_two_links(tag: &str, hosts: &[(&str, u8)]) -> Option<VrrpLab> {
    let daemon = Daemon::ReExec {
        test: "daemon_child".into(),
        env: CHILD_ENV.into(),
    };
    VrrpLab::two_links(tag, hosts, daemon).unwrap_or_else(|e| panic!("building the lab: {e}"))
}

/// Runs `args` in `host` and fails the test unless it succeeds.
pub fn run_in(lab: &VrrpLab, host: &str, args: &[&str]) {
    let out = lab
        .exec(host, args)
        .unwrap_or_else(|e| panic!("{args:?} in {host}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} in {host} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a script the lab wrote executable.
pub fn make_executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The child side of the lab: when the test binary is re-executed as a daemon (with
/// `TETHER_VRRP_CHILD_CONFIG` set), runs `tether vrrp` on that file and exits; otherwise
/// returns at once. Each test binary calls it from a test named `daemon_child`.
pub fn run_daemon_child_if_asked() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let cfg = match tether_vrrp::load(std::path::Path::new(&path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let token = tokio_util::sync::CancellationToken::new();
        // Before the daemon starts, as the binary does: SIGHUP reloads the file.
        let hup = tether_health::signals::reloads().expect("SIGHUP handler");
        tether_health::signals::cancel_on_stop_signals(token.clone()).expect("signals");
        let daemon = match tether_vrrp::start(cfg, token).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
        daemon.reload_from(std::path::PathBuf::from(&path), hup);
        daemon.wait().await;
    });
    eprintln!("tether vrrp stopped");
    std::process::exit(0);
}

/// Reads `file` with tshark: one row per packet matching display filter `filter`, one
/// column per field.
pub fn tshark_fields(
    file: &std::path::Path,
    filter: &str,
    prefs: &[&str],
    fields: &[&str],
) -> Vec<Vec<String>> {
    let mut cmd = std::process::Command::new("tshark");
    for p in prefs {
        cmd.args(["-o", p]);
    }
    cmd.arg("-r")
        .arg(file)
        .args(["-n", "-Y", filter, "-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}
