//! The balancer's admin routes beyond `/metrics`, `/healthz` and `/readyz`: state as JSON,
//! runtime control of servers, reload, and an HTML stats page.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::runtime::{Lb, ReloadError};
use crate::state::AdminState;
use tether_health::check::Health;

/// The whole admin router of a balancer.
pub fn router(lb: &Arc<Lb>) -> Router {
    let ready = lb.clone();
    let readiness: tether_health::admin::Readiness = Arc::new(move || {
        if ready.draining.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        let state = ready.state();
        state.readiness()?;
        ready.dr.readiness(&state)
    });
    let extra = Router::new()
        .route("/api/state", get(api_state))
        .route("/api/servers/{backend}/{server}", post(set_server))
        .route("/api/reload", post(reload))
        .route("/stats", get(stats))
        .with_state(lb.clone());
    let fresh = lb.clone();
    tether_health::admin::router(lb.metrics.registry.clone(), readiness)
        .merge(extra)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let lb = fresh.clone();
                async move {
                    // The kernel counts what dr frontends forward; read it when asked.
                    if req.uri().path() == "/metrics" {
                        lb.dr.refresh_stats(&lb.metrics).await;
                        lb.announce.refresh_stats().await;
                    }
                    next.run(req).await
                }
            },
        ))
}

async fn api_state(AxState(lb): AxState<Arc<Lb>>) -> impl IntoResponse {
    let state = lb.state();
    let mut view = state.view();
    for (v, f) in view.frontends.iter_mut().zip(&state.frontends) {
        if let Some(dr) = &f.cfg.dr {
            v.dr = Some(lb.dr.view(&f.cfg.name, &dr.interface));
        }
    }
    view.announce = lb.announce.view().await;
    axum::Json(view)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    (status, axum::Json(body)).into_response()
}

/// Checks `Authorization: Bearer <token>` when a token is configured, and without one that
/// the request is not one a page on another site could send; the refusal to send, if any.
fn refuse_unauthorized(lb: &Lb, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = lb.token.load_full() else {
        // No token: what stands between a web page on another site and this API.
        return tether_health::admin::cross_site_write(headers, false)
            .map(|why| error(StatusCode::FORBIDDEN, why));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => None,
        Some(_) => Some(error(StatusCode::FORBIDDEN, "wrong token")),
        None => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs Authorization: Bearer <token>",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            Some(r)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The body of `POST /api/servers/{backend}/{server}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerChange {
    state: Option<String>,
    weight: Option<i64>,
}

async fn set_server(
    AxState(lb): AxState<Arc<Lb>>,
    Path((backend, server)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refuse_unauthorized(&lb, &headers) {
        return r;
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let change: ServerChange = if is_json {
        match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        }
    } else {
        match serde_urlencoded_parse(&body) {
            Ok(c) => c,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        }
    };
    if change.state.is_none() && change.weight.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "give state (ready, drain or maint) and/or weight (1..=256)",
        );
    }
    let state = match change.state.as_deref() {
        None => None,
        Some("ready") => Some(AdminState::Ready),
        Some("drain") => Some(AdminState::Drain),
        Some("maint") => Some(AdminState::Maint),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("state \"{other}\" is not one of ready, drain, maint"),
            );
        }
    };
    if let Some(w) = change.weight
        && !(1..=256).contains(&w)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("weight {w} is not in 1..=256"),
        );
    }
    let live = lb.state();
    let Some(s) = live.server(&backend, &server) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no server \"{server}\" in backend \"{backend}\""),
        );
    };
    if let Some(st) = state {
        s.set_admin_state(st);
    }
    if let Some(w) = change.weight {
        s.set_weight(w as u32);
    }
    tracing::info!(backend = %backend, server = %server, state = ?state, weight = ?change.weight, "server changed by the admin API");
    axum::Json(s.view()).into_response()
}

fn serde_urlencoded_parse(body: &[u8]) -> Result<ServerChange, String> {
    serde_urlencoded::from_bytes(body).map_err(|e| e.to_string())
}

