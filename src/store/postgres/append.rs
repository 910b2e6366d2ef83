//! The one-round-trip append: a batch in one statement, run outside an explicit transaction
//! (the statement is its own transaction, committed durably before PostgreSQL answers), instead
//! of BEGIN, lock, lookup, insert, advance, COMMIT and a WAL-position read (eight round trips).
//!
//! The statement locks the batch's rooms in id order (as the transactional path does, so
//! processes cannot deadlock), finds the client_ids already stored, bumps each room's `last_seq`
//! by its number of new messages and inserts them with consecutive seqs in batch order.
//! It declines (does nothing, says so) whenever the transactional path has work it cannot do:
//! webhooks to enqueue deliveries for, a keyed message in a room with archived messages (its
//! client_id may be cold), or a room that does not exist. A client_id committed by another
//! process after the statement's snapshot trips the unique index: the caller then takes the
//! transactional path, which looks it up under the rooms' locks.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{PgStore, rfc3339, stored_message_from_row};
use crate::domain::Message;
use crate::store::{Appended, IdempotencyKey, NewMessage, StoreError, WritePos};

/// Public so a test can `EXPLAIN` exactly what runs.
pub const APPEND_ONE_STATEMENT: &str = "\
WITH input AS MATERIALIZED (
  SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
    WITH ORDINALITY AS t(room_id, id, user_id, content, client_id, content_key, n)
), locked AS MATERIALIZED (
  SELECT id, archived_seq FROM rooms WHERE id IN (SELECT room_id FROM input)
  ORDER BY id FOR UPDATE
), known AS MATERIALIZED (
  SELECT i.n, m.room_id, m.seq, m.id, m.user_id, m.content, m.client_id, m.created_at,
         m.content_key
  FROM input i JOIN messages m
    ON m.room_id = i.room_id AND m.user_id = i.user_id AND m.client_id = i.client_id
), declined AS MATERIALIZED (
  SELECT 'webhooks' AS why FROM webhooks
  UNION ALL
  SELECT 'no_room' FROM input i WHERE NOT EXISTS (SELECT 1 FROM locked l WHERE l.id = i.room_id)
  UNION ALL
  SELECT 'archived' FROM input i JOIN locked l ON l.id = i.room_id
  WHERE l.archived_seq > 0 AND i.client_id IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM known k WHERE k.n = i.n)
  LIMIT 1
), fresh AS MATERIALIZED (
  SELECT i.*, row_number() OVER (PARTITION BY i.room_id ORDER BY i.n) AS k
  FROM input i
  WHERE NOT EXISTS (SELECT 1 FROM declined) AND NOT EXISTS (SELECT 1 FROM known k WHERE k.n = i.n)
), bump AS (
  UPDATE rooms r SET last_seq = r.last_seq + f.cnt
  FROM (SELECT room_id, count(*) AS cnt FROM fresh GROUP BY room_id) f
  WHERE r.id = f.room_id
  RETURNING r.id, r.last_seq - f.cnt AS base
), ins AS (
  INSERT INTO messages (room_id, seq, id, user_id, content, client_id, created_at, content_key)
  SELECT f.room_id, b.base + f.k, f.id, f.user_id, f.content, f.client_id, $7, f.content_key
  FROM fresh f JOIN bump b ON b.id = f.room_id
  RETURNING id, seq
)
SELECT NULL::text AS why, f.n, ins.seq, NULL::text AS room_id, NULL::text AS id,
       NULL::text AS user_id, NULL::text AS content, NULL::text AS client_id,
       NULL::timestamptz AS created_at, NULL::text AS content_key
FROM ins JOIN fresh f ON f.id = ins.id
UNION ALL
SELECT NULL, n, seq, room_id, id, user_id, content, client_id, created_at, content_key FROM known
UNION ALL
SELECT why, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM declined";

/// Why the one statement left a batch to the transactional path.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Declined {
    Webhooks,
    /// A missing room, an archived room, a concurrent duplicate, an unregistered key.
    Other,
}

