//! Sensors and their readings (PROTOCOL.md §6.1): who may read and write a sensor, readings
//! accepted into the write-behind buffer and announced live on the bus, ranges and bucketed
//! series read from the store, and the maintenance task (partitions ahead, retention).
//!
//! Layout: `mod.rs` (the service), `buffer.rs` (write-behind with push-back), `query.rs` (the
//! query parameters of readings and series).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::error::{ServiceError, ServiceResult};
use crate::auth::Identity;
use crate::bus::{Bus, BusEvent};
use crate::domain::{Reading, SensorId, SensorInfo, now_ms, now_rfc3339};
use crate::shared_state::RateLimiter;
use crate::store::Store;
use crate::store::sensors::{Bucket, DAY_MS, NewSensor, TimeRange};
use crate::telemetry::Telemetry;

pub mod buffer;
pub mod query;

use buffer::{Refused, WriteBehind};

/// Readings a `subscribe` ack carries, at most.
pub const LAST_READINGS: usize = 10;
/// Sensors whose newest readings are remembered in memory for `subscribe` (written or not).
const RECENT_SENSORS: u64 = 10_000;

/// What access checks need of a sensor; fixed once it exists (there is no update or delete),
/// so it is cached without invalidation.
#[derive(Debug, Clone)]
struct Access {
    private: bool,
    owner_id: String,
}

/// What [`SensorsService::accept`] took.
pub struct Accepted {
    pub count: usize,
    /// The generation to wait for, when the write asked to be durable.
    pub durable: Option<buffer::Generation>,
}

pub struct SensorSettings {
    pub buffer: buffer::BufferSettings,
    /// Whether message sends are waiting: readings give way to them.
    pub sends_waiting: buffer::Priority,
    /// How long a durable write waits for its flush before answering `unavailable`.
    pub durable_wait: Duration,
    /// Readings older than this many days are removed (0: kept).
    pub retention_days: u32,
    pub maintenance_every: Duration,
}

pub struct SensorsService {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    buffer: Arc<WriteBehind>,
    access: moka::sync::Cache<String, Arc<Access>>,
    /// The newest readings accepted per sensor (here or on another instance), by ts.
    recent: moka::sync::Cache<String, Arc<Mutex<Vec<Reading>>>>,
    /// Sensor creations per user (the write limit of rooms).
    write_limiter: Arc<dyn RateLimiter>,
    durable_wait: Duration,
    partitions: metrics::Gauge,
}

impl SensorsService {
    /// Starts the write-behind writer and the maintenance task (until `shutdown`).
    pub fn start(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        write_limiter: Arc<dyn RateLimiter>,
        settings: SensorSettings,
        shutdown: CancellationToken,
        telemetry: &Telemetry,
    ) -> Arc<Self> {
        let buffer = WriteBehind::start(
            store.clone(),
            settings.buffer,
            settings.sends_waiting.clone(),
            telemetry,
        );
        let partitions = telemetry.record(|| metrics::gauge!("tsunagi_sensor_partitions"));
        let service = Arc::new(SensorsService {
            store,
            bus,
            buffer,
            access: moka::sync::Cache::builder().max_capacity(100_000).build(),
            recent: moka::sync::Cache::builder()
                .max_capacity(RECENT_SENSORS)
                .build(),
            write_limiter,
            durable_wait: settings.durable_wait,
            partitions,
        });
        tokio::spawn(service.clone().maintain_until(
            settings.maintenance_every,
            settings.retention_days,
            shutdown,
        ));
        service
    }

