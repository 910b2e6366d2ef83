//! [`SensorStore`] on SQLite: one `readings` table clustered on (sensor, ts); retention deletes
//! old rows in small batches so the writer is never held long.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, QueryBuilder, Row, Sqlite};

use super::SqliteStore;
use crate::domain::{Reading, SensorId, SensorInfo, now_rfc3339};
use crate::store::StoreError;
use crate::store::sensors::{
    Bucket, Maintenance, NewSensor, SensorStore, TimeRange, newest_per_sensor, sensor_columns,
};

/// Rows per transaction (one INSERT: 4 parameters a row, well under SQLite's 32766).
const ROWS_PER_TRANSACTION: usize = 1000;
/// Rows retention deletes per transaction.
const DELETE_BATCH: i64 = 5000;

fn sensor_from_row(r: &SqliteRow) -> SensorInfo {
    SensorInfo {
        id: r.get("id"),
        name: r.get("name"),
        private: r.get("private"),
        owner_id: r.get("owner_id"),
        metadata: r
            .get::<Option<String>, _>("metadata")
            .and_then(|m| serde_json::from_str(&m).ok()),
        created_at: r.get("created_at"),
        last_ts: r.get("last_ts"),
    }
}

fn reading_from_row(r: &SqliteRow) -> Reading {
    Reading {
        sensor: r.get("sensor"),
        ts: r.get("ts"),
        value: r.get("value"),
        tags: serde_json::from_str(r.get::<&str, _>("tags")).unwrap_or_default(),
    }
}

#[async_trait]
impl SensorStore for SqliteStore {
    async fn create_sensor(&self, s: NewSensor) -> Result<SensorInfo, StoreError> {
        let info = SensorInfo {
            id: s.id.into_string(),
            name: s.name,
            private: s.private,
            owner_id: s.owner_id,
            metadata: s.metadata,
            created_at: now_rfc3339(),
            last_ts: None,
        };
        let done = self
            .telemetry
            .timed(
                "sensor_insert",
                sqlx::query(
                    "INSERT INTO sensors (id, name, private, owner_id, metadata, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(&info.id)
                .bind(&info.name)
                .bind(info.private)
                .bind(&info.owner_id)
                .bind(info.metadata.as_ref().map(|m| m.to_string()))
                .bind(&info.created_at)
                .execute(&mut *self.writer.acquire().await?),
            )
            .await;
        match done {
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(StoreError::Conflict(format!("sensor {}", info.id)))
            }
            other => other.map(|_| info).map_err(Into::into),
        }
    }

