//! In-process implementations of the shared-state traits, for a single instance.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

// Tokio's clock, so tests can drive the limiter with paused time.
use tokio::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Presence, RateLimiter};

/// GCRA (generic cell rate algorithm): one timestamp per key, no background refill task.
pub struct LocalRateLimiter {
    /// Time between two units at the sustained rate; `None` turns the limiter off.
    interval: Option<Duration>,
    /// How far ahead of now the theoretical arrival time may run: burst × interval.
    tolerance: Duration,
    epoch: Instant,
    tat: Mutex<HashMap<String, Duration>>,
}

impl LocalRateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        let interval = (per_second > 0.0).then(|| Duration::from_secs_f64(1.0 / per_second));
        LocalRateLimiter {
            interval,
            tolerance: interval.unwrap_or_default() * burst.max(1),
            epoch: Instant::now(),
            tat: Mutex::new(HashMap::new()),
        }
    }

    #[cfg(test)]
    fn check_at(&self, key: &str, now: Duration) -> Result<(), u64> {
        self.check_n_at(key, 1, now, true)
    }

    /// `consume: false` only answers whether `n` units would be allowed.
    fn check_n_at(&self, key: &str, n: u32, now: Duration, consume: bool) -> Result<(), u64> {
        let Some(interval) = self.interval else {
            return Ok(());
        };
        let mut map = self.tat.lock();
        if map.len() > 100_000 {
            // Keys whose bucket is full again carry no information.
            map.retain(|_, tat| *tat > now);
        }
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval * n;
        if new_tat > now + self.tolerance {
            let wait = new_tat - (now + self.tolerance);
            // rounded up, as the Redis engine does: waiting the announced time is enough
            return Err((wait.as_micros().div_ceil(1000) as u64).max(1));
        }
        if consume {
            map.insert(key.to_owned(), new_tat);
        }
        Ok(())
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check_n(&self, key: &str, n: u32) -> Result<(), u64> {
        self.check_n_at(key, n, self.epoch.elapsed(), true)
    }

    async fn peek(&self, key: &str) -> Result<(), u64> {
        self.check_n_at(key, 1, self.epoch.elapsed(), false)
    }
}

#[derive(Default)]
pub struct LocalPresence {
    rooms: Mutex<HashMap<String, BTreeMap<String, HashSet<String>>>>,
}

impl LocalPresence {
    /// Every (room, user, connection) of this instance (what a shared presence refreshes).
    pub fn entries(&self) -> Vec<(String, String, String)> {
        let rooms = self.rooms.lock();
        let mut out = Vec::new();
        for (room, users) in rooms.iter() {
            for (user, conns) in users {
                for conn in conns {
                    out.push((room.clone(), user.clone(), conn.clone()));
                }
            }
        }
        out
    }
}

#[async_trait]
impl Presence for LocalPresence {
    async fn join(&self, room: &str, user: &str, conn: &str) -> bool {
        let mut rooms = self.rooms.lock();
        let users = rooms.entry(room.to_owned()).or_default();
        let conns = users.entry(user.to_owned()).or_default();
        let first = conns.is_empty();
        conns.insert(conn.to_owned());
        first
    }

    async fn leave(&self, room: &str, user: &str, conn: &str) -> bool {
        let mut rooms = self.rooms.lock();
        let Some(users) = rooms.get_mut(room) else {
            return false;
        };
        let Some(conns) = users.get_mut(user) else {
            return false;
        };
        let removed = conns.remove(conn);
        let last = removed && conns.is_empty();
        if conns.is_empty() {
            users.remove(user);
        }
        if users.is_empty() {
            rooms.remove(room);
        }
        last
    }

    async fn online(&self, room: &str) -> Vec<String> {
        self.rooms
            .lock()
            .get(room)
            .map(|u| u.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_burst_then_rate() {
        let l = LocalRateLimiter::new(10.0, 5);
        let t0 = Duration::from_secs(100);
        for _ in 0..5 {
            assert!(l.check_at("u", t0).is_ok());
        }
        let wait = l.check_at("u", t0).unwrap_err();
        assert!((90..=100).contains(&wait), "{wait}");
        assert!(l.check_at("other", t0).is_ok(), "keys are independent");
        assert!(l.check_at("u", t0 + Duration::from_millis(100)).is_ok());
        assert!(l.check_at("u", t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn units_count_against_the_burst() {
        let l = LocalRateLimiter::new(1000.0, 4000); // 1000 units/s, 4000 at once
        let t0 = Duration::from_secs(100);
        assert!(l.check_n_at("u", 3000, t0, true).is_ok());
        assert!(l.check_n_at("u", 1000, t0, true).is_ok());
        let wait = l.check_n_at("u", 500, t0, true).unwrap_err();
        assert!((499..=501).contains(&wait), "{wait}");
        assert!(
            l.check_n_at("u", 500, t0 + Duration::from_millis(500), true)
                .is_ok()
        );
    }

    #[test]
    fn peek_does_not_count() {
        let l = LocalRateLimiter::new(1.0, 2);
        let t0 = Duration::from_secs(100);
        for _ in 0..10 {
            assert!(l.check_n_at("u", 1, t0, false).is_ok());
        }
        assert!(l.check_at("u", t0).is_ok());
        assert!(l.check_at("u", t0).is_ok());
        let wait = l.check_n_at("u", 1, t0, false).unwrap_err();
        assert!((999..=1000).contains(&wait), "{wait}");
        assert!(
            l.check_n_at("u", 1, t0 + Duration::from_secs(1), false)
                .is_ok()
        );
    }

    #[test]
    fn zero_rate_is_off() {
        let l = LocalRateLimiter::new(0.0, 1);
        for _ in 0..1000 {
            assert!(l.check_at("u", Duration::ZERO).is_ok());
        }
    }

    #[tokio::test]
    async fn presence_counts_connections() {
        let p = LocalPresence::default();
        assert!(p.join("r", "alice", "c1").await);
        assert!(!p.join("r", "alice", "c2").await);
        assert!(p.join("r", "bob", "c3").await);
        assert_eq!(p.online("r").await, vec!["alice", "bob"]);
        assert!(!p.leave("r", "alice", "c1").await);
        assert!(p.leave("r", "alice", "c2").await);
        assert!(
            !p.leave("r", "alice", "c2").await,
            "leaving twice is not a second offline"
        );
        assert_eq!(p.online("r").await, vec!["bob"]);
    }
}