    pub async fn create(
        &self,
        who: &Identity,
        id: SensorId,
        name: Option<String>,
        private: bool,
        metadata: Option<serde_json::Value>,
    ) -> ServiceResult<SensorInfo> {
        self.write_limiter
            .check(&who.user_id)
            .await
            .map_err(ServiceError::RateLimited)?;
        let name = name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| id.as_str().to_owned());
        let info = self
            .store
            .create_sensor(NewSensor {
                id,
                name,
                private,
                owner_id: who.user_id.clone(),
                metadata,
            })
            .await?;
        Ok(info)
    }

    /// SENSOR-INFO, for a caller who may read it.
    pub async fn get(&self, who: &Identity, id: &SensorId) -> ServiceResult<SensorInfo> {
        let info = self
            .store
            .sensor(id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("sensor {id} does not exist")))?;
        if info.private && !(who.admin || who.user_id == info.owner_id) {
            return Err(ServiceError::forbidden("this sensor is private"));
        }
        Ok(info)
    }

    pub async fn list(
        &self,
        who: &Identity,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<Vec<SensorInfo>> {
        Ok(self
            .store
            .list_sensors(&who.user_id, who.admin, cursor, limit)
            .await?)
    }

    async fn access(&self, id: &SensorId) -> ServiceResult<Arc<Access>> {
        if let Some(a) = self.access.get(id.as_str()) {
            return Ok(a);
        }
        let info = self
            .store
            .sensor(id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("sensor {id} does not exist")))?;
        let a = Arc::new(Access {
            private: info.private,
            owner_id: info.owner_id,
        });
        self.access.insert(id.as_str().to_owned(), a.clone());
        Ok(a)
    }

    /// not_found unless the sensor exists.
    pub async fn check_exists(&self, id: &SensorId) -> ServiceResult<()> {
        self.access(id).await.map(|_| ())
    }

    /// Reading a sensor: public, or the owner's, or an admin's.
    pub async fn check_read(&self, who: &Identity, id: &SensorId) -> ServiceResult<()> {
        let a = self.access(id).await?;
        if a.private && !(who.admin || who.user_id == a.owner_id) {
            return Err(ServiceError::forbidden("this sensor is private"));
        }
        Ok(())
    }

    /// Writing a sensor's readings: its owner or an admin.
    async fn check_write(&self, who: &Identity, id: &SensorId) -> ServiceResult<()> {
        let a = self.access(id).await?;
        if !(who.admin || who.user_id == a.owner_id) {
            return Err(ServiceError::forbidden(
                "only the sensor's owner or an admin writes its readings",
            ));
        }
        Ok(())
    }

    /// Accepts readings (already parsed) into the buffer and announces them live; with
    /// `durable`, answers only once they are committed.
    pub async fn write(
        &self,
        who: &Identity,
        id: &SensorId,
        readings: Vec<Reading>,
        durable: bool,
    ) -> ServiceResult<usize> {
        let accepted = self.accept(who, id, readings, durable).await?;
        if let Some(generation) = accepted.durable {
            self.wait_durable(generation).await?;
        }
        Ok(accepted.count)
    }

    /// The first half of [`Self::write`]: in the buffer (and live) when it returns.
    pub async fn accept(
        &self,
        who: &Identity,
        id: &SensorId,
        readings: Vec<Reading>,
        durable: bool,
    ) -> ServiceResult<Accepted> {
        self.check_write(who, id).await?;
        let count = readings.len();
        let live = Arc::new(readings.clone());
        let generation = self.buffer.accept(readings, durable).map_err(|e| match e {
            Refused::Full { retry_after_ms } => ServiceError::Busy(retry_after_ms),
            Refused::Closing => ServiceError::unavailable("the server is shutting down"),
        })?;
        self.remember(id.as_str(), &live);
        self.bus.publish(BusEvent::Readings {
            sensor: id.as_str().to_owned(),
            readings: live,
        });
        Ok(Accepted {
            count,
            durable: durable.then_some(generation),
        })
    }

    /// The second half of a durable write: resolves once its readings are committed.
    pub async fn wait_durable(&self, generation: buffer::Generation) -> ServiceResult<()> {
        if self.buffer.committed(generation, self.durable_wait).await {
            Ok(())
        } else {
            Err(ServiceError::unavailable(
                "the readings were accepted but not yet written; retry to be sure",
            ))
        }
    }

    /// Keeps the newest [`LAST_READINGS`] by ts of `sensor` (a later acceptance of a ts wins).
    pub fn remember(&self, sensor: &str, readings: &[Reading]) {
        let slot = self
            .recent
            .get_with(sensor.to_owned(), || Arc::new(Mutex::new(Vec::new())));
        let mut kept = slot.lock();
        merge_newest(&mut kept, readings.iter().cloned());
    }

    /// The newest readings of a sensor, written or still buffered, oldest first.
    pub async fn last(&self, who: &Identity, id: &SensorId) -> ServiceResult<Vec<Reading>> {
        self.check_read(who, id).await?;
        let newest = self.store.newest_readings(id, LAST_READINGS as u32).await?;
        // the store's newest (written) first, then what is remembered (accepted later, maybe
        // still buffered), which wins for a ts both hold
        let mut last = Vec::with_capacity(LAST_READINGS);
        merge_newest(&mut last, newest);
        if let Some(slot) = self.recent.get(id.as_str()) {
            let recent = slot.lock().clone();
            merge_newest(&mut last, recent);
        }
        Ok(last)
    }

    /// Readings in `range` after `cursor`, at most `limit + 1` (one more says there are more).
    pub async fn readings(
        &self,
        who: &Identity,
        id: &SensorId,
        range: TimeRange,
        cursor: Option<i64>,
        limit: u32,
    ) -> ServiceResult<Vec<Reading>> {
        self.check_read(who, id).await?;
        let range = TimeRange {
            from: cursor.map_or(range.from, |c| range.from.max(c.saturating_add(1))),
            to: range.to,
        };
        Ok(self.store.readings(id, range, limit + 1).await?)
    }

    pub async fn series(
        &self,
        who: &Identity,
        id: &SensorId,
        range: TimeRange,
        bucket_ms: i64,
    ) -> ServiceResult<Vec<Bucket>> {
        self.check_read(who, id).await?;
        Ok(self.store.series(id, range, bucket_ms).await?)
    }

    /// Readings waiting in memory or being written.
    pub fn buffered(&self) -> usize {
        self.buffer.depth()
    }

    /// At shutdown: refuses new readings and writes every accepted one (false if the store kept
    /// failing for `limit`).
    pub async fn drain(&self, limit: Duration) -> bool {
        self.buffer.close(limit).await
    }

    /// Runs one maintenance pass: partitions ahead, retention.
    pub async fn maintain(&self, retention_days: u32) -> ServiceResult<u64> {
        let now = now_ms();
        let keep_from = (retention_days > 0).then(|| now - i64::from(retention_days) * DAY_MS);
        let done = self.store.maintain_sensors(now, keep_from).await?;
        self.partitions.set(done.partitions as f64);
        if done.removed > 0 {
            tracing::info!(removed = done.removed, at = %now_rfc3339(), "sensor retention");
        }
        Ok(done.removed)
    }

    async fn maintain_until(
        self: Arc<Self>,
        every: Duration,
        retention_days: u32,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.maintain(retention_days).await {
                        tracing::warn!(error = %e, "sensor maintenance failed; retried next time");
                    }
                }
            }
        }
    }
}

