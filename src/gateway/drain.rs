//! New Socket.IO sessions while the instance drains (SIGTERM): refused before the engine sees
//! them. The listener is closed by then, but a load balancer's kept-alive connections still
//! bring requests; an admitted session would only get a CONNECT error, after which
//! socket.io-client does not reconnect by itself. A 503 instead is retried: nginx passes the
//! request to another instance (`proxy_next_upstream http_503`), a direct client's manager
//! reconnects with backoff. Requests of open sessions (`sid=`) go through until the sockets close.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::error::ApiError;

pub async fn refuse_new_sessions(
    State(app): State<Arc<App>>,
    req: Request,
    next: Next,
) -> Response {
    if app.shutdown.is_cancelled() && opens_session(&req) {
        return ApiError::unavailable("the server is shutting down").into_response();
    }
    next.run(req).await
}

/// An Engine.IO handshake: a request on the engine's path without a session id.
pub(super) fn opens_session(req: &Request) -> bool {
    let uri = req.uri();
    let on_engine = uri
        .path()
        .strip_prefix(super::ENGINE_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    let has_sid = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("sid=")));
    on_engine && !has_sid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> Request {
        Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[test]
    fn only_handshakes_open_a_session() {
        assert!(opens_session(&req("/socket.io/?EIO=4&transport=websocket")));
        assert!(opens_session(&req(
            "/socket.io/?EIO=4&transport=polling&t=x"
        )));
        assert!(!opens_session(&req(
            "/socket.io/?EIO=4&transport=polling&sid=abc"
        )));
        assert!(!opens_session(&req("/socket.iox/?EIO=4")));
        assert!(!opens_session(&req("/api/v1/rooms")));
    }
}
