//! Which local sessions are in which room, and the one task that delivers bus events to them.
//! Delivery never awaits: it writes into each session's bounded outgoing buffer, so one slow
//! client cannot hold up a room.

use std::collections::HashMap;
use std::sync::Arc;

use engineioxide::Str;
use parking_lot::RwLock;
use tokio::sync::mpsc;

use super::metrics as m;
use super::packet;
use super::session::Session;
use crate::bus::BusEvent;

#[derive(Default)]
pub struct Hub {
    rooms: RwLock<HashMap<String, HashMap<String, Arc<Session>>>>,
    sessions: RwLock<HashMap<String, Arc<Session>>>,
}

impl Hub {
    pub fn register(&self, session: Arc<Session>) {
        self.sessions.write().insert(session.sid.clone(), session);
        m::sockets_connected().increment(1.0);
    }

    /// Removes the session from every room; returns the rooms it had joined.
    pub fn unregister(&self, session: &Session) -> Vec<String> {
        if self.sessions.write().remove(&session.sid).is_some() {
            m::sockets_connected().decrement(1.0);
        }
        let rooms = session.joined_rooms();
        for room in &rooms {
            self.remove(room, &session.sid);
            session.forget(room);
        }
        rooms
    }

    pub fn session_count(&self) -> usize {
        self.sessions.read().len()
    }

    pub fn all_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.read().values().cloned().collect()
    }

    pub fn add(&self, room: &str, session: Arc<Session>) {
        self.rooms
            .write()
            .entry(room.to_owned())
            .or_default()
            .insert(session.sid.clone(), session);
    }

    pub fn remove(&self, room: &str, sid: &str) {
        let mut rooms = self.rooms.write();
        if let Some(members) = rooms.get_mut(room) {
            members.remove(sid);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    fn members(&self, room: &str) -> Vec<Arc<Session>> {
        self.rooms
            .read()
            .get(room)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn deliver(&self, event: BusEvent) {
        match event {
            BusEvent::Message(msg) => {
                let encoded = Str::from(packet::event("message", &*msg));
                for s in self.members(&msg.room) {
                    s.deliver(&msg, &encoded);
                }
            }
            BusEvent::Typing { room, user_id } => {
                let encoded = Str::from(packet::event(
                    "typing",
                    &serde_json::json!({ "room": room, "user_id": user_id }),
                ));
                for s in self.members(&room) {
                    if s.identity.user_id != user_id {
                        s.emit_volatile(&encoded);
                        m::events_out("typing").increment(1);
                    }
                }
            }
            BusEvent::Presence {
                room,
                user_id,
                online,
                origin,
            } => {
                let status = if online { "online" } else { "offline" };
                let encoded = Str::from(packet::event(
                    "presence",
                    &serde_json::json!({ "room": room, "user_id": user_id, "status": status }),
                ));
                for s in self.members(&room) {
                    if s.sid != origin {
                        s.emit_volatile(&encoded);
                        m::events_out("presence").increment(1);
                    }
                }
            }
            // for the caches (src/cache), not for sockets
            BusEvent::Invalidate { .. } | BusEvent::InvalidateAll => {}
        }
    }

    /// Runs until the bus closes.
    pub async fn run(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<BusEvent>) {
        while let Some(e) = events.recv().await {
            self.deliver(e);
        }
    }
}
