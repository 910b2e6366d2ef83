//! Room state over HTTP (PROTOCOL.md §6.2).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::extract::{Caller, JsonObject};
use super::openapi as doc;
use crate::app::App;
use crate::domain::{RoomId, StateKey};
use crate::error::{ApiError, ApiResult};
use crate::payload::{opt_int, query_int};

#[utoipa::path(
    operation_id = "state_list",
    get,
    path = "/api/v1/rooms/{id}/state",
    tag = "state",
    params(("id" = String, Path, description = "ROOM: 1 to 128 of A-Z a-z 0-9 _ . : -")),
    responses(
        (status = 200, description = "Every key of the room, by key", body = doc::StateList),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(room): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let room = RoomId::parse(&room)?;
    let items = app.state.get(&who, &room, None).await?;
    Ok(Json(json!({ "items": items })))
}

#[utoipa::path(
    operation_id = "state_get",
    get,
    path = "/api/v1/rooms/{id}/state/{key}",
    tag = "state",
    params(("id" = String, Path, description = "ROOM: 1 to 128 of A-Z a-z 0-9 _ . : -"), ("key" = String, Path, description = "KEY: 1 to 128 of A-Z a-z 0-9 _ . : -")),
    responses(
        (status = 200, description = "The key", body = crate::domain::State),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path((room, key)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let room = RoomId::parse(&room)?;
    let key = StateKey::parse(&key)?;
    let mut items = app.state.get(&who, &room, Some(&key)).await?;
    let state = items
        .pop()
        .ok_or_else(|| ApiError::not_found("no such key in this room"))?;
    Ok(Json(state))
}

/// `PUT …/state/{key}` `{ value, version? }` → 200 STATE, or 409 with `current`.
#[utoipa::path(
    operation_id = "state_put",
    put,
    path = "/api/v1/rooms/{id}/state/{key}",
    tag = "state",
    params(("id" = String, Path, description = "ROOM: 1 to 128 of A-Z a-z 0-9 _ . : -"), ("key" = String, Path, description = "KEY: 1 to 128 of A-Z a-z 0-9 _ . : -")),
    request_body = doc::StateWriteBody,
    responses(
        (status = 200, description = "Written (version + 1) and sent as a `state` event", body = crate::domain::State),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 409, response = doc::Conflict),
        (status = 413, response = doc::TooLarge),
        (status = 429, response = doc::RateLimited),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn put(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path((room, key)): Path<(String, String)>,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let room = RoomId::parse(&room)?;
    let key = StateKey::parse(&key)?;
    let version = opt_int(&body, "version", 0, i64::MAX)?;
    let state = app
        .state
        .set(&who, &room, &key, body.get("value"), version)
        .await?;
    Ok(Json(state))
}

/// `DELETE …/state/{key}?version=` → 204, or 409 with `current`.
#[utoipa::path(
    operation_id = "state_delete",
    delete,
    path = "/api/v1/rooms/{id}/state/{key}",
    tag = "state",
    params(("id" = String, Path, description = "ROOM: 1 to 128 of A-Z a-z 0-9 _ . : -"), ("key" = String, Path, description = "KEY: 1 to 128 of A-Z a-z 0-9 _ . : -"), ("version" = Option<i64>, Query, minimum = 0, description = "The version last seen; absent: unconditional")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 409, response = doc::Conflict),
        (status = 429, response = doc::RateLimited),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path((room, key)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let room = RoomId::parse(&room)?;
    let key = StateKey::parse(&key)?;
    let version = query_int(q.get("version"), "version", 0, i64::MAX)?;
    app.state.delete(&who, &room, &key, version).await?;
    Ok(StatusCode::NO_CONTENT)
}
