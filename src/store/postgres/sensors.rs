//! [`SensorStore`] on PostgreSQL: readings in a table partitioned by day on ts
//! (`readings_dYYYYMMDD`, declarative partitions). Partitions are made ahead by maintenance
//! and on demand for the days a batch reaches; retention drops whole partitions. Batches are
//! one `INSERT … SELECT FROM UNNEST` (one round trip whatever the batch size).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};

use super::{PgStore, rfc3339};
use crate::domain::{Reading, SensorId, SensorInfo};
use crate::store::StoreError;
use crate::store::sensors::{
    Bucket, DAY_MS, Maintenance, NewSensor, SensorStore, TimeRange, newest_per_sensor,
    sensor_columns,
};

/// Days of partitions kept ready ahead of today.
pub const PARTITIONS_AHEAD: i64 = 3;

/// Rows per INSERT: one statement per chunk, each chunk its own transaction, so a large flush
/// never holds locks (or a connection) for long.
const ROWS_PER_TRANSACTION: usize = 5000;

/// Advisory lock key serializing partition DDL across instances ("tsunagi partitions").
const PARTITION_LOCK: i64 = 0x7473_756e_6167_6970;

fn sensor_from_row(r: &PgRow) -> SensorInfo {
    SensorInfo {
        id: r.get("id"),
        name: r.get("name"),
        private: r.get("private"),
        owner_id: r.get("owner_id"),
        metadata: r
            .get::<Option<sqlx::types::Json<serde_json::Value>>, _>("metadata")
            .map(|m| m.0),
        created_at: rfc3339(r.get("created_at")),
        last_ts: r.get("last_ts"),
    }
}

fn reading_from_row(r: &PgRow) -> Reading {
    let tags: sqlx::types::Json<serde_json::Map<String, serde_json::Value>> = r.get("tags");
    Reading {
        sensor: r.get("sensor"),
        ts: r.get("ts"),
        value: r.get("value"),
        tags: tags.0,
    }
}

/// The partition of the day starting at `day_ms`.
pub fn partition_name(day_ms: i64) -> String {
    let day = DateTime::<Utc>::from_timestamp_millis(day_ms).unwrap_or_default();
    format!("readings_d{}", day.format("%Y%m%d"))
}

