//! Wiring `tether-health` monitors to the balancer's servers.

use std::net::SocketAddr;
use std::sync::Arc;

use std::path::Path;

use tether_health::check::{CheckKind, Checker, Health, MonitorSpec, tls};

use crate::LbError;
use crate::config::{HealthConfig, HealthKind, ServerAddress};
use crate::state::Server;

/// The monitor for one server of a backend with checks.
pub fn monitor_spec(h: &HealthConfig, s: &Server, backend: &str) -> Result<MonitorSpec, LbError> {
    let mut kind = check_kind(h, s, backend)?;
    if let Some(version) = h.send_proxy {
        kind = CheckKind::WithPreamble {
            preamble: crate::inspect::encode_local_header(version),
            inner: Box::new(kind),
        };
    }
    let port = s.cfg.check_port.or(h.port).unwrap_or(s.addr.port());
    Ok(MonitorSpec {
        checker: Checker {
            kind,
            target: SocketAddr::new(s.addr.ip(), port),
            timeout: h.timeout,
        },
        interval: h.interval,
        fast_interval: h.fast_interval,
        down_interval: h.down_interval,
        rise: h.rise,
        fall: h.fall,
        initial: Health::Unknown,
    })
}

/// Records one check result on its server.
pub fn on_check(server: &Arc<Server>, ev: tether_health::HealthEvent) {
    match &ev.result {
        Ok(()) => {
            server.m.checks_ok.inc();
            server.set_last_check(Some("ok".into()));
        }
        Err(e) => {
            server.m.checks_fail.inc();
            server.set_last_check(Some(e.to_string()));
        }
    }
    if let Some(t) = server.observe(ev.result.is_ok()) {
        let why = match &ev.result {
            Ok(()) => "check passed".to_string(),
            Err(e) => e.to_string(),
        };
        if t.to == Health::Down {
            tracing::warn!(backend = %server.backend, server = %server.cfg.name, from = t.from.as_str(), reason = %why, "server down");
        } else {
            tracing::info!(backend = %server.backend, server = %server.cfg.name, from = t.from.as_str(), to = t.to.as_str(), "server health changed");
        }
    }
}

fn check_kind(h: &HealthConfig, s: &Server, backend: &str) -> Result<CheckKind, LbError> {
    Ok(match h.kind {
        HealthKind::Tcp | HealthKind::None => CheckKind::Tcp,
        HealthKind::Http => CheckKind::Http {
            path: h.path.clone(),
            host: h.host.clone(),
            expect_status: h.expect_status,
        },
        HealthKind::Tls => {
            let name = h.host.clone().unwrap_or_else(|| match &s.cfg.address {
                ServerAddress::Host(host, _) => host.clone(),
                ServerAddress::Ip(a) => a.ip().to_string(),
            });
            let ca = h.ca.as_deref().map(Path::new);
            tls::check_kind(&name, ca).map_err(|e| {
                let (path, reason) = match e {
                    tls::TlsCheckError::ServerName { name, reason } => {
                        ("-".to_string(), format!("server name {name}: {reason}"))
                    }
                    tls::TlsCheckError::Ca { path, reason } => (path, reason),
                };
                LbError::Ca {
                    backend: backend.to_string(),
                    path,
                    reason,
                }
            })?
        }
    })
}

/// What would keep a TLS check from starting, found at validation: the CA file and the
/// server name to verify (`host`). `None` when the check can start.
pub(crate) fn tls_check_problem(
    ca: Option<&str>,
    host: Option<&str>,
) -> Option<(&'static str, String)> {
    tls::problem("host", host, ca.map(Path::new))
}
