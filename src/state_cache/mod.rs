//! The state cache: every key of recently read rooms' shared state (PROTOCOL.md §6.2), in
//! memory, so that a `join`'s `state` and a `state_get` are answered without a database read
//! (the state half of the guide's hybrid read path; the hot window is the history half).
//!
//! Only on one instance (no Redis): this process makes every state write, so it can keep a
//! room's snapshot current by applying its own writes in the room's `state_seq` order. With
//! several instances another process may write at any time, and the cache is off.
//!
//! A room's snapshot is started by a store read (the caller asks [`StateCache::begin_fill`]
//! before it reads, and hands the snapshot to [`StateCache::fill`]). Every write is announced
//! before it reaches the store ([`StateCache::begin_write`]) and settled once its outcome is
//! known ([`Write::done`], [`Write::unchanged`]); writes that finish out of order are held until
//! the seqs before them arrive. A snapshot answers only while nothing is held, so a writer that
//! has its answer always reads its own write.
//!
//! A write whose outcome is lost (an error or a timeout, or its request went away mid-write)
//! makes the room **uncertain**: it may still commit after that (a `COMMIT` already sent is not
//! recalled by dropping the future), so a read made meanwhile could be older than the database
//! about to be. An uncertain room is neither kept nor filled until the next write of the room
//! commits: writes of a room serialise on its row (`state_seq`), so by then the lost one has
//! committed or never will. A conflict or a delete of nothing that shows a newer state than the
//! snapshot (a write committed, not settled yet) drops the snapshot; the next read fills it.
//!
//! Bounds: `max_bytes` in all (estimated, see [`charge`]); past it the least recently read
//! rooms are dropped.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::domain::State;
use crate::room_lru::{Charged, RoomLru};
use crate::telemetry::Telemetry;

#[cfg(test)]
mod tests;

/// Writes finished ahead of an earlier one that a room may hold before its snapshot is dropped
/// (only reached if thousands of writes of one room are in flight at once).
const MAX_HELD: usize = 1024;

/// Uncertain rooms (lost outcomes not followed by a write yet) kept; past it the cache turns
/// itself off (each entry waits for a write that may never come; reads then go to the store).
const MAX_UNCERTAIN: usize = 4096;

/// The bytes a kept STATE is charged: its strings, its value as JSON and its fixed part. An
/// estimate of heap use (the budget bounds memory; it is not an allocator count).
pub fn charge(s: &State) -> usize {
    std::mem::size_of::<State>()
        + s.room.len()
        + 2 * s.key.len() // in the state and as the map's key
        + s.updated_by.len()
        + s.updated_at.len()
        + serde_json::to_vec(&s.value).map_or(0, |v| v.len())
}

/// The bytes a room's slot is charged before it holds anything (so that rooms without state
/// count against the budget too).
pub fn slot_charge(room: &str) -> usize {
    std::mem::size_of::<Slot>() + room.len()
}

/// A store read that may start a room's snapshot, taken before the read.
pub struct Fill {
    room: String,
    generation: u64,
}

/// A state write under way; settle it with [`Write::done`] or [`Write::unchanged`]. Dropped
/// unsettled, it drops the room's snapshot.
pub struct Write<'a> {
    cache: &'a StateCache,
    room: String,
    settled: bool,
}

impl Write<'_> {
    /// The write committed: `state` (a deletion: value null) at the room's `seq`.
    pub fn done(mut self, state: &State, seq: i64) {
        self.settled = true;
        if self.cache.enabled() {
            self.cache.apply(&self.room, seq, state);
        }
    }

    /// The write changed nothing (a version conflict, a delete of nothing); `current` is what
    /// the store showed of `key` (its STATE, or `None`: the key does not exist).
    pub fn unchanged(mut self, key: &str, current: Option<&State>) {
        self.settled = true;
        if self.cache.enabled() {
            self.cache.check(&self.room, key, current);
        }
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        if !self.settled && self.cache.enabled() {
            self.cache.lost(&self.room);
        }
    }
}

#[derive(Default)]
struct Snapshot {
    /// Every key of the room that exists, by key.
    keys: BTreeMap<String, State>,
    /// The room's `state_seq` the keys are current at.
    seq: i64,
}

