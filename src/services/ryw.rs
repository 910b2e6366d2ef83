//! Read-your-writes: the newest write position of each user, so that their reads right after
//! their own write go to a replica that has replayed it (or to the primary).
//!
//! Kept in this process: a user's socket stays on one instance, and HTTP clients behind a load
//! balancer are covered while the replica lag bound (which removes lagging replicas) is shorter
//! than the time between their requests landing on different instances. Entries expire after a
//! minute: by then every healthy replica is past the write.

use std::time::Duration;

use moka::sync::Cache;

use crate::store::{ReadFrom, WritePos};

pub struct ReadYourWrites {
    last_write: Cache<String, WritePos>,
}

impl Default for ReadYourWrites {
    fn default() -> Self {
        ReadYourWrites {
            last_write: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }
}

impl ReadYourWrites {
    pub fn wrote(&self, user: &str, pos: WritePos) {
        if pos == WritePos::default() {
            return; // the embedded store has no replicas
        }
        let newer = self.last_write.get(user).is_none_or(|p| p < pos);
        if newer {
            self.last_write.insert(user.to_owned(), pos);
        }
    }

    /// Where `user` may read from: a replica that has seen their last write.
    pub fn read_for(&self, user: &str) -> ReadFrom {
        ReadFrom::Replica(self.last_write.get(user))
    }
}
