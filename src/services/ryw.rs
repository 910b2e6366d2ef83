//! Read-your-writes: the newest write position of each user, so that their reads right after
//! their own write go to a replica that has replayed it (or to the primary).
//!
//! Kept in this process: a user's socket stays on one instance, and HTTP clients behind a load
//! balancer are covered while the replica lag bound (which removes lagging replicas) is shorter
//! than the time between their requests landing on different instances. Entries expire after a
//! minute: by then every healthy replica is past the write.

use std::time::Duration;

use moka::ops::compute::Op;
use moka::sync::Cache;

use crate::store::{ReadFrom, WritePos};

pub struct ReadYourWrites {
    last_write: Cache<String, WritePos>,
}

impl ReadYourWrites {
    pub fn new(replica_max_lag: Duration, replica_check_interval: Duration) -> Self {
        let ttl = (replica_max_lag + replica_check_interval * 2).max(Duration::from_secs(60));
        ReadYourWrites {
            last_write: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(ttl)
                .build(),
        }
    }
}

impl ReadYourWrites {
    pub fn wrote(&self, user: &str, pos: WritePos) {
        if pos == WritePos::default() {
            return; // the embedded store has no replicas
        }
        // compute-in-place: two writers racing must not move the position backwards
        self.last_write
            .entry_by_ref(user)
            .and_compute_with(|current| match current {
                Some(e) if *e.value() >= pos => Op::Nop,
                _ => Op::Put(pos),
            });
    }

    /// Where `user` may read from: a replica that has seen their last write.
    pub fn read_for(&self, user: &str) -> ReadFrom {
        ReadFrom::Replica(self.last_write.get(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_position() {
        let r = ReadYourWrites::new(Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(r.read_for("a"), ReadFrom::Replica(None));
        r.wrote("a", WritePos(10));
        r.wrote("a", WritePos(5));
        assert_eq!(r.read_for("a"), ReadFrom::Replica(Some(WritePos(10))));
        r.wrote("a", WritePos(12));
        assert_eq!(r.read_for("a"), ReadFrom::Replica(Some(WritePos(12))));
        r.wrote("b", WritePos(0));
        assert_eq!(
            r.read_for("b"),
            ReadFrom::Replica(None),
            "the embedded store has no position"
        );
    }
}
