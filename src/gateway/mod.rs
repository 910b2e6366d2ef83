//! The realtime gateway: Socket.IO v4 clients on the default namespace `/` (PROTOCOL.md §3).
//!
//! Transports (WebSocket, HTTP long-polling, upgrade, heartbeats) come from `engineioxide`, the
//! engine.io crate of the socketioxide project. The Socket.IO layer above it is ours, because
//! socketioxide 0.18 cannot do what the contract requires:
//! - its `connect_error` carries only `message`; the contract needs `data.code`;
//! - it spawns one task per event, so a socket's sends can be reordered; we queue each
//!   session's events and run them one at a time;
//! - its broadcasts silently skip sockets whose buffer is full; we disconnect them;
//! - delivery must start exactly after the seq a join's history ended at (no gap, no repeat).
//!
//! Layout: `packet.rs` (the text format), `session.rs` (one connection), `hub.rs` (rooms and
//! delivery), `live.rs` (sensor subscriptions, throttled), `events.rs` (the client events),
//! `sensor_events.rs` (the sensor events), `metrics.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use engineioxide::config::EngineIoConfig;
use engineioxide::handler::EngineIoHandler;
use engineioxide::{DisconnectReason, Str};
use serde_json::json;

mod address_slots;
mod admission;
mod backlog;
mod budget;
pub mod client_event;
mod drain;
mod events;
mod hub;
mod inbox;
mod live;
mod metrics;
pub mod packet;
mod roles;
mod sensor_events;
mod session;

use packet::Inbound;
use session::{Conn, EngineSocket, InboundEvent, Session};

use tokio_util::task::TaskTracker;

use self::metrics::GatewayMetrics;
use crate::app::App;
use crate::client_addr::request_client;
use crate::error::{ApiError, AuthCode};
use hub::Hub;

pub use admission::admit_handshakes;
pub use drain::refuse_new_sessions;

/// Where the Engine.IO endpoint is mounted.
pub const ENGINE_PATH: &str = "/socket.io";

/// A WebSocket's read buffer, held (zero-filled) by every socket, idle ones too. Client events
/// are a few hundred bytes; tungstenite grows the buffer for a larger frame. (The default,
/// 4 KiB, was 4 of an idle socket's ~30 KiB.)
const WS_READ_BUFFER: usize = 1024;

/// How long a transport may stay open without a Socket.IO CONNECT (the socket.io default).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

/// How long queued packets of long-polling sessions get to be fetched before sockets are
/// closed at shutdown (WebSockets are waited for by their byte count, at most 5 times this).
const FLUSH_GRACE: Duration = Duration::from_millis(200);

/// The Socket.IO edge of one app: its sessions, their rooms, and the delivery task. (Clone
/// because the engine's layer asks for it; it is used behind one `Arc`.)
#[derive(Clone)]
pub struct Gateway {
    app: Arc<App>,
    hub: Arc<Hub>,
    metrics: Arc<GatewayMetrics>,
    /// Events per second each socket may send (`TSUNAGI_EVENT_RATE`).
    event_rate: budget::EventRate,
    /// Bytes a WebSocket may have waiting (`TSUNAGI_SOCKET_BUFFER_BYTES`, `…_STALL_MS`).
    byte_budget: backlog::BudgetSettings,
    upgrades: Arc<crate::io_stats::Upgrades>,
    /// Tasks that answer sends once committed: shutdown waits for them before closing sockets.
    replies: TaskTracker,
    /// Connections per client address (`TSUNAGI_CONNECTIONS_PER_ADDRESS`), this instance's.
    address_slots: Arc<address_slots::AddressSlots>,
    /// Sessions opened and not yet CONNECTed (`TSUNAGI_HANDSHAKES_PENDING`).
    admission: Arc<admission::Admission>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gateway")
    }
}

