//! The notify command, run as keepalived runs it (`cmd... INSTANCE name STATE prio`).
//!
//! One queue per instance, run one command at a time in transition order: concurrent
//! runs finish in any order, and on a fast flap the last script to finish (the one that
//! sets a route or a firewall, say) may be for a state the instance has already left.
//! Each run gets `TETHER_NOTIFY_SEQ` (1, 2, …) so a script can also discard stale calls.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::fsm::State;
use crate::metrics::Metrics;

/// Environment variable carrying the per-instance sequence number of a notify run.
pub const SEQ_ENV: &str = "TETHER_NOTIFY_SEQ";

/// Runs one instance's notify command for each transition, in order, never two at once.
pub struct Notifier {
    queue: mpsc::UnboundedSender<(State, u8)>,
    worker: JoinHandle<()>,
}

impl Notifier {
    /// Starts the worker for `argv` (program and leading arguments) of instance `name`.
    pub fn spawn(argv: Vec<String>, name: String, timeout: Duration, metrics: Metrics) -> Notifier {
        let (queue, mut rx) = mpsc::unbounded_channel::<(State, u8)>();
        let worker = tokio::spawn(async move {
            let mut seq: u64 = 0;
            while let Some((to, prio)) = rx.recv().await {
                seq += 1;
                if !run(&argv, &name, to, prio, seq, timeout).await {
                    metrics.notify_failures.with_label_values(&[&name]).inc();
                }
            }
        });
        Notifier { queue, worker }
    }

    /// Queues a run for a transition to `to` at priority `prio`; returns at once, so a
    /// slow script never blocks the state machine.
    pub fn notify(&self, to: State, prio: u8) {
        // The worker only ends after `finish`, which consumes the notifier.
        let _ = self.queue.send((to, prio));
    }

    /// Runs what is queued (each still bounded by the timeout), then stops the worker.
    pub async fn finish(self) {
        drop(self.queue);
        let _ = self.worker.await;
    }
}

/// Runs the command once; `false` when it failed, could not start or timed out (killed).
async fn run(
    argv: &[String],
    name: &str,
    to: State,
    prio: u8,
    seq: u64,
    timeout: Duration,
) -> bool {
    let Some((prog, args)) = argv.split_first() else {
        return false;
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .args(["INSTANCE", name, to.keepalived_name(), &prio.to_string()])
        .env(SEQ_ENV, seq.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            warn!(instance = %name, "notify {prog:?} could not start: {e}");
            return false;
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) if st.success() => true,
        Ok(Ok(st)) => {
            warn!(instance = %name, "notify {prog:?} exited with {st}");
            false
        }
        Ok(Err(e)) => {
            warn!(instance = %name, "notify {prog:?}: {e}");
            false
        }
        Err(_) => {
            warn!(instance = %name, "notify {prog:?} still running after {timeout:?}; killed");
            let _ = child.kill().await;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slow first call must not let a later, quick one overtake it.
    #[tokio::test]
    async fn runs_in_order_one_at_a_time_with_a_sequence_number() {
        let dir = std::env::temp_dir().join(format!("tether-notify-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let script = dir.join("notify.sh");
        // BACKUP is slow (as a script that drains connections is); MASTER is quick.
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$3\" = BACKUP ] && sleep 0.3\necho \"${SEQ_ENV} $3\" >> {}\n",
                out.display()
            ),
        )
        .unwrap();
        std::process::Command::new("chmod")
            .args(["755"])
            .arg(&script)
            .status()
            .unwrap();
        let n = Notifier::spawn(
            vec![script.display().to_string()],
            "VI_1".into(),
            Duration::from_secs(10),
            Metrics::new().unwrap(),
        );
        for s in [State::Backup, State::Master, State::Backup, State::Master] {
            n.notify(s, 100);
        }
        n.finish().await;
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got, "1 BACKUP\n2 MASTER\n3 BACKUP\n4 MASTER\n");
    }
}
