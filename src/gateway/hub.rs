//! Which local sessions are in which room, and the one task that hands them the ordered feed.
//! Delivery never awaits: it writes into each session's bounded outgoing buffer, so one slow
//! client cannot hold up a room.
//!
//! CPU per delivery: the feed is read in batches, and a run of one room's messages (a commit's)
//! is handed to each session together, so its writer finds them queued together and sends them
//! in one write; each message is encoded once for all sessions. A room's member list is shared
//! (`Arc`) and rebuilt only after a join or leave, so a fan-out holds no lock a join waits on.

use std::collections::HashMap;
use std::sync::Arc;

use engineioxide::Str;
use parking_lot::RwLock;

use super::live::LiveSensors;
use super::metrics::GatewayMetrics;
use super::packet;
use super::session::Session;
use crate::bus::ordered::{FeedEvent, RoomFeed};
use crate::domain::Message;
use crate::hot_window::HotWindow;
use crate::services::sensors::SensorsService;

/// Most feed events taken per batch: bounds how long other rooms wait behind one fan-out.
const FEED_BATCH: usize = 256;

/// A room's local sessions.
#[derive(Default)]
struct Members {
    by_sid: HashMap<String, Arc<Session>>,
    /// What fan-outs iterate, built from `by_sid` on the first delivery after a change.
    list: Option<Arc<[Arc<Session>]>>,
}

pub struct Hub {
    rooms: RwLock<HashMap<String, Members>>,
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
            Members::default()
        });
        members.by_sid.insert(session.sid.clone(), session);
        members.list = None;
    }

    pub fn remove(&self, room: &str, sid: &str) {
        let mut rooms = self.rooms.write();
        if let Some(members) = rooms.get_mut(room) {
            if members.by_sid.remove(sid).is_some() {
                members.list = None;
            }
            if members.by_sid.is_empty() {
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

    /// The room's sessions now: a shared list, rebuilt here after a join or leave changed it.
    fn members(&self, room: &str) -> Arc<[Arc<Session>]> {
        if let Some(m) = self.rooms.read().get(room) {
            if let Some(list) = &m.list {
                return list.clone();
            }
        } else {
            return Arc::new([]);
        }
        let mut rooms = self.rooms.write();
        let Some(m) = rooms.get_mut(room) else {
            return Arc::new([]);
        };
        m.list
            .get_or_insert_with(|| m.by_sid.values().cloned().collect())
            .clone()
    }

    /// Hands `msgs` (consecutive messages of one room, in seq order) to the room's sessions.
    fn deliver_messages(&self, msgs: &[Arc<Message>]) {
        let Some(first) = msgs.first() else { return };
        for m in msgs {
            self.hot.released(m);
        }
        let encoded: Vec<(&Arc<Message>, Str)> = msgs
            .iter()
            .map(|m| (m, Str::from(packet::event("message", &**m))))
            .collect();
        let mut sent = 0;
        for s in self.members(&first.room).iter() {
            sent += s.deliver(&first.room, &encoded);
        }
        // one metrics update per fan-out, not one per delivery
        self.metrics.messages_out.increment(sent);
    }

    fn deliver(&self, event: FeedEvent) {
        match event {
            FeedEvent::Message(msg) => self.deliver_messages(&[msg]),
            FeedEvent::Resync { room, next } => {
                self.hot.resync(&room);
                for s in self.members(&room).iter() {
                    s.resync_before(&room, next);
                }
            }
            FeedEvent::Typing { room, user_id } => {
                let encoded = Str::from(packet::event(
                    "typing",
                    &serde_json::json!({ "room": room, "user_id": user_id }),
                ));
                let mut sent = 0;
                for s in self.members(&room).iter() {
                    if s.identity.user_id != user_id {
                        s.emit_volatile(&encoded);
                        sent += 1;
                    }
                }
                self.metrics.typing_out.increment(sent);
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
                let mut sent = 0;
                for s in self.members(&room).iter() {
                    if s.sid != origin {
                        s.emit_volatile(&encoded);
                        sent += 1;
                    }
                }
                self.metrics.presence_out.increment(sent);
            }
            FeedEvent::State { seq, state } => {
                let encoded = Str::from(packet::event("state", &*state));
                for s in self.members(&state.room).iter() {
                    s.deliver_state(&state.room, &state.key, seq, &encoded);
                }
            }
            FeedEvent::Readings { sensor, readings } => {
                self.sensors.remember(&sensor, &readings);
                self.live.deliver(&sensor, &readings);
            }
        }
    }

    /// Hands the feed's events to the sessions until the bus closes, in feed order; a run of
    /// one room's messages goes out as one batch.
    pub async fn run(self: Arc<Self>) {
        let mut events = Vec::with_capacity(FEED_BATCH);
        let mut run: Vec<Arc<Message>> = Vec::new();
        while self.feed.recv_many(&mut events, FEED_BATCH).await > 0 {
            for event in events.drain(..) {
                match event {
                    FeedEvent::Message(msg) if run.first().is_none_or(|m| m.room == msg.room) => {
                        run.push(msg)
                    }
                    FeedEvent::Message(msg) => {
                        self.deliver_messages(&run);
                        run.clear();
                        run.push(msg);
                    }
                    other => {
                        self.deliver_messages(&run);
                        run.clear();
                        self.deliver(other);
                    }
                }
            }
            self.deliver_messages(&run);
            run.clear();
        }
    }
}
