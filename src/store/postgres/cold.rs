//! Cold storage on PostgreSQL: `messages_archive`, partitioned by month of `created_at`, in the
//! primary (the default) or in the database `TSUNAGI_ARCHIVE_URL` names. Its own small pool,
//! so a send looking up an archived `client_id` never waits for a connection it holds itself.

use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, Row};

use super::open_messages;
use crate::at_rest::{Sealer, Stored, StoredMessage};
use crate::domain::Message;
use crate::store::StoreError;
use crate::store::archive::{ColdKey, ColdSettings, ColdStore, SeqRange};
use crate::store::pool::InstrumentedPool;
use crate::store::sealed::{Reseal, ResealStore, RowId, SealedRow, SealedTable};
use crate::telemetry::Telemetry;

/// Held (transaction-scoped) around schema and partition DDL, so instances never race on it.
const DDL_LOCK: i64 = 0x7473_756e_6172_6368; // "tsunarch"

/// The parent table and its index, made at open and idempotent: the archive may live in a
/// database whose migration history is not ours (another application's, or none).
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS messages_archive (
        room_id     TEXT NOT NULL,
        epoch       TEXT NOT NULL,
        seq         BIGINT NOT NULL,
        id          TEXT NOT NULL,
        user_id     TEXT NOT NULL,
        content     TEXT NOT NULL,
        client_id   TEXT,
        created_at  TIMESTAMPTZ NOT NULL,
        archived_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (room_id, epoch, seq, created_at)
    ) PARTITION BY RANGE (created_at)",
    "CREATE INDEX IF NOT EXISTS messages_archive_by_client_id
        ON messages_archive (room_id, user_id, client_id) WHERE client_id IS NOT NULL",
    // encryption at rest: the key id of a sealed content (NULL: plaintext); tables made
    // before it get the column here (nullable, no default: no rewrite)
    "ALTER TABLE messages_archive ADD COLUMN IF NOT EXISTS content_key TEXT",
];

const COLUMNS: &str = "room_id, seq, id, user_id, content, client_id, created_at, content_key";

pub struct PgCold {
    telemetry: Telemetry,
    pool: InstrumentedPool<Postgres>,
    /// Months (year * 12 + month0) whose partition is known to exist.
    known_months: parking_lot::Mutex<HashSet<i32>>,
    /// The table is in the primary: its health is the primary's (no connection of its own for
    /// `/readyz`).
    in_primary: bool,
    sealer: Arc<Sealer>,
}

fn month_key(t: &DateTime<Utc>) -> i32 {
    t.year() * 12 + t.month0() as i32
}

fn month_start(key: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(key.div_euclid(12), key.rem_euclid(12) as u32 + 1, 1)
        .expect("a month key is a valid date")
}

/// `messages_archive_y2026m12`: made from integers, never from input text.
pub fn partition_name(key: i32) -> String {
    let start = month_start(key);
    format!("messages_archive_y{:04}m{:02}", start.year(), start.month())
}

/// The archived messages of `keys`, on `conn`: the cold pool's, or (cold storage in the
/// primary) the sending transaction's own connection, which waits for no other pool.
pub async fn by_client_ids(
    conn: &mut PgConnection,
    telemetry: &Telemetry,
    sealer: &Sealer,
    keys: &[ColdKey],
) -> Result<Vec<Message>, StoreError> {
    let rows = telemetry
        .timed(
            "archive_by_client_ids",
            sqlx::query(
                "SELECT room_id, seq, id, user_id, content, client_id, created_at, content_key \
                 FROM messages_archive JOIN UNNEST($1::text[], $2::text[], $3::text[], \
                 $4::text[]) AS k(room_id, epoch, user_id, client_id) \
                 USING (room_id, epoch, user_id, client_id)",
            )
            .bind(keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.2.as_str()).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.3.as_str()).collect::<Vec<_>>())
            .fetch_all(conn),
        )
        .await?;
    open_messages(sealer, &rows)
}

