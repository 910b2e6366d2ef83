//! A sqlx pool with the gauges and histograms the guides ask for: size / idle / in use /
//! waiting per pool, acquire wait, and a warning when the in-use share passes a level.
//! (sqlx counts size and idle but not waiters, so acquisition goes through here.)

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

use super::StoreError;
use crate::telemetry::Telemetry;

pub struct InstrumentedPool<DB: Database> {
    pub name: String,
    pub inner: Pool<DB>,
    /// The app's metrics, which every statement on this pool is timed into.
    pub telemetry: Telemetry,
    waiting: AtomicUsize,
    warn_share: f64,
    /// Milliseconds since `epoch` of the last saturation warning (one per 10 s at most).
    last_warning_ms: AtomicU64,
    epoch: Instant,
}

impl<DB: Database> InstrumentedPool<DB> {
    pub fn new(
        name: impl Into<String>,
        inner: Pool<DB>,
        warn_share: f64,
        telemetry: Telemetry,
    ) -> Self {
        InstrumentedPool {
            name: name.into(),
            inner,
            telemetry,
            waiting: AtomicUsize::new(0),
            warn_share,
            last_warning_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// A connection, or `Unavailable` once the pool's acquire timeout has passed.
    pub async fn acquire(&self) -> Result<PoolConnection<DB>, StoreError> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.inner.acquire().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        self.telemetry.record(|| {
            metrics::histogram!("tsunagi_db_acquire_seconds", "pool" => self.name.clone())
                .record(started.elapsed().as_secs_f64())
        });
        self.check_saturation();
        result.map_err(|e| match e {
            sqlx::Error::PoolTimedOut => {
                self.telemetry.record(|| metrics::counter!("tsunagi_db_acquire_timeouts_total", "pool" => self.name.clone())
                    .increment(1));
                StoreError::Unavailable(format!("pool {}: no connection free in time", self.name))
            }
            other => StoreError::Unavailable(format!("pool {}: {other}", self.name)),
        })
    }

    fn in_use(&self) -> (u32, usize) {
        let size = self.inner.size();
        (
            size.saturating_sub(self.inner.num_idle() as u32),
            self.inner.num_idle(),
        )
    }

    fn check_saturation(&self) {
        let max = self.inner.options().get_max_connections().max(1);
        let (in_use, _) = self.in_use();
        // a one-connection pool (the SQLite writer) is "full" on every write: only waiters
        // for it mean saturation
        let saturated = if max == 1 {
            self.waiting.load(Ordering::Relaxed) > 0
        } else {
            f64::from(in_use) / f64::from(max) >= self.warn_share
        };
        if !saturated {
            return;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 10_000)
            && self
                .last_warning_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                pool = %self.name,
                in_use,
                max,
                waiting = self.waiting.load(Ordering::Relaxed),
                "connection pool is nearly exhausted"
            );
        }
    }

    pub fn report(&self) {
        let (in_use, idle) = self.in_use();
        let name = self.name.clone();
        self.telemetry.record(|| metrics::gauge!("tsunagi_db_pool_connections", "pool" => name.clone(), "state" => "idle")
            .set(idle as f64));
        self.telemetry.record(|| metrics::gauge!("tsunagi_db_pool_connections", "pool" => name.clone(), "state" => "in_use")
            .set(f64::from(in_use)));
        self.telemetry.record(|| {
            metrics::gauge!("tsunagi_db_pool_size", "pool" => name.clone())
                .set(f64::from(self.inner.size()))
        });
        self.telemetry.record(|| {
            metrics::gauge!("tsunagi_db_pool_max", "pool" => name.clone())
                .set(f64::from(self.inner.options().get_max_connections()))
        });
        self.telemetry.record(|| {
            metrics::gauge!("tsunagi_db_pool_waiting", "pool" => name)
                .set(self.waiting.load(Ordering::Relaxed) as f64)
        });
    }

    /// The same figures as `report`, for the admin stats.
    pub fn stats(&self) -> serde_json::Value {
        let (in_use, idle) = self.in_use();
        serde_json::json!({
            "name": self.name,
            "size": self.inner.size(),
            "max": self.inner.options().get_max_connections(),
            "idle": idle,
            "in_use": in_use,
            "waiting": self.waiting.load(Ordering::Relaxed),
        })
    }
}
