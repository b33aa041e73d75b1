//! The daemons' signals ([`tether_health::signals`]), with the binary's error context.

use anyhow::Context;
use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;

/// Cancels the returned token on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    tether_health::signals::shutdown_on_signals()
        .context("installing the SIGTERM and SIGINT handlers")
}

/// SIGHUPs, as reload requests. Install before anything listens (see
/// [`tether_health::signals::reloads`]).
pub fn reloads() -> anyhow::Result<Signal> {
    tether_health::signals::reloads().context("installing the SIGHUP handler")
}
