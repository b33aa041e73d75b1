//! The parts of a reload before the new configuration is applied: reading it without
//! stalling the runtime, and keeping the settings only a restart can change.

use std::net::SocketAddr;
use std::path::PathBuf;

use tether_health::config::ConfigErrors;

use crate::config::Config;

/// Reads and validates the file away from the runtime that serves the admin API, health
/// checks and connections, bounded in time (a FIFO or a hung mount cannot freeze them).
pub(crate) async fn load_off_thread(path: PathBuf) -> Result<Config, ConfigErrors> {
    let file = path.clone();
    tether_health::config::off_thread(&file, tether_health::config::LOAD_TIMEOUT, move || {
        Config::load(&path)
    })
    .await
}

/// Puts back into `config` the settings only a restart applies (the admin listener, the
/// name servers, the grace period: all set up at start) and says which ones the file
/// changed, in the log and for the reload's answer. The running values stay in the stored
/// configuration, so the next reload compares with what really runs.
pub(crate) fn keep_running_values(running: &Config, config: &mut Config) -> Vec<String> {
    let mut notes = Vec::new();
    let mut note = |key: &str, from: String, to: String| {
        let msg = format!("{key} changed from {from} to {to}: needs a restart");
        tracing::warn!("{msg}; {key} stays {from}");
        notes.push(msg);
    };
    let show = |a: Option<SocketAddr>| a.map_or("none".to_string(), |a| a.to_string());
    if config.admin != running.admin {
        note("admin.listen", show(running.admin), show(config.admin));
        config.admin = running.admin;
    }
    if config.nameservers != running.nameservers {
        note(
            "resolver.nameservers",
            format!("{:?}", running.nameservers),
            format!("{:?}", config.nameservers),
        );
        config.nameservers = running.nameservers.clone();
    }
    if config.announce != running.announce {
        note(
            "announce",
            format!("{:?}", running.announce),
            format!("{:?}", config.announce),
        );
        config.announce = running.announce.clone();
    }
    if config.grace_period != running.grace_period {
        note(
            "defaults.grace_period",
            format!("{:?}", running.grace_period),
            format!("{:?}", config.grace_period),
        );
        config.grace_period = running.grace_period;
    }
    notes
}
