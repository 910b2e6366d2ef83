//! One Socket.IO connection on the default namespace: who it is, which rooms it has joined and
//! up to which seq, and its outgoing side.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use engineioxide::{DisconnectReason, Socket, Str};
use parking_lot::Mutex;
use tokio::sync::mpsc::error::TrySendError;

use super::backlog::Backlog;
use super::budget::{EventBudget, EventRate};
use super::inbox::{Inbox, Pushed};
use super::metrics::GatewayMetrics;
use super::packet;
use crate::auth::Identity;
use crate::domain::Message;

/// Per-engine-connection data: the session once the Socket.IO CONNECT succeeded.
/// Taken out again at disconnect, which breaks the session ↔ socket reference cycle.
#[derive(Default)]
pub struct Conn {
    pub session: Mutex<Option<Arc<Session>>>,
    /// This connection's place in its address's count (given back at disconnect); `None`
    /// before the transport opened, and when the address had no place left.
    pub address_slot: Mutex<Option<super::address_slots::Slot>>,
    /// Set when the transport opened past its address's limit: its CONNECT is refused.
    pub over_address_limit: AtomicBool,
    /// This session's place among those opened and not yet CONNECTed (admission.rs).
    pub pending: Mutex<Option<super::admission::Pending>>,
    /// The task closing the transport if no CONNECT comes in time; stopped at the CONNECT, so
    /// a connected idle socket holds no timer.
    pub connect_timer: Mutex<Option<tokio::task::AbortHandle>>,
}

pub type EngineSocket = Socket<Conn>;

/// An event from the client, queued in arrival order for this session's worker.
pub struct InboundEvent {
    /// Set when the packet itself cannot be taken: answered `bad_request` with this reason.
    pub refused: Option<&'static str>,
    pub name: String,
    pub payload: Option<serde_json::Value>,
    pub ack: Option<i64>,
}

/// Where a joined room's state events stand for this session: they go out in the room's
/// `state_seq` order per key, after the join's snapshot.
enum StateCursor {
    /// Joined, snapshot not read yet: (seq, key, packet) held until activation.
    Pending(Vec<(i64, String, Str)>),
    /// Everything up to `snapshot` was in the join's state; then each key's last seq sent.
    Active {
        snapshot: i64,
        keys: HashMap<String, i64>,
    },
}

impl StateCursor {
    /// Whether an event of `key` at `seq` is news (and records it as sent).
    fn admit(&mut self, key: &str, seq: i64) -> bool {
        let StateCursor::Active { snapshot, keys } = self else {
            return false;
        };
        if seq <= *snapshot || keys.get(key).is_some_and(|&last| last >= seq) {
            return false;
        }
        keys.insert(key.to_owned(), seq);
        true
    }
}

/// Where a joined room stands for this session.
enum Cursor {
    /// Joined the hub's room, history not read yet: deliveries wait here.
    Pending(Vec<Arc<Message>>),
    /// Everything up to this seq has been delivered (or was in the join's history).
    Active(i64),
}

pub struct Session {
    pub sid: String,
    /// The token's identity, as verified at connect (its `user_id` never changes).
    pub identity: Identity,
    /// What the token stands for now (a role changed since it was issued), refreshed before
    /// each event: see [`Session::who`].
    who: Mutex<Arc<Identity>>,
    socket: Arc<EngineSocket>,
    rooms: Mutex<HashMap<String, Cursor>>,
    /// Client events waiting for the worker (closed at teardown, which ends the worker).
    inbox: Inbox,
    evicted: AtomicBool,
    closed: AtomicBool,
    metrics: Arc<GatewayMetrics>,
    /// Events this socket may still send now (every event, unknown ones too).
    budget: EventBudget,
    /// Bytes queued for this socket and not yet written (WebSocket transport).
    backlog: Backlog,
    /// Sensors this socket subscribed to (empty, unallocated, for most sockets).
    sensors: Mutex<Vec<String>>,
    /// Per joined room, the order of its state events (empty, unallocated, until a join).
    states: Mutex<HashMap<String, StateCursor>>,
}

impl Session {
    pub fn new(
        sid: String,
        identity: Identity,
        socket: Arc<EngineSocket>,
        metrics: Arc<GatewayMetrics>,
        backlog: Backlog,
    ) -> Self {
        Session {
            sid,
            who: Mutex::new(Arc::new(identity.clone())),
            identity,
            socket,
            rooms: Mutex::new(HashMap::new()),
            inbox: Inbox::default(),
            evicted: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            metrics,
            budget: EventBudget::new(),
            backlog,
            sensors: Mutex::new(Vec::new()),
            states: Mutex::new(HashMap::new()),
        }
    }

    /// The caller's identity for the event being handled (role changes included).
    pub fn who(&self) -> Arc<Identity> {
        self.who.lock().clone()
    }

