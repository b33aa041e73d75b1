//! Validation of `role = "onprem"`.

use std::collections::BTreeSet;
use std::path::Path;

use super::checks::{self, Listener};
use super::raw::{DEFAULT_ACCEPT_WAIT, RawFile};
use super::*;

/// How often a host name in an export's `connect` is resolved again (as `tether lb`'s
/// `resolve_interval`).
const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(10);

impl Validator<'_> {
    pub(super) fn onprem(&mut self, raw: RawFile, base: &Path) -> Option<OnpremConfig> {
        const ROLE: &str = "onprem";
        let n = &raw.node;
        let node = |k: &str| path(&["node".into(), k.into()]);
        self.id(&node("id"), &n.id);
        self.forbidden(&node("session_listen"), &n.session_listen, ROLE);
        self.forbidden(&["cluster".into()], &raw.cluster, ROLE);
        self.forbidden_list("reverse", &raw.reverse, ROLE);
        self.forbidden_list("forward", &raw.forward, ROLE);
        let cloud = self.required(&node("cloud"), n.cloud.clone(), ROLE);
        let cloud = cloud.filter(|c| self.host_port(&node("cloud"), c));
        let server_name = match (&n.server_name, &cloud) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(c)) => c
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(|c| c == '[' || c == ']').to_string()),
            (None, None) => None,
        };
        if let Some(s) = &server_name
            && rustls_pki_types::ServerName::try_from(s.as_str()).is_err()
        {
            self.err(
                &node("server_name"),
                format!("{s:?} is not a DNS name or IP address"),
            );
        }
        let prepared = n.prepared_connections.unwrap_or(2);
        if !(1..=16).contains(&prepared) {
            self.err(
                &node("prepared_connections"),
                format!("{prepared} out of range; allowed 1..=16"),
            );
        }
        let admin_listen = self
            .required(&node("admin_listen"), n.admin_listen.clone(), ROLE)
            .and_then(|s| self.addr(&node("admin_listen"), &s));
        let tls = self.tls(raw.tls, base, ROLE, &n.id);
        let timers = self.timers(raw.timers);
        let limits = self.limits(raw.limits);

        let mut services = BTreeSet::new();
        let mut export = Vec::new();
        for (i, e) in raw.export.into_iter().enumerate() {
            let at = |k: &str| path(&["export".into(), i.into(), k.into()]);
            self.id(&at("service"), &e.service);
            if !services.insert(e.service.clone()) {
                self.err(
                    &at("service"),
                    format!("service {:?} is defined twice", e.service),
                );
            }
            let health = e
                .health
                .as_ref()
                .and_then(|h| self.export_health(h, &at("health"), &e.connect, base));
            let resolve_interval = e.resolve_interval.unwrap_or(DEFAULT_RESOLVE_INTERVAL);
            if resolve_interval < Duration::from_millis(10) {
                self.err(
                    &at("resolve_interval"),
                    format!("{resolve_interval:?} is too short; must be at least 10ms"),
                );
            }
            let mut connect_ok = self.host_port(&at("connect"), &e.connect);
            if connect_ok && let Err(why) = tether_health::resolve::HostPort::parse(&e.connect) {
                // An IPv6 address without brackets reads as a host with colons.
                self.err(
                    &at("connect"),
                    format!("{why}; write an IPv6 address in brackets (\"[2001:db8::5]:5000\")"),
                );
                connect_ok = false;
            }
            if connect_ok {
                export.push(Export {
                    service: e.service,
                    connect: e.connect,
                    health,
                    resolve_interval,
                });
            }
        }
        let nameservers = raw
            .resolver
            .map(|r| r.nameservers)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, ns)| {
                self.addr(
                    &path(&["resolver".into(), "nameservers".into(), i.into()]),
                    ns,
                )
            })
            .collect();
        let mut consume = Vec::new();
        for (i, c) in raw.consume.into_iter().enumerate() {
            let at = |k: &str| path(&["consume".into(), i.into(), k.into()]);
            self.id(&at("service"), &c.service);
            if !services.insert(c.service.clone()) {
                self.err(
                    &at("service"),
                    format!("service {:?} is defined twice", c.service),
                );
            }
            let accept_wait = c.accept_wait.unwrap_or(DEFAULT_ACCEPT_WAIT);
            if accept_wait.is_zero() || accept_wait > Duration::from_secs(60) {
                self.err(
                    &at("accept_wait"),
                    format!("{accept_wait:?} out of range; allowed 1ms..=60s"),
                );
            }
            if let Some(listen) = self.addr(&at("listen"), &c.listen) {
                consume.push(Consume {
                    service: c.service,
                    listen,
                    when_not_ready: c.when_not_ready,
                    accept_wait,
                });
            }
        }
        let mut listeners: Vec<Listener> = admin_listen
            .map(|addr| Listener {
                at: node("admin_listen"),
                name: "node.admin_listen".into(),
                addr,
            })
            .into_iter()
            .collect();
        for (i, c) in consume.iter().enumerate() {
            listeners.push(Listener {
                at: path(&["consume".into(), i.into(), "listen".into()]),
                name: format!("consume[{i}].listen"),
                addr: c.listen,
            });
        }
        self.errors
            .extend(checks::listener_conflicts(self.source, &listeners));
        Some(OnpremConfig {
            id: n.id.clone(),
            cloud: cloud?,
            server_name: server_name?,
            sni_pinning: n.sni_pinning.unwrap_or(false),
            prepared_connections: usize::try_from(prepared).unwrap_or(2),
            admin_listen: admin_listen?,
            tls: tls?,
            export,
            consume,
            timers,
            limits,
            nameservers,
        })
    }
}
