//! The admin listener: `/metrics`, `/healthz`, `/readyz` (every instance past
//! INITIALIZE), `/api/state` (each instance's state and problem) and `/api/reload` (GET:
//! the last reload's result, time and what it did or why it was refused; POST: reload now,
//! as SIGHUP does, and answer the same).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::{DaemonError, LastReload, Reloader};
use crate::config::InstanceConfig;
use crate::fsm::State;
use crate::metrics::Metrics;

/// What `/api/state` reports for one instance.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceStatus {
    /// Instance name.
    pub name: String,
    /// Interface.
    pub interface: String,
    /// VRID.
    pub vrid: u8,
    /// Current state.
    pub state: State,
    /// Configured priority.
    pub priority: u8,
    /// Effective priority (0 in fault).
    pub effective_priority: u8,
    /// Why the instance is not running normally, if it is not.
    pub problem: Option<String>,
}

impl InstanceStatus {
    /// The status of an instance that has not started yet.
    pub fn initial(i: &InstanceConfig) -> InstanceStatus {
        InstanceStatus {
            name: i.name.clone(),
            interface: i.interface.clone(),
            vrid: i.vrid,
            state: State::Initialize,
            priority: i.priority,
            effective_priority: i.priority,
            problem: None,
        }
    }
}

/// Ready when no instance is still in INITIALIZE; otherwise names the first one that is,
/// with its problem (a missing interface, say).
pub fn readiness(status: &[InstanceStatus]) -> Result<(), String> {
    match status.iter().find(|i| i.state == State::Initialize) {
        Some(i) => Err(format!(
            "instance {} not started{}",
            i.name,
            i.problem
                .as_deref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        )),
        None => Ok(()),
    }
}

/// Binds `addr` and serves the admin endpoints until `shutdown`; returns the bound
/// address and the server task.
pub(super) async fn spawn(
    addr: SocketAddr,
    metrics: &Metrics,
    status: &Arc<Mutex<Vec<InstanceStatus>>>,
    last_reload: &Arc<Mutex<Option<LastReload>>>,
    reloader: &Arc<std::sync::OnceLock<Reloader>>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), DaemonError> {
    let listener = tether_health::admin::bind(addr)
        .await
        .map_err(|source| DaemonError::AdminBind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| DaemonError::AdminBind { addr, source })?;
    let st = status.clone();
    let ready_st = status.clone();
    let ready: tether_health::admin::Readiness = Arc::new(move || {
        let s = ready_st
            .lock()
            .map_err(|_| "state lock poisoned".to_string())?;
        readiness(&s)
    });
    let last = last_reload.clone();
    let reloader = reloader.clone();
    let router = tether_health::admin::router(metrics.registry.clone(), ready)
        .route(
            "/api/state",
            get(move || {
                let st = st.clone();
                async move { Json(st.lock().map(|s| s.clone()).unwrap_or_default()) }
            }),
        )
        .route(
            "/api/reload",
            get(move || {
                let last = last.clone();
                // `null` until the first reload.
                async move { Json(last.lock().ok().and_then(|l| l.clone())) }
            })
            .post(move |headers: HeaderMap| {
                let reloader = reloader.clone();
                async move { post_reload(&headers, reloader.get().cloned()).await }
            }),
        );
    let task = tokio::spawn(async move {
        if let Err(e) = tether_health::admin::serve(listener, router, shutdown).await {
            error!("admin server: {e}");
        }
    });
    Ok((local, task))
}

/// `POST /api/reload`: 200 with what was done, 400 with the file's errors (the running
/// configuration keeps serving), 403 for a write another site's page could send, 404 when
/// no file was named.
async fn post_reload(
    headers: &HeaderMap,
    reloader: Option<Reloader>,
) -> (StatusCode, Json<serde_json::Value>) {
    if let Some(why) = tether_health::admin::cross_site_write(headers, false) {
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({ "error": why })),
        );
    }
    let outcome = match reloader {
        Some(r) => r.reload_named().await,
        None => None,
    };
    match outcome {
        Some(Ok(plan)) => (
            StatusCode::OK,
            Json(serde_json::json!({ "result": "ok", "detail": plan.to_string() })),
        ),
        Some(Err(errors)) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "result": "failed", "detail": errors.to_string() })),
        ),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "this daemon was given no file to reload from" })),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, state: State, problem: Option<&str>) -> InstanceStatus {
        InstanceStatus {
            name: name.into(),
            interface: "eth0".into(),
            vrid: 51,
            state,
            priority: 100,
            effective_priority: 100,
            problem: problem.map(str::to_string),
        }
    }

    #[test]
    fn ready_once_every_instance_left_initialize_else_the_first_one_is_named() {
        assert_eq!(readiness(&[]), Ok(()));
        let backup = status("VI_1", State::Backup, None);
        let fault = status("VI_2", State::Fault, Some("link down"));
        assert_eq!(readiness(&[backup.clone(), fault]), Ok(()));
        let waiting = status("VI_3", State::Initialize, Some("interface vrrp9 not found"));
        assert_eq!(
            readiness(&[backup.clone(), waiting]),
            Err("instance VI_3 not started: interface vrrp9 not found".into())
        );
        let quiet = status("VI_4", State::Initialize, None);
        assert_eq!(
            readiness(&[backup, quiet]),
            Err("instance VI_4 not started".into())
        );
    }

    /// A write another site's page could send is refused before anything is read; a
    /// daemon given no file answers 404. (A reload itself: `tests/reload.rs`.)
    #[tokio::test]
    async fn post_reload_refuses_cross_site_writes_and_needs_a_file() {
        let bare = HeaderMap::new();
        let (code, body) = post_reload(&bare, None).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{:?}", body.0);
        let mut asked = HeaderMap::new();
        asked.insert(tether_health::admin::WRITE_HEADER, "1".parse().unwrap());
        let (code, body) = post_reload(&asked, None).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{:?}", body.0);
    }
}
