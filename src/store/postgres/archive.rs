//! The hot side of archiving on PostgreSQL (see `store/archive.rs` for the move and why it is
//! safe).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Connection, Row};

use super::{PgStore, open_messages, rfc3339, stored_message_from_row};
use crate::at_rest::StoredMessage;
use crate::domain::Message;
use crate::store::archive::{
    ArchivableRoom, ArchiveMark, ArchiveStats, ArchiveStore, ColdStore, SeqRange,
};
use crate::store::{HistoryQuery, ReadFrom, StoreError, message_columns};

/// The room's marker and a page of its hot rows, in one statement (one snapshot: a marker moved
/// between two statements would hide the rows it moved). Without messages in range, one row
/// with only the marker; without the room, none.
pub const HISTORY_BACKWARD: &str = concat!(
    "SELECT r.archived_seq, r.epoch AS room_epoch, m.* FROM rooms r LEFT JOIN LATERAL (SELECT ",
    message_columns!(),
    " FROM messages WHERE room_id = r.id AND seq > GREATEST($2, r.archived_seq) AND seq < $3 \
     ORDER BY seq DESC LIMIT $4) m ON true WHERE r.id = $1"
);
/// Oldest-first, as [`HISTORY_BACKWARD`].
pub const HISTORY_FORWARD: &str = concat!(
    "SELECT r.archived_seq, r.epoch AS room_epoch, m.* FROM rooms r LEFT JOIN LATERAL (SELECT ",
    message_columns!(),
    " FROM messages WHERE room_id = r.id AND seq > GREATEST($2, r.archived_seq) AND seq < $3 \
     ORDER BY seq ASC LIMIT $4) m ON true WHERE r.id = $1"
);

fn parse_cutoff(cutoff: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(cutoff)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Statement(format!("cutoff: {e}")))
}

impl PgStore {
    pub(super) async fn hot_history(
        &self,
        room: &str,
        q: &HistoryQuery,
        from: ReadFrom,
    ) -> Result<(ArchiveMark, Vec<Message>), StoreError> {
        let room = room.to_owned();
        let q = *q;
        let sealer = self.sealer.clone();
        self.read(from, move |conn, t| {
            let room = room.clone();
            let sealer = sealer.clone();
            Box::pin(async move {
                let range = SeqRange::hot(&q, 0);
                let (name, sql) = if range.backwards {
                    ("history_backward", HISTORY_BACKWARD)
                } else {
                    ("history_forward", HISTORY_FORWARD)
                };
                let rows = t
                    .timed(
                        name,
                        sqlx::query(sql)
                            .bind(room)
                            .bind(range.after)
                            .bind(range.before)
                            .bind(range.fetch)
                            .fetch_all(conn),
                    )
                    .await?;
                let mark = rows
                    .first()
                    .map(|r| ArchiveMark {
                        archived_seq: r.get("archived_seq"),
                        epoch: r.get("room_epoch"),
                    })
                    .unwrap_or_default();
                let messages = open_messages(
                    &sealer,
                    rows.iter()
                        .filter(|r| r.get::<Option<i64>, _>("seq").is_some()),
                )?;
                Ok((mark, messages))
            })
        })
        .await
    }
}

#[async_trait]
impl ArchiveStore for PgStore {
    async fn archivable_rooms(
        &self,
        cutoff: &str,
        after_room: &str,
        limit: u32,
    ) -> Result<Vec<ArchivableRoom>, StoreError> {
        let cutoff = parse_cutoff(cutoff)?;
        let mut conn = self.primary.acquire().await?;
        // The first hot message of a room is archived_seq + 1 (seqs have no gaps): one primary
        // key lookup per room.
        let rows = self
            .telemetry
            .timed(
                "rooms_archivable",
                sqlx::query(
                    "SELECT r.id, r.archived_seq, r.epoch FROM rooms r JOIN messages m \
                     ON m.room_id = r.id AND m.seq = r.archived_seq + 1 \
                     WHERE r.id > $1 AND m.created_at < $2 ORDER BY r.id LIMIT $3",
                )
                .bind(after_room)
                .bind(cutoff)
                .bind(i64::from(limit))
                .fetch_all(&mut *conn),
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
        let mut conn = self.primary.acquire().await?;
        let rows = self
            .telemetry
            .timed(
                "archive_batch",
                sqlx::query(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE room_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                ))
                .bind(room)
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&mut *conn),
            )
            .await?;
        Ok(rows.iter().map(stored_message_from_row).collect())
    }

    async fn advance_archive(&self, room: &str, from: i64, to: i64) -> Result<bool, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        // Takes the room row's lock (as a send does) for one short transaction.
        let moved = self
            .telemetry
            .timed(
                "room_advance_archive",
                sqlx::query(
                    "UPDATE rooms SET archived_seq = $3 WHERE id = $1 AND archived_seq = $2",
                )
                .bind(room)
                .bind(from)
                .bind(to)
                .execute(&mut *tx),
            )
            .await?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        self.telemetry
            .timed(
                "messages_delete_archived",
                sqlx::query("DELETE FROM messages WHERE room_id = $1 AND seq > $2 AND seq <= $3")
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
        let cutoff = parse_cutoff(cutoff)?;
        let mut conn = self.primary.acquire().await?;
        let row = self
            .telemetry
            .timed(
                "messages_count_archivable",
                sqlx::query("SELECT count(*) FROM messages WHERE created_at < $1")
                    .bind(cutoff)
                    .fetch_one(&mut *conn),
            )
            .await?;
        Ok(row.get(0))
    }

    async fn archive_stats(&self) -> Result<ArchiveStats, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let row = self
            .telemetry
            .timed(
                "archive_stats",
                sqlx::query(
                    "SELECT coalesce(sum(last_seq - archived_seq), 0)::int8, \
                     coalesce(sum(archived_seq), 0)::int8, \
                     (SELECT min(m.created_at) FROM rooms r JOIN messages m \
                      ON m.room_id = r.id AND m.seq = r.archived_seq + 1) FROM rooms",
                )
                .fetch_one(&mut *conn),
            )
            .await?;
        Ok(ArchiveStats {
            hot_messages: row.get(0),
            cold_messages: row.get(1),
            oldest_hot: row.get::<Option<DateTime<Utc>>, _>(2).map(rfc3339),
        })
    }

    fn cold(&self) -> &Arc<dyn ColdStore> {
        &self.cold
    }
}
