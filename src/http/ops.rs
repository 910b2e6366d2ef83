use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::openapi as doc;
use crate::app::App;

#[utoipa::path(
    operation_id = "ops_healthz",
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The process serves", body = doc::Health)
    )
)]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 when every part's health check passes (database; Redis and the bus when configured),
/// else 503 naming what failed.
#[utoipa::path(
    operation_id = "ops_readyz",
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Every part answers", body = doc::Readiness),
        (status = 503, description = "A part failed: named in error.message", body = doc::Readiness)
    )
)]
pub async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let results = app.check_health().await;
    let mut checks = serde_json::Map::new();
    let mut failures = Vec::new();
    for (name, result) in results {
        checks.insert(
            name.into(),
            if result.is_ok() { "ok" } else { "failed" }.into(),
        );
        if let Err(why) = result {
            failures.push(format!("{name}: {why}"));
        }
    }
    // draining (SIGTERM): a balancer with active checks stops sending here
    if app.shutdown.is_cancelled() {
        failures.push("the server is shutting down".to_owned());
    }
    if failures.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "status": "ok", "checks": checks })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable",
                "checks": checks,
                "error": { "code": "unavailable", "message": failures.join("; ") }
            })),
        )
    }
}

#[utoipa::path(
    operation_id = "ops_metrics",
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4")
    )
)]
pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.render_metrics(),
    )
}
