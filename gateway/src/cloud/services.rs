//! The reverse services' listeners and readiness: started at boot, and added or removed
//! by a reload without a restart. A service added is ready as soon as a session carries
//! it (a reload grants it to the live sessions whose gateway exports it); one removed is
//! not ready at once and its listener closes, while the clients it accepted finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Cloud;
use crate::base::lock;
use crate::config::ReverseService;
use crate::listener::{self, Bound};
use crate::metrics::ServiceSide;

/// A reverse service's listener and readiness.
pub(super) struct ReverseEntry {
    /// Whether a session can carry it (the core's verdict).
    pub(super) ready: watch::Sender<bool>,
    /// Whether its listener is bound.
    pub(super) bound: watch::Receiver<bool>,
    /// Where it listens.
    pub(super) addr: SocketAddr,
    /// Stops its listener (a reload removed the service).
    stop: CancellationToken,
}

impl Cloud {
    /// Starts the listener of reverse service `r` on `l` (from [`listener::bind_now`]) and
    /// registers the service with the readiness core.
    pub(super) fn open_reverse(self: &Arc<Self>, r: ReverseService, l: TcpListener) -> SocketAddr {
        let metrics = &self.base.metrics;
        metrics.service(&r.service, "reverse", ServiceSide::Clients);
        metrics
            .service_ready
            .with_label_values(&[&r.service])
            .set(0);
        let (addr, initial) = listener::initial_listener(l, r.when_not_ready);
        let flag = Bound::new(metrics, &r.service);
        let ready = watch::Sender::new(false);
        let rx = ready.subscribe();
        let stop = self.base.kill.child_token();
        lock(&self.reverse).insert(
            r.service.clone(),
            ReverseEntry {
                ready,
                bound: flag.subscribe(),
                addr,
                stop: stop.clone(),
            },
        );
        let c = self.clone();
        let mode = r.when_not_ready;
        let service = r.service.clone();
        let r = Arc::new(r);
        self.base
            .spawn_listener(stop, addr, initial, mode, rx, flag, move |tcp, peer| {
                c.clone().serve_client(r.clone(), tcp, peer)
            });
        let actions = lock(&self.core).add_service(Instant::now(), &service);
        self.apply(actions);
        addr
    }

    /// Stops reverse service `service` (a reload removed it): not ready at once, listener
    /// closed; clients already accepted finish.
    pub(super) fn close_reverse(&self, service: &str) {
        if let Some(e) = lock(&self.reverse).remove(service) {
            e.stop.cancel();
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