impl PgCold {
    pub async fn open(
        url: &str,
        in_primary: bool,
        s: &ColdSettings,
        telemetry: Telemetry,
    ) -> anyhow::Result<Self> {
        let timeout_ms = s.statement_timeout.as_millis().to_string();
        let options = PgConnectOptions::from_str(url)?
            .application_name(&format!("{}-archive", s.application_name))
            .options([
                ("statement_timeout", timeout_ms.as_str()),
                ("TimeZone", "UTC"),
            ]);
        // The table first, on a connection of its own; the pool then connects lazily and keeps
        // nothing idle: cold reads are rare, and every instance's pool counts against the
        // server's max_connections.
        let mut conn = PgConnection::connect_with(&options).await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(DDL_LOCK)
            .execute(&mut *tx)
            .await?;
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        conn.close().await?;
        let inner = PgPoolOptions::new()
            .max_connections(if in_primary { 2 } else { 4 })
            .min_connections(0)
            .idle_timeout(std::time::Duration::from_secs(30))
            .acquire_timeout(s.acquire_timeout)
            .connect_lazy_with(options);
        Ok(PgCold {
            pool: InstrumentedPool::new("archive", inner, 0.9, telemetry.clone()),
            telemetry,
            known_months: Default::default(),
            in_primary,
            sealer: s.sealer.clone(),
        })
    }

    /// Creates the month partitions of `months` not known to exist.
    async fn ensure_partitions(&self, months: &BTreeSet<i32>) -> Result<(), StoreError> {
        let missing: Vec<i32> = {
            let known = self.known_months.lock();
            months
                .iter()
                .filter(|m| !known.contains(m))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(DDL_LOCK)
            .execute(&mut *tx)
            .await?;
        for &key in &missing {
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF messages_archive \
                 FOR VALUES FROM ('{}') TO ('{}')",
                partition_name(key),
                month_start(key),
                month_start(key + 1)
            );
            self.telemetry
                .timed(
                    "archive_partition_create",
                    sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(&mut *tx),
                )
                .await?;
        }
        tx.commit().await?;
        self.known_months.lock().extend(missing);
        Ok(())
    }
}

fn parse_created_at(m: &Message) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(&m.created_at)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Statement(format!("message {}: created_at: {e}", m.id)))
}

