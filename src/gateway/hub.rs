//! Which local sessions are in which room, and the one task that delivers bus events to them.
//! Delivery never awaits: it writes into each session's bounded outgoing buffer, so one slow
//! client cannot hold up a room.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use engineioxide::Str;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use super::metrics as m;
use super::order::RoomOrder;
use super::packet;
use super::session::Session;
use crate::bus::BusEvent;
use crate::domain::{Message, RoomId};
use crate::store::{HistoryQuery, ReadFrom, Store};

pub struct Hub {
    rooms: RwLock<HashMap<String, HashMap<String, Arc<Session>>>>,
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    /// Per room with local sessions: the seq order messages are released in (`order.rs`).
    /// Messages are handed to sessions while this lock is held, so releases never interleave.
    order: Mutex<HashMap<String, RoomOrder>>,
    /// Rooms whose hole is being filled from the store.
    filling: Mutex<HashSet<String>>,
    store: Arc<dyn Store>,
    me: Weak<Hub>,
}

/// How long a hole may stay open before the store is asked for the missing messages (they are
/// usually on their way through Redis from the instance that committed them).
const GAP_WAIT: Duration = Duration::from_millis(100);

impl Hub {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new_cyclic(|me| Hub {
            rooms: RwLock::default(),
            sessions: RwLock::default(),
            order: Mutex::default(),
            filling: Mutex::default(),
            store,
            me: me.clone(),
        })
    }

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
        let emptied = {
            let mut rooms = self.rooms.write();
            match rooms.get_mut(room) {
                Some(members) => {
                    members.remove(sid);
                    let empty = members.is_empty();
                    if empty {
                        rooms.remove(room);
                    }
                    empty
                }
                None => false,
            }
        };
        if emptied {
            // nobody here reads the room: its order restarts at the next join
            self.order.lock().remove(room);
        }
    }

    /// A join of `room` read its history up to `last_seq` (and the session is active): starts
    /// the room's ordering there if it is not running, releasing what waited for it.
    pub fn started(&self, room: &str, last_seq: i64) {
        let mut order = self.order.lock();
        let o = order.entry(room.to_owned()).or_default();
        let ready = o.start_at(last_seq);
        let gap = o.gap().is_some();
        self.release(room, ready);
        drop(order);
        if gap {
            self.fill_later(room);
        }
    }

    fn deliver_message(&self, msg: Arc<Message>) {
        let room = msg.room.clone();
        if !self.rooms.read().contains_key(&room) {
            return; // no socket here reads this room
        }
        let mut order = self.order.lock();
        let o = order.entry(room.clone()).or_default();
        let ready = o.accept(msg);
        let gap = o.gap().is_some();
        self.release(&room, ready);
        drop(order);
        if gap {
            self.fill_later(&room);
        }
    }

    /// Hands `ready` (in seq order) to the room's sessions; called with the order lock held.
    fn release(&self, room: &str, ready: Vec<Arc<Message>>) {
        if ready.is_empty() {
            return;
        }
        let members = self.members(room);
        for msg in ready {
            let encoded = Str::from(packet::event("message", &*msg));
            for s in &members {
                s.deliver(&msg, &encoded);
            }
        }
    }

    fn fill_later(&self, room: &str) {
        if !self.filling.lock().insert(room.to_owned()) {
            return;
        }
        let Some(hub) = self.me.upgrade() else { return };
        let room = room.to_owned();
        tokio::spawn(async move {
            hub.fill(&room).await;
            hub.filling.lock().remove(&room);
        });
    }

    /// Fills `room`'s hole from the store once it has stayed open for `GAP_WAIT`; if the store
    /// cannot answer for a while, releases past it (sockets that see the jump resync).
    async fn fill(&self, room: &str) {
        let Ok(id) = RoomId::parse(room) else { return };
        for _ in 0..50 {
            tokio::time::sleep(GAP_WAIT).await;
            let Some((from, to)) = self.order.lock().get(room).and_then(RoomOrder::gap) else {
                return;
            };
            let q = HistoryQuery {
                after_seq: Some(from - 1),
                before_seq: Some(to),
                limit: (to - from).clamp(1, 500) as u32,
            };
            match self.store.history(&id, q, ReadFrom::Primary).await {
                Ok(page) => {
                    m::gap_fills().increment(page.items.len() as u64);
                    for msg in page.items {
                        self.deliver_message(Arc::new(msg));
                    }
                }
                Err(e) => tracing::warn!(room, error = %e, "could not fill a delivery gap yet"),
            }
        }
        let mut order = self.order.lock();
        if let Some(o) = order.get_mut(room) {
            let ready = o.skip_gap();
            self.release(room, ready);
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
            BusEvent::Message(msg) => self.deliver_message(msg),
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
