//! Which local sessions are in which room, and the one task that hands them the ordered feed.
//! Delivery never awaits: it writes into each session's bounded outgoing buffer, so one slow
//! client cannot hold up a room.

use std::collections::HashMap;
use std::sync::Arc;

use engineioxide::Str;
use parking_lot::RwLock;

use super::live::LiveSensors;
use super::metrics::GatewayMetrics;
use super::packet;
use super::session::Session;
use crate::bus::ordered::{FeedEvent, RoomFeed};
use crate::hot_window::HotWindow;
use crate::services::sensors::SensorsService;

pub struct Hub {
    rooms: RwLock<HashMap<String, HashMap<String, Arc<Session>>>>,
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    /// Where this instance's rooms' messages come from, in order; a room is watched while it
    /// has local sessions (watch and unwatch happen under the `rooms` lock, so they follow it).
    feed: Arc<RoomFeed>,
    /// Fed from the feed when other instances commit too (it ignores the feed otherwise), and
    /// told when a room's feed starts and stops.
    hot: Arc<HotWindow>,
    metrics: Arc<GatewayMetrics>,
    /// Sensor subscriptions and their throttles.
    pub live: LiveSensors,
    /// Remembers the newest readings of every sensor (for `subscribe`'s `last`).
    sensors: Arc<SensorsService>,
}

impl Hub {
    pub fn new(
        feed: Arc<RoomFeed>,
        hot: Arc<HotWindow>,
        metrics: Arc<GatewayMetrics>,
        live: LiveSensors,
        sensors: Arc<SensorsService>,
    ) -> Arc<Self> {
        Arc::new(Hub {
            rooms: RwLock::default(),
            sessions: RwLock::default(),
            feed,
            hot,
            metrics,
            live,
            sensors,
        })
    }

    pub fn register(&self, session: Arc<Session>) {
        self.sessions.write().insert(session.sid.clone(), session);
        self.metrics.sockets_connected.increment(1.0);
    }

    /// Removes the session from every room; returns the rooms it had joined.
    pub fn unregister(&self, session: &Session) -> Vec<String> {
        if self.sessions.write().remove(&session.sid).is_some() {
            self.metrics.sockets_connected.decrement(1.0);
        }
        for sensor in session.take_sensors() {
            self.live.unsubscribe(&sensor, &session.sid);
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
        let mut rooms = self.rooms.write();
        let members = rooms.entry(room.to_owned()).or_insert_with(|| {
            self.feed.watch(room);
            self.hot.watch(room);
            HashMap::new()
        });
        members.insert(session.sid.clone(), session);
    }

    pub fn remove(&self, room: &str, sid: &str) {
        let mut rooms = self.rooms.write();
        if let Some(members) = rooms.get_mut(room) {
            members.remove(sid);
            if members.is_empty() {
                rooms.remove(room);
                // nobody here reads the room: its order restarts at the next join
                self.feed.unwatch(room);
                self.hot.unwatch(room);
            }
        }
    }

    /// Resolves once messages published in `room` from now on reach this instance: a join
    /// awaits it (after [`Self::add`]) before reading history (see `RoomFeed::subscribed`).
    pub fn subscribed(&self, room: &str) -> futures::future::BoxFuture<'static, ()> {
        self.feed.subscribed(room)
    }

    /// A join of `room` read its history up to `last_seq` and its state at `state_seq` (and the
    /// session is active): the room's feed starts there if it is not running.
    pub fn started(&self, room: &str, last_seq: i64, state_seq: i64) {
        self.feed.start_at(room, last_seq);
        self.feed.start_state_at(room, state_seq);
    }

    fn members(&self, room: &str) -> Vec<Arc<Session>> {
        self.rooms
            .read()
            .get(room)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn deliver(&self, event: FeedEvent) {
        match event {
            FeedEvent::Message(msg) => {
                self.hot.released(&msg);
                let encoded = Str::from(packet::event("message", &*msg));
                for s in self.members(&msg.room) {
                    s.deliver(&msg, &encoded);
                }
            }
            FeedEvent::Resync { room, next } => {
                self.hot.resync(&room);
                for s in self.members(&room) {
                    s.resync_before(&room, next);
                }
            }
            FeedEvent::Typing { room, user_id } => {
                let encoded = Str::from(packet::event(
                    "typing",
                    &serde_json::json!({ "room": room, "user_id": user_id }),
                ));
                for s in self.members(&room) {
                    if s.identity.user_id != user_id {
                        s.emit_volatile(&encoded);
                        self.metrics.typing_out.increment(1);
                    }
                }
            }
            FeedEvent::Presence {
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
                        self.metrics.presence_out.increment(1);
                    }
                }
            }
            FeedEvent::State { seq, state } => {
                let encoded = Str::from(packet::event("state", &*state));
                for s in self.members(&state.room) {
                    s.deliver_state(&state.room, &state.key, seq, &encoded);
                }
            }
            FeedEvent::Readings { sensor, readings } => {
                self.sensors.remember(&sensor, &readings);
                self.live.deliver(&sensor, &readings);
            }
        }
    }

    /// Hands the feed's events to the sessions until the bus closes.
    pub async fn run(self: Arc<Self>) {
        while let Some(event) = self.feed.recv().await {
            self.deliver(event);
        }
    }
}
