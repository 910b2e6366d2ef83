use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::extract::{Caller, JsonObject, keyset_page, listing};
use super::openapi as doc;
use crate::app::App;
use crate::domain::RoomId;
use crate::domain::RoomInfo;
use crate::error::ApiResult;
use crate::payload::{opt_bool, opt_str, req_str};
use crate::services::rooms::check_room_name;
use crate::services::users::{opt_metadata, user_view};

#[utoipa::path(
    operation_id = "rooms_create",
    post,
    path = "/api/v1/rooms",
    tag = "rooms",
    request_body = doc::NewRoomBody,
    responses(
        (status = 201, description = "Created; the caller owns it", body = RoomInfo),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 409, response = doc::Conflict),
        (status = 413, response = doc::TooLarge),
        (status = 429, response = doc::RateLimited),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<Arc<App>>,
    Caller(who): Caller,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let id = req_str(&body, "id")?;
    let name = opt_str(&body, "name")?.map(str::to_owned);
    let private = opt_bool(&body, "private")?.unwrap_or(false);
    // every bad_request (the id, the name) before too_large (the metadata)
    let id = RoomId::parse(id)?;
    check_room_name(name.as_deref())?;
    let metadata = opt_metadata(&body, state.config.max_metadata_bytes)?;
    let info = state
        .rooms
        .create(&who, id, name, private, metadata)
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

#[utoipa::path(
    operation_id = "rooms_list",
    get,
    path = "/api/v1/rooms",
    tag = "rooms",
    params(doc::ListingQuery),
    responses(
        (status = 200, description = "Public rooms and the private ones the caller belongs to (admins: all), by id", body = doc::RoomPage),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<Arc<App>>,
    Caller(who): Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let (limit, cursor) = listing(&q)?;
    let fetched = state.rooms.list(&who, cursor, limit + 1).await?;
    let (items, next_cursor) = keyset_page(fetched, limit, |r| r.id.clone());
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

#[utoipa::path(
    operation_id = "rooms_add_member",
    post,
    path = "/api/v1/rooms/{id}/members",
    tag = "rooms",
    params(("id" = String, Path, description = "ROOM: 1 to 128 of A-Z a-z 0-9 _ . : -")),
    request_body = doc::NewMemberBody,
    responses(
        (status = 204, description = "Added (by the owner or an admin)"),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 429, response = doc::RateLimited),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn add_member(
    State(state): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let user_id = req_str(&body, "user_id")?;
    state.rooms.add_member(&who, &id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /rooms/{id}/members?limit=&cursor=`: `{ items: [{ user_id, added_by, added_at, user:
/// USER|null }], next_cursor }`, by user id; accounts come from the same query (no N+1).
#[utoipa::path(
    operation_id = "rooms_members",
    get,
    path = "/api/v1/rooms/{id}/members",
    tag = "rooms",
    params(("id" = String, Path, description = "ROOM: 1 to 128 of A-Z a-z 0-9 _ . : -"), doc::ListingQuery),
    responses(
        (status = 200, description = "Members by user id", body = doc::MemberPage),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn members(
    State(state): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let (limit, cursor) = listing(&q)?;
    let fetched = state.rooms.members(&who, &id, cursor, limit + 1).await?;
    let (rows, next_cursor) = keyset_page(fetched, limit, |m| m.user_id.clone());
    let items: Vec<_> = rows
        .iter()
        .map(|m| {
            json!({
                "user_id": m.user_id,
                "added_by": m.added_by,
                "added_at": m.added_at,
                "user": m.user.as_ref().map(|u| user_view(u, &who)),
            })
        })
        .collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}
