//! Encryption at rest on PostgreSQL: the key registry and the row access of `tsunagi rekey` for
//! the primary's tables (cold rows: `cold.rs`). Each reseal batch is one short transaction of
//! compare-and-set updates (`IS NOT DISTINCT FROM`: equal, NULLs included). In the `jsonb`
//! columns a sealed value is a JSON string; its stored text is read with `#>> '{}'`.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Connection, Row};

use super::{PgStore, to_jsonb};
use crate::at_rest::Stored;
use crate::store::StoreError;
use crate::store::sealed::{KeyRegistry, Reseal, ResealStore, RowId, SealedRow, SealedTable};

fn stored(r: &PgRow, text: &str, key: &str) -> Stored {
    Stored {
        key_id: r.get(key),
        text: r.get(text),
    }
}

#[async_trait]
impl ResealStore for PgStore {
    async fn stale_rows(
        &self,
        table: SealedTable,
        after: Option<&RowId>,
        current: &str,
        limit: u32,
    ) -> Result<Vec<SealedRow>, StoreError> {
        let query = match table {
            SealedTable::ColdMessages => return Ok(Vec::new()),
            SealedTable::HotMessages => {
                let (room, seq) = match after {
                    Some(RowId::Message { room, seq, .. }) => (room.clone(), *seq),
                    _ => (String::new(), i64::MIN),
                };
                sqlx::query(
                    "SELECT room_id, seq, id, content, content_key FROM messages \
                     WHERE (room_id, seq) > ($1, $2) AND content_key IS DISTINCT FROM $3 \
                     ORDER BY room_id, seq LIMIT $4",
                )
                .bind(room)
                .bind(seq)
            }
            SealedTable::State => {
                let (room, key) = match after {
                    Some(RowId::State { room, key }) => (room.clone(), key.clone()),
                    _ => (String::new(), String::new()),
                };
                sqlx::query(
                    "SELECT room_id, key, CASE WHEN value_key IS NULL THEN value::text \
                     ELSE value #>> '{}' END AS value, value_key FROM room_state \
                     WHERE (room_id, key) > ($1, $2) AND value_key IS DISTINCT FROM $3 \
                     ORDER BY room_id, key LIMIT $4",
                )
                .bind(room)
                .bind(key)
            }
            SealedTable::Jobs => {
                let id = match after {
                    Some(RowId::Job { id }) => id.clone(),
                    _ => String::new(),
                };
                sqlx::query(
                    "SELECT id, CASE WHEN payload_key IS NULL THEN payload::text \
                     ELSE payload #>> '{}' END AS payload, payload_key FROM jobs \
                     WHERE id > $1 AND payload_key IS DISTINCT FROM $2 ORDER BY id LIMIT $3",
                )
                .bind(id)
            }
        };
        let mut conn = self.primary.acquire().await?;
        let rows = self
            .telemetry
            .timed(
                "rekey_stale_rows",
                query
                    .bind(current.to_owned())
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| match table {
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
            })
            .collect())
    }

    async fn reseal(&self, table: SealedTable, rows: &[Reseal]) -> Result<u64, StoreError> {
        if table == SealedTable::ColdMessages || rows.is_empty() {
            return Ok(0);
        }
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut changed = 0;
        for Reseal { old, new } in rows {
            let update = match &old.row {
                RowId::Message { room, seq, .. } => sqlx::query(
                    "UPDATE messages SET content = $1, content_key = $2 WHERE room_id = $5 \
                     AND seq = $6 AND content = $3 AND content_key IS NOT DISTINCT FROM $4",
                )
                .bind(&new.text)
                .bind(&new.key_id)
                .bind(&old.stored.text)
                .bind(&old.stored.key_id)
                .bind(room)
                .bind(seq),
                RowId::State { room, key } => sqlx::query(
                    "UPDATE room_state SET value = $1, value_key = $2 WHERE room_id = $5 \
                     AND key = $6 AND value_key IS NOT DISTINCT FROM $4 AND CASE WHEN value_key \
                     IS NULL THEN value::text ELSE value #>> '{}' END = $3",
                )
                .bind(to_jsonb(new))
                .bind(&new.key_id)
                .bind(&old.stored.text)
                .bind(&old.stored.key_id)
                .bind(room)
                .bind(key),
                RowId::Job { id } => sqlx::query(
                    "UPDATE jobs SET payload = $1, payload_key = $2 WHERE id = $5 \
                     AND payload_key IS NOT DISTINCT FROM $4 AND CASE WHEN payload_key IS NULL \
                     THEN payload::text ELSE payload #>> '{}' END = $3",
                )
                .bind(to_jsonb(new))
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
            SealedTable::HotMessages => {
                "SELECT count(*) FROM messages WHERE content_key IS DISTINCT FROM $1"
            }
            SealedTable::State => {
                "SELECT count(*) FROM room_state WHERE value_key IS DISTINCT FROM $1"
            }
            SealedTable::Jobs => "SELECT count(*) FROM jobs WHERE payload_key IS DISTINCT FROM $1",
        };
        let mut conn = self.primary.acquire().await?;
        Ok(self
            .telemetry
            .timed(
                "rekey_count_stale",
                sqlx::query_scalar(sql)
                    .bind(current.to_owned())
                    .fetch_one(&mut *conn),
            )
            .await?)
    }
}

#[async_trait]
impl KeyRegistry for PgStore {
    async fn keys_in_use(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        Ok(self
            .telemetry
            .timed(
                "encryption_keys_in_use",
                sqlx::query_scalar("SELECT key_id FROM encryption_keys_in_use ORDER BY key_id")
                    .fetch_all(&mut *conn),
            )
            .await?)
    }

    async fn register_key(&self, key_id: &str) -> Result<(), StoreError> {
        let mut conn = self.primary.acquire().await?;
        self.telemetry
            .timed(
                "encryption_key_register",
                sqlx::query(
                    "INSERT INTO encryption_keys_in_use (key_id) VALUES ($1) ON CONFLICT DO NOTHING",
                )
                .bind(key_id.to_owned())
                .execute(&mut *conn),
            )
            .await?;
        Ok(())
    }

    async fn unregister_keys_except(&self, keep: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        Ok(self
            .telemetry
            .timed(
                "encryption_keys_unregister",
                sqlx::query_scalar(
                    "DELETE FROM encryption_keys_in_use WHERE key_id <> $1 RETURNING key_id",
                )
                .bind(keep.to_owned())
                .fetch_all(&mut *conn),
            )
            .await?)
    }
}
