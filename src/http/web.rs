//! The pages: the chat page at `/` and the operations dashboard at `/admin`, with their bundles
//! under `/assets/`. `web/dist` is built from `web/src` and `clients/js` by `scripts/build-web`
//! (committed, so a fresh clone's `cargo run` serves them without npm) and compiled into the
//! binary, so `tsunagi serve` alone serves them.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

use crate::error::ApiError;

#[derive(Embed)]
#[folder = "web/dist/"]
struct Dist;

fn file(name: &str) -> Response {
    let Some(file) = Dist::get(name) else {
        return ApiError::not_found("no such file").into_response();
    };
    let mime = file.metadata.mimetype();
    let mut res = file.data.into_owned().into_response();
    let headers = res.headers_mut();
    if let Ok(mime) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, mime);
    }
    // small files that change with each release: revalidated rather than cached stale
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if name.ends_with(".html") {
        // the pages load and connect to nothing but this origin (no CDN, no fonts), and are
        // never framed
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                 connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    res
}

#[utoipa::path(
    operation_id = "web_index",
    get,
    path = "/",
    tag = "operations",
    responses(
        (status = 200, description = "The chat page", body = String, content_type = "text/html")
    )
)]
pub async fn index() -> Response {
    file("index.html")
}

#[utoipa::path(
    operation_id = "web_admin",
    get,
    path = "/admin",
    tag = "operations",
    responses(
        (status = 200, description = "The operations dashboard (its data: admins only)", body = String, content_type = "text/html")
    )
)]
pub async fn admin() -> Response {
    file("admin.html")
}

pub async fn asset(Path(name): Path<String>) -> Response {
    file(&name)
}
