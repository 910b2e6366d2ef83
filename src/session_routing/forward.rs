//! The layer in front of the engine: records polling handshakes, and sends a request whose
//! session lives on another instance there (bodies streamed both ways; a WebSocket upgrade is
//! upgraded on both sides and its bytes copied).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use metrics::{Counter, counter};

use super::SessionRoutes;
use crate::telemetry::Telemetry;

/// Marks a request one instance sent another: it is served where it lands, never forwarded
/// again (a stale record cannot make two instances bounce a request between them). A client
/// sending it only keeps its own request from being forwarded.
const FORWARDED: &str = "x-tsunagi-forwarded";

/// The largest handshake answer read to learn its sid (it is about 150 bytes).
const HANDSHAKE_MAX: usize = 64 * 1024;

pub(super) struct ForwardMetrics {
    polls: Counter,
    upgrades: Counter,
    failures: Counter,
}

impl ForwardMetrics {
    pub(super) fn new(t: &Telemetry) -> Self {
        t.record(|| ForwardMetrics {
            polls: counter!("tsunagi_polling_forwarded_total", "kind" => "poll"),
            upgrades: counter!("tsunagi_polling_forwarded_total", "kind" => "upgrade"),
            failures: counter!("tsunagi_polling_forward_failures_total"),
        })
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`) over the engine's layer.
pub async fn route(State(routes): State<Arc<SessionRoutes>>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/socket.io") {
        return next.run(req).await;
    }
    let query = req.uri().query().unwrap_or("");
    let Some(sid) = param(query, "sid") else {
        let polling = param(query, "transport").as_deref() == Some("polling");
        let res = next.run(req).await;
        return if polling && res.status() == StatusCode::OK {
            record_handshake(&routes, res).await
        } else {
            res
        };
    };
    if req.headers().contains_key(FORWARDED) || routes.is_local(&sid) {
        return next.run(req).await;
    }
    match routes.owner(&sid).await {
        Some(owner) => forward(&routes, &owner, &sid, req).await,
        None => next.run(req).await, // unknown anywhere: the engine answers as it does
    }
}

/// Records the sid of a polling handshake answered here, before the client can use it.
async fn record_handshake(routes: &SessionRoutes, res: Response) -> Response {
    let (parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, HANDSHAKE_MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Some(sid) = handshake_sid(&bytes) {
        routes.opened(sid).await;
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The sid of an Engine.IO open packet (`0{"sid":"…",…}`, length-prefixed in protocol 3).
fn handshake_sid(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("\"sid\":\"")? + 7;
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

fn param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

async fn forward(routes: &SessionRoutes, owner: &str, sid: &str, mut req: Request) -> Response {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let client_side = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = end_to_end(&parts.headers, upgrade);
    headers.insert(FORWARDED, HeaderValue::from_static("1"));
    let mut out = routes
        .client
        .request(parts.method, format!("{owner}{path}"))
        .headers(headers);
    if !upgrade {
        out = out.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => {
            routes.metrics.failures.increment(1);
            routes.forget(sid);
            tracing::debug!(error = %e.without_url(), "forwarding a polling request failed");
            return unknown_session();
        }
    };
    let mut res = Response::builder().status(answer.status());
    if let Some(h) = res.headers_mut() {
        *h = end_to_end(answer.headers(), upgrade);
    }
    match client_side {
        Some(client_side) if answer.status() == StatusCode::SWITCHING_PROTOCOLS => {
            routes.metrics.upgrades.increment(1);
            tokio::spawn(async move {
                let (client, owner) = futures::join!(client_side, answer.upgrade());
                if let (Ok(client), Ok(mut owner)) = (client, owner) {
                    let mut client = TokioIo::new(client);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut owner).await;
                }
            });
            res.body(Body::empty())
                .unwrap_or_else(|_| unknown_session())
        }
        _ => {
            routes.metrics.polls.increment(1);
            res.body(Body::from_stream(answer.bytes_stream()))
                .unwrap_or_else(|_| unknown_session())
        }
    }
}

/// What the engine answers for a sid it does not know: the client opens a new session (and
/// recovers with `sync`), as after any transport loss.
fn unknown_session() -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"code":1,"message":"Session ID unknown"}"#,
    )
        .into_response()
}

/// The headers meant for the other end (RFC 9110 §7.6.1): hop-by-hop ones dropped, except
/// `Connection`/`Upgrade` of a WebSocket upgrade, which the owner must see to upgrade.
fn end_to_end(from: &HeaderMap, upgrade: bool) -> HeaderMap {
    const HOP: [HeaderName; 6] = [
        header::CONNECTION,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::HOST,
    ];
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let hop = HOP.contains(name) || name.as_str() == "keep-alive";
        if !hop || (upgrade && (name == header::CONNECTION || name == header::UPGRADE)) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sid_of_an_open_packet() {
        let v4 = br#"0{"sid":"AbC-12_x","upgrades":["websocket"],"pingInterval":25000}"#;
        assert_eq!(handshake_sid(v4), Some("AbC-12_x"));
        let v3 = br#"96:0{"sid":"q1","upgrades":[]}"#;
        assert_eq!(handshake_sid(v3), Some("q1"));
        assert_eq!(handshake_sid(b"4hello"), None);
    }

    #[test]
    fn hop_by_hop_headers_stay_behind_unless_upgrading() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::HOST, HeaderValue::from_static("lb"));
        h.insert("sec-websocket-key", HeaderValue::from_static("k"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        let plain = end_to_end(&h, false);
        assert_eq!(plain.len(), 1);
        assert!(plain.contains_key("sec-websocket-key"));
        let up = end_to_end(&h, true);
        assert_eq!(up.len(), 3);
        assert!(up.contains_key(header::UPGRADE) && !up.contains_key(header::HOST));
    }

    #[test]
    fn query_parameters() {
        let q = "EIO=4&transport=polling&t=abc&sid=x%2Dy";
        assert_eq!(param(q, "sid").as_deref(), Some("x-y"));
        assert_eq!(param(q, "transport").as_deref(), Some("polling"));
        assert_eq!(param("EIO=4&sid=", "sid"), None);
    }
}
