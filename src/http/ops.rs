use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::server::AppState;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 when the database (and Redis, when configured) answer in time, else 503 naming what
/// failed.
pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let limit = state.config.db_acquire_timeout + Duration::from_millis(500);
    let db = async {
        match tokio::time::timeout(limit, state.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    };
    let redis = async {
        match &state.redis {
            Some(r) => Some(r.ping().await),
            None => None,
        }
    };
    let (db, redis) = tokio::join!(db, redis);
    let mut checks = json!({ "database": if db.is_ok() { "ok" } else { "failed" } });
    let mut failures = Vec::new();
    if let Err(why) = &db {
        failures.push(format!("database: {why}"));
    }
    if let Some(r) = &redis {
        checks["redis"] = if r.is_ok() { "ok" } else { "failed" }.into();
        if let Err(why) = r {
            failures.push(format!("redis: {why}"));
        }
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

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    state.store.report_pool_metrics();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
