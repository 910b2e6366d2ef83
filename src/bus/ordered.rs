//! The ordered feed: what this instance's sockets are handed, built on the raw bus.
//!
//! The raw [`Bus`] is a notification path (Redis pub/sub is at most once, and two instances
//! writing one room interleave). The feed keeps the guarantee subscribers rely on: for every
//! room it watches, `Message` events come out in seq order with no gap, starting right after the
//! position the room was started at; a hole that does not close within [`GAP_WAIT`] is filled
//! from the store, and one that cannot be filled for [`GIVE_UP_AFTER`] is skipped and declared
//! with a [`FeedEvent::Resync`] just before the messages past it. Room state events come out in
//! each room's `state_seq` order (`state_order.rs`). Typing, presence and sensor readings pass
//! through unordered; cache invalidations are not for sockets and are dropped.
//!
//! No task of its own: the one consumer pulls with [`RoomFeed::recv`], which reads the bus, puts
//! messages in order and hands back what is ready, so ordering costs no extra hand-off.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use super::order::RoomOrder;
use super::state_order::StateOrder;
use super::{Bus, BusEvent};
use crate::domain::{Message, RoomId};
use crate::store::{HistoryQuery, ReadFrom, Store, StoreError};
use crate::telemetry::Telemetry;

/// How long a hole may stay open before the store is asked for the missing messages (they are
/// usually on their way through Redis from the instance that committed them).
pub const GAP_WAIT: Duration = Duration::from_millis(100);

/// How long the store may fail to fill a hole before the feed skips it.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(5);

/// What a subscriber is handed, in the order it must act on it.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEvent {
    /// The next message of a watched room.
    Message(Arc<Message>),
    /// Messages of `room` before seq `next` could not be recovered: whoever holds the room
    /// short of `next - 1` must resync (`sync`) before trusting what follows.
    Resync {
        room: String,
        next: i64,
    },
    Typing {
        room: String,
        user_id: String,
    },
    Presence {
        room: String,
        user_id: String,
        online: bool,
        origin: String,
    },
    /// A room state write; sessions order them by `seq` (see `gateway/session.rs`).
    State {
        seq: i64,
        state: Arc<crate::domain::State>,
    },
    /// Sensor readings just accepted (best effort, like typing: live views, not history).
    Readings {
        sensor: String,
        readings: Arc<Vec<crate::domain::Reading>>,
    },
}

/// Where missing messages are read from.
#[async_trait]
pub trait HistorySource: Send + Sync + 'static {
    /// The stored messages of `room` with `from <= seq < to`, ascending (at most 500).
    async fn range(&self, room: &str, from: i64, to: i64) -> Result<Vec<Message>, StoreError>;
}

/// The store as a history source: always the primary, which holds every commit.
pub struct StoreHistory(pub Arc<dyn Store>);

#[async_trait]
impl HistorySource for StoreHistory {
    async fn range(&self, room: &str, from: i64, to: i64) -> Result<Vec<Message>, StoreError> {
        let Ok(id) = RoomId::parse(room) else {
            return Ok(Vec::new());
        };
        let q = HistoryQuery {
            after_seq: Some(from - 1),
            before_seq: Some(to),
            limit: (to - from).clamp(1, 500) as u32,
        };
        Ok(self.0.history(&id, q, ReadFrom::Primary).await?.items)
    }
}

#[derive(Default)]
struct State {
    /// Watched rooms and their order.
    rooms: HashMap<String, RoomOrder>,
    /// Released, not yet handed to the consumer; pushed under this lock, so in release order.
    ready: VecDeque<FeedEvent>,
    /// Rooms whose hole a fill task is working on.
    filling: HashSet<String>,
    /// Watched rooms' state events, in `state_seq` order.
    states: HashMap<String, StateOrder>,
    /// Rooms whose state hole a timer is waiting on.
    state_waiting: HashSet<String>,
}

pub struct RoomFeed {
    state: Mutex<State>,
    /// Wakes the consumer when something was released outside `recv` (a start, a fill).
    released: Notify,
    bus_events: tokio::sync::Mutex<mpsc::UnboundedReceiver<BusEvent>>,
    /// Told which rooms are watched (a sharded transport subscribes to their shards only).
    bus: Arc<dyn Bus>,
    history: Arc<dyn HistorySource>,
    telemetry: Telemetry,
    me: Weak<RoomFeed>,
}

