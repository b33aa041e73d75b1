//! The reverse services' listeners and readiness: started at boot, and added or removed
//! by a reload without a restart. A service added is ready as soon as a session carries
//! it (a reload grants it to the live sessions whose gateway exports it); one removed is
//! not ready at once and its listener closes, while the clients it accepted finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Cloud;
use crate::base::lock;
use crate::config::ReverseService;
use crate::metrics::ServiceSide;

impl Cloud {
    /// Starts the listener of reverse service `r` on `l` (from [`crate::common::bind_now`])
    /// and registers the service with the readiness core.
    pub(super) fn open_reverse(self: &Arc<Self>, r: ReverseService, l: TcpListener) -> SocketAddr {
        let metrics = &self.base.metrics;
        metrics.service(&r.service, "reverse", ServiceSide::Clients);
        metrics
            .service_ready
            .with_label_values(&[&r.service])
            .set(0);
        let (c, service, mode) = (self.clone(), r.service.clone(), r.when_not_ready);
        let r = Arc::new(r);
        let gated = self.base.open_gated(&service, l, mode, move |tcp, peer| {
            c.clone().serve_client(r.clone(), tcp, peer)
        });
        let addr = gated.addr;
        lock(&self.reverse).insert(service.clone(), gated);
        let actions = lock(&self.core).add_service(Instant::now(), &service);
        self.apply(actions);
        addr
    }

    /// Stops reverse service `service` (a reload removed it): not ready at once, listener
    /// closed; clients already accepted finish.
    pub(super) fn close_reverse(&self, service: &str) {
        if let Some(g) = lock(&self.reverse).remove(service) {
            g.close();
        }
        let actions = lock(&self.core).remove_service(service);
        self.apply(actions);
    }

    /// Follows `service`'s readiness (`None` for a service not offered).
    pub(super) fn reverse_ready(&self, service: &str) -> Option<watch::Receiver<bool>> {
        lock(&self.reverse)
            .get(service)
            .map(|e| e.ready.subscribe())
    }

    /// Whether `service`'s listener is bound (`None` for a service not offered).
    pub(super) fn reverse_bound(&self, service: &str) -> Option<watch::Receiver<bool>> {
        lock(&self.reverse).get(service).map(|e| e.bound.clone())
    }
}
