//! `GET /api/v1/openapi.json` (PROTOCOL.md §7): the OpenAPI 3.1 description of the HTTP API.
//!
//! Made, not written: each handler carries its `#[utoipa::path]`, the types it answers with
//! derive `ToSchema` where they live (MESSAGE, ROOM-INFO, STATE… beside their serde derive, so a
//! field cannot change without the document), and the router is built from the same list as the
//! document (`super::described`). What lives here are the shapes the handlers build as JSON:
//! request bodies (read field by field by `crate::payload`, as PROTOCOL §5 asks), pages, USER
//! and the error body. They are descriptions: nothing constructs them.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToResponse, ToSchema};

use crate::domain::{Message, Reading, RoomInfo, SensorInfo, State};
use crate::store::jobs::Job;
use crate::store::users::AuditEntry;
use crate::store::webhooks::Webhook;

/// The name of the bearer scheme operations refer to (`security(("bearer" = []))`).
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tsunagi",
        description = "Realtime and data backend in one binary: rooms with durable, ordered, \
            recoverable history, users, sensors, room state, jobs and webhooks. The realtime \
            side is Socket.IO v4 on `/` (PROTOCOL.md §3), not described here. Every error is \
            `{ \"error\": { \"code\", \"message\" } }` with the fitting status; 429 and 503 carry \
            `Retry-After`."
    ),
    modifiers(&BearerAuth),
    components(
        schemas(ErrorBody, ErrorDetail),
        responses(BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, RateLimited, Unavailable)
    ),
    tags(
        (name = "auth", description = "Accounts: register and log in (no token)"),
        (name = "users", description = "USER (PROTOCOL §4)"),
        (name = "rooms", description = "Rooms and members (PROTOCOL §4)"),
        (name = "messages", description = "History and sends over HTTP (PROTOCOL §4, §6.3)"),
        (name = "state", description = "Room state (PROTOCOL §6.2)"),
        (name = "sensors", description = "Sensors and readings (PROTOCOL §6.1)"),
        (name = "webhooks", description = "Webhooks (PROTOCOL §6.4)"),
        (name = "admin", description = "Admins only: audit, figures, archive, jobs"),
        (name = "operations", description = "Health, readiness, metrics, pages, this document (PROTOCOL §4, §7)"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "HS256 JWT: from /api/v1/auth/* or minted by the application with the same \
                 secret (PROTOCOL §2)",
            ))
            .build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// The document as served: made once, from the same list the router is built from.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    serde_json::to_string(&super::openapi_document()).unwrap_or_else(|_| "{}".to_owned())
});

#[utoipa::path(
    operation_id = "openapi_document",
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object))
)]
pub async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

/// Every failure: `{ "error": { "code", "message" } }`.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `auth_required`, `invalid_token`, `token_expired`, `forbidden`,
    /// `not_found`, `conflict`, `too_large`, `rate_limited`, `unavailable`,
    /// `method_not_allowed`.
    #[schema(example = "bad_request")]
    pub code: String,
    pub message: String,
    /// With `rate_limited` and a full queue (`unavailable`): how long to wait.
    pub retry_after_ms: Option<u64>,
    /// With a room state `conflict`: the key's STATE now, or null when it does not exist.
    pub current: Option<State>,
}

/// An error answer: the one shape, one reusable response per status.
macro_rules! error_response {
    ($name:ident, $what:literal) => {
        #[derive(ToResponse)]
        #[response(description = $what)]
        pub struct $name(pub ErrorBody);
    };
}
error_response!(BadRequest, "bad_request: a malformed or invalid field");
error_response!(
    Unauthorized,
    "auth_required, invalid_token or token_expired (with WWW-Authenticate: Bearer)"
);
error_response!(Forbidden, "forbidden: not allowed for this caller");
error_response!(NotFound, "not_found");
error_response!(Conflict, "conflict");
error_response!(TooLarge, "too_large: over the configured limit");
error_response!(
    RateLimited,
    "rate_limited, with Retry-After and retry_after_ms"
);
error_response!(
    Unavailable,
    "unavailable: storage, pool or a buffer full (within the acquire timeout, never a hang)"
);

/// `limit` and `cursor` of a keyset listing (`GET /rooms`, `/users`, `/sensors`, `…/members`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListingQuery {
    /// 1 to 500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; absent or empty: the first page.
    pub cursor: Option<String>,
}

/// USER: never a password or its hash; `email` only for the user themselves and admins.
#[derive(ToSchema)]
pub struct User {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub bio: String,
    /// `user` or `admin`.
    pub role: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub email: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// What register and login answer.
#[derive(ToSchema)]
pub struct UserWithToken {
    pub user: User,
    /// A token for `Authorization: Bearer`, valid `TSUNAGI_TOKEN_TTL_S`.
    pub token: String,
}

/// A room member, with their account when they have one here.
#[derive(ToSchema)]
pub struct Member {
    pub user_id: String,
    pub added_by: String,
    pub added_at: String,
    pub user: Option<User>,
}

/// A keyset page: `next_cursor` is null on the last page.
macro_rules! page {
    ($name:ident, $item:ty) => {
        #[derive(ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            pub next_cursor: Option<String>,
        }
    };
}
page!(UserPage, User);
page!(RoomPage, RoomInfo);
page!(MemberPage, Member);
page!(SensorPage, SensorInfo);
page!(ReadingPage, Reading);
page!(JobPage, Job);
page!(AuditPage, AuditEntry);

