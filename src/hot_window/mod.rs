//! The hot window: the newest messages of recently read rooms, in memory, so that a `join`'s
//! history and a `sync` of recent history are answered without a database read (PROTOCOL.md
//! §6.3's hybrid read path: memory for the hot tail, the store for the rest).
//!
//! A room's window is started by a store read (the caller asks [`HotWindow::begin_fill`] before
//! it reads, and hands the page to [`HotWindow::fill`]); from then on every committed message of
//! the room is appended in seq order. What it is fed from depends on where commits are seen:
//! - [`Source::Committer`] (one instance, no Redis): this process's committer is the only
//!   writer, and appends each message after its commit and before anyone is answered, so the
//!   window always ends at the room's last acknowledged seq and is answered as it is.
//! - [`Source::Feed`] (several instances): the room's ordered feed (`bus::ordered`), while this
//!   instance watches the room; the window may trail the primary by the feed's delay, so each
//!   read first asks the primary for the room's last seq and is answered only if the window
//!   reaches it.
//!
//! Invalidation: a message that does not follow the window's last one (a hole), a feed's
//! resync, and (feed) the end of the watch drop the room's window. Rooms are never deleted and
//! messages never edited; archiving moves old messages unchanged, so none of them changes what a
//! window holds. The window holds plaintext in memory only; it is never written anywhere.
//!
//! Bounds: at most `max_messages` per room, and `max_bytes` in all (estimated, see
//! [`room::charge`]); past the budget the least recently read rooms are dropped.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::domain::Message;
use crate::room_lru::{Charged, RoomLru};
use crate::telemetry::Telemetry;
use room::{Page, RoomWindow};

pub mod room;

/// Where the window learns of commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This process commits every message (no other instance exists).
    Committer,
    /// The ordered feed of the rooms this instance watches (Redis: other instances commit too).
    Feed,
}

/// Which read asked (the metric's label).
#[derive(Debug, Clone, Copy)]
pub enum Read {
    Join,
    Sync,
}

/// A store read that may start or widen a room's window, taken before the read.
pub struct Fill {
    room: String,
    generation: u64,
}

impl Charged for RoomWindow {
    fn charge(&self) -> usize {
        self.bytes()
    }
}

#[derive(Default)]
struct Inner {
    rooms: RoomLru<RoomWindow>,
    /// Fed by the feed: the rooms this instance watches (only their windows stay current).
    watched: HashSet<String>,
}

/// Counted without the recorder on the hot path; published when metrics are rendered.
#[derive(Default)]
struct Counts {
    hits: [AtomicU64; 2],
    misses: [AtomicU64; 2],
    evictions: AtomicU64,
    invalidations: AtomicU64,
}

pub struct HotWindow {
    source: Source,
    max_messages: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
    counts: Counts,
    telemetry: Telemetry,
}

/// What a window answered: the page (ascending) and whether more exist in its direction.
pub type Answer = (Vec<Message>, bool);

impl HotWindow {
    /// `max_messages` or `max_bytes` 0: the window is off (every read goes to the store).
    pub fn new(
        source: Source,
        max_messages: usize,
        max_bytes: usize,
        telemetry: Telemetry,
    ) -> Self {
        HotWindow {
            source,
            max_messages,
            max_bytes,
            inner: Mutex::default(),
            counts: Counts::default(),
            telemetry,
        }
    }

    fn enabled(&self) -> bool {
        self.max_messages > 0 && self.max_bytes > 0
    }

    /// Whether an answer must first be checked against the room's last seq on the primary.
    pub fn needs_last_seq(&self) -> bool {
        self.source == Source::Feed
    }

    /// Whether `room` has a window that may answer (worth asking the primary's last seq for).
    pub fn holds(&self, room: &str) -> bool {
        self.inner
            .lock()
            .rooms
            .get(room)
            .is_some_and(RoomWindow::is_ready)
    }

    /// The committer committed `m` (called in each room's seq order, before the sender is
    /// answered).
    pub fn committed(&self, m: &Arc<Message>) {
        if self.source == Source::Committer {
            self.append(m);
        }
    }

    /// The ordered feed released `m` to this instance's sockets.
    pub fn released(&self, m: &Arc<Message>) {
        if self.source == Source::Feed {
            self.append(m);
        }
    }

    /// The feed skipped messages of `room` it could not recover.
    pub fn resync(&self, room: &str) {
        self.drop_room(room);
    }

    /// This instance starts watching `room`'s feed: a window may be started from now on.
    pub fn watch(&self, room: &str) {
        if self.source == Source::Feed {
            self.inner.lock().watched.insert(room.to_owned());
        }
    }

    /// This instance no longer watches `room`: its window would fall behind unseen.
    pub fn unwatch(&self, room: &str) {
        if self.source == Source::Feed {
            let mut inner = self.inner.lock();
            inner.watched.remove(room);
            inner.rooms.remove(room);
        }
    }

