//! `/api/v1/admin/*`: the audit log and the figures an operator looks at, for admins only.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use serde_json::json;

use super::Edge;
use super::extract::{Caller, keyset_page, list_limit};
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::payload::query_int;
use crate::services::admin::AuditQuery;

fn filter(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<String>> {
    match q.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) if v.chars().count() > 256 || v.contains('\0') => Err(ApiError::bad_request(
            format!("{name} must be at most 256 characters"),
        )),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// `GET /admin/audit?actor=&target=&cursor=&limit=`: newest first. Targets are `user:<id>` and
/// `room:<id>`.
pub async fn audit(
    State(state): State<Arc<App>>,
    Caller(who): Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let limit = list_limit(&q)?;
    let before_id = query_int(q.get("cursor"), "cursor", 1, i64::MAX)?;
    let query = AuditQuery {
        actor: filter(&q, "actor")?,
        target: filter(&q, "target")?,
        before_id,
        limit: limit + 1,
    };
    let fetched = state.admin.audit(&who, &query).await?;
    let (items, next_cursor) = keyset_page(fetched, limit, |e| e.id.to_string());
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

/// `GET /admin/stats`: pools, caches (hits, misses, hit ratio per layer), sockets, bus, and
/// the sensor readings waiting in memory or being written.
pub async fn stats(State(edge): State<Edge>, Caller(who): Caller) -> ApiResult<impl IntoResponse> {
    let mut figures = edge.app.admin.stats(&who, edge.gateway.connected())?;
    figures["sensors"] = json!({ "buffered": edge.app.sensors.buffered() });
    Ok(Json(figures))
}