impl Gateway {
    /// Builds the gateway on `app` and starts its delivery task (it runs until the bus closes).
    pub fn new(app: Arc<App>, upgrades: Arc<crate::io_stats::Upgrades>) -> Arc<Self> {
        let metrics = Arc::new(GatewayMetrics::new(app.telemetry()));
        let live =
            live::LiveSensors::new(app.config.sensor_live_rate, metrics.readings_out.clone());
        let hub = Hub::new(
            app.room_feed(),
            app.messages.hot_window().clone(),
            metrics.clone(),
            live,
            app.sensors.clone(),
        );
        tokio::spawn(hub.clone().run());
        let event_rate = budget::EventRate::new(
            app.config.event_rate,
            (app.config.event_rate * 2.0).ceil().max(1.0) as u32,
        );
        let byte_budget = backlog::BudgetSettings {
            max_bytes: app.config.socket_buffer_bytes,
            stall_ms: app.config.socket_stall.as_millis() as u64,
        };
        let address_slots = address_slots::AddressSlots::new(app.config.connections_per_address);
        let admission = admission::Admission::new(app.config.handshakes_pending, app.telemetry());
        let gw = Arc::new(Gateway {
            app,
            hub,
            metrics,
            event_rate,
            byte_budget,
            upgrades,
            replies: TaskTracker::new(),
            address_slots,
            admission,
        });
        roles::watch_demotions(Arc::downgrade(&gw));
        gw
    }

    /// Sockets connected to this instance.
    pub fn connected(&self) -> usize {
        self.hub.session_count()
    }

    /// The bound on sessions being opened, for the middleware in front of the engine.
    pub fn admission(&self) -> Arc<admission::Admission> {
        self.admission.clone()
    }

    pub fn engine_config(max_message_bytes: usize, socket_buffer: usize) -> EngineIoConfig {
        // Room for a maximal content JSON-escaped (up to 6 bytes per byte) plus the envelope, so
        // an oversized message is answered `too_large` instead of cutting the connection.
        let max_payload = (max_message_bytes * 6 + 64 * 1024).max(1024 * 1024);
        EngineIoConfig::builder()
            .req_path(ENGINE_PATH)
            .max_buffer_size(socket_buffer)
            .max_payload(max_payload as u64)
            .ws_max_message_size(max_payload)
            .ws_max_frame_size(max_payload)
            .ws_read_buffer_size(WS_READ_BUFFER)
            .build()
    }

