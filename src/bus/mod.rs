//! The bus: how committed messages, typing and presence reach every instance's sockets.
//!
//! Layout: the [`Bus`] trait and its events here; the in-process bus in `local.rs`.
//! A Redis bus slots in beside it (scale-out issue).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::domain::Message;

pub mod local;

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
}

/// Obligations of every implementation:
/// - Each subscriber receives every `Message` of every room, at least once, in `seq` order per
///   room, with no gap: an implementation that can lose or reorder (Redis pub/sub) must detect a
///   gap and fill it from the store before handing messages over. Duplicates are allowed; the
///   gateway drops a seq it has already delivered.
/// - Typing and presence are best effort: never stored, may be lost.
/// - `publish` never waits on a remote system: local subscribers get the event even when the
///   cross-instance transport is down.
pub trait Bus: Send + Sync + 'static {
    fn publish(&self, event: BusEvent);
    fn subscribe(&self) -> mpsc::UnboundedReceiver<BusEvent>;
}