/// A page of history: ascending `seq`; `more` says whether more exist in the direction of paging.
#[derive(ToSchema)]
pub struct MessagePage {
    pub items: Vec<Message>,
    pub more: bool,
}

#[derive(ToSchema)]
pub struct StateList {
    pub items: Vec<State>,
}

#[derive(ToSchema)]
pub struct WebhookList {
    pub items: Vec<Webhook>,
}

/// WEBHOOK with its `secret`: shown only in the answer to its creation.
#[derive(ToSchema)]
pub struct WebhookCreated {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub created_at: String,
    pub created_by: String,
    /// The HMAC key of `X-Tsunagi-Signature`, as UTF-8 bytes.
    pub secret: String,
}

#[derive(ToSchema)]
pub struct ReadingsAccepted {
    pub accepted: u32,
    pub durable: bool,
}

/// One bucket of a series: the fields `agg` asks for.
#[derive(ToSchema)]
pub struct Bucket {
    /// The bucket's start, RFC 3339 UTC with milliseconds.
    pub t: String,
    pub count: Option<i64>,
    pub avg: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub sum: Option<f64>,
    pub last: Option<f64>,
}

#[derive(ToSchema)]
pub struct Series {
    pub sensor: String,
    pub bucket: String,
    pub items: Vec<Bucket>,
}

#[derive(ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// Each part's check (`database`, and `redis`, `bus` when configured): `ok` or `failed`; a
/// failure also carries `error` naming it.
#[derive(ToSchema)]
pub struct Readiness {
    /// `ok` or `unavailable`.
    pub status: String,
    pub checks: std::collections::HashMap<String, String>,
    pub error: Option<ErrorDetail>,
}

// ---- request bodies (read field by field: `null` is absent, unknown fields ignored) ----

#[derive(ToSchema)]
pub struct RegisterBody {
    pub username: String,
    pub email: String,
    pub password: String,
    /// 1 to 64 characters; default the username.
    pub display_name: Option<String>,
}

#[derive(ToSchema)]
pub struct LoginBody {
    /// Username or email.
    pub login: String,
    pub password: String,
}

#[derive(ToSchema)]
pub struct UserPatchBody {
    pub display_name: Option<String>,
    pub bio: Option<String>,
    pub email: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Admins only: `user` or `admin`.
    pub role: Option<String>,
}

#[derive(ToSchema)]
pub struct NewRoomBody {
    /// ROOM: 1 to 128 of `A-Z a-z 0-9 _ . : -`.
    pub id: String,
    /// At most 200 characters; default the id.
    pub name: Option<String>,
    pub private: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(ToSchema)]
pub struct NewMemberBody {
    /// 1 to 128 characters, registered here or not.
    pub user_id: String,
}

#[derive(ToSchema)]
pub struct SendBody {
    /// Non-empty, at most `TSUNAGI_MAX_MESSAGE_BYTES` UTF-8 bytes, no U+0000.
    pub content: String,
    /// 1 to 128 characters: a retry with a known one answers the first message.
    pub client_id: Option<String>,
}

#[derive(ToSchema)]
pub struct StateWriteBody {
    /// Any JSON but null, at most `TSUNAGI_MAX_STATE_BYTES`.
    pub value: Value,
    /// The version last seen (0: the key must not exist); absent: unconditional.
    pub version: Option<i64>,
}

#[derive(ToSchema)]
pub struct NewSensorBody {
    /// SENSOR: 1 to 128 of `A-Z a-z 0-9 _ . : -`.
    pub id: String,
    pub name: Option<String>,
    pub private: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(ToSchema)]
pub struct NewReading {
    /// A finite number.
    pub value: f64,
    /// RFC 3339, or milliseconds since the epoch; absent: now. At most 5 minutes ahead.
    #[schema(value_type = Option<String>)]
    pub ts: Option<Value>,
    /// At most 16 string → string pairs, 1024 bytes of JSON.
    pub tags: Option<std::collections::HashMap<String, String>>,
}

#[derive(ToSchema)]
pub struct ReadingsBody {
    /// 1 to 1000; one bad reading fails the whole request.
    pub readings: Vec<NewReading>,
}

#[derive(ToSchema)]
pub struct NewWebhookBody {
    /// `http` or `https`; private addresses refused unless TSUNAGI_WEBHOOK_ALLOW_PRIVATE.
    pub url: String,
    /// `message`, `state`, `room.created`.
    pub events: Vec<String>,
    /// Absent: every room (admins); a room's owner must list their rooms.
    pub rooms: Option<Vec<String>>,
    /// Generated when absent.
    pub secret: Option<String>,
}

#[derive(ToSchema)]
pub struct ArchiveBody {
    /// A duration (`30d`, `12h`, `0s` = every message); default `TSUNAGI_ARCHIVE_AFTER`.
    pub older_than: Option<String>,
}
