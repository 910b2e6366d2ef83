//! `/api/v1/admin/*`: the audit log and the figures an operator looks at, for admins only.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use serde_json::json;

use super::Edge;
use super::extract::{Caller, keyset_page, list_limit};
use super::openapi as doc;
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::payload::query_int;
use crate::services::admin::AuditQuery;
use crate::store::jobs::Job;

/// A text filter of a listing's query string (`actor`, `target`, `state`, `kind`, the jobs'
/// `cursor`): absent or empty is none; at most 256 characters, no U+0000.
pub fn text_filter(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<String>> {
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
#[utoipa::path(
    operation_id = "admin_audit",
    get,
    path = "/api/v1/admin/audit",
    tag = "admin",
    params(("actor" = Option<String>, Query, description = "A user id"), ("target" = Option<String>, Query, description = "`user:<id>` or `room:<id>`"), ("cursor" = Option<i64>, Query, minimum = 1, description = "next_cursor of the previous page"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50")),
    responses(
        (status = 200, description = "Newest first", body = doc::AuditPage),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn audit(
    State(state): State<Arc<App>>,
    Caller(who): Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let limit = list_limit(&q)?;
    let before_id = query_int(q.get("cursor"), "cursor", 1, i64::MAX)?;
    let query = AuditQuery {
        actor: text_filter(&q, "actor")?,
        target: text_filter(&q, "target")?,
        before_id,
        limit: limit + 1,
    };
    let fetched = state.admin.audit(&who, &query).await?;
    let (items, next_cursor) = keyset_page(fetched, limit, |e| e.id.to_string());
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

/// `GET /admin/stats`: pools, caches (hits, misses, hit ratio per layer), sockets, bus, the
/// sensor readings waiting in memory or being written, and hot and cold message counts with
/// the age of the oldest hot message (§6.3).
#[utoipa::path(
    operation_id = "admin_stats",
    get,
    path = "/api/v1/admin/stats",
    tag = "admin",
    responses(
        (status = 200, description = "Pools, caches, sockets, bus, sensors, hot and cold messages", body = Object),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn stats(State(edge): State<Edge>, Caller(who): Caller) -> ApiResult<impl IntoResponse> {
    let mut figures = edge.app.admin.stats(&who, edge.gateway.connected())?;
    figures["sensors"] = json!({ "buffered": edge.app.sensors.buffered() });
    let archive = edge.app.archiver.stats().await?;
    figures["messages"] = json!({
        "hot": archive.hot_messages,
        "cold": archive.cold_messages,
        "oldest_hot_at": archive.oldest_hot,
        "oldest_hot_age_s": crate::services::archive::oldest_age_seconds(&archive).floor(),
    });
    Ok(Json(figures))
}

/// `GET /admin/dashboard`: the last five minutes of the operations dashboard, one sample every
/// 2 s, oldest first (admins).
#[utoipa::path(
    operation_id = "admin_dashboard",
    get,
    path = "/api/v1/admin/dashboard",
    tag = "admin",
    responses(
        (status = 200, description = "Samples of the last five minutes, oldest first", body = Object),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden)
    ),
    security(("bearer" = []))
)]
pub async fn dashboard(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(app.dashboard.view(&who)?))
}

/// `POST /admin/archive { older_than? }`: queues one archive pass → 202 JOB.
#[utoipa::path(
    operation_id = "admin_archive",
    post,
    path = "/api/v1/admin/archive",
    tag = "admin",
    request_body = doc::ArchiveBody,
    responses(
        (status = 202, description = "One archive pass queued", body = Job),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn archive(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let body: serde_json::Map<String, serde_json::Value> =
        if body.iter().all(u8::is_ascii_whitespace) {
            serde_json::Map::new()
        } else {
            match serde_json::from_slice(&body) {
                Ok(serde_json::Value::Object(o)) => o,
                _ => return Err(ApiError::bad_request("the body must be a JSON object")),
            }
        };
    let older_than = match body.get("older_than") {
        None | Some(serde_json::Value::Null) => app.config.archive_after,
        Some(serde_json::Value::String(s)) => Some(crate::domain::parse_duration(s)?),
        Some(_) => {
            return Err(ApiError::bad_request(
                "older_than must be a duration string such as 30d or 12h",
            ));
        }
    };
    let job = crate::services::archive::queue_pass(&app.jobs, &who, older_than).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(job)))
}

/// `GET /admin/jobs?state=&kind=&limit=&cursor=`: newest first (admins).
#[utoipa::path(
    operation_id = "admin_jobs",
    get,
    path = "/api/v1/admin/jobs",
    tag = "admin",
    params(("state" = Option<String>, Query, description = "queued, running, done or dead"), ("kind" = Option<String>, Query, description = "webhook, archive, …"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50")),
    responses(
        (status = 200, description = "Newest first", body = doc::JobPage),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn jobs(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    if !who.admin {
        return Err(crate::services::error::ServiceError::forbidden("admins only").into());
    }
    let limit = list_limit(&q)?;
    let state = text_filter(&q, "state")?;
    if let Some(s) = &state
        && !["queued", "running", "done", "dead"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "state must be queued, running, done or dead",
        ));
    }
    let query = crate::store::jobs::JobQuery {
        state,
        kind: text_filter(&q, "kind")?,
        before_id: text_filter(&q, "cursor")?,
        limit: limit + 1,
    };
    let fetched = app.jobs.list(&query).await?;
    let (items, next_cursor) = keyset_page(fetched, limit, |j| j.id.clone());
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

/// `POST /admin/jobs/{id}/retry`: a `dead` job back to `queued` → 200 JOB (404 unknown, 409 not
/// dead).
#[utoipa::path(
    operation_id = "admin_retry_job",
    post,
    path = "/api/v1/admin/jobs/{id}/retry",
    tag = "admin",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Queued again", body = Job),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 409, response = doc::Conflict),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn retry_job(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<impl IntoResponse> {
    if !who.admin {
        return Err(crate::services::error::ServiceError::forbidden("admins only").into());
    }
    Ok(Json(app.jobs.retry(&id).await?))
}
