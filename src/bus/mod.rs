//! The bus: how committed messages, typing, presence and cache invalidations reach every
//! instance.
//!
//! Layout: the [`Bus`] trait (the transport) and its events here; the in-process bus in
//! `local.rs`; `redis/` carries the cross-instance events through Redis sharded pub/sub (rooms spread
//! over shard channels; an instance listens to the shards of its rooms only);
//! `ordered.rs` is the feed sockets are served from (seq order, gap-free, or a declared
//! resync), with its per-room order in `order.rs` and the rooms' state events' in `state_order.rs`; [`build`] picks the engine from the config.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::domain::Message;

pub mod local;
pub mod order;
pub mod ordered;
pub mod redis;
pub mod state_order;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BusEvent {
    /// A committed message.
    Message(Arc<Message>),
    /// To the room's sockets of users other than `user_id`.
    Typing { room: String, user_id: String },
    /// To the room's sockets other than `origin` (the connection whose join/leave caused it).
    Presence {
        room: String,
        user_id: String,
        online: bool,
        origin: String,
    },
    /// A committed room state write (a deletion: `value` null) and the room's `state_seq` after
    /// it, which orders the room's state events wherever they arrive.
    State {
        seq: i64,
        state: Arc<crate::domain::State>,
    },
    /// Sensor readings just accepted (before they are written), for live subscribers.
    Readings {
        sensor: String,
        readings: Arc<Vec<crate::domain::Reading>>,
    },
    /// Drop `key` from the in-process layer of cache `cache`: a write committed somewhere and
    /// the row is now at `version` (an L2 value older than that is not to be trusted).
    Invalidate {
        cache: String,
        key: String,
        version: i64,
    },
    /// Drop every in-process cache entry: invalidations may have been missed (the
    /// cross-instance link was down).
    InvalidateAll,
}

impl BusEvent {
    /// The room a room-scoped event is for (it reaches the instances watching that room).
    pub fn room(&self) -> Option<&str> {
        match self {
            BusEvent::Message(m) => Some(&m.room),
            BusEvent::Typing { room, .. } | BusEvent::Presence { room, .. } => Some(room),
            BusEvent::State { state, .. } => Some(&state.room),
            BusEvent::Readings { .. } | BusEvent::Invalidate { .. } | BusEvent::InvalidateAll => {
                None
            }
        }
    }

    /// The metric label of the event's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            BusEvent::Message(_) => "message",
            BusEvent::Typing { .. } => "typing",
            BusEvent::Presence { .. } => "presence",
            BusEvent::State { .. } => "state",
            BusEvent::Readings { .. } => "readings",
            BusEvent::Invalidate { .. } | BusEvent::InvalidateAll => "invalidate",
        }
    }

    /// Events that must reach the other instances: committed messages (each instance's ordered
    /// feed puts them in seq order and fills holes from the store), typing, presence changes,
    /// room state, live readings
    /// (decided once for all instances by the shared presence), cache invalidations.
    pub fn crosses_instances(&self) -> bool {
        !matches!(self, BusEvent::InvalidateAll)
    }
}

/// Applies an `Invalidate` or `InvalidateAll` event to this instance's caches.
pub type InvalidationHandler = Arc<dyn Fn(BusEvent) -> BoxFuture<'static, ()> + Send + Sync>;

/// The transport. Obligations of every implementation:
/// - Each subscriber receives every event published on this instance, in publish order, and
///   (where other instances exist) the events they publish that cross instances, in each
///   publisher's order — at most once: a link that drops may lose events, and two publishers'
///   events interleave in any order. Ordering and gap-free delivery of messages are not the
///   transport's job: [`ordered::RoomFeed`] builds them on top, from the messages' seq and the
///   store, and sockets are served only from it.
/// - Typing and presence are best effort: never stored, may be lost.
/// - `publish` never waits on a remote system: local subscribers get the event even when the
///   cross-instance transport is down.
/// - `publish_confirmed` resolves once every other live instance has applied the event (through
///   its invalidation handler), or says it could not confirm that within a bound.
/// - `healthy` is false while events from other instances may be missed; when it turns true
///   again, an `InvalidateAll` is delivered locally.
pub trait Bus: Send + Sync + 'static {
    fn publish(&self, event: BusEvent);
    fn subscribe(&self) -> mpsc::UnboundedReceiver<BusEvent>;
    /// For cache invalidations, which the writer has already applied to its own caches: only
    /// the other instances need the event (with one instance, there are none).
    fn publish_confirmed(&self, _event: BusEvent) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
    /// Where invalidations from other instances are applied before they are acknowledged
    /// (set once at start; the in-process bus has no other instances).
    fn on_invalidation(&self, _handler: InvalidationHandler) {}
    /// Local interest in `room` begins (called once per room, as its first local socket
    /// joins): a transport that routes by room starts receiving it.
    fn watch_room(&self, _room: &str) {}
    /// No local socket is in `room` any more.
    fn unwatch_room(&self, _room: &str) {}
    /// Resolves once events of a watched `room` published from now on reach this instance
    /// (or after a bound, when the transport is down). A join awaits it before reading
    /// history: see `gateway/events.rs`.
    fn room_subscribed(&self, _room: &str) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
    fn healthy(&self) -> bool {
        true
    }
    /// Figures for the admin stats.
    fn stats(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "local" })
    }
}

/// The bus the backplane calls for (in process, or Redis pub/sub), with its health check
/// (`bus`: false while events from other instances may be missed).
pub fn build(
    backplane: &crate::backplane::Backplane,
    config: &crate::config::Config,
) -> (Arc<dyn Bus>, crate::health::HealthCheck) {
    let bus: Arc<dyn Bus> = match backplane {
        crate::backplane::Backplane::Local => Arc::new(local::LocalBus::default()),
        crate::backplane::Backplane::Redis(conn) => {
            redis::RedisBus::start(conn.clone(), config.bus_ack_timeout, config.bus_shards)
        }
    };
    let probe = bus.clone();
    let check = crate::health::HealthCheck::new("bus", move || {
        let healthy = probe.healthy();
        async move {
            if healthy {
                Ok(())
            } else {
                Err("not subscribed: events from other instances may be missed".to_owned())
            }
        }
    });
    (bus, check)
}
