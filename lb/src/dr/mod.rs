//! The forwarding tier (`mode = "dr"`): direct server return programmed into the kernel with
//! nftables, so no packet crosses user space and a balancer's death costs a retransmission,
//! not a connection.
//!
//! - [`table`]: the consistent slot table (sans-IO).
//! - [`rules`]: the nftables program for a set of frontends (sans-IO).
//! - [`core`]: what to apply and when to retry (sans-IO).
//! - [`plan`]: the program wanted for the live state (servers, health, weights).
//! - [`nft`]: running `nft` and reading its counters and flow maps.
//! - this module: the task that keeps the kernel in step with the live state.

pub mod core;
pub mod nft;
pub mod plan;
pub mod rules;
pub mod table;
pub(crate) mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::state::State;

/// The nftables table every balancer of this host's namespace programs. One `tether lb` with
/// dr frontends per network namespace.
pub const TABLE: &str = "tether_lb";

/// The forwarding tier's handle: what the API and `/readyz` read, and the signal that the
/// servers changed.
#[derive(Default)]
pub struct Dr {
    /// Notified when a server's health, operator state or weight changes, or a reload or DNS
    /// answer replaces the state.
    pub changed: Arc<Notify>,
    status: Mutex<Status>,
    /// Last counter values read from the kernel, to turn them into increments.
    seen: Mutex<HashMap<String, (u64, u64)>>,
    /// The program in the kernel, for whoever acts on it (the announcement).
    installed: watch::Sender<Option<rules::Desired>>,
}

#[derive(Debug, Default, Clone)]
struct Status {
    installed: Option<rules::Desired>,
    error: Option<String>,
    plan_errors: Vec<String>,
    marks: HashMap<u32, (String, String)>,
}

/// A dr frontend in `/api/state`.
#[derive(Debug, Clone, Serialize)]
pub struct DrView {
    /// The link it forwards on.
    pub interface: String,
    /// Its rules are in the kernel.
    pub installed: bool,
    /// Why the last change could not be applied (the previous rules keep serving).
    pub error: Option<String>,
    /// Servers left out of the table, and why.
    pub problems: Vec<String>,
    /// Slots held per server (`backend/server`).
    pub slots: HashMap<String, usize>,
}

impl Dr {
    /// Follows the program in the kernel (`None` when there is none).
    pub fn subscribe(&self) -> watch::Receiver<Option<rules::Desired>> {
        self.installed.subscribe()
    }

