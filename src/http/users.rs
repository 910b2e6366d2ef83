//! Accounts: `/api/v1/auth/*` and `/api/v1/users*` (PROTOCOL.md §4).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::extract::{Caller, ClientAddress, JsonObject, keyset_page, listing};
use super::openapi as doc;
use crate::app::App;
use crate::error::ApiResult;
use crate::services::users::UserRecord;
use crate::services::users::{identity_of, own_view, user_view};

fn with_token(state: &App, user: &UserRecord) -> serde_json::Value {
    let who = identity_of(user);
    let token = state.tokens.mint(
        &who.user_id,
        who.admin,
        who.name.as_deref(),
        state.config.token_ttl_secs,
    );
    json!({ "user": own_view(user), "token": token })
}

#[utoipa::path(
    operation_id = "users_register",
    post,
    path = "/api/v1/auth/register",
    tag = "auth",
    request_body = doc::RegisterBody,
    responses(
        (status = 201, description = "Registered", body = doc::UserWithToken),
        (status = 400, response = doc::BadRequest),
        (status = 409, response = doc::Conflict),
        (status = 413, response = doc::TooLarge),
        (status = 429, response = doc::RateLimited),
        (status = 503, response = doc::Unavailable)
    )
)]
pub async fn register(
    State(state): State<Arc<App>>,
    ClientAddress(client): ClientAddress,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let user = state.users.register(&body, client).await?;
    Ok((StatusCode::CREATED, Json(with_token(&state, &user))))
}

#[utoipa::path(
    operation_id = "users_login",
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = doc::LoginBody,
    responses(
        (status = 200, description = "Logged in", body = doc::UserWithToken),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 413, response = doc::TooLarge),
        (status = 429, response = doc::RateLimited),
        (status = 503, response = doc::Unavailable)
    )
)]
pub async fn login(
    State(state): State<Arc<App>>,
    ClientAddress(client): ClientAddress,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let user = state.users.login(&body, client).await?;
    Ok(Json(with_token(&state, &user)))
}

#[utoipa::path(
    operation_id = "users_get",
    get,
    path = "/api/v1/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "USER (through the cache)", body = doc::User),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::NotFound),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let user = state.users.get(&id).await?;
    Ok(Json(user_view(&user, &who)))
}

#[utoipa::path(
    operation_id = "users_patch",
    patch,
    path = "/api/v1/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "User id")),
    request_body = doc::UserPatchBody,
    responses(
        (status = 200, description = "Updated (audited)", body = doc::User),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 409, response = doc::Conflict),
        (status = 413, response = doc::TooLarge),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let user = state.users.patch(&who, &id, &body).await?;
    Ok(Json(user_view(&user, &who)))
}

#[utoipa::path(
    operation_id = "users_list",
    get,
    path = "/api/v1/users",
    tag = "users",
    params(doc::ListingQuery),
    responses(
        (status = 200, description = "Newest first", body = doc::UserPage),
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
    let fetched = state.users.list(&who, cursor, limit + 1).await?;
    let (items, next_cursor) = keyset_page(fetched, limit, |u| u.id.clone());
    let items: Vec<_> = items.iter().map(|u| user_view(u, &who)).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}
