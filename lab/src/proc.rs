//! Processes started inside lab hosts, tracked by name so they can be killed and restarted.

use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::LabError;
use crate::teardown::lock;

/// A signal a lab may send to one of its processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// SIGTERM: stop gracefully.
    Term,
    /// SIGKILL: die now (a box losing power).
    Kill,
    /// SIGINT.
    Int,
    /// SIGHUP: reload.
    Hup,
    /// SIGSTOP: freeze (a hung box that still holds its sockets).
    Stop,
    /// SIGCONT: thaw.
    Cont,
}

impl Sig {
    fn raw(self) -> i32 {
        match self {
            Sig::Term => libc::SIGTERM,
            Sig::Kill => libc::SIGKILL,
            Sig::Int => libc::SIGINT,
            Sig::Hup => libc::SIGHUP,
            Sig::Stop => libc::SIGSTOP,
            Sig::Cont => libc::SIGCONT,
        }
    }
}

/// What to run, where, under which name.
#[derive(Debug, Clone)]
pub struct ProcSpec {
    /// Unique name in the lab (also the log file's name).
    pub name: String,
    /// The host it runs in.
    pub host: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl ProcSpec {
    /// `program` named `name`, run in `host`, with no arguments yet.
    pub fn new(name: &str, host: &str, program: impl Into<PathBuf>) -> Self {
        ProcSpec {
            name: name.to_string(),
            host: host.to_string(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// Whether a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// Running with this pid.
    Running(u32),
    /// Exited with this code, or was killed by this signal.
    Exited {
        /// The exit code, when it exited by itself.
        code: Option<i32>,
        /// The signal that ended it, if any.
        signal: Option<i32>,
    },
}

impl ProcState {
    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        matches!(self, ProcState::Running(_))
    }
}

impl std::fmt::Display for ProcState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcState::Running(pid) => write!(f, "up (pid {pid})"),
            ProcState::Exited {
                signal: Some(s), ..
            } => write!(f, "down (signal {s})"),
            ProcState::Exited { code: Some(c), .. } => write!(f, "down (exit {c})"),
            ProcState::Exited { .. } => write!(f, "down"),
        }
    }
}

struct Entry {
    spec: ProcSpec,
    child: Option<Child>,
    last: ProcState,
}

impl Entry {
    fn refresh(&mut self) -> ProcState {
        if let Some(c) = &mut self.child {
            match c.try_wait() {
                Ok(Some(st)) => {
                    use std::os::unix::process::ExitStatusExt;
                    self.last = ProcState::Exited {
                        code: st.code(),
                        signal: st.signal(),
                    };
                    self.child = None;
                }
                Ok(None) => self.last = ProcState::Running(c.id()),
                Err(_) => {}
            }
        }
        self.last
    }
}

