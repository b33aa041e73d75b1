//! Log setup of every subcommand: filter, format, colour, and the lossy asynchronous
//! writer of [`tether_health::logs`] in front of stderr.

use std::io::IsTerminal;
use std::sync::Mutex;

use tether_health::logs::{DEFAULT_BUFFERED_LINES, WorkerGuard};

use crate::LogFormat;

/// The writer thread's guard, held until [`flush`] so that `main` needs no variable per
/// subcommand.
static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Sets the global subscriber. `default_filter` applies unless `RUST_LOG` is set;
/// `TETHER_LOG_BUFFER_LINES` sizes the queue to the writer thread.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let lines = std::env::var("TETHER_LOG_BUFFER_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_BUFFERED_LINES);
    // Buffered: the writer thread flushes after each batch it drains, so a burst costs a
    // few writes, and a quiet daemon's lines still come out at once.
    let stderr = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    let (writer, guard) = tether_health::logs::writer(stderr, lines);
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    if let Ok(mut g) = GUARD.lock() {
        *g = Some(guard);
    }
}

/// Writes out the queued lines and stops the writer thread (waiting a second at most);
/// `main` calls it when the command returns. Lines logged later are dropped.
pub fn flush() {
    let guard = GUARD.lock().ok().and_then(|mut g| g.take());
    drop(guard);
}

/// Colour only for a person at a terminal, and not when `NO_COLOR` is set to anything
/// non-empty (<https://no-color.org>): files, pipes and journald get plain text.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
