use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::extract::{Caller, JsonObject};
use crate::error::{ApiError, ApiResult};
use crate::payload::{opt_bool, opt_str, query_int, req_str};
use crate::server::AppState;

pub async fn create(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let id = req_str(&body, "id")?;
    let name = opt_str(&body, "name")?.map(str::to_owned);
    let private = opt_bool(&body, "private")?.unwrap_or(false);
    let info = state.rooms.create(&who, id, name, private).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let limit = query_int(q.get("limit"), "limit", 1, 500)?.unwrap_or(50) as u32;
    let cursor = q
        .get("cursor")
        .map(String::as_str)
        .filter(|c| !c.is_empty());
    if cursor.is_some_and(|c| c.contains('\0') || c.len() > 256) {
        return Err(ApiError::bad_request("cursor is not a room id"));
    }
    let mut items = state.rooms.list(&who, cursor, limit + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

pub async fn add_member(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let user_id = req_str(&body, "user_id")?;
    state.rooms.add_member(&who, &id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
