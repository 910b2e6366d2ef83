//! The store: rooms, memberships and message history in SQL.
//!
//! Layout: `mod.rs` holds the [`Store`] trait (the one interface services see) and its types;
//! `users.rs` the accounts and audit part of it; `sensors.rs` the sensors and readings part; `state.rs` room state; `archive.rs` hot and cold history; `jobs.rs` the job queue; `webhooks.rs` webhooks and the outbox; `sealed.rs` the key registry and rekey access (encryption at rest); `sqlite/` is the embedded implementation,
//! `postgres/` the scale-out one (primary + read replicas); `build.rs` picks and opens one from
//! the config; `pool.rs` instruments their pools; `timing.rs` times every statement by name.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::domain::{Message, RoomId, RoomInfo};

pub mod archive;
mod build;
pub mod jobs;
pub mod pool;
pub mod postgres;
pub mod sealed;
pub mod sensors;
pub mod sqlite;
pub mod state;
pub mod users;
pub mod webhooks;

pub use build::{build, migrate, pg_settings, sealer, sqlite_settings};

/// The columns a room row is read with, the same in both stores (a macro, not a const: sqlx
/// takes only literal SQL, and `concat!` keeps it literal).
macro_rules! room_columns {
    () => {
        "id, name, private, owner_id, epoch, last_seq, created_at, metadata"
    };
}
pub(crate) use room_columns;

/// The columns a message row is read with, the same in both stores.
macro_rules! message_columns {
    () => {
        "id, room_id, seq, user_id, content, client_id, created_at, content_key"
    };
}
pub(crate) use message_columns;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    /// The database did not answer, or no connection was free within the acquire timeout.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error for this statement (the server itself is fine).
    #[error("statement failed: {0}")]
    Statement(String),
    /// A stored value could not be opened (encryption at rest): a key not configured, or a
    /// value that does not authenticate.
    #[error(transparent)]
    Sealed(#[from] crate::at_rest::SealError),
}

impl StoreError {
    /// True when the server (not the statement) failed: the connection or pool is the problem.
    pub fn is_connection(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) if server_side(db.code().as_deref()) => {
                StoreError::Unavailable(db.to_string())
            }
            sqlx::Error::Database(db) => StoreError::Statement(db.to_string()),
            sqlx::Error::RowNotFound
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnDecode { .. } => StoreError::Statement(e.to_string()),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Database errors that say the server could not do it now (timeouts, lock waits, lost
/// connections, no resources), not that the statement or its data is wrong: retrying the
/// statement alone would only wait again.
fn server_side(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    // SQLite reports (extended) result codes as numbers: BUSY 5 and LOCKED 6 (the primary code
    // is the low byte), IOERR 10, FULL 13
    if let Ok(n) = code.parse::<u32>() {
        return matches!(n & 0xff, 5 | 6 | 10 | 13);
    }
    // PostgreSQL SQLSTATE: connection (08), transaction rollback (40: serialization, deadlock),
    // insufficient resources (53), operator intervention (57: statement timeout, shutdown),
    // system error (58), lock not available (55P03)
    matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58")) || code == "55P03"
}

pub struct NewRoom {
    pub id: RoomId,
    pub name: String,
    pub private: bool,
    pub owner_id: String,
    pub metadata: Option<serde_json::Value>,
}

/// One message to append. Validation (room exists, access, content) is done before.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub room: RoomId,
    pub user_id: String,
    pub content: String,
    pub client_id: Option<String>,
}

/// What `append` made of one [`NewMessage`].
#[derive(Debug, Clone)]
pub struct Appended {
    pub message: Message,
    /// false when the (user, room, client_id) was already known: `message` is the first one.
    pub created: bool,
}

/// (room, user, client_id): the idempotency key of a send.
pub type IdempotencyKey = (String, String, String);

/// A stored message's idempotency key (its client_id empty when it has none).
pub fn stored_key(m: &Message) -> IdempotencyKey {
    (
        m.room.clone(),
        m.user_id.clone(),
        m.client_id.clone().unwrap_or_default(),
    )
}

impl NewMessage {
    pub fn key(&self) -> Option<IdempotencyKey> {
        self.client_id.as_ref().map(|c| {
            (
                self.room.as_str().to_owned(),
                self.user_id.clone(),
                c.clone(),
            )
        })
    }
}

/// The heart of `append`, the same for every store: each message whose key is `known` (stored
/// earlier, or earlier in this batch) answers with that message; every other one takes the next
/// seq of its room from `last_seq` (the locked rooms' current values, advanced here). Returns the
/// answers in batch order and the new rows to insert, in seq order per room.
pub fn assign_seqs(
    batch: &[NewMessage],
    mut known: HashMap<IdempotencyKey, Message>,
    last_seq: &mut HashMap<String, i64>,
    created_at: &str,
) -> Result<(Vec<Appended>, Vec<Message>), StoreError> {
    let mut out = Vec::with_capacity(batch.len());
    let mut new_rows = Vec::with_capacity(batch.len());
    for m in batch {
        let key = m.key();
        if let Some(first) = key.as_ref().and_then(|k| known.get(k)) {
            out.push(Appended {
                message: first.clone(),
                created: false,
            });
            continue;
        }
        let seq = last_seq
            .get_mut(m.room.as_str())
            .ok_or_else(|| StoreError::NotFound(format!("room {}", m.room)))?;
        *seq += 1;
        let message = Message {
            id: uuid::Uuid::now_v7().to_string(),
            room: m.room.as_str().to_owned(),
            seq: *seq,
            user_id: m.user_id.clone(),
            content: m.content.clone(),
            client_id: m.client_id.clone(),
            created_at: created_at.to_owned(),
        };
        if let Some(k) = key {
            known.insert(k, message.clone());
        }
        new_rows.push(message.clone());
        out.push(Appended {
            message,
            created: true,
        });
    }
    Ok((out, new_rows))
}

/// Which slice of a room's history to read (PROTOCOL.md §5, `GET …/messages` and `sync`).
#[derive(Debug, Clone, Copy)]
pub struct HistoryQuery {
    pub after_seq: Option<i64>,
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// Ascending by seq; `more` says whether more exist in the direction of paging.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub items: Vec<Message>,
    pub more: bool,
}

impl HistoryQuery {
    /// Pages without `after_seq` run newest-first in SQL (the newest `limit` before a point).
    pub fn backwards(&self) -> bool {
        self.after_seq.is_none()
    }

