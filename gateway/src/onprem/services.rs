//! What this gateway exports and consumes, changed by a reload without a restart: the
//! exports' followers and monitors (`exports.rs`) started and stopped, a readiness-gated
//! listener per consume, and the SERVICES message that tells each cloud node (that
//! understands it) what the gateway offers and wants now. The node answers with ACCEPTED
//! (`session.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

use super::{Onprem, exports};
use crate::base::lock;
use crate::config::{Consume, Export, OnpremConfig};
use crate::metrics::ServiceSide;
use crate::proto::{Control, ExportState};

impl Onprem {
    /// Starts the listener of consume `c` on `l` (from [`crate::common::bind_now`]).
    pub(super) fn open_consume(self: &Arc<Self>, c: Consume, l: TcpListener) -> SocketAddr {
        self.base
            .metrics
            .service(&c.service, "forward", ServiceSide::Clients);
        let (g, service, mode) = (self.clone(), c.service.clone(), c.when_not_ready);
        let c = Arc::new(c);
        let gated = self.base.open_gated(&service, l, mode, move |tcp, peer| {
            g.clone().serve_consumer(c.clone(), tcp, peer)
        });
        let addr = gated.addr;
        lock(&self.consumes).insert(service, gated);
        // A session that accepted it may already be up.
        self.refresh_consume_ready();
        addr
    }

    /// Applies what a reload changed in the exports and consumes (`bound`: the listeners
    /// of the consumes added, bound before the reload was committed), then tells the cloud
    /// nodes when the set of services changed.
    pub(super) fn apply_services(
        self: &Arc<Self>,
        old: &OnpremConfig,
        new: &OnpremConfig,
        bound: Vec<(Consume, TcpListener)>,
    ) {
        let old_exports: BTreeMap<&str, &Export> =
            old.export.iter().map(|e| (e.service.as_str(), e)).collect();
        let mut changed = false;
        for e in &old.export {
            if !new.export.iter().any(|n| n.service == e.service) {
                exports::stop_one(self, &e.service);
                changed = true;
            }
        }
        // A `connect` changed moves the follower (and its monitor) at once.
        self.exports.retarget(new);
        for e in &new.export {
            match old_exports.get(e.service.as_str()) {
                Some(o) if o.health == e.health => {}
                before => {
                    changed |= before.is_none();
                    exports::start_one(self, e);
                }
            }
        }
        for c in &old.consume {
            if !new.consume.iter().any(|n| n.service == c.service) {
                if let Some(g) = lock(&self.consumes).remove(&c.service) {
                    g.close();
                }
                changed = true;
            }
        }
        for (c, l) in bound {
            self.open_consume(c, l);
            changed = true;
        }
        if changed {
            self.refresh_consume_ready();
            self.announce_services(new);
        }
    }

    /// Sends SERVICES (the exports with their servers' state, and the consumes) on every
    /// session whose node understands it; the others learn them from the next HELLO.
    fn announce_services(&self, cfg: &OnpremConfig) {
        let exports: Vec<ExportState> = lock(&self.export_up)
            .iter()
            .map(|(service, up)| ExportState {
                service: service.clone(),
                up: *up,
            })
            .collect();
        let consumes: Vec<String> = cfg.consume.iter().map(|c| c.service.clone()).collect();
        let m = Control::Services { exports, consumes };
        let sessions: Vec<_> = lock(&self.sessions).values().cloned().collect();
        let mut told = 0;
        for s in sessions.iter().filter(|s| s.services_msgs) {
            s.link.send_control(&self.base, m.clone());
            told += 1;
        }
        info!(target: "tether_gateway::onprem", gateway = %cfg.id, sessions = told, of = sessions.len(), "services announced");
    }
}
