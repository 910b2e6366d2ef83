//! Encryption at rest on SQLite: the key registry and the row access of `tsunagi rekey` for the
//! primary's tables (cold rows: `cold.rs`). Each reseal batch is one short `BEGIN IMMEDIATE`
//! transaction of compare-and-set updates (`IS`: equal, NULLs included).

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, Row};

use super::SqliteStore;
use crate::at_rest::Stored;
use crate::domain::now_rfc3339;
use crate::store::StoreError;
use crate::store::sealed::{KeyRegistry, Reseal, ResealStore, RowId, SealedRow, SealedTable};

fn stored(r: &SqliteRow, text: &str, key: &str) -> Stored {
    Stored {
        key_id: r.get(key),
        text: r.get(text),
    }
}

fn sealed_row(table: SealedTable, r: &SqliteRow) -> SealedRow {
    match table {
        SealedTable::State => SealedRow {
            row: RowId::State {
                room: r.get("room_id"),
                key: r.get("key"),
            },
            stored: stored(r, "value", "value_key"),
        },
        SealedTable::Jobs => SealedRow {
            row: RowId::Job { id: r.get("id") },
            stored: stored(r, "payload", "payload_key"),
        },
        _ => SealedRow {
            row: RowId::Message {
                room: r.get("room_id"),
                seq: r.get("seq"),
                id: r.get("id"),
            },
            stored: stored(r, "content", "content_key"),
        },
    }
}

#[async_trait]
impl ResealStore for SqliteStore {
    async fn stale_rows(
        &self,
        table: SealedTable,
        after: Option<&RowId>,
        current: &str,
        limit: u32,
    ) -> Result<Vec<SealedRow>, StoreError> {
        let query = match (table, after) {
            (SealedTable::ColdMessages, _) => return Ok(Vec::new()),
            (SealedTable::HotMessages, after) => {
                let (room, seq) = match after {
                    Some(RowId::Message { room, seq, .. }) => (room.as_str(), *seq),
                    _ => ("", i64::MIN),
                };
                sqlx::query(
                    "SELECT room_id, seq, id, content, content_key FROM messages \
                     WHERE (room_id, seq) > (?, ?) AND content_key IS NOT ? \
                     ORDER BY room_id, seq LIMIT ?",
                )
                .bind(room.to_owned())
                .bind(seq)
            }
            (SealedTable::State, after) => {
                let (room, key) = match after {
                    Some(RowId::State { room, key }) => (room.as_str(), key.as_str()),
                    _ => ("", ""),
                };
                sqlx::query(
                    "SELECT room_id, key, value, value_key FROM room_state \
                     WHERE (room_id, key) > (?, ?) AND value_key IS NOT ? \
                     ORDER BY room_id, key LIMIT ?",
                )
                .bind(room.to_owned())
                .bind(key.to_owned())
            }
            (SealedTable::Jobs, after) => {
                let id = match after {
                    Some(RowId::Job { id }) => id.as_str(),
                    _ => "",
                };
                sqlx::query(
                    "SELECT id, payload, payload_key FROM jobs \
                     WHERE id > ? AND payload_key IS NOT ? ORDER BY id LIMIT ?",
                )
                .bind(id.to_owned())
            }
        };
        let rows = self
            .telemetry
            .timed(
                "rekey_stale_rows",
                query
                    .bind(current.to_owned())
                    .bind(i64::from(limit))
                    .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows.iter().map(|r| sealed_row(table, r)).collect())
    }

    async fn reseal(&self, table: SealedTable, rows: &[Reseal]) -> Result<u64, StoreError> {
        if table == SealedTable::ColdMessages || rows.is_empty() {
            return Ok(0);
        }
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let mut changed = 0;
        for Reseal { old, new } in rows {
            let update = match &old.row {
                RowId::Message { room, seq, .. } => sqlx::query(
                    "UPDATE messages SET content = ?, content_key = ? \
                     WHERE content = ? AND content_key IS ? AND room_id = ? AND seq = ?",
                )
                .bind(&new.text)
                .bind(&new.key_id)
                .bind(&old.stored.text)
                .bind(&old.stored.key_id)
                .bind(room)
                .bind(seq),
                RowId::State { room, key } => sqlx::query(
                    "UPDATE room_state SET value = ?, value_key = ? \
                     WHERE value = ? AND value_key IS ? AND room_id = ? AND key = ?",
                )
                .bind(&new.text)
                .bind(&new.key_id)
                .bind(&old.stored.text)
                .bind(&old.stored.key_id)
                .bind(room)
                .bind(key),
                RowId::Job { id } => sqlx::query(
                    "UPDATE jobs SET payload = ?, payload_key = ? \
                     WHERE payload = ? AND payload_key IS ? AND id = ?",
                )
                .bind(&new.text)
                .bind(&new.key_id)
                .bind(&old.stored.text)
                .bind(&old.stored.key_id)
                .bind(id),
                RowId::ColdMessage { .. } => continue,
            };
            changed += self
                .telemetry
                .timed("rekey_reseal", update.execute(&mut *tx))
                .await?
                .rows_affected();
        }
        self.telemetry.timed("commit", tx.commit()).await?;
        Ok(changed)
    }

    async fn count_stale(&self, table: SealedTable, current: &str) -> Result<i64, StoreError> {
        let sql = match table {
            SealedTable::ColdMessages => return Ok(0),
            SealedTable::HotMessages => "SELECT count(*) FROM messages WHERE content_key IS NOT ?",
            SealedTable::State => "SELECT count(*) FROM room_state WHERE value_key IS NOT ?",
            SealedTable::Jobs => "SELECT count(*) FROM jobs WHERE payload_key IS NOT ?",
        };
        let n = self
            .telemetry
            .timed(
                "rekey_count_stale",
                sqlx::query_scalar(sql)
                    .bind(current.to_owned())
                    .fetch_one(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(n)
    }
}

#[async_trait]
impl KeyRegistry for SqliteStore {
    async fn keys_in_use(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .telemetry
            .timed(
                "encryption_keys_in_use",
                sqlx::query_scalar("SELECT key_id FROM encryption_keys_in_use ORDER BY key_id")
                    .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?)
    }

    async fn register_key(&self, key_id: &str) -> Result<(), StoreError> {
        self.telemetry
            .timed(
                "encryption_key_register",
                sqlx::query(
                    "INSERT INTO encryption_keys_in_use (key_id, registered_at) VALUES (?, ?) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(key_id.to_owned())
                .bind(now_rfc3339())
                .execute(&mut *self.writer.acquire().await?),
            )
            .await?;
        Ok(())
    }

    async fn unregister_keys_except(&self, keep: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .telemetry
            .timed(
                "encryption_keys_unregister",
                sqlx::query_scalar(
                    "DELETE FROM encryption_keys_in_use WHERE key_id <> ? RETURNING key_id",
                )
                .bind(keep.to_owned())
                .fetch_all(&mut *self.writer.acquire().await?),
            )
            .await?)
    }
}
