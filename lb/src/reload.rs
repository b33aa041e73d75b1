//! The parts of a reload before anything changes: reading the file without stalling the
//! runtime, keeping the settings only a restart can change, and the plan of what to open,
//! keep and close (pure, table-tested), which `runtime` then carries out.

use std::collections::{BTreeMap, BTreeSet};
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

/// What a reload does to the listening sockets, decided from the binds that listen now and
/// the new configuration alone; `runtime` then binds, starts and stops accordingly.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ListenerPlan {
    /// Binds to open, each with the frontend that wants it, in configuration order.
    pub open: Vec<(SocketAddr, String)>,
    /// Binds no frontend wants any more.
    pub close: Vec<SocketAddr>,
    /// Binds that keep their sockets (and every connection accepted on them).
    pub keep: Vec<SocketAddr>,
}

/// The listener changes from `listening` to what `config` wants. dr frontends have no
/// socket: the kernel serves them.
pub(crate) fn listener_plan(
    listening: impl IntoIterator<Item = SocketAddr>,
    config: &Config,
) -> ListenerPlan {
    let listening: BTreeSet<SocketAddr> = listening.into_iter().collect();
    let mut plan = ListenerPlan::default();
    let mut wanted = BTreeSet::new();
    for f in config.frontends.iter().filter(|f| f.dr.is_none()) {
        for b in &f.binds {
            if !wanted.insert(*b) {
                continue;
            }
            if listening.contains(b) {
                plan.keep.push(*b);
            } else {
                plan.open.push((*b, f.name.clone()));
            }
        }
    }
    plan.close = listening.difference(&wanted).copied().collect();
    plan.keep.sort();
    plan
}

/// Which health monitors a reload starts and stops. A monitor is known by its server
/// (`backend/server`) and a key that changes with anything it checks (kind, target, timers,
/// the server's identity); a changed key restarts it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MonitorPlan<K> {
    /// Monitors to start (new servers, or changed keys: stopped first).
    pub start: Vec<K>,
    /// Monitors to stop (servers gone, unchecked, or changed keys).
    pub stop: Vec<K>,
}

/// The monitor changes from `running` to `wanted` (both: id → key).
pub(crate) fn monitor_plan<K: Ord + Clone>(
    running: &BTreeMap<K, String>,
    wanted: &BTreeMap<K, String>,
) -> MonitorPlan<K> {
    let mut plan = MonitorPlan {
        start: Vec::new(),
        stop: Vec::new(),
    };
    for (id, key) in wanted {
        match running.get(id) {
            Some(k) if k == key => {}
            Some(_) => {
                plan.stop.push(id.clone());
                plan.start.push(id.clone());
            }
            None => plan.start.push(id.clone()),
        }
    }
    for id in running.keys().filter(|id| !wanted.contains_key(*id)) {
        plan.stop.push(id.clone());
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(frontends: &[(&str, &[&str], bool)]) -> Config {
        let mut text = String::from(
            "[[backend]]\nname = \"be\"\n[[backend.server]]\nname = \"s1\"\naddress = \"192.0.2.21:8001\"\n",
        );
        for (name, binds, dr) in frontends {
            let binds: Vec<String> = binds.iter().map(|b| format!("\"{b}\"")).collect();
            text.push_str(&format!(
                "\n[[frontend]]\nname = \"{name}\"\nbind = [{}]\nbackend = \"be\"\n{}",
                binds.join(", "),
                if *dr {
                    "mode = \"dr\"\ninterface = \"eth0\"\n"
                } else {
                    ""
                }
            ));
        }
        let src = tether_health::config::Source {
            file: "lb.toml".into(),
            text,
        };
        Config::from_source(&src).expect("a valid test configuration")
    }

    /// The frontends of a new file (name, binds, dr), then the expected binds opened (with
    /// their frontend), kept and closed.
    type Case<'a> = (
        Vec<(&'a str, &'a [&'a str], bool)>,
        Vec<(&'a str, &'a str)>,
        Vec<&'a str>,
        Vec<&'a str>,
    );

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn listeners_open_keep_and_close_by_bind() {
        let running = [a("127.0.0.1:8001"), a("127.0.0.1:8002")];
        let cases: Vec<Case> = vec![
            (
                vec![("web", &["127.0.0.1:8001", "127.0.0.1:8002"], false)],
                vec![],
                vec!["127.0.0.1:8001", "127.0.0.1:8002"],
                vec![],
            ),
            (
                vec![("web", &["127.0.0.1:8001", "127.0.0.1:8003"], false)],
                vec![("127.0.0.1:8003", "web")],
                vec!["127.0.0.1:8001"],
                vec!["127.0.0.1:8002"],
            ),
            (
                // A bind that moves to another frontend keeps its socket.
                vec![
                    ("a", &["127.0.0.1:8001"], false),
                    ("b", &["127.0.0.1:8002"], false),
                ],
                vec![],
                vec!["127.0.0.1:8001", "127.0.0.1:8002"],
                vec![],
            ),
            (
                // A frontend turned dr gives its socket up: the kernel serves it.
                vec![("web", &["127.0.0.1:8001"], true)],
                vec![],
                vec![],
                vec!["127.0.0.1:8001", "127.0.0.1:8002"],
            ),
        ];
        for (frontends, open, keep, close) in cases {
            let plan = listener_plan(running, &config(&frontends));
            let want = ListenerPlan {
                open: open.iter().map(|(b, f)| (a(b), f.to_string())).collect(),
                keep: keep.iter().map(|b| a(b)).collect(),
                close: close.iter().map(|b| a(b)).collect(),
            };
            assert_eq!(plan, want, "{frontends:?}");
        }
    }

    #[test]
    fn monitors_restart_only_when_their_key_changes() {
        let map = |v: &[(&str, &str)]| -> BTreeMap<String, String> {
            v.iter()
                .map(|(i, k)| (i.to_string(), k.to_string()))
                .collect()
        };
        let running = map(&[
            ("be/s1", "tcp 200ms"),
            ("be/s2", "tcp 200ms"),
            ("be/s3", "tcp"),
        ]);
        let wanted = map(&[
            ("be/s1", "tcp 200ms"),
            ("be/s2", "http /"),
            ("be/s4", "tcp"),
        ]);
        let plan = monitor_plan(&running, &wanted);
        assert_eq!(plan.start, ["be/s2", "be/s4"]);
        assert_eq!(plan.stop, ["be/s2", "be/s3"]);
        assert_eq!(monitor_plan(&running, &running), MonitorPlan::default());
    }
}
