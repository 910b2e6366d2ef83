//! The HTTP API of PROTOCOL.md §4 (rooms, messages, operations).
//!
//! Layout: `extract.rs` (caller identity and JSON bodies, with the contract's errors),
//! `rooms.rs`, `messages.rs`, `users.rs` (auth and users), `sensors.rs` (§6.1), `state.rs` (§6.2), `admin.rs` (audit, stats, dashboard), `ops.rs` (healthz, readyz, metrics), `web.rs` (the chat page).

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::app::App;
use crate::error::ApiError;
use crate::gateway::Gateway;

mod admin;
mod extract;
mod messages;
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

pub fn router(app: Arc<App>, gateway: Arc<Gateway>) -> Router {
    let body_limit = body_limit(&app.config);
    Router::new()
        .route("/api/v1/rooms", post(rooms::create).get(rooms::list))
        .route(
            "/api/v1/rooms/{id}/members",
            post(rooms::add_member).get(rooms::members),
        )
        .route("/api/v1/auth/register", post(users::register))
        .route("/api/v1/auth/login", post(users::login))
        .route("/api/v1/users", get(users::list))
        .route("/api/v1/users/{id}", get(users::get).patch(users::patch))
        .route("/api/v1/admin/audit", get(admin::audit))
        .route("/api/v1/admin/stats", get(admin::stats))
        .route("/api/v1/admin/dashboard", get(admin::dashboard))
        .route("/api/v1/admin/archive", post(admin::archive))
        .route("/api/v1/admin/jobs", get(admin::jobs))
        .route("/api/v1/admin/jobs/{id}/retry", post(admin::retry_job))
        .route(
            "/api/v1/webhooks",
            post(webhooks::create).get(webhooks::list),
        )
        .route("/api/v1/webhooks/{id}", delete(webhooks::delete))
        .route(
            "/api/v1/rooms/{id}/messages",
            get(messages::list).post(messages::create),
        )
        .route("/api/v1/rooms/{id}/state", get(state::list))
        .route(
            "/api/v1/rooms/{id}/state/{key}",
            get(state::get).put(state::put).delete(state::delete),
        )
        .route("/api/v1/sensors", post(sensors::create).get(sensors::list))
        .route("/api/v1/sensors/{id}", get(sensors::get))
        .route(
            "/api/v1/sensors/{id}/readings",
            post(sensors::write).get(sensors::readings),
        )
        .route("/api/v1/sensors/{id}/series", get(sensors::series))
        .route("/", get(web::index))
        .route("/admin", get(web::admin))
        .route("/assets/{*name}", get(web::asset))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
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