    fn append(&self, m: &Arc<Message>) {
        let mut inner = self.inner.lock();
        let Some(pushed) = inner
            .rooms
            .update(&m.room, |w| w.push(m, self.max_messages))
        else {
            return; // nobody read the room lately
        };
        match pushed {
            Ok(()) => self.evict(&mut inner),
            Err(room::Hole) => {
                drop(inner);
                self.drop_room(&m.room);
            }
        }
    }

    fn drop_room(&self, room: &str) {
        if self.inner.lock().rooms.remove(room) {
            self.counts.invalidations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops the least recently read rooms until the total fits the budget.
    fn evict(&self, inner: &mut Inner) {
        let dropped = inner.rooms.evict(self.max_bytes);
        self.counts.evictions.fetch_add(dropped, Ordering::Relaxed);
    }

    /// Before a store read of `room` whose page may start or widen its window. `None`: the
    /// page will not be kept (the window is off, or, fed by the feed, the room is not watched).
    pub fn begin_fill(&self, room: &str) -> Option<Fill> {
        if !self.enabled() {
            return None;
        }
        let mut inner = self.inner.lock();
        let generation = match inner.rooms.generation(room) {
            Some(generation) => generation,
            // the slot exists from before the read: what arrives during it is kept
            None if self.source == Source::Committer || inner.watched.contains(room) => {
                inner.rooms.start(room, RoomWindow::default())
            }
            None => return None,
        };
        Some(Fill {
            room: room.to_owned(),
            generation,
        })
    }

    /// The page read after [`Self::begin_fill`]; `end`: the room's last seq as of the read
    /// when the page reaches it (`None`: it may not).
    pub fn fill(&self, fill: Fill, items: &[Message], end: Option<i64>) {
        let mut inner = self.inner.lock();
        let page = Page { items, end };
        let Some(filled) = inner.rooms.update_at(&fill.room, fill.generation, |w| {
            w.fill(page, self.max_messages)
        }) else {
            return; // gone, or dropped and started again meanwhile: this read may predate that
        };
        inner.rooms.touch(&fill.room);
        match filled {
            Ok(()) => self.evict(&mut inner),
            Err(room::Hole) => {
                drop(inner);
                self.drop_room(&fill.room);
            }
        }
    }

    /// The newest `limit` messages of `room`, if its window holds them (and, fed by the feed,
    /// reaches `last_seq`, the room's last seq on the primary).
    pub fn newest(&self, room: &str, limit: u32, last_seq: Option<i64>) -> Option<Answer> {
        self.answer(Read::Join, room, last_seq, |w| w.newest(limit as usize))
    }

    /// The first `limit` messages of `room` after `since`, if its window holds them.
    pub fn after(
        &self,
        room: &str,
        since: i64,
        limit: u32,
        last_seq: Option<i64>,
    ) -> Option<Answer> {
        self.answer(Read::Sync, room, last_seq, |w| {
            w.after(since, limit as usize)
        })
    }

    fn answer(
        &self,
        read: Read,
        room: &str,
        last_seq: Option<i64>,
        f: impl FnOnce(&RoomWindow) -> Option<Answer>,
    ) -> Option<Answer> {
        if !self.enabled() {
            return None;
        }
        let found = {
            let mut inner = self.inner.lock();
            let found = inner.rooms.get(room).and_then(|window| {
                let fresh = match last_seq {
                    Some(seq) => window.last().is_some_and(|last| last >= seq),
                    None => true,
                };
                if fresh { f(window) } else { None }
            });
            if found.is_some() {
                inner.rooms.touch(room);
            }
            found
        };
        let counts = if found.is_some() {
            &self.counts.hits
        } else {
            &self.counts.misses
        };
        counts[read as usize].fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Publishes the counts and sizes (called when metrics are rendered).
    pub fn report(&self) {
        let (rooms, bytes) = {
            let inner = self.inner.lock();
            (inner.rooms.len(), inner.rooms.bytes())
        };
        let c = &self.counts;
        self.telemetry.record(|| {
            for (read, label) in [(Read::Join, "join"), (Read::Sync, "sync")] {
                let i = read as usize;
                metrics::counter!("tsunagi_hot_window_reads_total", "read" => label, "result" => "hit")
                    .absolute(c.hits[i].load(Ordering::Relaxed));
                metrics::counter!("tsunagi_hot_window_reads_total", "read" => label, "result" => "miss")
                    .absolute(c.misses[i].load(Ordering::Relaxed));
            }
            metrics::counter!("tsunagi_hot_window_evictions_total")
                .absolute(c.evictions.load(Ordering::Relaxed));
            metrics::counter!("tsunagi_hot_window_invalidations_total")
                .absolute(c.invalidations.load(Ordering::Relaxed));
            metrics::gauge!("tsunagi_hot_window_rooms").set(rooms as f64);
            metrics::gauge!("tsunagi_hot_window_bytes").set(bytes as f64);
        });
    }
}

#[cfg(test)]
mod tests;
