//! The cloud node's admin routes: `/readyz` (every reverse service has capacity, and no
//! drain), `/readyz/{service}` with its capacity, `/livez`, `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;

use super::Cloud;
use crate::base::lock;

pub(super) fn router(cloud: &Arc<Cloud>) -> axum::Router {
    let c = cloud.clone();
    let readiness: tether_health::admin::Readiness = Arc::new(move || {
        if c.base.draining() {
            return Err("draining".to_string());
        }
        let missing: Vec<String> = c
            .cfg()
            .reverse
            .iter()
            .map(|r| r.service.clone())
            .filter(|s| !c.service_ready(s))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("no capacity for {}", missing.join(", ")))
        }
    });
    let mine = axum::Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz/{service}", get(service_readyz))
        .with_state(cloud.clone());
    tether_health::admin::router(cloud.base.metrics.registry.clone(), readiness).merge(mine)
}

async fn service_readyz(
    State(c): State<Arc<Cloud>>,
    Path(service): Path<String>,
) -> (StatusCode, Json<serde_json::Value>) {
    let ready = c.service_ready(&service);
    let core = lock(&c.core);
    let known = core.services().any(|s| s == service);
    let (sessions, gateways) = core.capacity(&service);
    let body = serde_json::json!({
        "node_id": c.cfg().id,
        "boot_epoch": c.base.boot_epoch,
        "service": service,
        "known": known,
        "ready": ready,
        "sessions": sessions,
        "gateways": gateways,
        "draining": c.base.draining(),
    });
    let status = if ready {
        StatusCode::OK
    } else if known {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NOT_FOUND
    };
    (status, Json(body))
}