    async fn sensor(&self, id: &SensorId) -> Result<Option<SensorInfo>, StoreError> {
        let row = self
            .telemetry
            .timed(
                "sensor_get",
                sqlx::query(concat!(
                    "SELECT ",
                    sensor_columns!(),
                    " FROM sensors WHERE id = ?"
                ))
                .bind(id.as_str())
                .fetch_optional(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(row.as_ref().map(sensor_from_row))
    }

    async fn list_sensors(
        &self,
        viewer: &str,
        admin: bool,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SensorInfo>, StoreError> {
        let rows = self
            .telemetry
            .timed(
                "sensors_list",
                sqlx::query(concat!(
                    "SELECT ",
                    sensor_columns!(),
                    " FROM sensors WHERE id > ? AND (? OR private = 0 OR owner_id = ?) \
                     ORDER BY id LIMIT ?"
                ))
                .bind(cursor.unwrap_or(""))
                .bind(admin)
                .bind(viewer)
                .bind(limit as i64)
                .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows.iter().map(sensor_from_row).collect())
    }

    async fn write_readings(&self, batch: &[Reading]) -> Result<(), StoreError> {
        // One short transaction per chunk: the writer connection is the messages' too, and a
        // send waiting behind a long flush would lose its priority (PROTOCOL.md §6).
        for chunk in batch.chunks(ROWS_PER_TRANSACTION) {
            self.write_chunk(chunk).await?;
        }
        Ok(())
    }

    async fn readings(
        &self,
        sensor: &SensorId,
        range: TimeRange,
        limit: u32,
    ) -> Result<Vec<Reading>, StoreError> {
        let rows = self
            .telemetry
            .timed(
                "readings_range",
                sqlx::query(
                    "SELECT sensor, ts, value, tags FROM readings \
                     WHERE sensor = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
                )
                .bind(sensor.as_str())
                .bind(range.from)
                .bind(range.to)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows.iter().map(reading_from_row).collect())
    }

    async fn newest_readings(&self, sensor: &SensorId, n: u32) -> Result<Vec<Reading>, StoreError> {
        let rows = self
            .telemetry
            .timed(
                "readings_newest",
                sqlx::query(
                    "SELECT sensor, ts, value, tags FROM readings WHERE sensor = ? \
                     ORDER BY ts DESC LIMIT ?",
                )
                .bind(sensor.as_str())
                .bind(i64::from(n))
                .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows.iter().map(reading_from_row).collect())
    }

    async fn series(
        &self,
        sensor: &SensorId,
        range: TimeRange,
        bucket_ms: i64,
    ) -> Result<Vec<Bucket>, StoreError> {
        let rows = self
            .telemetry
            .timed(
                "readings_series",
                sqlx::query(SERIES)
                    .bind(sensor.as_str())
                    .bind(range.from)
                    .bind(range.to)
                    .bind(bucket_ms)
                    .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows.iter().map(bucket_from_row).collect())
    }

    async fn maintain_sensors(
        &self,
        _now: i64,
        keep_from: Option<i64>,
    ) -> Result<Maintenance, StoreError> {
        let Some(keep_from) = keep_from else {
            return Ok(Maintenance::default());
        };
        let mut removed = 0;
        loop {
            let done = self
                .telemetry
                .timed(
                    "readings_retention",
                    sqlx::query(
                        "DELETE FROM readings WHERE (sensor, ts) IN \
                         (SELECT sensor, ts FROM readings WHERE ts < ? LIMIT ?)",
                    )
                    .bind(keep_from)
                    .bind(DELETE_BATCH)
                    .execute(&mut *self.writer.acquire().await?),
                )
                .await?;
            removed += done.rows_affected();
            if done.rows_affected() < DELETE_BATCH as u64 {
                return Ok(Maintenance {
                    removed,
                    partitions: 0,
                });
            }
        }
    }
}

impl SqliteStore {
    async fn write_chunk(&self, chunk: &[Reading]) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let mut insert: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO readings (sensor, ts, value, tags) ");
        insert.push_values(chunk, |mut row, r| {
            row.push_bind(&r.sensor)
                .push_bind(r.ts)
                .push_bind(r.value)
                .push_bind(serde_json::Value::Object(r.tags.clone()).to_string());
        });
        insert.push(
            " ON CONFLICT (sensor, ts) DO UPDATE SET value = excluded.value, tags = excluded.tags",
        );
        self.telemetry
            .timed("readings_insert", insert.build().execute(&mut *tx))
            .await?;
        for (sensor, last) in newest_per_sensor(chunk) {
            self.telemetry
                .timed(
                    "sensor_last_ts",
                    sqlx::query(
                        "UPDATE sensors SET last_ts = max(coalesce(last_ts, ?2), ?2) WHERE id = ?1",
                    )
                    .bind(sensor)
                    .bind(last)
                    .execute(&mut *tx),
                )
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Aggregates per bucket in one scan of the (sensor, ts) key: `last` is the value of the row
/// numbered first by descending ts within its bucket (`?1` sensor, `?2`..`?3` the range, `?4`
/// the bucket length; ts is never negative, so integer division floors). (A join back to the
/// key for `last`, as on PostgreSQL, made SQLite's planner rescan the bucket per row.)
const SERIES: &str = "SELECT k * ?4 AS t, count(*) AS n, avg(value) AS avg, min(value) AS min, \
     max(value) AS max, sum(value) AS sum, max(CASE WHEN newest = 1 THEN value END) AS last \
     FROM (SELECT ts / ?4 AS k, value, \
           row_number() OVER (PARTITION BY ts / ?4 ORDER BY ts DESC) AS newest \
           FROM readings WHERE sensor = ?1 AND ts >= ?2 AND ts < ?3) \
     GROUP BY k ORDER BY k";

fn bucket_from_row(r: &SqliteRow) -> Bucket {
    Bucket {
        t: r.get("t"),
        count: r.get("n"),
        avg: r.get("avg"),
        min: r.get("min"),
        max: r.get("max"),
        sum: r.get("sum"),
        last: r.get("last"),
    }
}
