//! `/api/v1/webhooks` (PROTOCOL.md §6.4): register, list, delete.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::extract::{Caller, JsonObject};
use super::openapi as doc;
use crate::app::App;
use crate::error::ApiResult;

/// `POST /webhooks { url, events, rooms?, secret? }` → 201 WEBHOOK with `secret` (the only time
/// it is shown).
#[utoipa::path(
    operation_id = "webhooks_create",
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    request_body = doc::NewWebhookBody,
    responses(
        (status = 201, description = "WEBHOOK with its secret (shown only here)", body = doc::WebhookCreated),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 413, response = doc::TooLarge),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let (hook, secret) = app.webhooks.create(&who, &body).await?;
    let mut shown = serde_json::to_value(&hook).unwrap_or_default();
    shown["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(shown)))
}

/// `GET /webhooks` → `{ items: [WEBHOOK…] }`, without secrets: an admin's every webhook, anyone
/// else's own.
#[utoipa::path(
    operation_id = "webhooks_list",
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    responses(
        (status = 200, description = "Without secrets", body = doc::WebhookList),
        (status = 401, response = doc::Unauthorized),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
) -> ApiResult<impl IntoResponse> {
    let items = app.webhooks.list(&who).await?;
    Ok(Json(json!({ "items": items })))
}

/// `DELETE /webhooks/{id}` → 204, by its creator or an admin.
#[utoipa::path(
    operation_id = "webhooks_delete",
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    app.webhooks.delete(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
