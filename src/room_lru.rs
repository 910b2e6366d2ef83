//! Rooms kept in memory by how recently they were read, within a byte budget: the shape the hot
//! window (history) and the state cache (shared state) share.
//!
//! Each room's value says what it is charged ([`Charged`], an estimate of heap use); every change
//! goes through [`RoomLru::update`], so the total stays the sum of the charges. Past the budget
//! the least recently read rooms are dropped first ([`RoomLru::evict`]). A room gets a new
//! generation each time it is started, so a store read begun before the room was dropped and
//! started again can tell that its page may predate the new start ([`RoomLru::update_at`]).
//!
//! Not moka or hashlink's `LruCache`: they weigh an entry once, when it is inserted, and these
//! values grow and shrink in place (a window's messages, a snapshot's keys); nor do they give the
//! generations.

use hashlink::LinkedHashMap;

/// The bytes a kept value is charged (an estimate: the budget bounds memory, it is not an
/// allocator count).
pub trait Charged {
    fn charge(&self) -> usize;
}

struct Entry<V> {
    generation: u64,
    value: V,
}

pub struct RoomLru<V> {
    /// Front: the least recently read room.
    rooms: LinkedHashMap<String, Entry<V>>,
    bytes: usize,
    generations: u64,
}

impl<V> Default for RoomLru<V> {
    fn default() -> Self {
        RoomLru {
            rooms: LinkedHashMap::new(),
            bytes: 0,
            generations: 0,
        }
    }
}

impl<V: Charged> RoomLru<V> {
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// The sum of the kept rooms' charges.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn get(&self, room: &str) -> Option<&V> {
        self.rooms.get(room).map(|e| &e.value)
    }

    /// The generation `room` was started at, if it is kept.
    pub fn generation(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).map(|e| e.generation)
    }

    /// Starts `room` with `value`, as the most recently read, and returns its generation. A room
    /// already kept is replaced.
    pub fn start(&mut self, room: &str, value: V) -> u64 {
        self.remove(room);
        self.generations += 1;
        self.bytes += value.charge();
        let generation = self.generations;
        self.rooms
            .insert(room.to_owned(), Entry { generation, value });
        generation
    }

    /// Runs `f` on `room`'s value and charges what it changed; `None` if `room` is not kept.
    pub fn update<R>(&mut self, room: &str, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let entry = self.rooms.get_mut(room)?;
        let before = entry.value.charge();
        let r = f(&mut entry.value);
        self.bytes = self.bytes + entry.value.charge() - before;
        Some(r)
    }

    /// [`Self::update`], only if `room` is still at `generation` (not dropped and started again).
    pub fn update_at<R>(
        &mut self,
        room: &str,
        generation: u64,
        f: impl FnOnce(&mut V) -> R,
    ) -> Option<R> {
        if self.generation(room) != Some(generation) {
            return None;
        }
        self.update(room, f)
    }

    /// Marks `room` as the most recently read.
    pub fn touch(&mut self, room: &str) {
        self.rooms.to_back(room);
    }

    /// Drops `room`; whether it was kept.
    pub fn remove(&mut self, room: &str) -> bool {
        match self.rooms.remove(room) {
            Some(e) => {
                self.bytes -= e.value.charge();
                true
            }
            None => false,
        }
    }

    /// Drops the least recently read rooms until the total fits `max_bytes`; how many it dropped.
    pub fn evict(&mut self, max_bytes: usize) -> u64 {
        let mut dropped = 0;
        while self.bytes > max_bytes {
            let Some((_, e)) = self.rooms.pop_front() else {
                break;
            };
            self.bytes -= e.value.charge();
            dropped += 1;
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sized(usize);
    impl Charged for Sized {
        fn charge(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn charges_follow_every_change_and_eviction_takes_the_least_recently_read() {
        let mut lru = RoomLru::default();
        lru.start("a", Sized(10));
        lru.start("b", Sized(20));
        lru.start("c", Sized(30));
        assert_eq!(lru.bytes(), 60);
        lru.update("b", |v| v.0 = 5);
        assert_eq!(lru.bytes(), 45);
        lru.touch("a");
        // order now b, c, a: b and c go before a
        assert_eq!(lru.evict(10), 2);
        assert_eq!(lru.len(), 1);
        assert_eq!(lru.get("a").map(|v| v.0), Some(10));
        assert_eq!(lru.bytes(), 10);
        assert!(lru.remove("a"));
        assert!(!lru.remove("a"));
        assert_eq!((lru.bytes(), lru.is_empty()), (0, true));
    }

    #[test]
    fn a_room_started_again_refuses_updates_meant_for_its_earlier_start() {
        let mut lru = RoomLru::default();
        let first = lru.start("a", Sized(1));
        lru.remove("a");
        let second = lru.start("a", Sized(2));
        assert_ne!(first, second);
        assert_eq!(lru.update_at("a", first, |v| v.0 = 100), None);
        assert_eq!(lru.update_at("a", second, |v| v.0 = 3), Some(()));
        assert_eq!(lru.bytes(), 3);
        assert_eq!(lru.update("missing", |v| v.0 = 1), None);
    }
}