    /// Whether every dr frontend of `state` is in the kernel; the reason when not.
    pub fn readiness(&self, state: &State) -> Result<(), String> {
        let dr: Vec<&str> = state
            .frontends
            .iter()
            .filter(|f| f.cfg.dr.is_some())
            .map(|f| f.cfg.name.as_str())
            .collect();
        if dr.is_empty() {
            return Ok(());
        }
        let st = self.status.lock().map_err(|_| "status lock")?;
        let missing: Vec<&str> = dr
            .into_iter()
            .filter(|n| {
                !st.installed
                    .as_ref()
                    .is_some_and(|d| d.frontends.iter().any(|f| f.name == *n))
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "forwarding rules not installed for frontend {}{}",
                missing.join(", "),
                st.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ))
        }
    }

    /// The `/api/state` view of dr frontend `name`.
    pub fn view(&self, name: &str, interface: &str) -> DrView {
        let st = self.status.lock().map(|g| g.clone()).unwrap_or_default();
        let f = st
            .installed
            .as_ref()
            .and_then(|d| d.frontends.iter().find(|f| f.name == name));
        let mut slots = HashMap::new();
        if let Some(f) = f {
            for m in &f.slots {
                if let Some((b, s)) = st.marks.get(m) {
                    *slots.entry(format!("{b}/{s}")).or_insert(0) += 1;
                }
            }
        }
        DrView {
            interface: interface.to_string(),
            installed: f.is_some(),
            error: st.error.clone(),
            problems: st.plan_errors.clone(),
            slots,
        }
    }

    /// Reads the kernel's counters and flow maps into the metrics (on every scrape).
    pub async fn refresh_stats(&self, metrics: &Metrics) {
        let (installed, marks) = match self.status.lock() {
            Ok(st) => (st.installed.clone(), st.marks.clone()),
            Err(_) => return,
        };
        let Some(installed) = installed else {
            return;
        };
        match nft::counters(TABLE).await {
            Ok(counters) => {
                let mut seen = match self.seen.lock() {
                    Ok(s) => s,
                    Err(_) => return,
                };
                for (name, (packets, bytes)) in counters {
                    let (p0, b0) = seen
                        .insert(name.clone(), (packets, bytes))
                        .unwrap_or((0, 0));
                    // A counter that went backwards was made anew: count it from zero.
                    let dp = if packets >= p0 { packets - p0 } else { packets };
                    let db = if bytes >= b0 { bytes - b0 } else { bytes };
                    if let Some(mark) = name
                        .strip_prefix("s_")
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        && let Some((b, s)) = marks.get(&mark)
                    {
                        metrics.dr_packets.with_label_values(&[b, s]).inc_by(dp);
                        metrics.dr_bytes.with_label_values(&[b, s]).inc_by(db);
                    }
                    for f in &installed.frontends {
                        if name == rules::no_server_counter(&f.name) {
                            metrics
                                .dr_no_server
                                .with_label_values(&[f.name.as_str()])
                                .inc_by(dp);
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading forwarding counters"),
        }
        for f in &installed.frontends {
            match nft::flows_by_mark(TABLE, &rules::flow_map(f)).await {
                Ok(by_mark) => {
                    // Every server of the backend, so one that went down shows what is
                    // left of its flows (0 once they are re-hashed or expire), not the
                    // count it had when it was last live.
                    for (mark, (b, name)) in marks.iter().filter(|(_, (b, _))| *b == f.backend) {
                        let n = by_mark.get(mark).copied().unwrap_or(0);
                        metrics
                            .dr_flows
                            .with_label_values(&[f.name.as_str(), b, name])
                            .set(n as i64);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "reading a flow map"),
            }
        }
    }
}

/// Applies the program for the current state once: what `start` does before it reports the
/// balancer started, so a missing `nft`, missing rights or a bad interface fail the start.
pub(crate) async fn first_apply(
    state: &State,
    dr: &Dr,
    controller: &mut core::Controller,
    metrics: &Metrics,
) -> Result<(), String> {
    let p = plan::plan(state, TABLE);
    if let Some(e) = p.errors.first() {
        return Err(e.clone());
    }
    let _ = sync(state, dr, controller, metrics, Instant::now()).await;
    match controller.last_error() {
        Some(e) => Err(e.to_string()),
        None => Ok(()),
    }
}

/// Keeps the kernel in step with the live state until `stop`, then removes the table.
pub(crate) async fn run(
    lb: Arc<crate::runtime::Lb>,
    mut controller: core::Controller,
    stop: CancellationToken,
) {
    loop {
        let state = lb.state();
        let now = Instant::now();
        let problems = sync(&state, &lb.dr, &mut controller, &lb.metrics, now).await;
        // Every pass, not only a changed program: a server that turns up (from unknown)
        // changes no rule, yet makes its VIPs ready for the announcement.
        lb.dr
            .installed
            .send_replace(controller.installed().cloned());
        // A missing interface or an off-link server is looked at again on its own: no
        // server event may come while the link is away.
        let replan = problems.then(|| now + REPLAN);
        let deadline = match (controller.next_deadline(), replan) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            _ = lb.dr.changed.notified() => {}
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(a) = controller.handle_timeout(Instant::now()) {
                    apply(&lb.dr, &mut controller, &lb.metrics, a, "retry").await;
                }
            }
            _ = stop.cancelled() => break,
        }
    }
    remove_table(&lb.dr, &mut controller).await;
}

/// How soon a plan with problems (a missing interface, a server off the link) is made again.
const REPLAN: std::time::Duration = std::time::Duration::from_secs(2);

/// Removes the table, if this process made one.
async fn remove_table(dr: &Dr, controller: &mut core::Controller) {
    if controller.installed().is_none() && controller.last_error().is_none() {
        return;
    }
    match nft::run(&rules::teardown(TABLE)).await {
        Ok(()) => tracing::info!(table = TABLE, "forwarding table removed"),
        Err(e) => tracing::error!(error = %e, table = TABLE, "removing the forwarding table"),
    }
    *controller = core::Controller::new();
    if let Ok(mut st) = dr.status.lock() {
        st.installed = None;
        st.error = None;
    }
    dr.installed.send_replace(None);
}

/// Brings the kernel in step with `state`; whether the plan had problems.
async fn sync(
    state: &State,
    dr: &Dr,
    controller: &mut core::Controller,
    metrics: &Metrics,
    now: Instant,
) -> bool {
    let p = plan::plan(state, TABLE);
    let problems = !p.errors.is_empty();
    if let Ok(mut st) = dr.status.lock() {
        if st.plan_errors != p.errors {
            for e in &p.errors {
                tracing::error!(error = %e, "left out of the forwarding table");
            }
        }
        st.plan_errors = p.errors.clone();
    }
    if p.desired.frontends.is_empty() {
        // The last dr frontend went away in a reload (or there never was one), or its
        // interface is gone.
        remove_table(dr, controller).await;
        return problems;
    }
    for (f, b, s, n) in p.slots_held() {
        metrics.dr_slots.with_label_values(&[f, b, s]).set(n as i64);
    }
    if let Ok(mut st) = dr.status.lock() {
        st.marks = p.marks.clone();
    }
    let summary = p.summary();
    if let Some(a) = controller.want(now, p.desired) {
        apply(dr, controller, metrics, a, &summary).await;
    }
    problems
}

async fn apply(
    dr: &Dr,
    controller: &mut core::Controller,
    metrics: &Metrics,
    a: core::Apply,
    summary: &str,
) {
    let result = nft::run(&a.script).await.map_err(|e| e.to_string());
    match &result {
        Ok(()) => {
            for f in &a.frontends {
                metrics.dr_table_changes.with_label_values(&[f]).inc();
            }
            tracing::info!(frontends = ?a.frontends, slots = summary, "forwarding table applied");
        }
        Err(e) => {
            for f in &a.frontends {
                metrics.dr_apply_failures.with_label_values(&[f]).inc();
            }
            tracing::error!(error = %e, "applying the forwarding table failed; the previous rules keep serving");
        }
    }
    controller.applied(Instant::now(), result);
    if let Ok(mut st) = dr.status.lock() {
        st.installed = controller.installed().cloned();
        st.error = controller.last_error().map(str::to_string);
    }
    dr.installed.send_replace(controller.installed().cloned());
}
