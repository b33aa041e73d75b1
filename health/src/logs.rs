//! Log output that never stalls the daemon: lines go through a bounded queue to a writer
//! thread, and a line that finds the queue full is dropped and counted in
//! `tether_log_lines_dropped_total` instead of blocking the task that logged it.
//!
//! A daemon logs one line per proxied connection; written synchronously to a stderr that
//! a slow journald, a full pipe or a paused terminal holds up, every such line would hold
//! up the data path with it.

use std::io::Write;
use std::sync::{LazyLock, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, Opts};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder};
pub use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};

/// Lines the queue holds before new ones are dropped: about 3 MiB of connection lines
/// (~375 bytes each), enough to ride out a burst while the writer catches up.
pub const DEFAULT_BUFFERED_LINES: usize = 8192;

const NAME: &str = "tether_log_lines_dropped_total";
const HELP: &str = "Log lines dropped because the log output was slower than the daemon (the queue to the log writer was full).";

/// The drop counters of every writer [`writer`] made in this process (one in a daemon).
static COUNTERS: LazyLock<Mutex<Vec<ErrorCounter>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// Wraps `sink` in a lossy asynchronous writer holding at most `buffered_lines` lines.
///
/// Keep the guard alive until the process ends: dropping it flushes the queued lines.
pub fn writer<W: Write + Send + 'static>(
    sink: W,
    buffered_lines: usize,
) -> (NonBlocking, WorkerGuard) {
    let (w, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(buffered_lines.max(1))
        .thread_name("tether-log")
        .finish(sink);
    if let Ok(mut c) = COUNTERS.lock() {
        c.push(w.error_counter());
    }
    (w, guard)
}

fn dropped() -> u64 {
    COUNTERS
        .lock()
        .map_or(0, |c| c.iter().map(|e| e.dropped_lines() as u64).sum())
}

/// `tether_log_lines_dropped_total`, read from the writers at scrape time. One count for
/// the process, registered into every daemon's registry by [`crate::admin::router`].
pub(crate) struct LinesDropped {
    desc: Desc,
}

impl LinesDropped {
    pub(crate) fn new() -> Self {
        let desc = IntCounter::new(NAME, HELP)
            .expect("a valid metric name")
            .desc()
            .into_iter()
            .next()
            .cloned()
            .expect("a counter has one description");
        LinesDropped { desc }
    }
}

impl Collector for LinesDropped {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }
    fn collect(&self) -> Vec<MetricFamily> {
        // A fresh counter per scrape: the writers' counts are the state, so two scrapes at
        // once cannot add a difference twice.
        let Ok(c) = IntCounter::with_opts(Opts::new(NAME, HELP)) else {
            return Vec::new();
        };
        c.inc_by(dropped());
        c.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A sink stuck until the test lets it go, like stderr into a pipe nobody reads.
    struct Stuck(mpsc::Receiver<()>);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn scraped() -> u64 {
        let r = prometheus::Registry::new();
        r.register(Box::new(LinesDropped::new())).expect("register");
        let fams = r.gather();
        let f = fams.iter().find(|f| f.name() == NAME).expect("family");
        f.get_metric()[0].get_counter().get_value() as u64
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (release, stuck) = mpsc::channel();
        let (mut w, guard) = writer(Stuck(stuck), 4);
        let before = scraped();
        // The writer thread takes one line and sticks on it; 4 more fill the queue; the
        // rest must return at once. Written from a thread so that a writer that blocks
        // fails the test instead of hanging it.
        let (done, wrote) = mpsc::channel();
        std::thread::spawn(move || {
            for i in 0..100 {
                w.write_all(format!("line {i}\n").as_bytes())
                    .expect("write");
            }
            let _ = done.send(());
        });
        let finished = wrote.recv_timeout(std::time::Duration::from_secs(10));
        drop(release);
        assert!(finished.is_ok(), "writing blocked on a full queue");
        let dropped = scraped() - before;
        assert!(
            dropped >= 100 - 4 - 1,
            "{dropped} of 100 lines dropped, room for 5"
        );
        drop(guard);
    }
}