    /// Rows to fetch: one past `limit` tells whether there are more.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// The page of `fetched` rows (in SQL order), ascending.
    pub fn page(&self, mut fetched: Vec<Message>) -> HistoryPage {
        let more = fetched.len() as i64 == self.fetch();
        fetched.truncate(self.limit as usize);
        if self.backwards() {
            fetched.reverse();
        }
        HistoryPage {
            items: fetched,
            more,
        }
    }
}

/// A position in the primary's write history (PostgreSQL: the WAL LSN after a commit; SQLite: 0,
/// every read sees every commit). Writes return it; a read that must see a write passes it back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct WritePos(pub u64);

/// Where a read may be served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// The primary: reads that decide access or start a delivery cursor must not be stale.
    Primary,
    /// A healthy replica that has replayed at least this position (read-your-writes), else the
    /// primary. `None`: any healthy replica.
    Replica(Option<WritePos>),
}

/// Obligations of every implementation:
/// - `append` commits the whole batch in one transaction, durably, before it returns; seqs are
///   assigned at commit, per room 1, 2, 3 … with no gap and no repeat, in the order of the batch,
///   even when other processes append to the same room at once.
/// - An item whose (user, room, client_id) is already stored (earlier, or earlier in the same
///   batch, hot or archived) returns the stored message with `created = false` and takes no seq.
/// - `history` reads hot and archived messages alike, each once (see `archive.rs`).
/// - Every failure to reach the database is [`StoreError::Unavailable`], returned within the
///   configured acquire timeout.
#[async_trait]
pub trait Store:
    users::UserStore
    + sensors::SensorStore
    + state::StateStore
    + archive::ArchiveStore
    + jobs::JobStore
    + webhooks::WebhookStore
    + sealed::ResealStore
    + sealed::KeyRegistry
{
    async fn create_room(&self, room: NewRoom) -> Result<(RoomInfo, WritePos), StoreError>;
    async fn room(&self, id: &RoomId, from: ReadFrom) -> Result<Option<RoomInfo>, StoreError>;
    /// Rooms `viewer` may see (public, or private with membership; `admin`: all), by id, after `cursor`.
    async fn list_rooms(
        &self,
        viewer: &str,
        admin: bool,
        cursor: Option<&str>,
        limit: u32,
        from: ReadFrom,
    ) -> Result<Vec<RoomInfo>, StoreError>;
    async fn add_member(
        &self,
        room: &RoomId,
        user_id: &str,
        by: &str,
    ) -> Result<WritePos, StoreError>;
    /// Always on the primary: it decides access.
    async fn is_member(&self, room: &RoomId, user_id: &str) -> Result<bool, StoreError>;
    async fn append(&self, batch: &[NewMessage]) -> Result<(Vec<Appended>, WritePos), StoreError>;
    async fn history(
        &self,
        room: &RoomId,
        q: HistoryQuery,
        from: ReadFrom,
    ) -> Result<HistoryPage, StoreError>;
    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Publish pool gauges (called periodically by the metrics task).
    fn report_pool_metrics(&self);
    /// Each pool's size, idle, in use and waiting, for the admin stats.
    fn pool_stats(&self) -> serde_json::Value;
    async fn close(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(room: &str, user: &str, cid: Option<&str>) -> NewMessage {
        NewMessage {
            room: RoomId::parse(room).unwrap(),
            user_id: user.into(),
            content: "x".into(),
            client_id: cid.map(Into::into),
        }
    }

    #[test]
    fn seqs_follow_each_room_and_retries_take_none() {
        let batch = [
            new("a", "u", Some("k")),
            new("b", "u", None),
            new("a", "u", Some("k")),   // retry inside the batch
            new("a", "v", Some("k")),   // another user's key
            new("a", "u", Some("old")), // stored earlier
        ];
        let stored = Message {
            id: "m0".into(),
            room: "a".into(),
            seq: 3,
            user_id: "u".into(),
            content: "first".into(),
            client_id: Some("old".into()),
            created_at: "t".into(),
        };
        let known = HashMap::from([(("a".into(), "u".into(), "old".into()), stored.clone())]);
        let mut last = HashMap::from([("a".to_owned(), 3), ("b".to_owned(), 7)]);
        let (out, rows) = assign_seqs(&batch, known, &mut last, "now").unwrap();
        let seqs: Vec<(i64, bool)> = out.iter().map(|a| (a.message.seq, a.created)).collect();
        assert_eq!(
            seqs,
            vec![(4, true), (8, true), (4, false), (5, true), (3, false)]
        );
        assert_eq!(out[4].message, stored);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            last,
            HashMap::from([("a".to_owned(), 5), ("b".to_owned(), 8)])
        );
        let missing = assign_seqs(&[new("zz", "u", None)], HashMap::new(), &mut last, "now");
        assert!(matches!(missing, Err(StoreError::NotFound(_))));
    }
}
