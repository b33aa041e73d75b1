//! Validation of `role = "cloud"`.

use std::collections::BTreeSet;
use std::path::Path;

use super::checks::{self, Listener};
use super::raw::{DEFAULT_ACCEPT_WAIT, RawFile};
use super::*;

impl Validator<'_> {
    pub(super) fn cloud(&mut self, raw: RawFile, base: &Path) -> Option<CloudConfig> {
        const ROLE: &str = "cloud";
        let n = &raw.node;
        let node = |k: &str| path(&["node".into(), k.into()]);
        self.id(&node("id"), &n.id);
        self.forbidden(&node("cloud"), &n.cloud, ROLE);
        self.forbidden(&node("server_name"), &n.server_name, ROLE);
        self.forbidden(&node("sni_pinning"), &n.sni_pinning, ROLE);
        self.forbidden(&node("prepared_connections"), &n.prepared_connections, ROLE);
        self.forbidden_list("export", &raw.export, ROLE);
        self.forbidden_list("consume", &raw.consume, ROLE);
        self.forbidden(&["resolver".into()], &raw.resolver, ROLE);
        let session_listen = self
            .required(&node("session_listen"), n.session_listen.clone(), ROLE)
            .and_then(|s| self.addr(&node("session_listen"), &s));
        let admin_listen = self
            .required(&node("admin_listen"), n.admin_listen.clone(), ROLE)
            .and_then(|s| self.addr(&node("admin_listen"), &s));
        let tls = self.tls(raw.tls, base, ROLE, &n.id);
        // Sessions are recycled by the gateways that dial them.
        if let Some(t) = &raw.timers {
            let at = path(&["timers".into(), "max_session_age".into()]);
            self.forbidden(&at, &t.max_session_age, ROLE);
        }
        let timers = self.timers(raw.timers);
        let limits = self.limits(raw.limits);

        let roster = match raw.cluster {
            Some(c) => c.nodes,
            None => Vec::new(),
        };
        let mut seen = BTreeSet::new();
        for (i, r) in roster.iter().enumerate() {
            let at = path(&["cluster".into(), "nodes".into(), i.into()]);
            self.id(&at, &r.id);
            if !seen.insert(r.id.clone()) {
                self.err(
                    &at,
                    format!("node {:?} is listed twice; node ids must be unique", r.id),
                );
            }
            if rustls_pki_types::DnsName::try_from(r.sni.as_str()).is_err() {
                self.err(&at, format!("sni {:?} is not a DNS name", r.sni));
            }
        }
        if !roster.is_empty() && !seen.contains(&n.id) {
            self.err(
                &["cluster".into(), "nodes".into()],
                format!("the roster must list this node ({:?})", n.id),
            );
        }

        let mut services = BTreeSet::new();
        let mut reverse = Vec::new();
        for (i, r) in raw.reverse.into_iter().enumerate() {
            let at = |k: &str| path(&["reverse".into(), i.into(), k.into()]);
            self.id(&at("service"), &r.service);
            if !services.insert(r.service.clone()) {
                self.err(
                    &at("service"),
                    format!("service {:?} is defined twice", r.service),
                );
            }
            if r.allowed_exporters.is_empty() {
                self.err(
                    &at("allowed_exporters"),
                    "must name at least one gateway identity",
                );
            }
            let accept_wait = r.accept_wait.unwrap_or(DEFAULT_ACCEPT_WAIT);
            if accept_wait.is_zero() || accept_wait > Duration::from_secs(60) {
                self.err(
                    &at("accept_wait"),
                    format!("{accept_wait:?} out of range; allowed 1ms..=60s"),
                );
            }
            if let Some(listen) = self.addr(&at("listen"), &r.listen) {
                reverse.push(ReverseService {
                    service: r.service,
                    listen,
                    when_not_ready: r.when_not_ready,
                    accept_wait,
                    allowed_exporters: r.allowed_exporters.into_iter().collect(),
                });
            }
        }
        let mut forward = Vec::new();
        for (i, f) in raw.forward.into_iter().enumerate() {
            let at = |k: &str| path(&["forward".into(), i.into(), k.into()]);
            self.id(&at("service"), &f.service);
            if !services.insert(f.service.clone()) {
                self.err(
                    &at("service"),
                    format!("service {:?} is defined twice", f.service),
                );
            }
            if f.allowed_consumers.is_empty() {
                self.err(
                    &at("allowed_consumers"),
                    "must name at least one gateway identity",
                );
            }
            if self.host_port(&at("connect"), &f.connect) {
                forward.push(ForwardService {
                    service: f.service,
                    connect: f.connect,
                    allowed_consumers: f.allowed_consumers.into_iter().collect(),
                });
            }
        }
        let mut listeners: Vec<Listener> = [
            ("session_listen", session_listen),
            ("admin_listen", admin_listen),
        ]
        .into_iter()
        .filter_map(|(k, a)| {
            Some(Listener {
                at: node(k),
                name: format!("node.{k}"),
                addr: a?,
            })
        })
        .collect();
        for (i, r) in reverse.iter().enumerate() {
            listeners.push(Listener {
                at: path(&["reverse".into(), i.into(), "listen".into()]),
                name: format!("reverse[{i}].listen"),
                addr: r.listen,
            });
        }
        self.errors
            .extend(checks::listener_conflicts(self.source, &listeners));
        Some(CloudConfig {
            id: n.id.clone(),
            session_listen: session_listen?,
            admin_listen: admin_listen?,
            roster,
            tls: tls?,
            reverse,
            forward,
            timers,
            limits,
        })
    }
}