impl RoomFeed {
    /// Subscribes to `bus`; holes are filled from `history`.
    pub fn new(
        bus: Arc<dyn Bus>,
        history: Arc<dyn HistorySource>,
        telemetry: Telemetry,
    ) -> Arc<Self> {
        let events = bus.subscribe();
        Arc::new_cyclic(|me| RoomFeed {
            state: Mutex::default(),
            released: Notify::new(),
            bus_events: tokio::sync::Mutex::new(events),
            bus,
            history,
            telemetry,
            me: me.clone(),
        })
    }

    /// Local interest in `room` begins: its messages are held until [`Self::start_at`], and
    /// the bus starts receiving the room (see [`Self::subscribed`]).
    pub fn watch(&self, room: &str) {
        let mut st = self.state.lock();
        st.rooms.entry(room.to_owned()).or_default();
        st.states.entry(room.to_owned()).or_default();
        self.bus.watch_room(room);
    }

    /// No local interest any more: the room's order is forgotten (it restarts at the next join).
    pub fn unwatch(&self, room: &str) {
        let mut st = self.state.lock();
        st.rooms.remove(room);
        st.states.remove(room);
        self.bus.unwatch_room(room);
    }

    /// Resolves once the bus delivers what is published in a watched `room` from now on.
    ///
    /// Why a join awaits this before reading history (the no-window argument): a message is
    /// published only after its commit. Once the subscription is confirmed, every message
    /// published later reaches this feed and is held (the room is watched) until
    /// [`Self::start_at`]; a message committed before the history read is in that history.
    /// Every message is in one or the other (in both: `start_at` drops the duplicates), so
    /// reading history after this resolves leaves no window, whichever socket is first.
    pub fn subscribed(&self, room: &str) -> futures::future::BoxFuture<'static, ()> {
        self.bus.room_subscribed(room)
    }

    /// A join read `room`'s state at `seq`: its state events are ordered from there, unless
    /// that already runs.
    pub fn start_state_at(&self, room: &str, seq: i64) {
        let mut st = self.state.lock();
        let Some(order) = st.states.get_mut(room) else {
            return;
        };
        let ready = order.start_at(seq);
        let hole = order.has_hole();
        let released = !ready.is_empty();
        st.ready.extend(
            ready
                .into_iter()
                .map(|(seq, state)| FeedEvent::State { seq, state }),
        );
        if hole {
            self.skip_state_hole_later(&mut st, room);
        }
        drop(st);
        if released {
            self.released.notify_one();
        }
    }

    fn accept_state(&self, seq: i64, state: Arc<crate::domain::State>) {
        let mut st = self.state.lock();
        let room = state.room.clone();
        let Some(order) = st.states.get_mut(&room) else {
            return; // no socket here is in this room
        };
        let ready = order.accept(seq, state);
        let hole = order.has_hole();
        st.ready.extend(
            ready
                .into_iter()
                .map(|(seq, state)| FeedEvent::State { seq, state }),
        );
        if hole {
            self.skip_state_hole_later(&mut st, &room);
        }
    }

    /// A later state write came before an earlier one (two instances publishing at once): wait
    /// [`GAP_WAIT`] for it, then release what waits behind the hole.
    fn skip_state_hole_later(&self, st: &mut State, room: &str) {
        if !st.state_waiting.insert(room.to_owned()) {
            return;
        }
        let Some(feed) = self.me.upgrade() else {
            return;
        };
        let room = room.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(GAP_WAIT).await;
            let mut st = feed.state.lock();
            st.state_waiting.remove(&room);
            let Some(order) = st.states.get_mut(&room) else {
                return;
            };
            if !order.has_hole() {
                return;
            }
            let ready = order.skip_hole();
            st.ready.extend(
                ready
                    .into_iter()
                    .map(|(seq, state)| FeedEvent::State { seq, state }),
            );
            drop(st);
            feed.released.notify_one();
        });
    }

    /// A join read `room` up to `last_seq`: ordering starts there unless it already runs.
    pub fn start_at(&self, room: &str, last_seq: i64) {
        let mut st = self.state.lock();
        let Some(order) = st.rooms.get_mut(room) else {
            return; // nobody here watches it any more
        };
        let ready = order.start_at(last_seq);
        let gap = order.gap().is_some();
        let released = !ready.is_empty();
        st.ready.extend(ready.into_iter().map(FeedEvent::Message));
        if gap {
            self.fill_later(&mut st, room);
        }
        drop(st);
        if released {
            self.released.notify_one();
        }
    }

    /// The next event, in order; `None` once the bus has closed. One consumer only.
    pub async fn recv(&self) -> Option<FeedEvent> {
        let mut one = Vec::with_capacity(1);
        self.recv_many(&mut one, 1).await;
        one.pop()
    }

    /// Waits for the next event, then appends it and whatever else is ready at once (up to
    /// `max` in all) to `out`, in order; 0 once the bus has closed. Taking a commit's messages
    /// together lets the consumer hand each socket all of them at once, which its writer then
    /// sends in one write. One consumer only.
    pub async fn recv_many(&self, out: &mut Vec<FeedEvent>, max: usize) -> usize {
        let start = out.len();
        let mut events = self.bus_events.lock().await;
        loop {
            self.take_ready(out, start + max);
            // what the bus already holds, without waiting
            while out.len() < start + max {
                match events.try_recv() {
                    Ok(ev) => {
                        self.accept(ev);
                        self.take_ready(out, start + max);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return out.len() - start,
                }
            }
            if out.len() > start {
                return out.len() - start;
            }
            tokio::select! {
                biased;
                _ = self.released.notified() => {}
                ev = events.recv() => match ev {
                    Some(ev) => self.accept(ev),
                    None => return 0,
                },
            }
        }
    }

    /// Moves released events to `out` until it holds `limit`.
    fn take_ready(&self, out: &mut Vec<FeedEvent>, limit: usize) {
        let mut st = self.state.lock();
        let n = st.ready.len().min(limit.saturating_sub(out.len()));
        out.extend(st.ready.drain(..n));
    }

    fn accept(&self, event: BusEvent) {
        let passed = match event {
            BusEvent::Message(msg) => return self.accept_message(msg),
            BusEvent::Typing { room, user_id } => FeedEvent::Typing { room, user_id },
            BusEvent::Presence {
                room,
                user_id,
                online,
                origin,
            } => FeedEvent::Presence {
                room,
                user_id,
                online,
                origin,
            },
            BusEvent::Readings { sensor, readings } => FeedEvent::Readings { sensor, readings },
            BusEvent::State { seq, state } => return self.accept_state(seq, state),
            BusEvent::Invalidate { .. } | BusEvent::InvalidateAll => return,
        };
        self.state.lock().ready.push_back(passed);
    }

    fn accept_message(&self, msg: Arc<Message>) {
        let mut st = self.state.lock();
        let room = msg.room.clone();
        let Some(order) = st.rooms.get_mut(&room) else {
            return; // no socket here reads this room
        };
        let ready = order.accept(msg);
        let gap = order.gap().is_some();
        st.ready.extend(ready.into_iter().map(FeedEvent::Message));
        if gap {
            self.fill_later(&mut st, &room);
        }
    }

    fn fill_later(&self, st: &mut State, room: &str) {
        if !st.filling.insert(room.to_owned()) {
            return;
        }
        let Some(feed) = self.me.upgrade() else {
            return;
        };
        let room = room.to_owned();
        tokio::spawn(async move {
            feed.fill(&room).await;
            feed.state.lock().filling.remove(&room);
        });
    }

    /// Fills `room`'s hole from the store once it has stayed open for `GAP_WAIT`; if the store
    /// cannot answer for `GIVE_UP_AFTER`, skips it and declares a resync.
    async fn fill(&self, room: &str) {
        let attempts = (GIVE_UP_AFTER.as_millis() / GAP_WAIT.as_millis()).max(1);
        for _ in 0..attempts {
            tokio::time::sleep(GAP_WAIT).await;
            let gap = self.state.lock().rooms.get(room).and_then(RoomOrder::gap);
            let Some((from, to)) = gap else { return };
            match self.history.range(room, from, to).await {
                Ok(found) => {
                    // messages read from the store because they had not come through the bus in time
                    self.telemetry.record(|| {
                        metrics::counter!("tsunagi_delivery_gap_fills_total")
                            .increment(found.len() as u64)
                    });
                    for msg in found {
                        self.accept_message(Arc::new(msg));
                    }
                    self.released.notify_one();
                }
                Err(e) => tracing::warn!(room, error = %e, "could not fill a delivery gap yet"),
            }
        }
        let mut st = self.state.lock();
        let Some(order) = st.rooms.get_mut(room) else {
            return;
        };
        let Some((_, next)) = order.gap() else { return };
        let ready = order.skip_gap();
        st.ready.push_back(FeedEvent::Resync {
            room: room.to_owned(),
            next,
        });
        st.ready.extend(ready.into_iter().map(FeedEvent::Message));
        drop(st);
        self.released.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::local::LocalBus;
    use crate::bus::order::tests::message as msg;

    /// A store that holds `stored`, or fails every read when `down`.
    struct Fake {
        stored: Vec<Message>,
        down: bool,
    }

    #[async_trait]
    impl HistorySource for Fake {
        async fn range(&self, _: &str, from: i64, to: i64) -> Result<Vec<Message>, StoreError> {
            if self.down {
                return Err(StoreError::Unavailable("down".into()));
            }
            Ok(self
                .stored
                .iter()
                .filter(|m| (from..to).contains(&m.seq))
                .cloned()
                .collect())
        }
    }

    fn seq_of(ev: Option<FeedEvent>) -> i64 {
        match ev {
            Some(FeedEvent::Message(m)) => m.seq,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn feed(stored: Vec<Message>, down: bool) -> (Arc<LocalBus>, Arc<RoomFeed>) {
        let bus = Arc::new(LocalBus::default());
        let feed = RoomFeed::new(
            bus.clone(),
            Arc::new(Fake { stored, down }),
            Telemetry::detached(),
        );
        (bus, feed)
    }

    #[tokio::test(start_paused = true)]
    async fn a_hole_is_filled_from_the_store_after_the_gap_wait() {
        let (bus, feed) = feed((1..=3).map(msg).collect(), false);
        feed.watch("r");
        feed.start_at("r", 0);
        bus.publish(BusEvent::Message(Arc::new(msg(1))));
        bus.publish(BusEvent::Message(Arc::new(msg(3)))); // 2 was lost on the way
        assert_eq!(seq_of(feed.recv().await), 1);
        let started = tokio::time::Instant::now();
        assert_eq!(seq_of(feed.recv().await), 2);
        assert!(started.elapsed() >= GAP_WAIT, "filled before the wait");
        assert_eq!(seq_of(feed.recv().await), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfillable_hole_is_declared_then_skipped() {
        let (bus, feed) = feed(Vec::new(), true);
        feed.watch("r");
        feed.start_at("r", 4);
        bus.publish(BusEvent::Message(Arc::new(msg(7))));
        let started = tokio::time::Instant::now();
        let ev = feed.recv().await;
        assert_eq!(
            ev,
            Some(FeedEvent::Resync {
                room: "r".into(),
                next: 7
            })
        );
        assert!(started.elapsed() >= GIVE_UP_AFTER);
        assert_eq!(seq_of(feed.recv().await), 7);
        bus.publish(BusEvent::Message(Arc::new(msg(8))));
        assert_eq!(seq_of(feed.recv().await), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn recv_many_takes_what_is_ready_in_order_up_to_max() {
        let (bus, feed) = feed(Vec::new(), false);
        feed.watch("r");
        feed.start_at("r", 0);
        for seq in 1..=5 {
            bus.publish(BusEvent::Message(Arc::new(msg(seq))));
        }
        let mut out = Vec::new();
        assert_eq!(feed.recv_many(&mut out, 3).await, 3);
        assert_eq!(feed.recv_many(&mut out, 3).await, 2);
        let seqs: Vec<i64> = out.into_iter().map(|e| seq_of(Some(e))).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        // nothing ready: it waits for the next event instead of returning empty
        let mut none = Vec::new();
        let pending = tokio::time::timeout(Duration::from_secs(1), feed.recv_many(&mut none, 8));
        assert!(pending.await.is_err(), "returned with nothing ready");
    }

    #[tokio::test(start_paused = true)]
    async fn messages_wait_for_the_start_and_unwatched_rooms_are_dropped() {
        let (bus, feed) = feed(Vec::new(), false);
        bus.publish(BusEvent::Message(Arc::new(msg(1)))); // not watched: dropped
        feed.watch("r");
        bus.publish(BusEvent::Message(Arc::new(msg(2))));
        bus.publish(BusEvent::Message(Arc::new(msg(3))));
        bus.publish(BusEvent::Typing {
            room: "r".into(),
            user_id: "u".into(),
        });
        // typing passes at once; the messages wait for the join's position
        assert!(matches!(feed.recv().await, Some(FeedEvent::Typing { .. })));
        feed.start_at("r", 2);
        assert_eq!(seq_of(feed.recv().await), 3);
        feed.unwatch("r");
        bus.publish(BusEvent::Message(Arc::new(msg(4))));
        let pending = tokio::time::timeout(Duration::from_secs(1), feed.recv()).await;
        assert!(pending.is_err(), "an unwatched room's message came out");
    }
}
