//! Room state over HTTP (PROTOCOL.md §6.2).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::extract::{Caller, JsonObject};
use crate::app::App;
use crate::domain::{RoomId, StateKey};
use crate::error::{ApiError, ApiResult};
use crate::payload::{opt_int, query_int};

pub async fn list(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(room): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let room = RoomId::parse(&room)?;
    let items = app.state.get(&who, &room, None).await?;
    Ok(Json(json!({ "items": items })))
}

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
