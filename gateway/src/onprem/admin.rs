//! On-prem's admin routes: `/readyz` (a session to every known cloud node, and no drain),
//! `/readyz/{service}` per consumed service, `/status`, `/livez`, `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;

use super::Onprem;
use crate::base::lock;

pub(super) fn router(gw: &Arc<Onprem>) -> axum::Router {
    let g = gw.clone();
    let readiness: tether_health::admin::Readiness = Arc::new(move || {
        if g.base.draining() {
            return Err("draining".into());
        }
        let coverage = lock(&g.placement).coverage();
        if coverage.is_empty() {
            return Err("no cloud node reached yet".into());
        }
        let uncovered: Vec<String> = coverage
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(id, _)| id.clone())
            .collect();
        if uncovered.is_empty() {
            Ok(())
        } else {
            Err(format!("no session to {}", uncovered.join(", ")))
        }
    });
    let mine = axum::Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz/{service}", get(consume_readyz))
        .route("/status", get(status))
        .with_state(gw.clone());
    tether_health::admin::router(gw.base.metrics.registry.clone(), readiness).merge(mine)
}

async fn consume_readyz(
    State(g): State<Arc<Onprem>>,
    Path(service): Path<String>,
) -> (StatusCode, Json<serde_json::Value>) {
    let ready = g
        .consume_ready(&service)
        .is_some()
        .then(|| g.consume_service_ready(&service));
    let status = match ready {
        Some(true) => StatusCode::OK,
        Some(false) => StatusCode::SERVICE_UNAVAILABLE,
        None => StatusCode::NOT_FOUND,
    };
    (
        status,
        Json(serde_json::json!({ "service": service, "ready": ready.unwrap_or(false) })),
    )
}

async fn status(State(g): State<Arc<Onprem>>) -> Json<serde_json::Value> {
    let coverage = lock(&g.placement).coverage();
    let exports = lock(&g.export_up).clone();
    Json(serde_json::json!({
        "gateway_id": g.cfg().id,
        "boot_epoch": g.base.boot_epoch,
        "quota": g.cfg().prepared_connections,
        "coverage": coverage,
        "exports_up": exports,
        "draining": g.base.draining(),
    }))
}
