//! Reload (SIGHUP), decided first as a pure plan: what differs between the running
//! configuration and the new one, and whether a running gateway can take it.
//!
//! The drivers apply a plan in place ([`crate::CloudHandle::reload`],
//! [`crate::OnpremHandle::reload`]): TLS material is re-read on every reload (rotated files
//! usually keep their paths), access lists are checked again on every live session, and
//! timers, limits, the roster and per-service settings that are read per session or per
//! stream are swapped. What is bound to a socket or to a task made at start (node id,
//! listen addresses, the set of listening services, export health checks, placement) needs
//! a restart: such a reload is refused whole and the running configuration keeps serving.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tether_health::config::ConfigErrors;
use thiserror::Error;

use crate::config::{CloudConfig, GatewayConfig, OnpremConfig, Timers, WhenNotReady};
use crate::tls::TlsError;

/// What a reload changes, from comparing the running and the new configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Settings only a restart applies, as `key: what changed`; the reload is refused
    /// while any is listed.
    pub restart: Vec<String>,
    /// The paths of `tls.cert`, `tls.key` or the CA changed. (The files are re-read on
    /// every reload whether or not their paths changed.)
    pub tls_paths: bool,
    /// Services whose access list changed (cloud: `allowed_exporters`,
    /// `allowed_consumers`); live sessions are checked again.
    pub acl: Vec<String>,
    /// Services added, as `kind service` (`forward svc-b`); only cloud forward services
    /// can be added without a restart (gateways use one on their sessions set up after
    /// the reload: a session keeps the services its HELLO_ACK accepted).
    pub added: Vec<String>,
    /// Services removed, as `kind service`.
    pub removed: Vec<String>,
    /// Other per-service settings changed in place (`forward svc-b: connect`).
    pub services: Vec<String>,
    /// `[timers]` keys whose value changed.
    pub timers: Vec<&'static str>,
    /// `[limits]` changed (applies to sessions set up after the reload).
    pub limits: bool,
    /// The cloud roster changed (sent in HELLO_ACK to sessions set up after the reload).
    pub roster: bool,
    /// On-prem `cloud` or `server_name` changed (applies to the next dials).
    pub dial_target: bool,
}

impl Plan {
    /// Whether the reload must be refused because only a restart can apply it.
    pub fn needs_restart(&self) -> bool {
        !self.restart.is_empty()
    }

