//! Cold storage in an SQLite file of its own (`<data dir>/archive.db` by default): one table of
//! archived messages clustered on (room, epoch, seq), its own writer and readers, so the
//! archiver's copies never wait for (or hold) the primary's one writer.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};

use crate::at_rest::{Sealer, Stored, StoredMessage};
use crate::domain::{Message, now_rfc3339};
use crate::store::StoreError;
use crate::store::archive::{ColdKey, ColdStore, SeqRange};
use crate::store::pool::InstrumentedPool;
use crate::store::sealed::{Reseal, ResealStore, RowId, SealedRow, SealedTable};
use crate::telemetry::Telemetry;

/// Rows per INSERT: 10 parameters a row, under SQLite's 32766.
const ROWS_PER_INSERT: usize = 1000;

/// The schema, made at open and idempotent: the archive file has no migration history of its
/// own to keep (one table, created once).
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS messages_archive (
        room_id     TEXT NOT NULL,
        epoch       TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        id          TEXT NOT NULL,
        user_id     TEXT NOT NULL,
        content     TEXT NOT NULL,
        client_id   TEXT,
        created_at  TEXT NOT NULL,
        archived_at TEXT NOT NULL,
        PRIMARY KEY (room_id, epoch, seq)
    ) WITHOUT ROWID",
    // a retried client_id of an archived message
    "CREATE INDEX IF NOT EXISTS messages_archive_by_client_id
        ON messages_archive (room_id, user_id, client_id) WHERE client_id IS NOT NULL",
];

pub struct SqliteCold {
    telemetry: Telemetry,
    writer: InstrumentedPool<Sqlite>,
    reader: InstrumentedPool<Sqlite>,
    sealer: Arc<Sealer>,
}

/// Archived rows, their content opened.
fn open_rows(
    sealer: &Sealer,
    rows: &[sqlx::sqlite::SqliteRow],
) -> Result<Vec<Message>, StoreError> {
    rows.iter()
        .map(|r| {
            let stored = StoredMessage {
                message: Message {
                    id: r.get("id"),
                    room: r.get("room_id"),
                    seq: r.get("seq"),
                    user_id: r.get("user_id"),
                    content: r.get("content"),
                    client_id: r.get("client_id"),
                    created_at: r.get("created_at"),
                },
                content_key: r.get("content_key"),
            };
            Ok(sealer.open_message(stored)?)
        })
        .collect()
}

/// Adds the key id column to an archive file made before encryption at rest (SQLite has no
/// `ADD COLUMN IF NOT EXISTS`).
async fn add_content_key(pool: &sqlx::SqlitePool) -> Result<(), sqlx::Error> {
    let has: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM pragma_table_info('messages_archive') WHERE name = 'content_key'",
    )
    .fetch_optional(pool)
    .await?;
    if has.is_none() {
        sqlx::query("ALTER TABLE messages_archive ADD COLUMN content_key TEXT")
            .execute(pool)
            .await?;
    }
    Ok(())
}

impl SqliteCold {
    /// Opens (creating it if missing) the archive file at `path`.
    pub async fn open(
        path: &Path,
        synchronous: &str,
        acquire_timeout: Duration,
        busy_timeout: Duration,
        telemetry: Telemetry,
        sealer: Arc<Sealer>,
    ) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::from_str(synchronous).map_err(anyhow::Error::msg)?)
            .busy_timeout(busy_timeout);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire_timeout)
            .connect_with(opts.clone())
            .await?;
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&writer).await?;
        }
        add_content_key(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(acquire_timeout)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteCold {
            writer: InstrumentedPool::new("archive_writer", writer, 0.9, telemetry.clone()),
            reader: InstrumentedPool::new("archive_reader", reader, 0.9, telemetry.clone()),
            telemetry,
            sealer,
        })
    }
}

