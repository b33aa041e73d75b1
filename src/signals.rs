//! Turns SIGTERM and SIGINT into a cancellation token, the one way daemons are told to stop.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels the returned token on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "stopping");
        t.cancel();
    });
    Ok(token)
}

/// Keeps SIGHUP (how keepalived users reload) from killing a daemon that cannot reload
/// yet: the default action would end the process with no priority 0 and its VIPs still
/// on the interface. Logs on every SIGHUP that the running configuration stays.
pub fn reload_not_supported(daemon: &'static str) -> anyhow::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::warn!(
                "SIGHUP: tether {daemon} cannot reload its configuration yet; \
                 still running the configuration it started with (restart to apply changes)"
            );
        }
    });
    Ok(())
}