    /// Whether nothing but the TLS files' contents can differ.
    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

impl fmt::Display for Plan {
    /// One line for the reload log: what changed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.tls_paths {
            parts.push("tls paths".to_string());
        }
        if !self.acl.is_empty() {
            parts.push(format!("access lists of {}", self.acl.join(", ")));
        }
        if !self.added.is_empty() {
            parts.push(format!("added {}", self.added.join(", ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", self.removed.join(", ")));
        }
        if !self.services.is_empty() {
            parts.push(self.services.join(", "));
        }
        if !self.timers.is_empty() {
            parts.push(format!("timers {}", self.timers.join(", ")));
        }
        if self.limits {
            parts.push("limits".into());
        }
        if self.roster {
            parts.push("roster".into());
        }
        if self.dial_target {
            parts.push("dial target".into());
        }
        if !self.restart.is_empty() {
            parts.push(format!("needing a restart: {}", self.restart.join("; ")));
        }
        if parts.is_empty() {
            f.write_str("no setting changed (TLS files re-read)")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// Why a reload was refused; the running configuration keeps serving in every case.
#[derive(Debug, Error)]
pub enum ReloadError {
    /// The file does not parse or validate (the same errors as `--check`).
    #[error("{0}")]
    Config(ConfigErrors),
    /// A TLS file is unreadable, not PEM, a key of another certificate, or a bad CA.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// A setting changed that only a restart applies.
    #[error("needs a restart (the running configuration keeps serving): {}", .0.join("; "))]
    NeedsRestart(Vec<String>),
    /// The listener of a service added could not be bound.
    #[error("{error}: {}", error.source)]
    Bind {
        /// Which listener, where and why.
        #[from]
        error: crate::BindError,
    },
}

/// Compares the running configuration with the new one.
pub fn plan(old: &GatewayConfig, new: &GatewayConfig) -> Plan {
    match (old, new) {
        (GatewayConfig::Cloud(o), GatewayConfig::Cloud(n)) => plan_cloud(o, n),
        (GatewayConfig::Onprem(o), GatewayConfig::Onprem(n)) => plan_onprem(o, n),
        (o, _) => Plan {
            restart: vec![format!(
                "node.role: was {:?}",
                match o {
                    GatewayConfig::Cloud(_) => "cloud",
                    GatewayConfig::Onprem(_) => "onprem",
                }
            )],
            ..Plan::default()
        },
    }
}

/// Adds `key: old -> new` to the restart list when the two differ.
fn restart_if<T: PartialEq + fmt::Debug>(plan: &mut Plan, key: &str, old: &T, new: &T) {
    if old != new {
        plan.restart.push(format!("{key}: {old:?} -> {new:?}"));
    }
}

/// The services of one kind, by name.
fn by_name<T>(items: &[T], name: impl Fn(&T) -> &str) -> BTreeMap<&str, &T> {
    items.iter().map(|i| (name(i), i)).collect()
}

/// Services present on one side only, as `kind name`, into `added` and `removed`.
fn added_removed<T>(
    kind: &str,
    old: &BTreeMap<&str, &T>,
    new: &BTreeMap<&str, &T>,
) -> (Vec<String>, Vec<String>) {
    let added = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .map(|k| format!("{kind} {k}"))
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(|k| format!("{kind} {k}"))
        .collect();
    (added, removed)
}

fn timers(plan: &mut Plan, old: &Timers, new: &Timers) {
    let pairs = [
        ("ping", old.ping, new.ping),
        ("dead_after", old.dead_after, new.dead_after),
        ("open_timeout", old.open_timeout, new.open_timeout),
        ("connect_timeout", old.connect_timeout, new.connect_timeout),
        (
            "handshake_timeout",
            old.handshake_timeout,
            new.handshake_timeout,
        ),
        ("readiness_down", old.readiness_down, new.readiness_down),
        ("drain_grace", old.drain_grace, new.drain_grace),
        ("stop_delay", old.stop_delay, new.stop_delay),
        ("backoff_cap", old.backoff_cap, new.backoff_cap),
        ("probe", old.probe, new.probe),
        (
            "stream_idle_timeout",
            old.stream_idle_timeout,
            new.stream_idle_timeout,
        ),
    ];
    plan.timers = pairs
        .into_iter()
        .filter(|(_, o, n)| o != n)
        .map(|(k, _, _)| k)
        .collect();
    if old.max_session_age != new.max_session_age {
        plan.timers.push("max_session_age");
    }
}

fn plan_cloud(o: &CloudConfig, n: &CloudConfig) -> Plan {
    let mut p = Plan::default();
    restart_if(&mut p, "node.id", &o.id, &n.id);
    restart_if(
        &mut p,
        "node.session_listen",
        &o.session_listen,
        &n.session_listen,
    );
    restart_if(
        &mut p,
        "node.admin_listen",
        &o.admin_listen,
        &n.admin_listen,
    );
    p.tls_paths = o.tls != n.tls;
    p.roster = o.roster != n.roster;
    p.limits = o.limits != n.limits;
    timers(&mut p, &o.timers, &n.timers);

    // Reverse services added or removed get or lose their listener and readiness in
    // place; a listener's own settings need a restart.
    let (or, nr) = (
        by_name(&o.reverse, |r| &r.service),
        by_name(&n.reverse, |r| &r.service),
    );
    let (added, removed) = added_removed("reverse", &or, &nr);
    p.added.extend(added);
    p.removed.extend(removed);
    for (name, old) in &or {
        let Some(new) = nr.get(name) else { continue };
        let key = format!("reverse {name}");
        gated_listener(
            &mut p,
            &key,
            (&old.listen, &old.when_not_ready, &old.accept_wait),
            (&new.listen, &new.when_not_ready, &new.accept_wait),
        );
        if old.allowed_exporters != new.allowed_exporters {
            p.acl.push(key);
        }
    }

    // Forward services are looked up per stream: they come and go in place.
    let (of, nf) = (
        by_name(&o.forward, |f| &f.service),
        by_name(&n.forward, |f| &f.service),
    );
    let (added, removed) = added_removed("forward", &of, &nf);
    p.added.extend(added);
    p.removed.extend(removed);
    for (name, old) in &of {
        let Some(new) = nf.get(name) else { continue };
        let key = format!("forward {name}");
        if old.connect != new.connect {
            p.services.push(format!("{key}: connect"));
        }
        if old.allowed_consumers != new.allowed_consumers {
            p.acl.push(key);
        }
    }
    p
}

fn plan_onprem(o: &OnpremConfig, n: &OnpremConfig) -> Plan {
    let mut p = Plan::default();
    restart_if(&mut p, "node.id", &o.id, &n.id);
    restart_if(
        &mut p,
        "node.admin_listen",
        &o.admin_listen,
        &n.admin_listen,
    );
    // Both shape the placement core's state of every node.
    restart_if(
        &mut p,
        "node.prepared_connections",
        &o.prepared_connections,
        &n.prepared_connections,
    );
    restart_if(&mut p, "node.sni_pinning", &o.sni_pinning, &n.sni_pinning);
    // The resolver is built at start.
    restart_if(
        &mut p,
        "resolver.nameservers",
        &o.nameservers,
        &n.nameservers,
    );
    p.dial_target = o.cloud != n.cloud || o.server_name != n.server_name;
    p.tls_paths = o.tls != n.tls;
    p.limits = o.limits != n.limits;
    timers(&mut p, &o.timers, &n.timers);

    // Exports and consumes added or removed are announced to the cloud nodes in SERVICES
    // (by new sessions' HELLO to nodes of the release before); an export's monitor and a
    // consume's listener are started and stopped with them.
    let (oe, ne) = (
        by_name(&o.export, |e| &e.service),
        by_name(&n.export, |e| &e.service),
    );
    let (oc, nc) = (
        by_name(&o.consume, |c| &c.service),
        by_name(&n.consume, |c| &c.service),
    );
    for (added, removed) in [
        added_removed("export", &oe, &ne),
        added_removed("consume", &oc, &nc),
    ] {
        p.added.extend(added);
        p.removed.extend(removed);
    }
    for (name, old) in &oe {
        let Some(new) = ne.get(name) else { continue };
        let key = format!("export {name}");
        if old.health != new.health {
            // Its monitor is made again.
            p.services.push(format!("{key}: health"));
        }
        // Its follower and its monitor move to the new target at once.
        if old.connect != new.connect {
            p.services.push(format!("{key}: connect"));
        }
        if old.resolve_interval != new.resolve_interval {
            p.services.push(format!("{key}: resolve_interval"));
        }
    }
    for (name, old) in &oc {
        let Some(new) = nc.get(name) else { continue };
        gated_listener(
            &mut p,
            &format!("consume {name}"),
            (&old.listen, &old.when_not_ready, &old.accept_wait),
            (&new.listen, &new.when_not_ready, &new.accept_wait),
        );
    }
    p
}

/// A gated listener's `listen`, `when_not_ready` and `accept_wait`.
type Listener<'a> = (&'a SocketAddr, &'a WhenNotReady, &'a Duration);

/// A service listener gated by readiness (a cloud reverse service, an on-prem consume):
/// its socket and its mode are made at start, so changing them needs a restart;
/// `accept_wait` is read per client.
fn gated_listener(
    p: &mut Plan,
    key: &str,
    (old_listen, old_mode, old_wait): Listener<'_>,
    (new_listen, new_mode, new_wait): Listener<'_>,
) {
    restart_if(p, &format!("{key}: listen"), old_listen, new_listen);
    restart_if(p, &format!("{key}: when_not_ready"), old_mode, new_mode);
    if old_wait != new_wait {
        p.services.push(format!("{key}: accept_wait"));
    }
}

#[cfg(test)]
mod tests;
