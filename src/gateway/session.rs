//! One Socket.IO connection on the default namespace: who it is, which rooms it has joined and
//! up to which seq, and its outgoing side.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use engineioxide::{DisconnectReason, Socket, Str};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::metrics as m;
use super::packet;
use crate::auth::Identity;
use crate::domain::Message;

/// Per-engine-connection data: the session once the Socket.IO CONNECT succeeded.
/// Taken out again at disconnect, which breaks the session ↔ socket reference cycle.
#[derive(Default)]
pub struct Conn {
    pub session: Mutex<Option<Arc<Session>>>,
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

/// Where a joined room stands for this session.
enum Cursor {
    /// Joined the hub's room, history not read yet: deliveries wait here.
    Pending(Vec<Arc<Message>>),
    /// Everything up to this seq has been delivered (or was in the join's history).
    Active(i64),
}

pub struct Session {
    pub sid: String,
    pub identity: Identity,
    socket: Arc<EngineSocket>,
    rooms: Mutex<HashMap<String, Cursor>>,
    /// Taken at teardown, which ends the session's worker (it holds the receiver).
    inbox: Mutex<Option<mpsc::UnboundedSender<InboundEvent>>>,
    evicted: AtomicBool,
    closed: AtomicBool,
}

impl Session {
    pub fn new(
        sid: String,
        identity: Identity,
        socket: Arc<EngineSocket>,
        inbox: mpsc::UnboundedSender<InboundEvent>,
    ) -> Self {
        Session {
            sid,
            identity,
            socket,
            rooms: Mutex::new(HashMap::new()),
            inbox: Mutex::new(Some(inbox)),
            evicted: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues a client event for the worker, in arrival order.
    pub fn queue(&self, event: InboundEvent) {
        if let Some(tx) = self.inbox.lock().as_ref() {
            tx.send(event).ok();
        }
    }

    /// Marks the session gone: its worker stops after the current event, and a join still in
    /// progress undoes itself (see `events::join`).
    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.inbox.lock().take();
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
        match self.socket.emit(packet) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.evict();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
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
        m::slow_consumer_disconnects().increment(1);
        tracing::info!(sid = %self.sid, user = %self.identity.user_id, "slow consumer disconnected");
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
    }

    /// Finishes a join whose history ends at `last_seq`: sends the ack first, then what arrived
    /// meanwhile with a seq past the history, so the client sees no gap and no repeat.
    pub fn activate(&self, room: &str, last_seq: i64, ack: Option<&str>) {
        let mut rooms = self.rooms.lock();
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
                m::events_out("message").increment(1);
                floor = msg.seq;
            }
        }
        rooms.insert(room.to_owned(), Cursor::Active(floor));
    }

    /// Drops `room`; true if it was joined.
    pub fn forget(&self, room: &str) -> bool {
        self.rooms.lock().remove(room).is_some()
    }

    pub fn joined_rooms(&self) -> Vec<String> {
        self.rooms.lock().keys().cloned().collect()
    }

    /// Delivers a committed message (the same packet text for every session of the room).
    pub fn deliver(&self, msg: &Arc<Message>, encoded: &Str) {
        let mut rooms = self.rooms.lock();
        match rooms.get_mut(&msg.room) {
            Some(Cursor::Pending(held)) => held.push(msg.clone()),
            Some(Cursor::Active(floor)) if msg.seq > *floor => {
                if msg.seq > *floor + 1 {
                    tracing::warn!(room = %msg.room, from = *floor, to = msg.seq, "delivery gap");
                }
                *floor = msg.seq;
                if self.emit(encoded.clone()) {
                    m::events_out("message").increment(1);
                }
            }
            _ => {}
        }
    }
}
