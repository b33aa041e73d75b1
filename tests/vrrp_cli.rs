//! `tether vrrp` as a user runs it: `--check` on the example and on a broken file.

use std::process::Command;

const TETHER: &str = env!("CARGO_BIN_EXE_tether");

#[test]
fn vrrp_check_accepts_the_example_and_names_file_line_key() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ok = Command::new(TETHER)
        .args(["vrrp", "--check", "--config"])
        .arg(root.join("examples/vrrp.toml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = std::env::temp_dir().join(format!("tether-vrrp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 300\nversion = 2\nadvert_interval = \"100ms\"\nvirtual_addresses = [\"192.0.2.100/24\", \"2001:db8::1/64\"]\n",
    )
    .unwrap();
    let out = Command::new(TETHER)
        .args(["vrrp", "--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4: instance[0].vrid: 300 is out of range; vrid must be 1..=255"),
        "{err}"
    );
    assert!(
        err.contains(
            "bad.toml:6: instance[0].advert_interval: 100ms is not allowed with version 2"
        ),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:7: instance[0].virtual_addresses: mixes IPv4 and IPv6"),
        "{err}"
    );
}

/// keepalived users reload with SIGHUP: `tether vrrp` re-reads its file in place (an
/// unchanged file changes nothing), refuses an invalid one with its `file:line: key`
/// errors and keeps running, and SIGTERM still stops it cleanly.
#[test]
fn sighup_reloads_in_place_and_refuses_an_invalid_file() {
    use nix::sys::signal::{Signal, kill};
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = std::env::temp_dir().join(format!("tether-vrrp-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("vrrp.toml");
    // An interface that does not exist: the instance waits for it and logs so, which
    // tells the test the daemon (and its signal handlers) are up.
    std::fs::write(
        &cfg,
        "[[instance]]\nname = \"VI_1\"\ninterface = \"thupnone0\"\nvrid = 51\nvirtual_addresses = [\"192.0.2.100/24\"]\n",
    )
    .unwrap();
    let mut child = Command::new(TETHER)
        .args(["vrrp", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut lines = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let mut wait_for = |needle: &str| -> Option<String> { lines.find(|l| l.contains(needle)) };
    let started = wait_for("thupnone0 not found");
    kill(pid, Signal::SIGHUP).unwrap();
    let applied = wait_for("reload applied");
    // Out of range: refused, the running configuration stays.
    std::fs::write(
        &cfg,
        "[[instance]]\nname = \"VI_1\"\ninterface = \"thupnone0\"\nvrid = 300\nvirtual_addresses = [\"192.0.2.100/24\"]\n",
    )
    .unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    let refused = wait_for("reload refused");
    let error = wait_for("vrrp.toml:");
    kill(pid, Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(started.is_some(), "the daemon never reported its instance");
    let applied = applied.expect("no reload line before the process ended");
    assert!(applied.contains("1 unchanged"), "{applied}");
    assert!(refused.is_some(), "the invalid file was not refused");
    let error = error.expect("no file:line error");
    assert!(error.contains("vrrp.toml:4: instance[0].vrid"), "{error}");
    assert!(status.success(), "SIGTERM after SIGHUP: {status:?}");
}

/// What systemd's ExecStopPost runs after a crash: the configured VIPs go, other
/// addresses of the interface stay.
#[test]
fn cleanup_removes_the_configured_vips_a_killed_daemon_left_and_nothing_else() {
    if let Err(e) = tether_lab::available() {
        assert!(!nix::unistd::geteuid().is_root(), "root, but {e}");
        eprintln!("SKIP: {e}");
        return;
    }
    let lab = tether_lab::Lab::builder(&tether_lab::Lab::unique_prefix("vcln"))
        .network("lan", "192.0.2.0/24")
        .host("n1", &[("lan", 1)])
        .build()
        .unwrap();
    let iface = lab.iface("n1", "lan").unwrap();
    for a in ["192.0.2.100/24", "192.0.2.200/24"] {
        let out = lab
            .exec("n1", &["ip", "addr", "add", a, "dev", &iface])
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let cfg = lab.dir().join("vrrp.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[instance]]\nname = \"VI_1\"\ninterface = \"{iface}\"\nvrid = 51\nvirtual_addresses = [\"192.0.2.100/24\"]\n"
        ),
    )
    .unwrap();
    let out = lab
        .exec(
            "n1",
            &[
                TETHER,
                "vrrp",
                "--cleanup",
                "--config",
                cfg.to_str().unwrap(),
            ],
        )
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("VI_1: removed 192.0.2.100/24 from {iface}\n")
    );
    let addrs = lab
        .exec("n1", &["ip", "-o", "-4", "addr", "show", "dev", &iface])
        .unwrap();
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert!(!addrs.contains("192.0.2.100/"), "{addrs}");
    assert!(addrs.contains("192.0.2.200/24"), "{addrs}");
    assert!(addrs.contains("192.0.2.1/24"), "{addrs}");
}