async fn reload(AxState(lb): AxState<Arc<Lb>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse_unauthorized(&lb, &headers) {
        return r;
    }
    match lb.reload().await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => {
            lb.metrics.reload_failures.inc();
            tracing::error!(error = %e, "reload refused; the running configuration keeps serving");
            let status = match e {
                ReloadError::NoFile => StatusCode::CONFLICT,
                ReloadError::Invalid(_) => StatusCode::BAD_REQUEST,
                ReloadError::Apply(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.to_string())
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ago(unix: f64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(unix);
    let s = (now - unix).max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m{}s ago", s / 60, s % 60),
        _ => format!("{}h{}m ago", s / 3600, (s % 3600) / 60),
    }
}

async fn stats(AxState(lb): AxState<Arc<Lb>>) -> Html<String> {
    let view = lb.state().view();
    let mut h = String::with_capacity(8192);
    h.push_str(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>Tether load balancer</title><style>\
         body{font-family:sans-serif;margin:24px;color:#222}\
         h1{font-size:22px}h2{font-size:18px;margin-top:28px}\
         table{border-collapse:collapse;margin:8px 0}\
         th,td{border:1px solid #ccc;padding:6px 12px;text-align:left;font-size:15px}\
         th{background:#f0f0f0}.up{background:#d8f5d8}.down{background:#f8d0d0}\
         .drain{background:#fff0c0}.maint{background:#d8d8f0}.unknown{background:#eee}\
         </style></head><body><h1>Tether load balancer</h1>",
    );
    let _ = write!(
        h,
        "<p>{} active connections; ready: {}</p>",
        lb.metrics.active_total.get(),
        match lb.state().readiness() {
            Ok(()) => "yes".to_string(),
            Err(e) => esc(&e),
        }
    );
    h.push_str("<h2>Frontends</h2><table><tr><th>frontend</th><th>bind</th><th>backend</th><th>active</th><th>total</th></tr>");
    for f in &view.frontends {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.name),
            esc(&f.bind.join(", ")),
            esc(&f.backend),
            f.active,
            f.total
        );
    }
    h.push_str("</table>");
    let state = lb.state();
    let dr: Vec<_> = state
        .frontends
        .iter()
        .filter_map(|f| Some((f.cfg.name.as_str(), f.cfg.dr.as_ref()?)))
        .collect();
    if !dr.is_empty() {
        h.push_str("<h2>Forwarding (mode = dr)</h2><table><tr><th>frontend</th><th>interface</th><th>rules</th><th>slots held</th></tr>");
        for (name, cfg) in dr {
            let v = lb.dr.view(name, &cfg.interface);
            let mut slots: Vec<String> = v.slots.iter().map(|(s, n)| format!("{s} {n}")).collect();
            slots.sort();
            let rules = match (&v.error, v.installed) {
                (Some(e), _) => format!("error: {e}"),
                (None, true) => "installed".to_string(),
                (None, false) => "not installed".to_string(),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                esc(&v.interface),
                esc(&rules),
                esc(&slots.join(", "))
            );
        }
        h.push_str("</table>");
    }
    for b in &view.backends {
        let _ = write!(
            h,
            "<h2>Backend {} ({})</h2><table><tr><th>server</th><th>address</th><th>status</th>\
             <th>last check</th><th>weight</th><th>active</th><th>total</th><th>queued</th>\
             <th>bytes in</th><th>bytes out</th><th>last change</th></tr>",
            esc(&b.name),
            format!("{:?}", b.balance).to_lowercase()
        );
        for s in &b.servers {
            let (class, status) = match (s.state, s.health) {
                (AdminState::Maint, _) => ("maint", "MAINT".to_string()),
                (AdminState::Drain, h) => ("drain", format!("DRAIN ({})", h.as_str())),
                (AdminState::Ready, Health::Up) => ("up", "UP".to_string()),
                (AdminState::Ready, Health::Down) => ("down", "DOWN".to_string()),
                (AdminState::Ready, Health::Unknown) => ("unknown", "checking".to_string()),
            };
            let _ = write!(
                h,
                "<tr class=\"{class}\"><td>{}{}</td><td>{}</td><td>{status}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s.name),
                if s.backup { " (backup)" } else { "" },
                esc(&s.resolved),
                esc(s.last_check.as_deref().unwrap_or("-")),
                s.weight,
                s.active,
                s.total,
                s.queued,
                human_bytes(s.bytes_in),
                human_bytes(s.bytes_out),
                ago(s.last_change_unix)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>");
    Html(h)
}
