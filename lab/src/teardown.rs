//! What a lab owns and how it goes away: the namespaces it made (in a manifest, so a lab
//! killed with SIGKILL is cleaned up by the next one with the same prefix), its files and
//! its processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use crate::LabError;
use crate::cmd::run;
use crate::proc::Procs;

/// Where manifests of live labs are kept, so a lab killed with SIGKILL is cleaned up by the
/// next one with the same prefix.
const MANIFEST_DIR: &str = "/run/tether-lab";

#[derive(Default)]
pub(crate) struct State {
    /// Namespaces made, in creation order (removed in reverse).
    pub(crate) namespaces: Vec<String>,
    /// Files removed on teardown (sockets and the like of the lab's owner).
    pub(crate) files: Vec<PathBuf>,
    pub(crate) torn_down: bool,
}

/// What the signal thread needs to tear a lab down.
pub(crate) struct Inner {
    pub(crate) prefix: String,
    pub(crate) dir: PathBuf,
    pub(crate) state: Mutex<State>,
    pub(crate) procs: Procs,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock must not stop the teardown.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    pub(crate) fn manifest(&self) -> PathBuf {
        Path::new(MANIFEST_DIR).join(format!("{}.lab", self.prefix))
    }

    pub(crate) fn write_manifest(&self, st: &State) {
        let mut text = format!("{}\n", std::process::id());
        for ns in &st.namespaces {
            text.push_str(ns);
            text.push('\n');
        }
        let _ = std::fs::create_dir_all(MANIFEST_DIR);
        let _ = std::fs::write(self.manifest(), text);
    }

    pub(crate) fn add_ns(&self, ns: &str) -> Result<(), LabError> {
        let mut st = lock(&self.state);
        // Recorded before it exists, so a failure half-way still removes it.
        st.namespaces.push(ns.to_string());
        self.write_manifest(&st);
        drop(st);
        run(&["ip", "netns", "add", ns])
    }

    /// Stops every process, then removes every namespace. Idempotent.
    pub(crate) fn teardown(&self) {
        let mut st = lock(&self.state);
        if st.torn_down {
            return;
        }
        st.torn_down = true;
        self.procs.kill_all();
        for ns in st.namespaces.iter().rev() {
            remove_ns(ns);
        }
        st.namespaces.clear();
        for f in st.files.drain(..) {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_file(self.manifest());
        if std::env::var_os("TETHER_KEEP_LAB").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Kills what still runs inside `ns` (only our own descendants can be there) and deletes it.
pub(crate) fn remove_ns(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) on a process inside a namespace this lab created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// The working directory of the lab `prefix` run by process `pid`, unless one was given.
pub(crate) fn default_dir(prefix: &str, pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("{prefix}-lab-{pid}"))
}

/// Removes what a lab with this prefix left behind when its process died without cleaning
/// up (SIGKILL, power cut). Refuses when that process still lives.
pub(crate) fn reclaim_stale(prefix: &str) -> Result<(), LabError> {
    let path = Path::new(MANIFEST_DIR).join(format!("{prefix}.lab"));
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let mut lines = text.lines();
    let owner = lines.next().and_then(|l| l.trim().parse::<u32>().ok());
    if let Some(pid) = owner
        && pid != std::process::id()
    {
        if Path::new(&format!("/proc/{pid}")).exists() {
            return Err(LabError::InUse {
                prefix: prefix.to_string(),
                pid,
            });
        }
        // Its working directory, when it had the default one (logs, pid files).
        let _ = std::fs::remove_dir_all(default_dir(prefix, pid));
    }
    for ns in lines.map(str::trim).filter(|l| !l.is_empty()) {
        // Only names of this prefix: a corrupted manifest must not remove anything else.
        if ns.starts_with(&format!("{prefix}-")) {
            remove_ns(ns);
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}