#[async_trait]
impl ColdStore for PgCold {
    async fn insert(&self, epoch: &str, rows: &[StoredMessage]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let created: Vec<DateTime<Utc>> = rows
            .iter()
            .map(|m| parse_created_at(m))
            .collect::<Result<_, _>>()?;
        self.ensure_partitions(&created.iter().map(month_key).collect())
            .await?;
        let mut conn = self.pool.acquire().await?;
        self.telemetry
            .timed(
                "archive_insert",
                sqlx::query(
                    "INSERT INTO messages_archive \
                     (room_id, epoch, seq, id, user_id, content, client_id, created_at, \
                     content_key) SELECT r, $1, s, i, u, c, k, t, ck FROM UNNEST($2::text[], \
                     $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], \
                     $8::timestamptz[], $9::text[]) AS x(r, s, i, u, c, k, t, ck) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(epoch)
                .bind(rows.iter().map(|m| m.room.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|m| m.seq).collect::<Vec<_>>())
                .bind(rows.iter().map(|m| m.id.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|m| m.user_id.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|m| m.content.as_str()).collect::<Vec<_>>())
                .bind(
                    rows.iter()
                        .map(|m| m.client_id.as_deref())
                        .collect::<Vec<_>>(),
                )
                .bind(created)
                .bind(
                    rows.iter()
                        .map(|m| m.content_key.as_deref())
                        .collect::<Vec<_>>(),
                )
                .execute(&mut *conn),
            )
            .await?;
        Ok(())
    }

    async fn history(
        &self,
        room: &str,
        epoch: &str,
        range: SeqRange,
    ) -> Result<Vec<Message>, StoreError> {
        let order = if range.backwards { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {COLUMNS} FROM messages_archive WHERE room_id = $1 AND epoch = $2 \
             AND seq > $3 AND seq < $4 ORDER BY seq {order} LIMIT $5"
        );
        let rows = self
            .telemetry
            .timed(
                "archive_history",
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(room)
                    .bind(epoch)
                    .bind(range.after)
                    .bind(range.before)
                    .bind(range.fetch)
                    .fetch_all(&mut *self.pool.acquire().await?),
            )
            .await?;
        open_messages(&self.sealer, &rows)
    }

    async fn by_client_ids(&self, keys: &[ColdKey]) -> Result<Vec<Message>, StoreError> {
        by_client_ids(
            &mut *self.pool.acquire().await?,
            &self.telemetry,
            &self.sealer,
            keys,
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.in_primary {
            return Ok(());
        }
        self.telemetry
            .timed(
                "archive_ping",
                sqlx::query("SELECT 1").execute(&mut *self.pool.acquire().await?),
            )
            .await?;
        Ok(())
    }

    fn pool_stats(&self) -> serde_json::Value {
        serde_json::json!([self.pool.stats()])
    }

    async fn close(&self) {
        self.pool.inner.close().await;
    }
}

/// `tsunagi rekey` on `messages_archive` (see `postgres/sealed.rs` for the primary's tables).
#[async_trait]
impl ResealStore for PgCold {
    async fn stale_rows(
        &self,
        table: SealedTable,
        after: Option<&RowId>,
        current: &str,
        limit: u32,
    ) -> Result<Vec<SealedRow>, StoreError> {
        if table != SealedTable::ColdMessages {
            return Ok(Vec::new());
        }
        let (room, epoch, seq) = match after {
            Some(RowId::ColdMessage {
                room, epoch, seq, ..
            }) => (room.clone(), epoch.clone(), *seq),
            _ => (String::new(), String::new(), i64::MIN),
        };
        let rows = self
            .telemetry
            .timed(
                "rekey_stale_rows",
                sqlx::query(
                    "SELECT room_id, epoch, seq, id, content, content_key FROM messages_archive \
                     WHERE (room_id, epoch, seq) > ($1, $2, $3) \
                     AND content_key IS DISTINCT FROM $4 ORDER BY room_id, epoch, seq LIMIT $5",
                )
                .bind(room)
                .bind(epoch)
                .bind(seq)
                .bind(current.to_owned())
                .bind(i64::from(limit))
                .fetch_all(&mut *self.pool.acquire().await?),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SealedRow {
                row: RowId::ColdMessage {
                    room: r.get("room_id"),
                    epoch: r.get("epoch"),
                    seq: r.get("seq"),
                    id: r.get("id"),
                },
                stored: Stored {
                    key_id: r.get("content_key"),
                    text: r.get("content"),
                },
            })
            .collect())
    }

    async fn reseal(&self, table: SealedTable, rows: &[Reseal]) -> Result<u64, StoreError> {
        if table != SealedTable::ColdMessages || rows.is_empty() {
            return Ok(0);
        }
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut changed = 0;
        for Reseal { old, new } in rows {
            let RowId::ColdMessage {
                room, epoch, seq, ..
            } = &old.row
            else {
                continue;
            };
            changed += self
                .telemetry
                .timed(
                    "rekey_reseal",
                    sqlx::query(
                        "UPDATE messages_archive SET content = $1, content_key = $2 \
                         WHERE room_id = $5 AND epoch = $6 AND seq = $7 AND content = $3 \
                         AND content_key IS NOT DISTINCT FROM $4",
                    )
                    .bind(&new.text)
                    .bind(&new.key_id)
                    .bind(&old.stored.text)
                    .bind(&old.stored.key_id)
                    .bind(room)
                    .bind(epoch)
                    .bind(seq)
                    .execute(&mut *tx),
                )
                .await?
                .rows_affected();
        }
        self.telemetry.timed("archive_commit", tx.commit()).await?;
        Ok(changed)
    }

    async fn count_stale(&self, table: SealedTable, current: &str) -> Result<i64, StoreError> {
        if table != SealedTable::ColdMessages {
            return Ok(0);
        }
        Ok(self
            .telemetry
            .timed(
                "rekey_count_stale",
                sqlx::query_scalar(
                    "SELECT count(*) FROM messages_archive WHERE content_key IS DISTINCT FROM $1",
                )
                .bind(current.to_owned())
                .fetch_one(&mut *self.pool.acquire().await?),
            )
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_partitions_are_named_and_bounded_by_calendar_months() {
        let t = DateTime::parse_from_rfc3339("2026-12-31T23:59:59.999Z")
            .unwrap()
            .with_timezone(&Utc);
        let key = month_key(&t);
        assert_eq!(partition_name(key), "messages_archive_y2026m12");
        assert_eq!(month_start(key).to_string(), "2026-12-01");
        assert_eq!(month_start(key + 1).to_string(), "2027-01-01");
    }
}