    /// Set by the worker before each event (and by the demotion sweep). A socket that acted
    /// as an admin and is no longer one is disconnected: rooms it joined as an admin must stop
    /// delivering (`roles.rs`); the client reconnects and its joins are checked again.
    pub fn set_who(&self, who: Identity) {
        let admin = who.admin;
        let was_admin = std::mem::replace(&mut *self.who.lock(), Arc::new(who)).admin;
        let demoted = was_admin && !admin;
        if demoted && !self.evicted.swap(true, Ordering::AcqRel) {
            tracing::info!(sid = %self.sid, user = %self.identity.user_id, "admin role taken away: socket disconnected");
            let socket = self.socket.clone();
            tokio::spawn(async move { socket.close(DisconnectReason::TransportError) });
        }
    }

    /// Queues a client event for the worker, in arrival order; true when no worker runs, so
    /// the caller starts one (`events::worker`). A client that sends faster than its events are
    /// handled fills the bounded queue; the overflow is answered `rate_limited` at once
    /// (nothing was done), so memory stays bounded and the client learns to slow down.
    #[must_use]
    pub fn queue(&self, event: InboundEvent, rate: &EventRate) -> bool {
        if let Err(retry_after_ms) = self.budget.take(rate) {
            self.metrics.events_refused.increment(1);
            if let Some(id) = event.ack {
                let e = crate::error::ApiError::rate_limited(retry_after_ms);
                let body = serde_json::json!({ "ok": false, "error": e.body() });
                self.emit(packet::ack(id, &body));
            }
            return false;
        }
        let full = match self.inbox.push(event) {
            Pushed::StartWorker => return true,
            Pushed::Queued | Pushed::Closed => return false,
            Pushed::Full(ev) => ev,
        };
        self.metrics.events_refused.increment(1);
        if let Some(id) = full.ack {
            let e = crate::error::ApiError::rate_limited(1000);
            let body = serde_json::json!({ "ok": false, "error": e.body() });
            self.emit(packet::ack(id, &body));
        }
        false
    }

    /// The worker's next event; `None`: none left, the worker stops.
    pub fn next_event(&self) -> Option<InboundEvent> {
        self.inbox.next()
    }

