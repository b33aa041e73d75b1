//! The signals every daemon answers, in one place: SIGTERM and SIGINT cancel a token (the
//! one way a daemon is told to stop), and SIGHUP asks for a reload.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT, and logs which.
pub fn cancel_on_stop_signals(
    token: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "stopping");
        token.cancel();
    }))
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    cancel_on_stop_signals(token.clone())?;
    Ok(token)
}

/// The stream of SIGHUPs. Install it before anything listens: once installed, a SIGHUP
/// can no longer end the process (its default action), which would stop a daemon without
/// its orderly exit (a VRRP master without priority 0, VIPs left on the interface).
pub fn reloads() -> std::io::Result<Signal> {
    signal(SignalKind::hangup())
}
