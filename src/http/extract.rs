//! Extractors that fail with the contract's errors instead of axum's defaults.

use std::sync::Arc;

use std::time::Duration;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use futures::StreamExt;

use crate::app::App;
use crate::auth::Identity;
use crate::client_addr::{AddressKey, request_client};
use crate::error::{ApiError, AuthCode};
use crate::payload::{self, Object};

/// The caller, from `Authorization: Bearer <token>`.
pub struct Caller(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    Arc<App>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let app = Arc::<App>::from_ref(state);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = match header {
            None => {
                return Err(ApiError::unauthorized(
                    AuthCode::AuthRequired,
                    "an Authorization: Bearer token is required",
                ));
            }
            Some(h) => h.strip_prefix("Bearer ").map(str::trim).ok_or_else(|| {
                ApiError::unauthorized(AuthCode::InvalidToken, "use Authorization: Bearer")
            })?,
        };
        let claimed = app.tokens.verify(token)?;
        // a role changed since the token was issued wins over its claim (a users-cache hit)
        Ok(Caller(app.users.effective(&claimed).await?))
    }
}

/// The client's address key (PROTOCOL.md §7): the TCP peer, or what a trusted proxy says.
pub struct ClientAddress(pub AddressKey);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress
where
    Arc<App>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let app = Arc::<App>::from_ref(state);
        Ok(ClientAddress(request_client(
            parts,
            &app.config.trusted_proxies,
        )))
    }
}

/// A JSON object body, at most [`super::body_limit`] bytes.
pub struct JsonObject(pub Object);

/// What is read and dropped of an oversized body before answering 413.
const DRAIN_MAX_BYTES: usize = 16 * 1024 * 1024;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(2);

impl<S: Send + Sync> FromRequest<S> for JsonObject
where
    Arc<App>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = super::body_limit(&Arc::<App>::from_ref(state).config);
        read_object(req, limit).await.map(JsonObject)
    }
}

/// A batch of sensor readings: 1000 readings with the largest tags need more room than any
/// other body (PROTOCOL.md §6.1), so this body alone may be this large.
pub struct ReadingsBody(pub Object);

pub const READINGS_BODY_LIMIT: usize = 4 * 1024 * 1024;

impl<S: Send + Sync> FromRequest<S> for ReadingsBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        read_object(req, READINGS_BODY_LIMIT)
            .await
            .map(ReadingsBody)
    }
}

/// A JSON object of at most `limit` bytes (413 past it, 400 if not a JSON object).
async fn read_object(req: Request, limit: usize) -> Result<Object, ApiError> {
    let mut body = req.into_body().into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::bad_request("the request body could not be read"))?;
        if bytes.len() + chunk.len() > limit {
            drain(body).await;
            return Err(ApiError::too_large("the request body is too large"));
        }
        bytes.extend_from_slice(&chunk);
    }
    let value = serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::bad_request("the body must be JSON"))?;
    Ok(payload::object(Some(value))?)
}

/// Reads and drops the rest of an oversized body (bounded in bytes and time). Answering while
/// the client is still sending makes the server close a connection the client is writing to,
/// and the client then sees a reset (EPIPE) instead of the 413; nginx's "lingering close" does
/// the same for the same reason.
async fn drain(mut body: axum::body::BodyDataStream) {
    let mut dropped = 0;
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            dropped += chunk.len();
            if dropped > DRAIN_MAX_BYTES {
                break;
            }
        }
    })
    .await;
}

/// `limit` of a listing's query string: 1 to 500, default 50.
pub fn list_limit(q: &std::collections::HashMap<String, String>) -> Result<u32, ApiError> {
    Ok(crate::payload::query_int(q.get("limit"), "limit", 1, 500)?.unwrap_or(50) as u32)
}

/// `limit` and `cursor` of a keyset listing (`GET /rooms`, `/users`, `…/members`), in that order.
pub fn listing(
    q: &std::collections::HashMap<String, String>,
) -> Result<(u32, Option<&str>), ApiError> {
    Ok((list_limit(q)?, cursor_param(q)?))
}

/// The `cursor` query parameter of a keyset listing: absent or empty means the start.
fn cursor_param(q: &std::collections::HashMap<String, String>) -> Result<Option<&str>, ApiError> {
    match q.get("cursor").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(c) if c.contains('\0') || c.chars().count() > 256 => {
            Err(ApiError::bad_request("cursor is not one this API gave out"))
        }
        Some(c) => Ok(Some(c)),
    }
}

/// A keyset page: `fetched` holds up to `limit + 1` rows (one past the page says there are
/// more); returns the page and the cursor of its last row when more follow.
pub fn keyset_page<T>(
    mut fetched: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let more = fetched.len() > limit as usize;
    fetched.truncate(limit as usize);
    let next = if more {
        fetched.last().map(cursor_of)
    } else {
        None
    };
    (fetched, next)
}