    /// Marks the session gone: its worker stops after the current event (what is still queued is
    /// dropped unanswered, as if lost in transit), and a join in progress undoes itself.
    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.inbox.close();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Sends one packet. A full outgoing buffer means the client cannot keep up: it is
    /// disconnected (never silently skipped) and recovers with `sync` after reconnecting.
    pub fn emit(&self, packet: impl Into<Str>) -> bool {
        if self.evicted.load(Ordering::Relaxed) {
            return false;
        }
        let packet: Str = packet.into();
        let len = packet.len() as u64;
        match self.socket.emit(packet) {
            Ok(()) => {
                if self.backlog.queued(len, &self.socket) {
                    self.metrics.slow_consumers.increment(1);
                    self.evict();
                    return false;
                }
                true
            }
            Err(TrySendError::Full(_)) => {
                self.metrics.slow_consumers.increment(1);
                self.evict();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Bytes queued for this socket and not yet written; `None` unless it is a WebSocket.
    pub fn unwritten(&self) -> Option<u64> {
        self.backlog.unwritten(&self.socket)
    }

    /// Best effort (typing, presence): a full buffer drops this event only.
    pub fn emit_volatile(&self, packet: &Str) {
        if !self.evicted.load(Ordering::Relaxed) {
            self.socket.emit(packet.clone()).ok();
        }
    }

    fn evict(&self) {
        if self.evicted.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(sid = %self.sid, user = %self.identity.user_id, "socket disconnected to resync");
        // Closing the transport (not a Socket.IO DISCONNECT) makes the official client
        // reconnect by itself. Spawned: closing re-enters the engine, and callers hold locks.
        let socket = self.socket.clone();
        tokio::spawn(async move { socket.close(DisconnectReason::TransportError) });
    }

    pub fn close(&self, reason: DisconnectReason) {
        self.socket.close(reason);
    }

    /// Marks `room` as being joined: deliveries from now on are held until [`Self::activate`].
    pub fn begin_join(&self, room: &str) {
        self.rooms
            .lock()
            .insert(room.to_owned(), Cursor::Pending(Vec::new()));
        self.states
            .lock()
            .insert(room.to_owned(), StateCursor::Pending(Vec::new()));
    }

    /// Finishes a join whose history ends at `last_seq` and whose state snapshot is current at
    /// `state_seq`: sends the ack first, then what arrived meanwhile past both, so the client
    /// sees no gap and no repeat.
    pub fn activate(&self, room: &str, last_seq: i64, state_seq: i64, ack: Option<&str>) {
        let mut rooms = self.rooms.lock();
        let mut states = self.states.lock();
        let held_states = match states.insert(
            room.to_owned(),
            StateCursor::Active {
                snapshot: state_seq,
                keys: HashMap::new(),
            },
        ) {
            Some(StateCursor::Pending(held)) => held,
            _ => Vec::new(),
        };
        let held = match rooms.insert(room.to_owned(), Cursor::Active(last_seq)) {
            Some(Cursor::Pending(held)) => held,
            _ => Vec::new(),
        };
        if let Some(ack) = ack {
            self.emit(ack.to_owned());
        }
        let mut floor = last_seq;
        for msg in held {
            if msg.seq > floor {
                self.emit(packet::event("message", &*msg));
                self.metrics.messages_out.increment(1);
                floor = msg.seq;
            }
        }
        rooms.insert(room.to_owned(), Cursor::Active(floor));
        if let Some(cursor) = states.get_mut(room) {
            let mut held_states = held_states;
            held_states.sort_by_key(|(seq, _, _)| *seq);
            for (seq, key, packet) in held_states {
                if cursor.admit(&key, seq) {
                    self.emit(packet);
                }
            }
        }
    }

    /// Delivers a room state event (the same packet text for every session of the room): held
    /// while the join is reading its snapshot; then only if newer than the snapshot and than
    /// the last event of its key sent here (an older one that arrives late across instances
    /// is dropped: the socket never sees a key's versions out of order).
    pub fn deliver_state(&self, room: &str, key: &str, seq: i64, encoded: &Str) {
        let mut states = self.states.lock();
        let admitted = match states.get_mut(room) {
            Some(StateCursor::Pending(held)) => {
                held.push((seq, key.to_owned(), encoded.clone()));
                false
            }
            Some(cursor) => cursor.admit(key, seq),
            None => false,
        };
        drop(states);
        if admitted {
            self.emit(encoded.clone());
        }
    }

    /// Drops `room`; true if it was joined.
    pub fn forget(&self, room: &str) -> bool {
        self.states.lock().remove(room);
        self.rooms.lock().remove(room).is_some()
    }

    /// Records a subscription to `sensor`; false if it was already there.
    pub fn subscribe(&self, sensor: &str) -> bool {
        let mut sensors = self.sensors.lock();
        if sensors.iter().any(|s| s == sensor) {
            return false;
        }
        sensors.push(sensor.to_owned());
        true
    }

    /// Drops a subscription; true if there was one.
    pub fn unsubscribe(&self, sensor: &str) -> bool {
        let mut sensors = self.sensors.lock();
        let before = sensors.len();
        sensors.retain(|s| s != sensor);
        sensors.len() != before
    }

    /// Every sensor subscribed to, forgetting them (at disconnect).
    pub fn take_sensors(&self) -> Vec<String> {
        std::mem::take(&mut *self.sensors.lock())
    }

    pub fn joined_rooms(&self) -> Vec<String> {
        self.rooms.lock().keys().cloned().collect()
    }

    /// The feed could not recover `room`'s messages before seq `next`: a session that had not
    /// got them all is disconnected to resync (`sync`), instead of seeing a jump.
    pub fn resync_before(&self, room: &str, next: i64) {
        let behind =
            matches!(self.rooms.lock().get(room), Some(Cursor::Active(floor)) if *floor < next - 1);
        if behind {
            self.metrics.delivery_gaps.increment(1);
            self.evict();
        }
    }

    /// Delivers committed messages of `room` (consecutive, in seq order, each with its packet
    /// text, the same for every session of the room); returns how many went out.
    pub fn deliver(&self, room: &str, msgs: &[(&Arc<Message>, Str)]) -> u64 {
        let mut rooms = self.rooms.lock();
        let floor = match rooms.get_mut(room) {
            Some(Cursor::Pending(held)) => {
                held.extend(msgs.iter().map(|(m, _)| Arc::clone(m)));
                return 0;
            }
            Some(Cursor::Active(floor)) => floor,
            None => return 0,
        };
        let mut sent = 0;
        for (msg, encoded) in msgs {
            if msg.seq <= *floor {
                continue;
            }
            if msg.seq > *floor + 1 {
                // A message this socket should have had never arrived (a commit whose
                // outcome was unknown, reported failed, then found committed). Never skip:
                // disconnect, and the client recovers the hole with `sync`.
                tracing::warn!(room = %msg.room, from = *floor, to = msg.seq, "delivery gap");
                self.metrics.delivery_gaps.increment(1);
                drop(rooms);
                self.evict();
                return sent;
            }
            *floor = msg.seq;
            if self.emit(encoded.clone()) {
                sent += 1;
            }
        }
        sent
    }
}
