//! The paths clients take through the scenario, each checked by an echo exchange, and
//! the admin GET the status and the tests read daemons with.

use std::net::SocketAddr;

use super::{DIRECT_B_PORT, SVC_A_PORT, SVC_B_PORT, Scenario};

/// One way a client reaches a service, checked with an echo exchange.
#[derive(Debug, Clone)]
pub struct ClientPath {
    /// A short label.
    pub name: String,
    /// The client's host.
    pub from: String,
    /// Where it connects.
    pub to: SocketAddr,
}

impl Scenario {
    /// The paths a client takes, each checked by an echo exchange.
    pub fn paths(&self) -> Vec<ClientPath> {
        let mut v = Vec::new();
        if self.features.gateway {
            v.push(ClientPath {
                name: format!("client-a -> VIP:{SVC_A_PORT} (service A)"),
                from: "client-a".into(),
                to: SocketAddr::new(self.vip(), SVC_A_PORT),
            });
            for gw in ["onprem1", "onprem2"] {
                v.push(ClientPath {
                    name: format!("client-b -> {gw}:{SVC_B_PORT} (service B)"),
                    from: "client-b".into(),
                    to: self.at(gw, SVC_B_PORT),
                });
            }
        } else {
            v.push(ClientPath {
                name: format!("client-a -> VIP:{DIRECT_B_PORT} (server B)"),
                from: "client-a".into(),
                to: SocketAddr::new(self.vip(), DIRECT_B_PORT),
            });
        }
        v
    }

    /// One echo exchange along a path; returns the banner of the server that answered.
    pub fn exchange(&self, p: &ClientPath) -> Result<String, String> {
        crate::client::echo(&self.lab, &p.from, p.to)
    }

    /// A GET to a daemon's admin endpoint inside its host: (status, body).
    pub fn http_get(&self, host: &str, port: u16, path: &str) -> Result<(u16, String), String> {
        crate::client::http_get(&self.lab, host, port, path)
    }
}
