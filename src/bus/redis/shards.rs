//! Which shard channel a room's events travel on, and which shards this instance listens to:
//! a shard is subscribed while a watched room hashes to it, and for [`LINGER`] after the last
//! one left, so join/leave churn does not turn into SSUBSCRIBE/SUNSUBSCRIBE churn.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long a shard stays subscribed after its last watched room left.
pub const LINGER: Duration = Duration::from_secs(2);

/// The shard of `room` among `shards`. FNV-1a (32 bit): stable across builds and platforms
/// (std's hasher is not), and a few lines for a client or a test to reproduce.
pub fn shard_of(room: &str, shards: u32) -> u32 {
    let hash = room.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % shards.max(1)
}

/// A subscription the bus's connection must make or drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Subscribe(u32),
    Unsubscribe(u32),
}

struct Shard {
    /// Watched rooms hashing here.
    rooms: usize,
    /// When `rooms` fell to zero (the linger runs from there).
    idle_since: Option<Instant>,
    /// True once Redis confirmed the subscription (false again while the link is down).
    active: watch::Sender<bool>,
}

/// The shards this instance wants, with the watched rooms counted per shard.
pub struct Interest {
    count: u32,
    shards: Mutex<HashMap<u32, Shard>>,
    changes: mpsc::UnboundedSender<Change>,
}

impl Interest {
    /// `count` shards; the changes to make come out of the receiver, in order.
    pub fn new(count: u32) -> (Arc<Self>, mpsc::UnboundedReceiver<Change>) {
        let (changes, rx) = mpsc::unbounded_channel();
        let interest = Interest {
            count: count.max(1),
            shards: Mutex::default(),
            changes,
        };
        (Arc::new(interest), rx)
    }

    pub fn shard(&self, room: &str) -> u32 {
        shard_of(room, self.count)
    }

    /// A room is watched here from now on.
    pub fn watch(&self, room: &str) {
        let shard = self.shard(room);
        match self.shards.lock().entry(shard) {
            Entry::Occupied(mut e) => {
                let s = e.get_mut();
                s.rooms += 1;
                s.idle_since = None;
            }
            Entry::Vacant(e) => {
                e.insert(Shard {
                    rooms: 1,
                    idle_since: None,
                    active: watch::channel(false).0,
                });
                self.changes.send(Change::Subscribe(shard)).ok();
            }
        }
    }

    /// A room is no longer watched here; its shard is dropped after [`LINGER`] unless a room
    /// of it is watched again meanwhile.
    pub fn unwatch(self: &Arc<Self>, room: &str) {
        let shard = self.shard(room);
        let mut shards = self.shards.lock();
        let Some(s) = shards.get_mut(&shard) else {
            return;
        };
        s.rooms = s.rooms.saturating_sub(1);
        if s.rooms > 0 {
            return;
        }
        s.idle_since = Some(Instant::now());
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            me.expire(shard);
        });
    }

    fn expire(&self, shard: u32) {
        let mut shards = self.shards.lock();
        let idle = shards
            .get(&shard)
            .and_then(|s| s.idle_since)
            .is_some_and(|t| t.elapsed() >= LINGER);
        if idle {
            shards.remove(&shard);
            self.changes.send(Change::Unsubscribe(shard)).ok();
        }
    }

    /// Resolves once `room`'s shard is subscribed, or at once when nothing watches it.
    pub fn subscribed(&self, room: &str) -> Option<watch::Receiver<bool>> {
        let shard = self.shard(room);
        self.shards.lock().get(&shard).map(|s| s.active.subscribe())
    }

    /// The shards to subscribe to (after a reconnect: all of them).
    pub fn wanted(&self) -> Vec<u32> {
        self.shards.lock().keys().copied().collect()
    }

    /// Redis confirmed (or lost) `shard`'s subscription.
    pub fn set_active(&self, shard: u32, active: bool) {
        if let Some(s) = self.shards.lock().get(&shard) {
            s.active.send_replace(active);
        }
    }

    /// The link went down: nothing is subscribed until it is back.
    pub fn all_inactive(&self) {
        for s in self.shards.lock().values() {
            s.active.send_replace(false);
        }
    }

    /// Shards subscribed right now.
    pub fn active_count(&self) -> usize {
        self.shards
            .lock()
            .values()
            .filter(|s| *s.active.borrow())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_and_stable() {
        // FNV-1a 32 of "a" is 0xe40c292c; tests/node/sharded.test.js reproduces it
        assert_eq!(shard_of("a", u32::MAX), 0xe40c_292c);
        assert_eq!(shard_of("a", 1024), 0xe40c_292c % 1024);
        assert_eq!(shard_of("anything", 1), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_is_subscribed_once_and_dropped_after_the_linger() {
        let (interest, mut changes) = Interest::new(1);
        interest.watch("a");
        interest.watch("b"); // same (only) shard
        assert_eq!(changes.try_recv().ok(), Some(Change::Subscribe(0)));
        assert!(changes.try_recv().is_err());
        interest.unwatch("a");
        interest.unwatch("b");
        tokio::time::sleep(LINGER / 2).await;
        interest.watch("c"); // back within the linger: kept
        tokio::time::sleep(LINGER * 2).await;
        assert!(changes.try_recv().is_err());
        interest.unwatch("c");
        tokio::time::sleep(LINGER * 2).await;
        assert_eq!(changes.try_recv().ok(), Some(Change::Unsubscribe(0)));
        assert!(interest.wanted().is_empty());
    }
}
