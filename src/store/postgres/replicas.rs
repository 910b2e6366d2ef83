//! Read replicas: which are healthy, how far behind they are, and which one serves a read.
//!
//! A background check per replica compares its replay position with the primary's WAL position
//! over time: the lag is how long ago the primary was where the replica is now. A replica that
//! does not answer, is not in recovery, or lags past the bound is skipped until a later check
//! finds it well again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sqlx::{Postgres, Row};

use super::parse_lsn;
use crate::store::WritePos;
use crate::store::pool::InstrumentedPool;

pub struct Replica {
    pub pool: InstrumentedPool<Postgres>,
    healthy: AtomicBool,
    /// Probes in a row that got no answer; one alone (a slow handshake on a busy machine) does
    /// not take a replica out of rotation; a failed read does that at once.
    unanswered: AtomicU32,
    replay: AtomicU64,
    /// (primary WAL position, when it was seen), newest last.
    samples: Mutex<VecDeque<(u64, Instant)>>,
}

impl Replica {
    pub fn new(pool: InstrumentedPool<Postgres>) -> Self {
        Replica {
            pool,
            healthy: AtomicBool::new(false),
            unanswered: AtomicU32::new(0),
            replay: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Taken out of rotation at once (a failed read); the next check may bring it back.
    pub fn mark_down(&self) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(pool = %self.pool.name, "replica marked down after a failed read");
        }
        self.pool.telemetry.record(|| {
            metrics::gauge!("tsunagi_db_replica_healthy", "pool" => self.pool.name.clone()).set(0.0)
        });
    }

    fn has_replayed(&self, pos: Option<WritePos>) -> bool {
        pos.is_none_or(|p| self.replay.load(Ordering::Acquire) >= p.0)
    }

    /// One check: `primary_lsn` is the primary's position read just before (None if it is down).
    async fn check(&self, primary_lsn: Option<u64>, max_lag: Duration) {
        let now = Instant::now();
        let probe = async {
            let mut conn = self.pool.acquire().await.ok()?;
            let row = sqlx::query(
                "SELECT pg_is_in_recovery() AS standby, pg_last_wal_replay_lsn()::text AS replay",
            )
            .fetch_one(&mut *conn)
            .await
            .ok()?;
            let standby: bool = row.get("standby");
            let replay: Option<String> = row.get("replay");
            Some((standby, replay.as_deref().and_then(parse_lsn)))
        };
        let (healthy, lag) =
            match tokio::time::timeout(max_lag.max(Duration::from_secs(1)), probe).await {
                Ok(Some((true, Some(replay)))) => {
                    self.unanswered.store(0, Ordering::Relaxed);
                    self.replay.store(replay, Ordering::Release);
                    let lag = self.lag(primary_lsn, replay, now);
                    (lag <= max_lag, lag)
                }
                // a primary promoted from it, or not a standby at all: out at once
                Ok(Some(_)) => (false, Duration::MAX),
                _ => {
                    let misses = self.unanswered.fetch_add(1, Ordering::Relaxed) + 1;
                    (misses < 2 && self.is_healthy(), Duration::MAX)
                }
            };
        let was = self.healthy.swap(healthy, Ordering::AcqRel);
        if was != healthy {
            if healthy {
                tracing::info!(pool = %self.pool.name, "replica back in rotation");
            } else {
                tracing::warn!(pool = %self.pool.name, lag_ms = lag.as_millis() as u64, "replica out of rotation");
            }
        }
        let name = self.pool.name.clone();
        self.pool.telemetry.record(|| {
            metrics::gauge!("tsunagi_db_replica_healthy", "pool" => name.clone()).set(if healthy {
                1.0
            } else {
                0.0
            })
        });
        if lag != Duration::MAX {
            self.pool.telemetry.record(|| {
                metrics::gauge!("tsunagi_db_replica_lag_seconds", "pool" => name)
                    .set(lag.as_secs_f64())
            });
        }
    }

    /// How long the replica has been behind: the age of the oldest primary position it has not
    /// replayed yet (0 when it has replayed every position seen).
    fn lag(&self, primary_lsn: Option<u64>, replay: u64, now: Instant) -> Duration {
        let mut samples = self.samples.lock();
        if let Some(p) = primary_lsn {
            samples.push_back((p, now));
        }
        while samples.front().is_some_and(|(p, _)| *p <= replay) {
            samples.pop_front();
        }
        if samples.len() > 256 {
            samples.remove(1); // keep the oldest unreplayed position: it carries the lag
        }
        samples
            .front()
            .map(|(_, t)| now.duration_since(*t))
            .unwrap_or(Duration::ZERO)
    }
}

pub struct Replicas {
    pub all: Vec<Arc<Replica>>,
    next: AtomicUsize,
}

impl Replicas {
    pub fn new(all: Vec<Arc<Replica>>) -> Self {
        Replicas {
            all,
            next: AtomicUsize::new(0),
        }
    }

    /// A healthy replica that has replayed `after`, in turn; None → read from the primary.
    pub fn pick(&self, after: Option<WritePos>) -> Option<Arc<Replica>> {
        let n = self.all.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.all[(start + i) % n])
            .find(|r| r.is_healthy() && r.has_replayed(after))
            .cloned()
    }

    /// Checks every replica every `interval` until the task is aborted.
    pub async fn watch(
        self: Arc<Self>,
        primary: Arc<InstrumentedPool<Postgres>>,
        interval: Duration,
        max_lag: Duration,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let primary_lsn = async {
                let mut conn = primary.acquire().await.ok()?;
                let row = sqlx::query("SELECT pg_current_wal_lsn()::text")
                    .fetch_one(&mut *conn)
                    .await
                    .ok()?;
                parse_lsn(&row.get::<String, _>(0))
            };
            let primary_lsn =
                tokio::time::timeout(interval.max(Duration::from_secs(1)), primary_lsn)
                    .await
                    .ok()
                    .flatten();
            futures::future::join_all(self.all.iter().map(|r| r.check(primary_lsn, max_lag))).await;
        }
    }
}
