//! tether-gateway: cloud and on-prem gateways over prepared reverse connections.
//!
//! An on-prem gateway keeps `prepared_connections` mutual-TLS sessions to **every** cloud
//! node, each multiplexed with the yamux wire format. Cloud nodes open reverse streams on
//! them for their clients; on-prem opens forward streams for its local clients. A cloud node
//! is ready for a service only while it holds a live session that exports the service with
//! its server up, and by default does not even listen otherwise, so a balancer in front never
//! strands a client on a node that cannot serve it.
//!
//! - Sans-IO cores: [`readiness`] (cloud) and [`placement`] (on-prem), with [`backoff`],
//!   [`duplicate`] (one gateway id held by two processes) and [`loggate`] (rate-limited
//!   warnings); [`reload`]: the pure plan of what a new configuration changes.
//! - The roles: [`cloud`] and [`onprem`], each a folder with one file per concern
//!   (sessions, client streams, admin routes, dialing); `base`, `stream`, `race`, `relay`
//!   and `listener` are what both roles share (drain work, stream answering and carrying,
//!   hedged opens, the lazy relay, readiness-gated listeners).
//! - The wire: [`proto`] (preamble and control messages), [`mux`] (yamux behind a trait),
//!   [`tls`] (rustls configurations), [`certs`] (the test CA behind `tether gateway certs`).
//! - [`config`]; [`metrics`] (with [`expiry`], certificate expiry at scrape time).
#![warn(missing_docs)]

pub mod backoff;
mod base;
pub mod certs;
pub mod cloud;
mod common;
pub mod config;
pub mod duplicate;
pub mod expiry;
mod listener;
pub mod loggate;
pub mod metrics;
pub mod mux;
pub mod onprem;
pub mod placement;
pub mod proto;
mod race;
pub mod readiness;
mod relay;
pub mod reload;
mod stream;
pub mod tls;

pub use cloud::CloudHandle;
pub use common::{BindError, GatewayError};
pub use config::GatewayConfig;
pub use onprem::OnpremHandle;

use std::path::Path;

use tokio_util::sync::CancellationToken;

/// A running gateway of either role.
#[derive(Debug)]
pub enum Handle {
    /// A cloud node.
    Cloud(CloudHandle),
    /// An on-prem gateway.
    Onprem(OnpremHandle),
}

impl Handle {
    /// Waits until the gateway has stopped (after `shutdown` drained it, or a kill).
    pub async fn wait(&self) {
        match self {
            Handle::Cloud(h) => h.wait().await,
            Handle::Onprem(h) => h.wait().await,
        }
    }
}

impl Handle {
    /// Applies a new configuration of the same role without a restart (see
    /// [`CloudHandle::reload`] and [`OnpremHandle::reload`]); another role needs a restart.
    pub fn reload(&self, new: GatewayConfig) -> Result<reload::Plan, reload::ReloadError> {
        match (self, new) {
            (Handle::Cloud(h), GatewayConfig::Cloud(c)) => h.reload(c),
            (Handle::Onprem(h), GatewayConfig::Onprem(c)) => h.reload(c),
            (h, new) => {
                let old = match h {
                    Handle::Cloud(h) => GatewayConfig::Cloud((*h.config()).clone()),
                    Handle::Onprem(h) => GatewayConfig::Onprem((*h.config()).clone()),
                };
                h.metrics().reloaded("failed");
                let e = reload::ReloadError::NeedsRestart(reload::plan(&old, &new).restart);
                tracing::warn!(target: "tether_gateway", error = %e, "reload refused; the running configuration keeps serving");
                Err(e)
            }
        }
    }

    /// Reads `path` again (as `--check` does, TLS files included) and applies it with
    /// [`Handle::reload`]: what SIGHUP does. A file that does not parse or validate is
    /// refused with the same errors as `--check`, counted as a failed reload, and the
    /// running configuration keeps serving.
    pub fn reload_from(&self, path: &Path) -> Result<reload::Plan, reload::ReloadError> {
        match config::load(path) {
            Ok(new) => self.reload(new),
            Err(errors) => {
                self.metrics().reloaded("failed");
                tracing::warn!(target: "tether_gateway", "reload refused; the running configuration keeps serving:\n{errors}");
                Err(reload::ReloadError::Config(errors))
            }
        }
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &metrics::Metrics {
        match self {
            Handle::Cloud(h) => h.metrics(),
            Handle::Onprem(h) => h.metrics(),
        }
    }
}

/// Starts a gateway: every socket is bound before this returns, so a test can read the
/// addresses from the handle. Cancelling `shutdown` drains and then stops it.
pub async fn start(
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> Result<Handle, GatewayError> {
    match config {
        GatewayConfig::Cloud(c) => cloud::start(c, shutdown).await.map(Handle::Cloud),
        GatewayConfig::Onprem(c) => onprem::start(c, shutdown).await.map(Handle::Onprem),
    }
}

/// Runs a gateway until `shutdown` is cancelled and its drain has finished.
pub async fn run(config: GatewayConfig, shutdown: CancellationToken) -> Result<(), GatewayError> {
    let handle = start(config, shutdown).await?;
    handle.wait().await;
    Ok(())
}
