//! Accounts: `/api/v1/auth/*` and `/api/v1/users*` (PROTOCOL.md §4).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::extract::{Caller, ClientAddress, JsonObject, keyset_page, listing};
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

pub async fn register(
    State(state): State<Arc<App>>,
    ClientAddress(client): ClientAddress,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let user = state.users.register(&body, client).await?;
    Ok((StatusCode::CREATED, Json(with_token(&state, &user))))
}

pub async fn login(
    State(state): State<Arc<App>>,
    ClientAddress(client): ClientAddress,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let user = state.users.login(&body, client).await?;
    Ok(Json(with_token(&state, &user)))
}

pub async fn get(
    State(state): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let user = state.users.get(&id).await?;
    Ok(Json(user_view(&user, &who)))
}

pub async fn patch(
    State(state): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let user = state.users.patch(&who, &id, &body).await?;
    Ok(Json(user_view(&user, &who)))
}

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