/// Merges `more` (in acceptance order) into `kept`, which stays sorted by ts and at most
/// [`LAST_READINGS`] long: a later reading of a ts replaces the earlier. Linear in `more` (a
/// write of 1000 readings costs 1000 small steps on the hub's delivery task, not a sort).
fn merge_newest(kept: &mut Vec<Reading>, more: impl IntoIterator<Item = Reading>) {
    for r in more {
        if let Some(k) = kept.iter_mut().find(|k| k.ts == r.ts) {
            *k = r;
            continue;
        }
        let full = kept.len() >= LAST_READINGS;
        if full && kept.first().is_some_and(|oldest| r.ts < oldest.ts) {
            continue;
        }
        let at = kept.partition_point(|k| k.ts < r.ts);
        kept.insert(at, r);
        if kept.len() > LAST_READINGS {
            kept.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(ts: i64, value: f64) -> Reading {
        Reading {
            sensor: "s".into(),
            ts,
            value,
            tags: Default::default(),
        }
    }

    #[test]
    fn the_newest_ten_are_kept_and_a_later_value_wins() {
        let mut kept = Vec::new();
        merge_newest(&mut kept, (0..15).map(|i| r(i, 0.0)));
        assert_eq!(kept.first().map(|r| r.ts), Some(5));
        merge_newest(&mut kept, [r(14, 9.0), r(3, 1.0)]);
        assert_eq!(kept.len(), 10);
        assert_eq!(kept.last().map(|r| r.value), Some(9.0));
        assert!(kept.iter().all(|r| r.ts >= 5));
    }
}
