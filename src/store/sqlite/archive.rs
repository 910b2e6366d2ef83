//! The hot side of archiving on SQLite (see `store/archive.rs` for the move and why it is safe).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Connection, Row};

use super::{SqliteStore, open_messages, stored_message_from_row};
use crate::at_rest::StoredMessage;
use crate::domain::Message;
use crate::store::archive::{
    ArchivableRoom, ArchiveMark, ArchiveStats, ArchiveStore, ColdStore, SeqRange,
};
use crate::store::{StoreError, message_columns};

impl SqliteStore {
    /// The room's marker and its hot rows in `range`, in one read transaction (one snapshot: a
    /// marker moved between the two reads would hide the rows it moved).
    pub(super) async fn hot_history(
        &self,
        room: &str,
        q: &crate::store::HistoryQuery,
    ) -> Result<(ArchiveMark, Vec<Message>), StoreError> {
        let mut conn = self.reader.acquire().await?;
        let mut tx = conn.begin().await?;
        let mark = self
            .telemetry
            .timed(
                "room_archive_mark",
                sqlx::query("SELECT archived_seq, epoch FROM rooms WHERE id = ?")
                    .bind(room)
                    .fetch_optional(&mut *tx),
            )
            .await?
            .map(|r| ArchiveMark {
                archived_seq: r.get(0),
                epoch: r.get(1),
            })
            .unwrap_or_default();
        let range = SeqRange::hot(q, mark.archived_seq);
        let (name, sql) = if range.backwards {
            (
                "history_backward",
                concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE room_id = ? AND seq > ? AND seq < ? ORDER BY seq DESC LIMIT ?"
                ),
            )
        } else {
            (
                "history_forward",
                concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE room_id = ? AND seq > ? AND seq < ? ORDER BY seq ASC LIMIT ?"
                ),
            )
        };
        let rows = self
            .telemetry
            .timed(
                name,
                sqlx::query(sql)
                    .bind(room)
                    .bind(range.after)
                    .bind(range.before)
                    .bind(range.fetch)
                    .fetch_all(&mut *tx),
            )
            .await?;
        tx.commit().await?;
        Ok((mark, open_messages(&self.sealer, &rows)?))
    }
}

#[async_trait]
impl ArchiveStore for SqliteStore {
    async fn archivable_rooms(
        &self,
        cutoff: &str,
        after_room: &str,
        limit: u32,
    ) -> Result<Vec<ArchivableRoom>, StoreError> {
        // The first hot message of a room is archived_seq + 1 (seqs have no gaps): one primary
        // key lookup per room.
        let rows = self
            .telemetry
            .timed(
                "rooms_archivable",
                sqlx::query(
                    // CROSS JOIN: SQLite then keeps rooms as the outer loop (a primary key
                    // lookup of messages per room) instead of perhaps scanning messages
                    "SELECT r.id, r.archived_seq, r.epoch FROM rooms r CROSS JOIN messages m \
                     WHERE m.room_id = r.id AND m.seq = r.archived_seq + 1 \
                     AND r.id > ? AND m.created_at < ? ORDER BY r.id LIMIT ?",
                )
                .bind(after_room)
                .bind(cutoff)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ArchivableRoom {
                room: r.get(0),
                mark: ArchiveMark {
                    archived_seq: r.get(1),
                    epoch: r.get(2),
                },
            })
            .collect())
    }

    async fn archive_batch(
        &self,
        room: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        // as stored: sealed rows move sealed
        let rows = self
            .telemetry
            .timed(
                "archive_batch",
                sqlx::query(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE room_id = ? AND seq > ? ORDER BY seq LIMIT ?"
                ))
                .bind(room)
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows.iter().map(stored_message_from_row).collect())
    }

    async fn advance_archive(&self, room: &str, from: i64, to: i64) -> Result<bool, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let moved = self
            .telemetry
            .timed(
                "room_advance_archive",
                sqlx::query("UPDATE rooms SET archived_seq = ? WHERE id = ? AND archived_seq = ?")
                    .bind(to)
                    .bind(room)
                    .bind(from)
                    .execute(&mut *tx),
            )
            .await?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        self.telemetry
            .timed(
                "messages_delete_archived",
                sqlx::query("DELETE FROM messages WHERE room_id = ? AND seq > ? AND seq <= ?")
                    .bind(room)
                    .bind(from)
                    .bind(to)
                    .execute(&mut *tx),
            )
            .await?;
        self.telemetry.timed("commit", tx.commit()).await?;
        Ok(true)
    }

    async fn count_archivable(&self, cutoff: &str) -> Result<i64, StoreError> {
        let row = self
            .telemetry
            .timed(
                "messages_count_archivable",
                sqlx::query("SELECT count(*) FROM messages WHERE created_at < ?")
                    .bind(cutoff)
                    .fetch_one(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(row.get(0))
    }

    async fn archive_stats(&self) -> Result<ArchiveStats, StoreError> {
        let row = self
            .telemetry
            .timed(
                "archive_stats",
                sqlx::query(
                    "SELECT coalesce(sum(last_seq - archived_seq), 0), \
                     coalesce(sum(archived_seq), 0), \
                     (SELECT min(m.created_at) FROM rooms r CROSS JOIN messages m \
                      WHERE m.room_id = r.id AND m.seq = r.archived_seq + 1) FROM rooms",
                )
                .fetch_one(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(ArchiveStats {
            hot_messages: row.get(0),
            cold_messages: row.get(1),
            oldest_hot: row.get(2),
        })
    }

    fn cold(&self) -> &Arc<dyn ColdStore> {
        &self.cold
    }
}