/// The start (ms) of the day a partition name covers.
fn partition_day(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("readings_d")?;
    let date = chrono::NaiveDate::parse_from_str(digits, "%Y%m%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

fn day_of(ts: i64) -> i64 {
    ts - ts.rem_euclid(DAY_MS)
}

/// Aggregates per bucket on the (sensor, ts) key, then `last` by the key of each bucket's
/// greatest ts (the join repeats the range, so only the partitions of the range are read). ts
/// is never negative, so integer division floors.
pub const SERIES: &str = "WITH g AS (\
     SELECT ts / $4 AS k, count(*) AS n, avg(value) AS avg, min(value) AS min, \
     max(value) AS max, sum(value) AS sum, max(ts) AS lt \
     FROM readings WHERE sensor = $1 AND ts >= $2 AND ts < $3 GROUP BY 1) \
     SELECT g.k * $4 AS t, g.n, g.avg, g.min, g.max, g.sum, r.value AS last \
     FROM g JOIN readings r ON r.sensor = $1 AND r.ts = g.lt AND r.ts >= $2 AND r.ts < $3 \
     ORDER BY g.k";

/// A range of one sensor, ascending.
pub const READINGS_RANGE: &str = "SELECT sensor, ts, value, tags FROM readings \
     WHERE sensor = $1 AND ts >= $2 AND ts < $3 ORDER BY ts LIMIT $4";

impl PgStore {
    /// Creates the partitions of `days` that are missing (under an advisory lock, so two
    /// instances never race on the same DDL); returns how many exist afterwards.
    async fn ensure_partitions(&self, days: &[i64]) -> Result<u64, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK)
            .execute(&mut *tx)
            .await?;
        let present = partitions(&mut tx).await?;
        for &day in days {
            if present.contains(&day) {
                continue;
            }
            // identifiers and bounds are made here from integers, never from input text
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF readings FOR VALUES FROM ({day}) TO ({})",
                partition_name(day),
                day + DAY_MS
            );
            self.telemetry
                .timed(
                    "readings_partition_create",
                    sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(&mut *tx),
                )
                .await?;
        }
        let count = partitions(&mut tx).await?.len() as u64;
        tx.commit().await?;
        let mut known = self.known_days.lock();
        known.extend(days.iter().copied());
        Ok(count)
    }

    async fn insert_readings(&self, chunk: &[Reading]) -> Result<(), StoreError> {
        let mut sensors = Vec::with_capacity(chunk.len());
        let mut ts = Vec::with_capacity(chunk.len());
        let mut values = Vec::with_capacity(chunk.len());
        let mut tags = Vec::with_capacity(chunk.len());
        for r in chunk {
            sensors.push(r.sensor.as_str());
            ts.push(r.ts);
            values.push(r.value);
            tags.push(serde_json::Value::Object(r.tags.clone()).to_string());
        }
        let (last_sensors, last_ts): (Vec<&str>, Vec<i64>) =
            newest_per_sensor(chunk).into_iter().unzip();
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        self.telemetry
            .timed(
                "readings_insert",
                sqlx::query(
                    "INSERT INTO readings (sensor, ts, value, tags) \
                     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::float8[], $4::text[]::jsonb[]) \
                     ON CONFLICT (sensor, ts) DO UPDATE SET value = excluded.value, tags = excluded.tags",
                )
                .bind(&sensors)
                .bind(&ts)
                .bind(&values)
                .bind(&tags)
                .execute(&mut *tx),
            )
            .await?;
        self.telemetry
            .timed(
                "sensor_last_ts",
                sqlx::query(
                    "UPDATE sensors s SET last_ts = GREATEST(coalesce(s.last_ts, n.ts), n.ts) \
                     FROM UNNEST($1::text[], $2::bigint[]) AS n(id, ts) WHERE s.id = n.id",
                )
                .bind(&last_sensors)
                .bind(&last_ts)
                .execute(&mut *tx),
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn write_readings_inner(&self, batch: &[Reading]) -> Result<(), StoreError> {
        let mut days: Vec<i64> = batch.iter().map(|r| day_of(r.ts)).collect();
        days.sort_unstable();
        days.dedup();
        let missing: Vec<i64> = {
            let known = self.known_days.lock();
            days.into_iter().filter(|d| !known.contains(d)).collect()
        };
        if !missing.is_empty() {
            self.ensure_partitions(&missing).await?;
        }
        for chunk in batch.chunks(ROWS_PER_TRANSACTION) {
            match self.insert_readings(chunk).await {
                // 23514: no partition for a row: retention (maybe on another instance) dropped
                // a day this instance thought present. Forget what it knew and make them again.
                Err(StoreError::Statement(e)) if e.contains("no partition") => {
                    self.known_days.lock().clear();
                    let mut days: Vec<i64> = chunk.iter().map(|r| day_of(r.ts)).collect();
                    days.sort_unstable();
                    days.dedup();
                    self.ensure_partitions(&days).await?;
                    self.insert_readings(chunk).await?;
                }
                other => other?,
            }
        }
        Ok(())
    }

    async fn maintain_inner(
        &self,
        now: i64,
        keep_from: Option<i64>,
    ) -> Result<Maintenance, StoreError> {
        let today = day_of(now);
        let ahead: Vec<i64> = (0..=PARTITIONS_AHEAD).map(|d| today + d * DAY_MS).collect();
        self.ensure_partitions(&ahead).await?;
        let mut removed = 0;
        if let Some(keep_from) = keep_from {
            let mut conn = self.primary.acquire().await?;
            let mut tx = conn.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PARTITION_LOCK)
                .execute(&mut *tx)
                .await?;
            for day in partitions(&mut tx).await? {
                // only partitions wholly older than the cut: a day partly inside keeps its rows
                if day + DAY_MS <= keep_from {
                    let ddl = format!("DROP TABLE IF EXISTS {}", partition_name(day));
                    self.telemetry
                        .timed(
                            "readings_partition_drop",
                            sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(&mut *tx),
                        )
                        .await?;
                    removed += 1;
                }
            }
            tx.commit().await?;
            if removed > 0 {
                self.known_days.lock().clear();
            }
        }
        let mut conn = self.primary.acquire().await?;
        let count = partitions(&mut conn).await?.len() as u64;
        Ok(Maintenance {
            removed,
            partitions: count,
        })
    }
}

/// The days whose partitions exist now.
async fn partitions(conn: &mut PgConnection) -> Result<Vec<i64>, StoreError> {
    let rows = sqlx::query(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'readings'::regclass",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| partition_day(r.get::<&str, _>(0)))
        .collect())
}

