//! Wiring `tether-health` monitors to the balancer's servers.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tether_health::check::{CheckKind, Checker, Health, MonitorSpec, spawn_monitor};
use tokio_util::sync::CancellationToken;

use crate::LbError;
use crate::config::{HealthConfig, HealthKind, ServerAddress};
use crate::state::{Server, State};

/// Starts one monitor per server of every backend that has checks; servers of backends
/// without checks are up from the start.
pub fn start_monitors(state: &State, stop: &CancellationToken) -> Result<(), LbError> {
    for b in &state.backends {
        let Some(h) = &b.cfg.health else {
            for s in &b.servers {
                s.set_health(Health::Up);
            }
            continue;
        };
        for s in &b.servers {
            let kind = check_kind(h, s, &b.cfg.name)?;
            let port = s.cfg.check_port.or(h.port).unwrap_or(s.addr.port());
            let spec = MonitorSpec {
                checker: Checker {
                    kind,
                    target: SocketAddr::new(s.addr.ip(), port),
                    timeout: h.timeout,
                },
                interval: h.interval,
                rise: h.rise,
                fall: h.fall,
                initial: Health::Unknown,
            };
            let server = s.clone();
            spawn_monitor(spec, stop.clone(), move |ev| on_check(&server, ev));
        }
    }
    Ok(())
}

fn on_check(server: &Arc<Server>, ev: tether_health::HealthEvent) {
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
    if let Some(t) = ev.transition {
        server.set_health(t.to);
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
            let ca_err = |path: &str, reason: String| LbError::Ca {
                backend: backend.to_string(),
                path: path.to_string(),
                reason,
            };
            let server_name = ServerName::try_from(name.clone())
                .map_err(|e| ca_err("-", format!("server name {name}: {e}")))?;
            match &h.ca {
                None => CheckKind::tls_with_webpki_roots(server_name),
                Some(path) => {
                    let mut roots = rustls::RootCertStore::empty();
                    let certs = CertificateDer::pem_file_iter(path)
                        .map_err(|e| ca_err(path, e.to_string()))?;
                    for c in certs {
                        let c = c.map_err(|e| ca_err(path, e.to_string()))?;
                        roots.add(c).map_err(|e| ca_err(path, e.to_string()))?;
                    }
                    if roots.is_empty() {
                        return Err(ca_err(path, "no certificate in the file".into()));
                    }
                    CheckKind::tls_with_roots(server_name, roots)
                }
            }
        }
    })
}