impl PgStore {
    /// Appends `batch` in one statement, or declines and changes nothing.
    pub(super) async fn append_one_statement(
        &self,
        batch: &[NewMessage],
    ) -> Result<Result<(Vec<Appended>, WritePos), Declined>, StoreError> {
        // the first write under a key registers it, in the transactional path
        if self.sealer.current().is_some()
            && !self
                .key_registered
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(Err(Declined::Other));
        }
        // A key sent twice in the batch is stored once: later ones answer with the first.
        let mut first_of: HashMap<IdempotencyKey, usize> = HashMap::new();
        let mut sent: Vec<usize> = Vec::with_capacity(batch.len()); // batch index per input row
        let mut alias: Vec<Option<usize>> = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            match m.key().map(|k| *first_of.entry(k).or_insert(i)) {
                Some(first) if first != i => alias.push(Some(first)),
                _ => {
                    alias.push(None);
                    sent.push(i);
                }
            }
        }
        let now: DateTime<Utc> = Utc::now();
        let created_at = rfc3339(now);
        let mut rows: Vec<Message> = sent
            .iter()
            .map(|&i| {
                let m = &batch[i];
                Message {
                    id: uuid::Uuid::now_v7().to_string(),
                    room: m.room.as_str().to_owned(),
                    seq: 0,
                    user_id: m.user_id.clone(),
                    content: m.content.clone(),
                    client_id: m.client_id.clone(),
                    created_at: created_at.clone(),
                }
            })
            .collect();
        let (contents, keys): (Vec<String>, Vec<Option<String>>) = rows
            .iter()
            .map(|m| {
                let s = self.sealer.seal_message(m);
                (s.text, s.key_id)
            })
            .unzip();
        let mut conn = self.primary.acquire().await?;
        let result = self
            .telemetry
            .timed(
                "messages_append_one_statement",
                sqlx::query(APPEND_ONE_STATEMENT)
                    .bind(rows.iter().map(|m| m.room.as_str()).collect::<Vec<_>>())
                    .bind(rows.iter().map(|m| m.id.as_str()).collect::<Vec<_>>())
                    .bind(rows.iter().map(|m| m.user_id.as_str()).collect::<Vec<_>>())
                    .bind(contents)
                    .bind(
                        rows.iter()
                            .map(|m| m.client_id.as_deref())
                            .collect::<Vec<_>>(),
                    )
                    .bind(keys)
                    .bind(now)
                    .fetch_all(&mut *conn),
            )
            .await;
        let answered = match result {
            Ok(r) => r,
            // a client_id stored by another process since the snapshot: unique violation
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
                return Ok(Err(Declined::Other));
            }
            Err(e) => return Err(e.into()),
        };
        // per input row: the stored message when its client_id was known
        let mut known: Vec<Option<Message>> = vec![None; rows.len()];
        let mut seqs: Vec<Option<i64>> = vec![None; rows.len()];
        for r in &answered {
            if let Some(why) = r.get::<Option<String>, _>("why") {
                return Ok(Err(if why == "webhooks" {
                    Declined::Webhooks
                } else {
                    Declined::Other
                }));
            }
            let n = r.get::<i64, _>("n") as usize - 1;
            if r.get::<Option<String>, _>("id").is_some() {
                known[n] = Some(self.sealer.open_message(stored_message_from_row(r))?);
            } else {
                seqs[n] = Some(r.get("seq"));
            }
        }
        let mut out: Vec<Appended> = Vec::with_capacity(batch.len());
        let mut row_of_batch: HashMap<usize, usize> = HashMap::with_capacity(sent.len());
        for (row, &i) in sent.iter().enumerate() {
            row_of_batch.insert(i, row);
        }
        for (i, first) in alias.iter().enumerate() {
            let row = row_of_batch[&first.unwrap_or(i)];
            let appended = match (&known[row], seqs[row]) {
                (Some(stored), _) => Appended {
                    message: stored.clone(),
                    created: false,
                },
                (None, Some(seq)) => {
                    rows[row].seq = seq;
                    Appended {
                        message: rows[row].clone(),
                        // a repeat of a key first sent in this batch is no new message
                        created: first.is_none(),
                    }
                }
                (None, None) => {
                    return Err(StoreError::Statement(format!(
                        "the append statement answered nothing for message {i}"
                    )));
                }
            };
            out.push(appended);
        }
        Ok(Ok((out, self.commit_position(&mut conn).await)))
    }
}