#[async_trait]
impl SensorStore for PgStore {
    async fn create_sensor(&self, s: NewSensor) -> Result<SensorInfo, StoreError> {
        self.bounded(async {
            let row = self
                .telemetry
                .timed(
                    "sensor_insert",
                    sqlx::query(concat!(
                        "INSERT INTO sensors (id, name, private, owner_id, metadata, created_at) \
                         VALUES ($1, $2, $3, $4, $5, now()) RETURNING ",
                        sensor_columns!()
                    ))
                    .bind(s.id.as_str())
                    .bind(&s.name)
                    .bind(s.private)
                    .bind(&s.owner_id)
                    .bind(s.metadata.as_ref().map(sqlx::types::Json))
                    .fetch_one(&mut *self.primary.acquire().await?),
                )
                .await;
            match row {
                Ok(r) => Ok(sensor_from_row(&r)),
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    Err(StoreError::Conflict(format!("sensor {}", s.id)))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn sensor(&self, id: &SensorId) -> Result<Option<SensorInfo>, StoreError> {
        self.bounded(async {
            let row = self
                .telemetry
                .timed(
                    "sensor_get",
                    sqlx::query(concat!(
                        "SELECT ",
                        sensor_columns!(),
                        " FROM sensors WHERE id = $1"
                    ))
                    .bind(id.as_str())
                    .fetch_optional(&mut *self.primary.acquire().await?),
                )
                .await?;
            Ok(row.as_ref().map(sensor_from_row))
        })
        .await
    }

    async fn list_sensors(
        &self,
        viewer: &str,
        admin: bool,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SensorInfo>, StoreError> {
        self.bounded(async {
            let rows = self
                .telemetry
                .timed(
                    "sensors_list",
                    sqlx::query(concat!(
                        "SELECT ",
                        sensor_columns!(),
                        " FROM sensors WHERE id > $1 AND ($2 OR NOT private OR owner_id = $3) \
                         ORDER BY id LIMIT $4"
                    ))
                    .bind(cursor.unwrap_or(""))
                    .bind(admin)
                    .bind(viewer)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *self.primary.acquire().await?),
                )
                .await?;
            Ok(rows.iter().map(sensor_from_row).collect())
        })
        .await
    }

    async fn write_readings(&self, batch: &[Reading]) -> Result<(), StoreError> {
        self.bounded(self.write_readings_inner(batch)).await
    }

    async fn readings(
        &self,
        sensor: &SensorId,
        range: TimeRange,
        limit: u32,
    ) -> Result<Vec<Reading>, StoreError> {
        self.bounded(async {
            let rows = self
                .telemetry
                .timed(
                    "readings_range",
                    sqlx::query(READINGS_RANGE)
                        .bind(sensor.as_str())
                        .bind(range.from)
                        .bind(range.to)
                        .bind(i64::from(limit))
                        .fetch_all(&mut *self.primary.acquire().await?),
                )
                .await?;
            Ok(rows.iter().map(reading_from_row).collect())
        })
        .await
    }

    async fn newest_readings(&self, sensor: &SensorId, n: u32) -> Result<Vec<Reading>, StoreError> {
        self.bounded(async {
            let rows = self
                .telemetry
                .timed(
                    "readings_newest",
                    sqlx::query(
                        "SELECT sensor, ts, value, tags FROM readings WHERE sensor = $1 \
                         ORDER BY ts DESC LIMIT $2",
                    )
                    .bind(sensor.as_str())
                    .bind(i64::from(n))
                    .fetch_all(&mut *self.primary.acquire().await?),
                )
                .await?;
            Ok(rows.iter().map(reading_from_row).collect())
        })
        .await
    }

    async fn series(
        &self,
        sensor: &SensorId,
        range: TimeRange,
        bucket_ms: i64,
    ) -> Result<Vec<Bucket>, StoreError> {
        self.bounded(async {
            let rows = self
                .telemetry
                .timed(
                    "readings_series",
                    sqlx::query(SERIES)
                        .bind(sensor.as_str())
                        .bind(range.from)
                        .bind(range.to)
                        .bind(bucket_ms)
                        .fetch_all(&mut *self.primary.acquire().await?),
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| Bucket {
                    t: r.get("t"),
                    count: r.get("n"),
                    avg: r.get("avg"),
                    min: r.get("min"),
                    max: r.get("max"),
                    sum: r.get("sum"),
                    last: r.get("last"),
                })
                .collect())
        })
        .await
    }

    async fn maintain_sensors(
        &self,
        now: i64,
        keep_from: Option<i64>,
    ) -> Result<Maintenance, StoreError> {
        self.bounded(self.maintain_inner(now, keep_from)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_and_days_round_trip() {
        let day = 1_764_806_400_000; // 2025-12-04
        assert_eq!(partition_name(day), "readings_d20251204");
        assert_eq!(partition_day("readings_d20251204"), Some(day));
        assert_eq!(day_of(day + 5), day);
        assert_eq!(partition_day("readings"), None);
    }
}