type Job = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The processes of one lab.
pub(crate) struct Procs {
    entries: Mutex<Vec<Entry>>,
    /// Every child is forked by one long-lived thread: `PR_SET_PDEATHSIG` fires when the
    /// forking *thread* ends, so forking from short-lived threads would kill children early.
    spawner: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Procs {
    pub(crate) fn new() -> Self {
        Procs {
            entries: Mutex::new(Vec::new()),
            spawner: Mutex::new(None),
        }
    }

    fn spawn(&self, cmd: Command) -> std::io::Result<Child> {
        let mut sp = lock(&self.spawner);
        if sp.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("lab-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                })?;
            *sp = Some(tx);
        }
        let (tx, rx) = mpsc::channel();
        let sent = sp.as_ref().is_some_and(|s| s.send((cmd, tx)).is_ok());
        drop(sp);
        if !sent {
            return Err(std::io::Error::other("the lab's spawner thread is gone"));
        }
        rx.recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the lab's spawner thread is gone")))
    }

    /// Runs `args` in namespace `ns` with its output sent, line by line, to a [`Watch`]: for
    /// event streams such as `ip monitor`, which a test waits on instead of polling.
    pub(crate) fn watch(&self, ns: &str, args: &[&str]) -> Result<Watch, LabError> {
        self.watch_all(&[ns.to_string()], args)
    }

    /// [`Procs::watch`] in several namespaces at once, their lines merged in one [`Watch`].
    pub(crate) fn watch_all(
        &self,
        namespaces: &[String],
        args: &[&str],
    ) -> Result<Watch, LabError> {
        let (tx, lines) = mpsc::channel();
        let mut w = Watch {
            children: Vec::new(),
            lines,
        };
        for ns in namespaces {
            // Pushed as they start: a later failure drops `w`, which kills the earlier ones.
            w.children.push(self.watch_one(ns, args, tx.clone())?);
        }
        Ok(w)
    }

    fn watch_one(
        &self,
        ns: &str,
        args: &[&str],
        tx: mpsc::Sender<String>,
    ) -> Result<Child, LabError> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = self
            .spawn(cmd)
            .map_err(|e| LabError::io(format!("starting {args:?} in {ns}"), e))?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| LabError::io("no stdout", std::io::Error::other("not piped")))?;
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Ok(child)
    }

    pub(crate) fn start(&self, spec: ProcSpec, ns: &str, log: &Path) -> Result<u32, LabError> {
        let mut entries = lock(&self.entries);
        if let Some(e) = entries.iter_mut().find(|e| e.spec.name == spec.name)
            && e.refresh().is_running()
        {
            return Err(LabError::AlreadyRunning(spec.name));
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| LabError::io(format!("opening {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| LabError::io(format!("opening {}", log.display()), e))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(&spec.program)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                // Die with the lab's process, even on SIGKILL of it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // Own process group: a Ctrl-C at the terminal goes to the lab's owner, which
                // stops its processes in order, not to every daemon at once.
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let child = self
            .spawn(cmd)
            .map_err(|e| LabError::io(format!("starting {} in {ns}", spec.name), e))?;
        let pid = child.id();
        entries.retain(|e| e.spec.name != spec.name);
        entries.push(Entry {
            spec,
            child: Some(child),
            last: ProcState::Running(pid),
        });
        Ok(pid)
    }

    pub(crate) fn spec(&self, name: &str) -> Result<ProcSpec, LabError> {
        lock(&self.entries)
            .iter()
            .find(|e| e.spec.name == name)
            .map(|e| e.spec.clone())
            .ok_or_else(|| LabError::UnknownProcess(name.to_string()))
    }

    pub(crate) fn signal(&self, name: &str, sig: Sig) -> Result<(), LabError> {
        let mut entries = lock(&self.entries);
        let e = entries
            .iter_mut()
            .find(|e| e.spec.name == name)
            .ok_or_else(|| LabError::UnknownProcess(name.to_string()))?;
        if let ProcState::Running(pid) = e.refresh() {
            // SAFETY: kill(2) on our own child, which has not been reaped (so the pid is
            // still ours).
            unsafe { libc::kill(pid as i32, sig.raw()) };
        }
        Ok(())
    }

    pub(crate) fn state(&self, name: &str) -> Result<ProcState, LabError> {
        lock(&self.entries)
            .iter_mut()
            .find(|e| e.spec.name == name)
            .map(Entry::refresh)
            .ok_or_else(|| LabError::UnknownProcess(name.to_string()))
    }

    /// Waits until process `name` has exited, at most `timeout`: on the process's pidfd,
    /// which the kernel makes readable when it exits (polling every 5 ms only where pidfds
    /// do not exist, before Linux 5.3).
    pub(crate) fn wait_exit(&self, name: &str, timeout: Duration) -> Result<ProcState, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.state(name)?;
            let ProcState::Running(pid) = st else {
                return Ok(st);
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(st);
            }
            if !wait_pidfd(pid, left) {
                std::thread::sleep(Duration::from_millis(5).min(left));
            }
        }
    }

    pub(crate) fn stop(&self, name: &str, grace: Duration) -> Result<ProcState, LabError> {
        self.signal(name, Sig::Term)?;
        let st = self.wait_exit(name, grace)?;
        if st.is_running() {
            self.signal(name, Sig::Kill)?;
            return self.wait_exit(name, Duration::from_secs(5));
        }
        Ok(st)
    }

    pub(crate) fn list(&self) -> Vec<(String, String, ProcState)> {
        lock(&self.entries)
            .iter_mut()
            .map(|e| {
                let st = e.refresh();
                (e.spec.name.clone(), e.spec.host.clone(), st)
            })
            .collect()
    }

    pub(crate) fn kill_all(&self) {
        let mut entries = lock(&self.entries);
        for e in entries.iter_mut() {
            if let Some(c) = &mut e.child {
                let _ = c.kill();
                let _ = c.wait();
            }
            e.child = None;
        }
    }
}

/// A command's output, line by line, as it comes; the command is killed when this is
/// dropped (and when the lab's process dies).
pub struct Watch {
    children: Vec<Child>,
    /// Every line the command writes, in order, as it writes it.
    pub lines: mpsc::Receiver<String>,
}

/// The watched command ended (or its output closed): no line will come any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the watched command ended")]
pub struct WatchEnded;

impl Watch {
    /// Waits up to `timeout` for the next line: `Ok(None)` when none came in time,
    /// `Err(WatchEnded)` when none ever will, so a caller never takes a dead watch's
    /// silence for quiet.
    pub fn next_line(&self, timeout: Duration) -> Result<Option<String>, WatchEnded> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(Some(l)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(WatchEnded),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits up to `timeout` for process `pid` (our child, not yet reaped) to exit, on a pidfd.
/// `false` when no pidfd could be opened, so the caller falls back to polling.
fn wait_pidfd(pid: u32, timeout: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` was just returned by the kernel and is owned here alone.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis())
        .unwrap_or(i32::MAX)
        .max(1);
    // SAFETY: one valid pollfd that outlives the call.
    unsafe { libc::poll(&mut p, 1, ms) };
    true
}
