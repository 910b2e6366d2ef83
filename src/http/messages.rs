use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::extract::{Caller, JsonObject, list_limit};
use super::openapi as doc;
use crate::app::App;
use crate::domain::Message;
use crate::domain::RoomId;
use crate::error::ApiResult;
use crate::payload::{opt_str, query_int, req_str};
use crate::services::messages::HistoryQuery;

#[utoipa::path(
    operation_id = "messages_list",
    get,
    path = "/api/v1/rooms/{id}/messages",
    tag = "messages",
    params(("id" = String, Path, description = "ROOM: 1 to 128 of A-Z a-z 0-9 _ . : -"), ("after_seq" = Option<i64>, Query, minimum = 0, description = "The first `limit` with seq > N"), ("before_seq" = Option<i64>, Query, minimum = 0, description = "The `limit` nearest with seq < N"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50")),
    responses(
        (status = 200, description = "Ascending seq, hot and archived alike", body = doc::MessagePage),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    operation_id = "messages_create",
    post,
    path = "/api/v1/rooms/{id}/messages",
    tag = "messages",
    params(("id" = String, Path, description = "ROOM: 1 to 128 of A-Z a-z 0-9 _ . : -")),
    request_body = doc::SendBody,
    responses(
        (status = 201, description = "Committed and broadcast to the room", body = Message),
        (status = 200, description = "The first message of a known client_id, unchanged", body = Message),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 413, response = doc::TooLarge),
        (status = 429, response = doc::RateLimited),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
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
