//! On-prem's streams: reverse streams opened by a cloud node are answered with
//! [`stream::answer`] (connect the exported server at the address its follower holds);
//! local clients of consumed services are carried to a cloud node with [`stream::carry`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpStream;
use tracing::warn;

use super::{OnSession, Onprem};
use crate::base::lock;
use crate::common;
use crate::config::Consume;
use crate::mux::YamuxStream;
use crate::proto::{Preamble, Status, StreamKind};
use crate::stream::{self, Verdict};

impl Onprem {
    /// A stream opened by the cloud: connect the exported server and relay.
    pub(super) async fn serve_reverse(self: Arc<Self>, mut s: YamuxStream) {
        if self.wedged.load(Ordering::SeqCst) {
            // Fault injection: swallow the open without answering.
            let kill = self.base.kill.clone();
            let mut sink = tokio::io::sink();
            tokio::select! {
                _ = tokio::io::copy(&mut s, &mut sink) => {}
                _ = kill.cancelled() => {}
            }
            return;
        }
        stream::answer(&self.base, &self.cfg().timers, "reverse", s, |pre| {
            let cfg = self.cfg();
            let export = cfg.export.iter().find(|e| e.service == pre.service);
            let Some(export) = export.filter(|_| pre.kind == StreamKind::Reverse) else {
                return Verdict::Refuse(Status::Unauthorized);
            };
            if self.base.draining() {
                return Verdict::Refuse(Status::Draining);
            }
            // The address the health check follows too (a host name resolved every
            // resolve_interval), not a lookup of our own.
            match self.exports.address(&export.service) {
                Some(Ok(addr)) => Verdict::Connect(addr.to_string()),
                Some(Err(why)) => {
                    warn!(target: "tether_gateway::onprem", service = %export.service, connect = %export.connect, error = %why, "reverse stream refused: the export's server has no address yet");
                    let refused = Status::BackendRefused;
                    self.base.metrics.stream(&export.service, "reverse", refused.as_str());
                    Verdict::Refuse(refused)
                }
                None => Verdict::Connect(export.connect.clone()),
            }
        })
        .await;
    }

    fn pick(&self, service: &str, exclude: &[Arc<OnSession>]) -> Option<Arc<OnSession>> {
        let sessions = lock(&self.sessions);
        let usable: Vec<&Arc<OnSession>> = sessions
            .values()
            .filter(|s| !s.draining.load(Ordering::SeqCst) && s.carries(service))
            .filter(|s| !exclude.iter().any(|e| Arc::ptr_eq(e, s)))
            .collect();
        let other_node: Vec<&Arc<OnSession>> = usable
            .iter()
            .copied()
            .filter(|s| !exclude.iter().any(|e| e.node == s.node))
            .collect();
        let pool = if other_node.is_empty() {
            usable
        } else {
            other_node
        };
        // One look at each count: streams of other clients start and end meanwhile, and
        // a second look could find no session at the least count (a division by zero).
        let loads: Vec<(&Arc<OnSession>, usize)> = pool
            .into_iter()
            .map(|s| (s, s.active.load(Ordering::Relaxed)))
            .collect();
        let least = loads.iter().map(|(_, n)| *n).min()?;
        let ties: Vec<&Arc<OnSession>> = loads
            .into_iter()
            .filter(|(_, n)| *n == least)
            .map(|(s, _)| s)
            .collect();
        let i = self.rr.fetch_add(1, Ordering::Relaxed) % ties.len().max(1);
        ties.get(i).map(|s| (*s).clone())
    }

    /// A local client of a consumed service: carry it to a cloud node on a forward stream,
    /// with a second open on another node's session when the first fails or is slow to
    /// answer ([`stream::race_opens`]).
    pub(super) async fn serve_consumer(
        self: Arc<Self>,
        c: Arc<Consume>,
        mut client: TcpStream,
        peer: SocketAddr,
    ) {
        let service = c.service.as_str();
        let reject = |reason: &str| {
            self.base
                .metrics
                .clients_rejected
                .with_label_values(&[service, reason])
                .inc()
        };
        let Some(mut ready) = self.consume_ready(service) else {
            return;
        };
        // accept_wait as it is now (a reload may have changed it).
        let accept_wait = self
            .cfg()
            .consume
            .iter()
            .find(|k| k.service == c.service)
            .map_or(c.accept_wait, |k| k.accept_wait);
        if !stream::may_proceed(&mut ready, c.when_not_ready, accept_wait).await {
            reject("not_ready");
            return;
        }
        let preamble = Preamble {
            kind: StreamKind::Forward,
            service: service.to_string(),
            client: Some(peer),
            trace_id: common::trace_id(),
        };
        let Some(first) = self.pick(service, &[]) else {
            reject("no_stream");
            return;
        };
        let mut tried: Vec<Arc<OnSession>> = Vec::new();
        let another = |session: &Arc<OnSession>, hedge: bool| {
            tried.push(session.clone());
            let next = self.pick(service, &tried)?;
            if hedge && next.node == session.node {
                return None;
            }
            self.base
                .metrics
                .open_retries
                .with_label_values(&[service])
                .inc();
            Some(next)
        };
        let open = |session: Arc<OnSession>| {
            let g = self.clone();
            let preamble = preamble.clone();
            async move {
                let stream = g.open_on(&session, &preamble).await;
                (session, stream)
            }
        };
        let release = |session: Arc<OnSession>| {
            session.active.fetch_sub(1, Ordering::Relaxed);
        };
        let hedge = stream::hedge_after(self.cfg().timers.open_timeout);
        let carried = stream::carry(
            &self.base,
            service,
            "forward",
            &mut client,
            first,
            another,
            open,
            hedge,
            release,
            |_| {},
            self.cfg().timers.stream_idle_timeout,
        )
        .await;
        if !carried {
            reject("no_stream");
        }
    }

    /// One stream open on `session` for a consumer client: counts the stream on the
    /// session, and on failure logs why; a silent session is ejected (placement dials a
    /// replacement). `None` when it failed.
    async fn open_on(&self, session: &OnSession, preamble: &Preamble) -> Option<YamuxStream> {
        let service = preamble.service.as_str();
        session.active.fetch_add(1, Ordering::Relaxed);
        let timeout = self.cfg().timers.open_timeout;
        match stream::open_counted(&self.base.metrics, &session.link.mux, preamble, timeout).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                session.active.fetch_sub(1, Ordering::Relaxed);
                warn!(target: "tether_gateway::onprem", gateway = %self.cfg().id, node = %session.node, %service, reason = e.as_str(), "forward stream open failed");
                if matches!(e, stream::OpenError::Silent) {
                    session.link.kill.cancel();
                }
                None
            }
        }
    }
}
