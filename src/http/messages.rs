use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::extract::{Caller, JsonObject, list_limit};
use crate::app::App;
use crate::domain::RoomId;
use crate::error::ApiResult;
use crate::payload::{opt_str, query_int, req_str};
use crate::services::messages::HistoryQuery;

pub async fn list(
    State(state): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let room = RoomId::parse(&id)?;
    let query = HistoryQuery {
        after_seq: query_int(q.get("after_seq"), "after_seq", 0, i64::MAX)?,
        before_seq: query_int(q.get("before_seq"), "before_seq", 0, i64::MAX)?,
        limit: list_limit(&q)?,
    };
    let page = state.messages.history(&who, &room, query).await?;
    Ok(Json(json!({ "items": page.items, "more": page.more })))
}

pub async fn create(
    State(state): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let content = req_str(&body, "content")?.to_owned();
    let client_id = opt_str(&body, "client_id")?.map(str::to_owned);
    let appended = state.messages.send(&who, &id, content, client_id).await?;
    let status = if appended.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(appended.message)))
}