#[async_trait]
impl ColdStore for SqliteCold {
    async fn insert(&self, epoch: &str, rows: &[StoredMessage]) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let archived_at = now_rfc3339();
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO messages_archive (room_id, epoch, seq, id, user_id, content, \
                 client_id, created_at, archived_at, content_key) ",
            );
            insert.push_values(chunk, |mut row, m| {
                row.push_bind(&m.room)
                    .push_bind(epoch)
                    .push_bind(m.seq)
                    .push_bind(&m.id)
                    .push_bind(&m.user_id)
                    .push_bind(&m.content)
                    .push_bind(&m.client_id)
                    .push_bind(&m.created_at)
                    .push_bind(&archived_at)
                    .push_bind(&m.content_key);
            });
            insert.push(" ON CONFLICT (room_id, epoch, seq) DO NOTHING");
            self.telemetry
                .timed("archive_insert", insert.build().execute(&mut *tx))
                .await?;
        }
        self.telemetry.timed("archive_commit", tx.commit()).await?;
        Ok(())
    }

    async fn history(
        &self,
        room: &str,
        epoch: &str,
        range: SeqRange,
    ) -> Result<Vec<Message>, StoreError> {
        let sql = if range.backwards {
            "SELECT * FROM messages_archive WHERE room_id = ? AND epoch = ? AND seq > ? AND seq < ? \
             ORDER BY seq DESC LIMIT ?"
        } else {
            "SELECT * FROM messages_archive WHERE room_id = ? AND epoch = ? AND seq > ? AND seq < ? \
             ORDER BY seq ASC LIMIT ?"
        };
        let rows = self
            .telemetry
            .timed(
                "archive_history",
                sqlx::query(sql)
                    .bind(room)
                    .bind(epoch)
                    .bind(range.after)
                    .bind(range.before)
                    .bind(range.fetch)
                    .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        open_rows(&self.sealer, &rows)
    }

    async fn by_client_ids(&self, keys: &[ColdKey]) -> Result<Vec<Message>, StoreError> {
        // every key in one statement (one round trip to the reader's thread per group commit),
        // each an index lookup
        let keys = serde_json::to_string(keys).unwrap_or_default();
        let rows = self
            .telemetry
            .timed(
                "archive_by_client_ids",
                sqlx::query(
                    "SELECT a.* FROM json_each(?) AS k JOIN messages_archive AS a \
                     ON a.room_id = k.value ->> 0 AND a.user_id = k.value ->> 2 \
                     AND a.client_id = k.value ->> 3 AND a.epoch = k.value ->> 1",
                )
                .bind(keys)
                .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        open_rows(&self.sealer, &rows)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.telemetry
            .timed(
                "archive_ping",
                sqlx::query("SELECT 1").execute(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(())
    }

    fn pool_stats(&self) -> serde_json::Value {
        serde_json::json!([self.writer.stats(), self.reader.stats()])
    }

    async fn close(&self) {
        self.writer.inner.close().await;
        self.reader.inner.close().await;
    }
}

/// `tsunagi rekey` on the archive file (see `sqlite/sealed.rs` for the primary's tables).
#[async_trait]
impl ResealStore for SqliteCold {
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
                     WHERE (room_id, epoch, seq) > (?, ?, ?) AND content_key IS NOT ? \
                     ORDER BY room_id, epoch, seq LIMIT ?",
                )
                .bind(room)
                .bind(epoch)
                .bind(seq)
                .bind(current.to_owned())
                .bind(i64::from(limit))
                .fetch_all(&mut *self.reader.acquire().await?),
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
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
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
                        "UPDATE messages_archive SET content = ?, content_key = ? \
                         WHERE content = ? AND content_key IS ? AND room_id = ? AND epoch = ? \
                         AND seq = ?",
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
                    "SELECT count(*) FROM messages_archive WHERE content_key IS NOT ?",
                )
                .bind(current.to_owned())
                .fetch_one(&mut *self.reader.acquire().await?),
            )
            .await?)
    }
}
