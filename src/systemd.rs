//! Readiness for systemd's `Type=notify` units: a daemon says READY=1 once it really serves
//! (listeners bound, admin up), so `systemctl start` and units ordered after it wait for
//! that and not merely for the process to exist. Without `NOTIFY_SOCKET` this does nothing.

/// Sends READY=1; a failure is logged, never fatal (the daemon serves either way).
pub fn ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("could not send READY=1 to systemd: {e}");
    }
}
