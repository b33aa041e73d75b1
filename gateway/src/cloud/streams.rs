//! A cloud node's streams: forward streams (and probes) opened by on-prem are answered
//! with [`stream::answer`]; clients of reverse services are carried to a usable session
//! with [`stream::carry`]; every session is probed with an empty open.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::{Cloud, Session};
use crate::base::lock;
use crate::common;
use crate::config::ReverseService;
use crate::mux::YamuxStream;
use crate::proto::{Preamble, Status, StreamKind};
use crate::readiness::SessionId;
use crate::stream::{self, OpenError, Verdict};

impl Cloud {
    /// A stream opened by on-prem: forward connect (or probe).
    pub(super) async fn serve_stream(self: Arc<Self>, session: Arc<Session>, s: YamuxStream) {
        stream::answer(&self.base, &self.cfg().timers, "forward", s, |pre| {
            if self.base.draining() {
                return Verdict::Refuse(Status::Draining);
            }
            if pre.kind != StreamKind::Forward {
                return Verdict::Refuse(Status::Unauthorized);
            }
            let cfg = self.cfg();
            let target = cfg.forward.iter().find(|f| f.service == pre.service);
            match target.filter(|_| lock(&session.grant).consumes.contains(&pre.service)) {
                Some(f) => Verdict::Connect(f.connect.clone()),
                None => {
                    warn!(target: "tether_gateway::cloud", gateway = %session.gateway, service = %pre.service, "forward stream refused: not allowed");
                    self.base.metrics.auth_refused("consume_not_allowed");
                    Verdict::Refuse(Status::Unauthorized)
                }
            }
        })
        .await;
    }

    /// A client of a reverse service: open a stream on a session that can serve it, with a
    /// second open on another gateway's session when the first fails or is slow to answer
    /// ([`stream::race_opens`]), and never wait longer than `accept_wait` for a session.
    pub(super) async fn serve_client(
        self: Arc<Self>,
        svc: Arc<ReverseService>,
        mut client: TcpStream,
        peer: SocketAddr,
    ) {
        let service = svc.service.as_str();
        let Some(mut ready) = self.reverse_ready(service) else {
            return;
        };
        let reject = |reason: &str| {
            debug!(target: "tether_gateway::cloud", node = %self.cfg().id, service, client = %peer, reason, "client rejected");
            self.base
                .metrics
                .clients_rejected
                .with_label_values(&[service, reason])
                .inc();
        };
        // accept_wait as it is now (a reload may have changed it).
        let accept_wait = self
            .cfg()
            .reverse
            .iter()
            .find(|r| r.service == svc.service)
            .map_or(svc.accept_wait, |r| r.accept_wait);
        let deadline = Instant::now() + accept_wait;
        if !stream::may_proceed(&mut ready, svc.when_not_ready, accept_wait).await {
            reject("not_ready");
            return;
        }
        let trace = common::trace_id();
        let preamble = Preamble {
            kind: StreamKind::Reverse,
            service: service.to_string(),
            client: Some(peer),
            trace_id: trace,
        };
        let mut tried: Vec<SessionId> = Vec::new();
        let mut avoid: BTreeSet<String> = BTreeSet::new();
        // Readiness can be debounced while no session is usable: wait for the core to
        // change, bounded.
        let mut changed = self.core_changed.subscribe();
        let first = loop {
            changed.borrow_and_update();
            if let Some(p) = self.session_for(service, &mut tried, &avoid) {
                break p;
            }
            if Instant::now() >= deadline || self.base.kill.is_cancelled() {
                reject("no_stream");
                return;
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = self.base.kill.cancelled() => {}
            }
        };
        let another = |(sid, session): &(SessionId, Arc<Session>), hedge: bool| {
            tried.push(*sid);
            avoid.insert(session.gateway.clone());
            let next = self.session_for(service, &mut tried, &avoid)?;
            if hedge && next.1.gateway == session.gateway {
                return None;
            }
            self.base
                .metrics
                .open_retries
                .with_label_values(&[service])
                .inc();
            Some(next)
        };
        let open = |(sid, session): (SessionId, Arc<Session>)| {
            let c = self.clone();
            let preamble = preamble.clone();
            async move {
                let stream = c.open_on(sid, &session, &preamble).await;
                ((sid, session), stream)
            }
        };
        let c = self.clone();
        let release = move |(sid, _): (SessionId, Arc<Session>)| lock(&c.core).stream_ended(sid);
        let opened = |(sid, session): &(SessionId, Arc<Session>)| {
            debug!(target: "tether_gateway::cloud", trace = %common::hex(&trace), session = sid, gateway = %session.gateway, "reverse stream open");
        };
        let hedge = stream::hedge_after(self.cfg().timers.open_timeout);
        let carried = stream::carry(
            &self.base,
            service,
            "reverse",
            &mut client,
            first,
            another,
            open,
            hedge,
            release,
            opened,
            self.cfg().timers.stream_idle_timeout,
        )
        .await;
        if !carried {
            reject("no_stream");
        }
    }

