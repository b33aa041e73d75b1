//! One server, live: its health (the rise/fall machine's verdict), the operator's admin
//! state, its connection counters and `maxconn` slots, and the metric children the data
//! path updates without label lookups.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus::{Histogram, IntCounter, IntGauge};
use serde::Serialize;
use tether_health::check::{Health, RiseFall, Transition};
use tokio::sync::Semaphore;

use super::*;

fn health_from_u8(v: u8) -> Health {
    match v {
        1 => Health::Up,
        2 => Health::Down,
        _ => Health::Unknown,
    }
}

fn health_to_u8(h: Health) -> u8 {
    match h {
        Health::Unknown => 0,
        Health::Up => 1,
        Health::Down => 2,
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The metric children of one server, resolved once so the data path does no label lookups.
pub struct ServerMetrics {
    /// Connections established.
    pub connections: IntCounter,
    /// Connections open.
    pub active: IntGauge,
    /// Bytes client to server.
    pub bytes_in: IntCounter,
    /// Bytes server to client.
    pub bytes_out: IntCounter,
    /// Failed connects.
    pub connect_failures: IntCounter,
    /// Up gauge.
    pub up: IntGauge,
    /// Checks that passed.
    pub checks_ok: IntCounter,
    /// Checks that failed.
    pub checks_fail: IntCounter,
    /// Queue length.
    pub queue: IntGauge,
    /// Queue timeouts.
    pub queue_timeouts: IntCounter,
    /// Connect time.
    pub connect_seconds: Histogram,
}

/// One server of one backend, live.
pub struct Server {
    /// Its configuration.
    pub cfg: ServerConfig,
    /// The backend's name, for logs.
    pub backend: String,
    /// Where connections go (resolved at start).
    pub addr: SocketAddr,
    /// Stable identity for consistent hashing.
    pub id: u64,
    health: AtomicU8,
    /// Rise/fall over both active checks and failed connects (HAProxy's `observe layer4`),
    /// so a server that stops answering is taken out after `fall` failures of either kind.
    judge: Mutex<Option<RiseFall>>,
    failure_gate: Mutex<FailureGate>,
    admin: AtomicU8,
    weight: AtomicU32,
    /// Connections open or opening.
    active: AtomicU32,
    total: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    queued: AtomicU32,
    /// `maxconn` slots; `None` when unlimited.
    pub slots: Option<Arc<Semaphore>>,
    last_check: Mutex<Option<String>>,
    last_change: Mutex<f64>,
    /// Metric children.
    pub m: ServerMetrics,
    /// Told when health, operator state or weight change (the forwarding tier follows).
    changed: Arc<tokio::sync::Notify>,
}

/// A snapshot of a server for `/api/state`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerView {
    /// The server's name in the configuration.
    pub name: String,
    /// Configured address.
    pub address: String,
    /// Where connections go.
    pub resolved: String,
    /// What the last checks concluded (unknown until the first one finishes).
    pub health: Health,
    /// Operator state.
    pub state: AdminState,
    /// Takes new connections now.
    pub up: bool,
    /// Result of the last check, `ok` or the error.
    pub last_check: Option<String>,
    /// Unix time of the last health or state change.
    pub last_change_unix: f64,
    /// Current weight.
    pub weight: u32,
    /// Backup server.
    pub backup: bool,
    /// Connections open.
    pub active: u32,
    /// Connections in all.
    pub total: u64,
    /// Connections waiting.
    pub queued: u32,
    /// Bytes client to server.
    pub bytes_in: u64,
    /// Bytes server to client.
    pub bytes_out: u64,
}

impl Server {
    /// Builds a live server from its configuration and resolved address.
    /// `changed` is notified whenever what decides its share of new connections changes.
    pub fn new(
        backend: &str,
        cfg: ServerConfig,
        addr: SocketAddr,
        metrics: &Metrics,
        changed: Arc<tokio::sync::Notify>,
    ) -> Self {
        let l = &[backend, cfg.name.as_str()];
        let m = ServerMetrics {
            connections: metrics.srv_connections.with_label_values(l),
            active: metrics.srv_active.with_label_values(l),
            bytes_in: metrics.srv_bytes_in.with_label_values(l),
            bytes_out: metrics.srv_bytes_out.with_label_values(l),
            connect_failures: metrics.srv_connect_failures.with_label_values(l),
            up: metrics.srv_up.with_label_values(l),
            checks_ok: metrics
                .srv_checks
                .with_label_values(&[backend, cfg.name.as_str(), "ok"]),
            checks_fail: metrics.srv_checks.with_label_values(&[
                backend,
                cfg.name.as_str(),
                "fail",
            ]),
            queue: metrics.srv_queue.with_label_values(l),
            queue_timeouts: metrics.srv_queue_timeouts.with_label_values(l),
            connect_seconds: metrics.connect_seconds.with_label_values(l),
        };
        let slots = (cfg.maxconn > 0).then(|| Arc::new(Semaphore::new(cfg.maxconn as usize)));
        let s = Server {
            id: hash_bytes(cfg.name.as_bytes()),
            backend: backend.to_string(),
            addr,
            health: AtomicU8::new(health_to_u8(Health::Unknown)),
            judge: Mutex::new(None),
            failure_gate: Mutex::new(FailureGate::default()),
            admin: AtomicU8::new(0),
            weight: AtomicU32::new(cfg.weight),
            active: AtomicU32::new(0),
            total: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            queued: AtomicU32::new(0),
            slots,
            last_check: Mutex::new(None),
            last_change: Mutex::new(unix_now()),
            m,
            cfg,
            changed,
        };
        s.refresh_up_gauge();
        s
    }

    /// Health as last checked.
    pub fn health(&self) -> Health {
        health_from_u8(self.health.load(Ordering::Relaxed))
    }

    /// The operator's state.
    pub fn admin_state(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    /// May take new connections: not known down, and ready. An unchecked server is tried,
    /// as HAProxy does, so a fresh balancer serves before its first check finishes.
    pub fn usable(&self) -> bool {
        self.health() != Health::Down && self.admin_state() == AdminState::Ready
    }

    /// Known up and ready: what `/readyz` counts.
    pub fn up(&self) -> bool {
        self.health() == Health::Up && self.admin_state() == AdminState::Ready
    }

    /// Records a health change.
    pub fn set_health(&self, h: Health) {
        let old = self.health.swap(health_to_u8(h), Ordering::Relaxed);
        if old != health_to_u8(h) {
            self.touch();
            self.changed.notify_one();
        }
        self.refresh_up_gauge();
    }

    /// Starts judging health with `rise`/`fall` from the current state (when checks start).
    pub fn init_judge(&self, rise: u32, fall: u32) {
        if let Ok(mut j) = self.judge.lock() {
            *j = Some(RiseFall::with_state(rise, fall, self.health()));
        }
    }

    /// Feeds one result (an active check, or a connect attempt of the data path) to the
    /// rise/fall judge; applies and returns the transition it caused. Without checks
    /// configured nothing is judged.
    pub fn observe(&self, ok: bool) -> Option<Transition> {
        let t = self.judge.lock().ok()?.as_mut()?.observe(ok)?;
        self.set_health(t.to);
        Some(t)
    }

    /// A connect of the data path started at `started` failed: judged like a failed check
    /// when it counts (see `passive::FailureGate`); the transition it caused, if any.
    pub fn connect_failed(&self, started: Instant) -> Option<Transition> {
        let counts = self
            .failure_gate
            .lock()
            .ok()?
            .counts(started, Instant::now());
        if counts { self.observe(false) } else { None }
    }

    /// A connect succeeded: clears a failure streak of a server that is up. It never raises
    /// a server's health: only its checks (which may look elsewhere, e.g. `/readyz`) do.
    pub fn connect_succeeded(&self) {
        if let Ok(mut j) = self.judge.lock()
            && let Some(rf) = j.as_mut()
            && rf.state() == Health::Up
        {
            rf.observe(true);
        }
    }

    /// Records a check result for the API.
    pub fn set_last_check(&self, result: Option<String>) {
        if let Ok(mut g) = self.last_check.lock() {
            *g = result;
        }
    }

    /// Sets the operator's state.
    pub fn set_admin_state(&self, s: AdminState) {
        let v = match s {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Maint => 2,
        };
        if self.admin.swap(v, Ordering::Relaxed) != v {
            self.touch();
            self.changed.notify_one();
        }
        self.refresh_up_gauge();
    }

    /// Takes over what a reload must not lose from the server this one replaces: the
    /// operator's state always, health and the last check only when the address is the same.
    pub fn carry_from(&self, old: &Server) {
        self.admin
            .store(old.admin.load(Ordering::Relaxed), Ordering::Relaxed);
        if old.addr == self.addr {
            self.health
                .store(old.health.load(Ordering::Relaxed), Ordering::Relaxed);
            self.set_last_check(old.last_check.lock().ok().and_then(|g| g.clone()));
            if let (Ok(mut new), Ok(old)) = (self.last_change.lock(), old.last_change.lock()) {
                *new = *old;
            }
        }
        self.refresh_up_gauge();
    }

    /// Sets the weight (1..=256, enforced by the caller).
    pub fn set_weight(&self, w: u32) {
        if self.weight.swap(w, Ordering::Relaxed) != w {
            self.changed.notify_one();
        }
    }

    fn touch(&self) {
        if let Ok(mut g) = self.last_change.lock() {
            *g = unix_now();
        }
    }

    fn refresh_up_gauge(&self) {
        self.m.up.set(i64::from(
            self.up() || (self.usable() && self.health() == Health::Unknown),
        ));
    }

    /// Counts bytes client to server.
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
        self.m.bytes_in.inc_by(n);
    }

    /// Counts bytes server to client.
    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
        self.m.bytes_out.inc_by(n);
    }

    /// Marks one more connection open or opening; dropping the guard undoes it.
    pub fn claim(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.m.active.inc();
        ActiveGuard(self.clone())
    }

    /// Counts a connection established.
    pub fn count_connection(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.m.connections.inc();
    }

    /// Marks one more connection queued; dropping the guard undoes it. `None` when the
    /// queue is at `maxqueue`.
    pub fn enqueue(self: &Arc<Self>) -> Option<QueueGuard> {
        let prev = self.queued.fetch_add(1, Ordering::Relaxed);
        if prev >= self.cfg.maxqueue {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        self.m.queue.inc();
        Some(QueueGuard(self.clone()))
    }

    pub(super) fn candidate(&self) -> Candidate {
        Candidate {
            id: self.id,
            weight: self.weight.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            usable: self.usable(),
            backup: self.cfg.backup,
            full: self
                .slots
                .as_ref()
                .is_some_and(|s| s.available_permits() == 0),
        }
    }

    /// A snapshot for the API.
    pub fn view(&self) -> ServerView {
        ServerView {
            name: self.cfg.name.clone(),
            address: self.cfg.address.to_string(),
            resolved: self.addr.to_string(),
            health: self.health(),
            state: self.admin_state(),
            up: self.up(),
            last_check: self.last_check.lock().ok().and_then(|g| g.clone()),
            last_change_unix: self.last_change.lock().map(|g| *g).unwrap_or(0.0),
            weight: self.weight.load(Ordering::Relaxed),
            backup: self.cfg.backup,
            active: self.active.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// One open or opening connection to a server.
pub struct ActiveGuard(Arc<Server>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.m.active.dec();
    }
}

/// One connection waiting in a server's queue.
pub struct QueueGuard(Arc<Server>);

impl Drop for QueueGuard {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
        self.0.m.queue.dec();
    }
}
