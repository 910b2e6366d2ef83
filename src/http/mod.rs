//! The HTTP API of PROTOCOL.md §4 (rooms, messages, operations).
//!
//! Layout: `extract.rs` (caller identity and JSON bodies, with the contract's errors),
//! `rooms.rs`, `messages.rs`, `users.rs` (auth and users), `sensors.rs` (§6.1), `state.rs` (§6.2), `admin.rs` (audit, stats, dashboard), `ops.rs` (healthz, readyz, metrics), `web.rs` (the chat page),
//! `openapi.rs` (`/api/v1/openapi.json`: the document, and the shapes of the JSON the handlers
//! build).

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::error::ApiError;
use crate::gateway::Gateway;

mod admin;
mod extract;
mod messages;
pub mod openapi;
mod ops;
mod rooms;
mod sensors;
mod state;
mod users;
mod web;
mod webhooks;

/// The decoders of query strings the handlers use (fuzzed in `fuzz/`, which sees only what is
/// public): listings' `limit` and `cursor`, text filters, `?durable=`.
pub use admin::text_filter;
pub use extract::{list_limit, listing};
pub use sensors::durable_param;

/// The largest JSON body: room for a maximal message with escapes, and for metadata.
pub fn body_limit(config: &crate::config::Config) -> usize {
    (config.max_message_bytes * 6).max(config.max_state_bytes * 2) + 64 * 1024
}

/// What handlers are given: the app, and the gateway for the socket figures.
#[derive(Clone)]
pub struct Edge {
    pub app: Arc<App>,
    pub gateway: Arc<Gateway>,
}

impl FromRef<Edge> for Arc<App> {
    fn from_ref(edge: &Edge) -> Arc<App> {
        edge.app.clone()
    }
}

/// Every described endpoint (PROTOCOL.md §4, §6, §7): the router and the OpenAPI document are
/// both made from this one list, so nothing is served undescribed. (`routes!` takes the path
/// and method from each handler's `#[utoipa::path]`; handlers sharing a path go in one call.)
fn described() -> OpenApiRouter<Edge> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(rooms::create, rooms::list))
        .routes(routes!(rooms::add_member, rooms::members))
        .routes(routes!(users::register))
        .routes(routes!(users::login))
        .routes(routes!(users::list))
        .routes(routes!(users::get, users::patch))
        .routes(routes!(admin::audit))
        .routes(routes!(admin::stats))
        .routes(routes!(admin::dashboard))
        .routes(routes!(admin::archive))
        .routes(routes!(admin::jobs))
        .routes(routes!(admin::retry_job))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::delete))
        .routes(routes!(messages::list, messages::create))
        .routes(routes!(state::list))
        .routes(routes!(state::get, state::put, state::delete))
        .routes(routes!(sensors::create, sensors::list))
        .routes(routes!(sensors::get))
        .routes(routes!(sensors::write, sensors::readings))
        .routes(routes!(sensors::series))
        .routes(routes!(openapi::document))
        .routes(routes!(web::index))
        .routes(routes!(web::admin))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
}

/// The OpenAPI 3.1 document of [`described`] (served at `/api/v1/openapi.json`).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    described().into_openapi()
}

pub fn router(app: Arc<App>, gateway: Arc<Gateway>) -> Router {
    let body_limit = body_limit(&app.config);
    let (described, _) = described().split_for_parts();
    described
        // the pages' bundles: files, not an API (a `{*name}` wildcard has no OpenAPI form)
        .route("/assets/{*name}", get(web::asset))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(Edge { app, gateway })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status(),
            axum::Json(serde_json::json!({ "error": self.body() })),
        )
            .into_response();
        if let Some(retry_after_ms) = self.retry_after_ms() {
            let secs = retry_after_ms.div_ceil(1000).max(1);
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status() == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}