    /// A usable session for a new stream of `service` (see [`crate::readiness::CloudCore::pick`]),
    /// with its handle. One that ended between the pick and the lookup goes to `tried`.
    fn session_for(
        &self,
        service: &str,
        tried: &mut Vec<SessionId>,
        avoid: &BTreeSet<String>,
    ) -> Option<(SessionId, Arc<Session>)> {
        loop {
            let sid = lock(&self.core).pick(service, tried, avoid)?;
            match lock(&self.sessions).get(&sid).cloned() {
                Some(session) => return Some((sid, session)),
                None => tried.push(sid),
            }
        }
    }

    /// One stream open on `session` for a reverse client: counts the stream on the
    /// session, and on failure logs why and applies what the failure says about the
    /// session (a silent one is ejected). `None` when it failed.
    async fn open_on(
        &self,
        sid: SessionId,
        session: &Session,
        preamble: &Preamble,
    ) -> Option<YamuxStream> {
        lock(&self.core).stream_started(sid);
        let timeout = self.cfg().timers.open_timeout;
        match stream::open_counted(&self.base.metrics, &session.link.mux, preamble, timeout).await {
            Ok(stream) => {
                lock(&self.core).open_answered(sid);
                Some(stream)
            }
            Err(e) => {
                warn!(target: "tether_gateway::cloud", trace = %common::hex(&preamble.trace_id), session = sid, gateway = %session.gateway, reason = e.as_str(), "reverse stream open failed");
                let actions = {
                    let mut core = lock(&self.core);
                    core.stream_ended(sid);
                    match e {
                        OpenError::Silent => core.open_silent(Instant::now(), sid),
                        OpenError::Status(_) => {
                            core.open_answered(sid);
                            Vec::new()
                        }
                        OpenError::Broken => Vec::new(),
                    }
                };
                self.apply(actions);
                None
            }
        }
    }

    /// An empty stream open on `session`: one left unanswered counts towards ejecting it.
    pub(super) async fn probe(&self, sid: SessionId, session: Arc<Session>) {
        let preamble = Preamble {
            kind: StreamKind::Probe,
            service: "-".into(),
            client: None,
            trace_id: common::trace_id(),
        };
        let timeout = self.cfg().timers.open_timeout;
        let result = tokio::select! {
            _ = self.base.kill.cancelled() => return,
            r = stream::open_stream(&session.link.mux, &preamble, timeout) => r,
        };
        let actions = match result {
            Ok(_) | Err(OpenError::Status(_)) => {
                lock(&self.core).open_answered(sid);
                Vec::new()
            }
            Err(OpenError::Silent) => {
                warn!(target: "tether_gateway::cloud", session = sid, gateway = %session.gateway, "probe unanswered");
                self.base
                    .metrics
                    .stream_open_failures
                    .with_label_values(&["-", "probe_timeout"])
                    .inc();
                lock(&self.core).open_silent(Instant::now(), sid)
            }
            Err(OpenError::Broken) => Vec::new(),
        };
        self.apply(actions);
    }
}
