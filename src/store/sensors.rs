//! The sensors part of the store (PROTOCOL.md §6.1): sensors, and their readings as a time
//! series keyed by (sensor, ts).
//!
//! Readings reach it only through the write-behind buffer (`services::sensors::buffer`), in
//! batches; buckets are computed in SQL on the (sensor, ts) key, never by loading rows here.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::{Reading, SensorId, SensorInfo};

/// The columns a sensor row is read with, the same in both stores.
macro_rules! sensor_columns {
    () => {
        "id, name, private, owner_id, metadata, created_at, last_ts"
    };
}
pub(crate) use sensor_columns;

pub const DAY_MS: i64 = 86_400_000;

pub struct NewSensor {
    pub id: SensorId,
    pub name: String,
    pub private: bool,
    pub owner_id: String,
    pub metadata: Option<serde_json::Value>,
}

/// One bucket of a series: every aggregate (the caller shows those asked for).
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// The bucket's start, ms since the epoch.
    pub t: i64,
    pub count: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    /// The value with the greatest ts in the bucket.
    pub last: f64,
}

/// `from ≤ ts < to`, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: i64,
    pub to: i64,
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Readings removed by retention (SQLite), or partitions dropped (PostgreSQL).
    pub removed: u64,
    /// Time partitions present after the pass (0 where the store has none).
    pub partitions: u64,
}

/// Obligations of every implementation:
/// - `write_readings` stores the batch in short transactions of its own (never a message's), a
///   reading with the (sensor, ts) of a stored one replacing it; the batch holds each (sensor,
///   ts) once. Each transaction advances its sensors' `last_ts`. On an error some chunks may be
///   stored: writing the same batch again is harmless (the caller retries it whole).
/// - Reads of readings and series see every committed batch (they read the primary).
/// - `maintain_sensors` prepares storage ahead of `now` (PostgreSQL: daily partitions) and
///   removes readings older than `keep_from` (None: keep everything).
#[async_trait]
pub trait SensorStore: Send + Sync {
    async fn create_sensor(&self, s: NewSensor) -> Result<SensorInfo, StoreError>;
    async fn sensor(&self, id: &SensorId) -> Result<Option<SensorInfo>, StoreError>;
    /// Sensors `viewer` may read (public, or their own; `admin`: all), by id, after `cursor`.
    async fn list_sensors(
        &self,
        viewer: &str,
        admin: bool,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SensorInfo>, StoreError>;
    async fn write_readings(&self, batch: &[Reading]) -> Result<(), StoreError>;
    /// Readings of `sensor` in `range`, ascending by ts, at most `limit`.
    async fn readings(
        &self,
        sensor: &SensorId,
        range: TimeRange,
        limit: u32,
    ) -> Result<Vec<Reading>, StoreError>;
    /// The `n` readings with the greatest ts, newest first.
    async fn newest_readings(&self, sensor: &SensorId, n: u32) -> Result<Vec<Reading>, StoreError>;
    /// Non-empty buckets of `bucket_ms` (aligned on multiples since the epoch), ascending.
    async fn series(
        &self,
        sensor: &SensorId,
        range: TimeRange,
        bucket_ms: i64,
    ) -> Result<Vec<Bucket>, StoreError>;
    async fn maintain_sensors(
        &self,
        now: i64,
        keep_from: Option<i64>,
    ) -> Result<Maintenance, StoreError>;
}

/// Each sensor of `batch` with its greatest ts (for `last_ts`).
pub fn newest_per_sensor(batch: &[Reading]) -> Vec<(&str, i64)> {
    let mut newest: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    for r in batch {
        let e = newest.entry(r.sensor.as_str()).or_insert(r.ts);
        *e = (*e).max(r.ts);
    }
    newest.into_iter().collect()
}