    fn connect(
        self: &Arc<Self>,
        socket: &Arc<EngineSocket>,
        nsp: String,
        auth: Option<serde_json::Value>,
    ) {
        // the handshake is over, whatever the CONNECT's fate
        socket.data.pending.lock().take();
        if nsp != "/" {
            socket
                .emit(packet::connect_error(&nsp, "Invalid namespace", None))
                .ok();
            return;
        }
        if socket.data.session.lock().is_some() {
            return; // a repeated CONNECT is ignored, as socket.io does
        }
        if socket.data.over_address_limit.load(Ordering::Relaxed) {
            // a slot frees when one of the address's connections ends: no better guess exists
            let e = ApiError::rate_limited(1000);
            let mut data = e.body();
            data["message"] = "too many connections from this address".into();
            socket
                .emit(packet::connect_error(
                    "/",
                    "too many connections from this address",
                    Some(data),
                ))
                .ok();
            return;
        }
        if self.app.shutdown.is_cancelled() {
            let e = ApiError::unavailable("the server is shutting down");
            let data = Some(json!({ "code": e.code() }));
            socket
                .emit(packet::connect_error("/", &e.to_string(), data))
                .ok();
            return;
        }
        let token = auth
            .as_ref()
            .and_then(|a| a.get("token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .or_else(|| bearer(&socket.req_parts.headers));
        let identity = match token {
            None => Err(ApiError::unauthorized(
                AuthCode::AuthRequired,
                "a token is required",
            )),
            Some(t) => self.app.tokens.verify(&t).map_err(ApiError::from),
        };
        let identity = match identity {
            Ok(i) => i,
            Err(e) => {
                let data = Some(json!({ "code": e.code() }));
                socket
                    .emit(packet::connect_error("/", &e.to_string(), data))
                    .ok();
                return;
            }
        };
        let sid = uuid::Uuid::new_v4().simple().to_string();
        let session = Arc::new(Session::new(
            sid.clone(),
            identity,
            socket.clone(),
            self.metrics.clone(),
            backlog::Backlog::new(self.byte_budget, self.upgrades.clone()),
        ));
        *socket.data.session.lock() = Some(session.clone());
        if let Some(timer) = socket.data.connect_timer.lock().take() {
            timer.abort();
        }
        self.hub.register(session.clone());
        session.emit(packet::connect_ok(&sid));
    }

    fn teardown(&self, socket: &EngineSocket) {
        let Some(session) = socket.data.session.lock().take() else {
            return;
        };
        session.mark_closed();
        let rooms = self.hub.unregister(&session);
        let app = self.app.clone();
        tokio::spawn(async move {
            for room in rooms {
                events::depart(&app, &session, &room).await;
            }
        });
    }

    /// Shutdown, once sends are drained: lets every answer of a committed send reach its
    /// socket, then closes every connection. Clients see a transport close and reconnect
    /// elsewhere.
    pub async fn close_all(&self, within: Duration) {
        self.replies.close();
        if tokio::time::timeout(within, self.replies.wait())
            .await
            .is_err()
        {
            tracing::warn!("some answers to sends were not written before closing");
        }
        // Closing cancels a socket's writer at once, so wait until what is queued is written:
        // WebSockets say so through their byte count; for long-polling sessions (no such count)
        // the wait is bounded by FLUSH_GRACE.
        let sessions = self.hub.all_sessions();
        let started = tokio::time::Instant::now();
        loop {
            let unwritten: Vec<Option<u64>> = sessions.iter().map(|s| s.unwritten()).collect();
            let pending = unwritten.iter().any(|n| n.is_some_and(|n| n > 0));
            let polling = unwritten.iter().any(Option::is_none);
            let waited = started.elapsed();
            if (!pending && (!polling || waited >= FLUSH_GRACE)) || waited >= FLUSH_GRACE * 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for s in sessions {
            s.close(DisconnectReason::ClosingServer);
        }
    }
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
}

impl EngineIoHandler for Gateway {
    type Data = Conn;

    fn on_connect(self: Arc<Self>, socket: Arc<EngineSocket>) {
        // The transport is counted, not only a CONNECTed session: a transport that never
        // CONNECTs holds the server's resources all the same (for CONNECT_TIMEOUT).
        let client = request_client(&socket.req_parts, &self.app.config.trusted_proxies);
        match self.address_slots.acquire(client) {
            Some(slot) => *socket.data.address_slot.lock() = Some(slot),
            None => {
                self.metrics.connections_refused.increment(1);
                socket
                    .data
                    .over_address_limit
                    .store(true, Ordering::Relaxed);
            }
        }
        *socket.data.pending.lock() = Some(self.admission.pending());
        let weak = Arc::downgrade(&socket);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(CONNECT_TIMEOUT).await;
            if let Some(s) = weak.upgrade()
                && s.data.session.lock().is_none()
            {
                s.close(DisconnectReason::TransportClose);
            }
        });
        *socket.data.connect_timer.lock() = Some(timer.abort_handle());
    }

    fn on_disconnect(&self, socket: Arc<EngineSocket>, _reason: DisconnectReason) {
        self.teardown(&socket);
        // the socket itself may outlive this call (tasks holding it): free the places now
        socket.data.address_slot.lock().take();
        socket.data.pending.lock().take();
        if let Some(timer) = socket.data.connect_timer.lock().take() {
            timer.abort();
        }
    }

    fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<EngineSocket>) {
        let packet = match packet::decode(msg.as_str()) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "closing a connection that sent a malformed packet");
                socket.close(DisconnectReason::PacketParsingError);
                return;
            }
        };
        match packet {
            Inbound::Connect { nsp, auth } => self.connect(&socket, nsp, auth),
            Inbound::Disconnect { nsp } if nsp == "/" => {
                self.teardown(&socket);
                socket.close(DisconnectReason::TransportClose);
            }
            Inbound::Event { nsp, ack, data } if nsp == "/" => {
                let Some(session) = socket.data.session.lock().clone() else {
                    return;
                };
                let (name, payload) = packet::split_event(data);
                let event = InboundEvent {
                    refused: None,
                    name,
                    payload,
                    ack,
                };
                if session.queue(event, &self.event_rate) {
                    tokio::spawn(events::worker(self.clone(), session));
                }
            }
            Inbound::Refused { nsp, ack, reason } if nsp == "/" => {
                let Some(session) = socket.data.session.lock().clone() else {
                    return;
                };
                let event = InboundEvent {
                    refused: Some(reason),
                    name: String::new(),
                    payload: None,
                    ack,
                };
                if session.queue(event, &self.event_rate) {
                    tokio::spawn(events::worker(self.clone(), session));
                }
            }
            _ => {}
        }
    }

    fn on_binary(self: &Arc<Self>, _data: Bytes, _socket: Arc<EngineSocket>) {}
}