#[derive(Default)]
struct Slot {
    /// None until the first read came back.
    snapshot: Option<Snapshot>,
    /// Writes that finished ahead of an earlier seq (or before the first read came back).
    held: BTreeMap<i64, State>,
    /// The room's charge: its id, the snapshot's and the held writes' STATEs.
    bytes: usize,
}

impl Charged for Slot {
    fn charge(&self) -> usize {
        self.bytes
    }
}

impl Slot {
    /// Applies held writes that follow the snapshot; drops those it already reflects.
    fn catch_up(&mut self) {
        let Some(snap) = self.snapshot.as_mut() else {
            return;
        };
        while let Some(entry) = self.held.first_entry() {
            let seq = *entry.key();
            if seq > snap.seq + 1 {
                break;
            }
            let state = entry.remove();
            self.bytes -= charge(&state);
            if seq == snap.seq + 1 {
                snap.seq = seq;
                if let Some(old) = snap.keys.remove(&state.key) {
                    self.bytes -= charge(&old);
                }
                if !state.value.is_null() {
                    self.bytes += charge(&state);
                    snap.keys.insert(state.key.clone(), state);
                }
            }
        }
    }

    /// The snapshot, if it may answer (nothing held: no acknowledged write is missing).
    fn answer(&self) -> Option<(Vec<State>, i64)> {
        let snap = self.snapshot.as_ref().filter(|_| self.held.is_empty())?;
        Some((snap.keys.values().cloned().collect(), snap.seq))
    }
}

#[derive(Default)]
struct Inner {
    rooms: RoomLru<Slot>,
    /// Rooms with a lost write outcome and no write committed since: not cached (module doc).
    /// Outside the LRU: an eviction must not forget one.
    uncertain: HashSet<String>,
}

/// Counted without the recorder on the hot path; published when metrics are rendered.
#[derive(Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
}

pub struct StateCache {
    /// Off with several writers, a budget of 0, or too many uncertain rooms.
    enabled: AtomicBool,
    max_bytes: usize,
    inner: Mutex<Inner>,
    counts: Counts,
    telemetry: Telemetry,
}

impl StateCache {
    /// `only_writer`: this process makes every state write (one instance); otherwise, or with
    /// `max_bytes` 0, the cache is off and every read goes to the store.
    pub fn new(only_writer: bool, max_bytes: usize, telemetry: Telemetry) -> Self {
        StateCache {
            enabled: AtomicBool::new(only_writer && max_bytes > 0),
            max_bytes,
            inner: Mutex::default(),
            counts: Counts::default(),
            telemetry,
        }
    }

    fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Before a write of `room` reaches the store.
    pub fn begin_write(&self, room: &str) -> Write<'_> {
        Write {
            cache: self,
            room: room.to_owned(),
            // nothing to keep current when off
            settled: !self.enabled(),
        }
    }

    fn apply(&self, room: &str, seq: i64, state: &State) {
        let mut inner = self.inner.lock();
        if inner.uncertain.remove(room) {
            // this commit came after the lost write's end: the room may be read and kept again
            return;
        }
        let held = inner.rooms.update(room, |slot| {
            if slot.snapshot.as_ref().is_some_and(|s| seq <= s.seq) {
                return 0; // the snapshot was read after this write
            }
            slot.bytes += charge(state);
            slot.held.insert(seq, state.clone());
            slot.catch_up();
            slot.held.len()
        });
        if held.is_some_and(|n| n > MAX_HELD) {
            drop(inner);
            self.drop_room(room);
            return;
        }
        self.evict(&mut inner);
    }

    /// Drops the least recently read rooms until the total fits the budget.
    fn evict(&self, inner: &mut Inner) {
        let dropped = inner.rooms.evict(self.max_bytes);
        self.counts.evictions.fetch_add(dropped, Ordering::Relaxed);
    }

    fn drop_room(&self, room: &str) {
        Self::drop_slot(&mut self.inner.lock(), room, &self.counts);
    }

    fn drop_slot(inner: &mut Inner, room: &str, counts: &Counts) {
        if inner.rooms.remove(room) {
            counts.invalidations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A write of `room` whose outcome is lost: the room is uncertain (module doc).
    fn lost(&self, room: &str) {
        let mut inner = self.inner.lock();
        Self::drop_slot(&mut inner, room, &self.counts);
        inner.uncertain.insert(room.to_owned());
        if inner.uncertain.len() > MAX_UNCERTAIN {
            self.enabled.store(false, Ordering::Relaxed);
            *inner = Inner::default();
            tracing::warn!(
                rooms = MAX_UNCERTAIN,
                "state cache turned off: too many rooms with lost write outcomes"
            );
        }
    }

    /// A write that changed nothing saw `current` for `key`: a snapshot that shows otherwise is
    /// behind a committed write not settled yet, and is dropped.
    fn check(&self, room: &str, key: &str, current: Option<&State>) {
        let mut inner = self.inner.lock();
        let behind = inner.rooms.get(room).is_some_and(|slot| {
            slot.snapshot.as_ref().is_some_and(|snap| {
                snap.keys.get(key).map(|s| s.version) != current.map(|s| s.version)
            })
        });
        if behind {
            Self::drop_slot(&mut inner, room, &self.counts);
        }
    }

    /// Every key of `room` and the `state_seq` they are current at, if the cache holds them.
    pub fn snapshot(&self, room: &str) -> Option<(Vec<State>, i64)> {
        if !self.enabled() {
            return None;
        }
        let found = {
            let mut inner = self.inner.lock();
            let found = inner.rooms.get(room).and_then(Slot::answer);
            if found.is_some() {
                inner.rooms.touch(room);
            }
            found
        };
        let count = if found.is_some() {
            &self.counts.hits
        } else {
            &self.counts.misses
        };
        count.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Before a store read of `room`'s snapshot that may start or renew its slot (`None`: the
    /// cache is off).
    pub fn begin_fill(&self, room: &str) -> Option<Fill> {
        if !self.enabled() {
            return None;
        }
        let mut inner = self.inner.lock();
        if inner.uncertain.contains(room) {
            return None; // a lost write may still commit after this read
        }
        let generation = match inner.rooms.generation(room) {
            Some(generation) => generation,
            // the slot exists from before the read: writes that finish during it are held
            None => {
                let slot = Slot {
                    bytes: slot_charge(room),
                    ..Slot::default()
                };
                inner.rooms.start(room, slot)
            }
        };
        Some(Fill {
            room: room.to_owned(),
            generation,
        })
    }

    /// The snapshot read after [`Self::begin_fill`]: `states` current at `seq`.
    pub fn fill(&self, fill: Fill, states: &[State], seq: i64) {
        let mut inner = self.inner.lock();
        // not at the fill's generation: dropped and started again meanwhile, and this read may
        // predate the new start
        let filled = inner.rooms.update_at(&fill.room, fill.generation, |slot| {
            if slot.snapshot.as_ref().is_some_and(|s| s.seq >= seq) {
                return true; // what the slot holds is as new
            }
            if let Some(old) = slot.snapshot.take() {
                slot.bytes -= old.keys.values().map(charge).sum::<usize>();
            }
            let keys: BTreeMap<String, State> =
                states.iter().map(|s| (s.key.clone(), s.clone())).collect();
            slot.bytes += keys.values().map(charge).sum::<usize>();
            slot.snapshot = Some(Snapshot { keys, seq });
            slot.catch_up();
            true
        });
        if filled == Some(true) {
            inner.rooms.touch(&fill.room);
            self.evict(&mut inner);
        }
    }

    /// Publishes the counts and sizes (called when metrics are rendered).
    pub fn report(&self) {
        let (rooms, bytes) = {
            let inner = self.inner.lock();
            (inner.rooms.len(), inner.rooms.bytes())
        };
        let c = &self.counts;
        self.telemetry.record(|| {
            metrics::counter!("tsunagi_state_cache_reads_total", "result" => "hit")
                .absolute(c.hits.load(Ordering::Relaxed));
            metrics::counter!("tsunagi_state_cache_reads_total", "result" => "miss")
                .absolute(c.misses.load(Ordering::Relaxed));
            metrics::counter!("tsunagi_state_cache_evictions_total")
                .absolute(c.evictions.load(Ordering::Relaxed));
            metrics::counter!("tsunagi_state_cache_invalidations_total")
                .absolute(c.invalidations.load(Ordering::Relaxed));
            metrics::gauge!("tsunagi_state_cache_rooms").set(rooms as f64);
            metrics::gauge!("tsunagi_state_cache_bytes").set(bytes as f64);
        });
    }
}
