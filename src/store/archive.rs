//! Hot and cold history (PROTOCOL.md §6.3): the archive part of the store.
//!
//! A room's messages with `seq <= archived_seq` (a column of the room's row) live in cold
//! storage, the rest in the hot `messages` table. The move of one batch:
//!
//! 1. read the hot rows right after the marker (`archive_batch`);
//! 2. copy them to cold storage and commit there ([`ColdStore::insert`], idempotent: a copy
//!    already there is left as it is);
//! 3. in one hot transaction, under the room's lock: advance the marker from the value read in
//!    step 1 (compare-and-set) and delete the hot rows up to it (`advance_archive`).
//!
//! Readers read the marker in the same snapshot as the hot rows and take from cold storage only
//! the rows at or below it, so a message is read from exactly one side. A crash after 2 and
//! before 3 leaves copies in cold storage above the marker: invisible, and rewritten
//! identically by the next pass. Cold rows at or below a marker were committed before the
//! marker moved, so a reader that sees the marker finds them. Sends look a `client_id` up hot
//! first, then (when the room has archived messages) cold, while they hold the room's lock: the
//! marker cannot move under them.
//!
//! Cold rows carry the room's epoch: a room created again (a wiped primary beside a kept
//! archive) never reads another history's messages.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::sealed::ResealStore;
use super::{HistoryPage, HistoryQuery, StoreError};
use crate::at_rest::{Sealer, StoredMessage};
use crate::domain::Message;
use crate::telemetry::Telemetry;

/// Where cold storage is (`TSUNAGI_ARCHIVE_URL`, or the default beside the primary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColdLocation {
    Sqlite(PathBuf),
    /// A PostgreSQL database; `in_primary`: the primary itself (its health is the primary's).
    Postgres {
        url: String,
        in_primary: bool,
    },
}

/// How to open cold storage.
#[derive(Debug, Clone)]
pub struct ColdSettings {
    pub location: ColdLocation,
    /// SQLite `synchronous` (the primary's: archived rows are as durable as hot ones).
    pub synchronous: String,
    pub acquire_timeout: Duration,
    pub busy_timeout: Duration,
    pub statement_timeout: Duration,
    pub application_name: String,
    /// Opens the archived messages' content (they are moved sealed, as stored hot).
    pub sealer: Arc<Sealer>,
}

/// Opens cold storage (making its table if missing).
pub async fn open_cold(
    s: &ColdSettings,
    telemetry: Telemetry,
) -> anyhow::Result<Arc<dyn ColdStore>> {
    Ok(match &s.location {
        ColdLocation::Sqlite(path) => Arc::new(
            super::sqlite::cold::SqliteCold::open(
                path,
                &s.synchronous,
                s.acquire_timeout,
                s.busy_timeout,
                telemetry,
                s.sealer.clone(),
            )
            .await?,
        ),
        ColdLocation::Postgres { url, in_primary } => {
            Arc::new(super::postgres::cold::PgCold::open(url, *in_primary, s, telemetry).await?)
        }
    })
}

/// Where a room's history splits: `seq <= archived_seq` is cold, the rest hot; cold rows are
/// those of this `epoch`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveMark {
    pub archived_seq: i64,
    pub epoch: String,
}

/// A room with a message old enough to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivableRoom {
    pub room: String,
    pub mark: ArchiveMark,
}

/// Hot and cold counts for the admin stats (from the rooms' markers: seqs have no gaps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    pub hot_messages: i64,
    pub cold_messages: i64,
    /// `created_at` of the oldest hot message, RFC3339.
    pub oldest_hot: Option<String>,
}

/// (room, epoch, user, client_id): a send's idempotency key, looked up in cold storage.
pub type ColdKey = (String, String, String, String);

/// The hot side of archiving, on the primary store.
///
/// Obligations: `archive_batch` reads the hot rows with `seq > after_seq`, ascending, at most
/// `limit`. `advance_archive` moves the room's marker from `from` to `to` and deletes its hot
/// rows with `seq <= to`, in one transaction, only if the marker is still at `from` (else it
/// changes nothing and returns false). `archivable_rooms` lists the rooms (by id, after
/// `after_room`) whose first hot message was created before `cutoff` (RFC3339).
#[async_trait]
pub trait ArchiveStore: Send + Sync {
    async fn archivable_rooms(
        &self,
        cutoff: &str,
        after_room: &str,
        limit: u32,
    ) -> Result<Vec<ArchivableRoom>, StoreError>;
    async fn archive_batch(
        &self,
        room: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    async fn advance_archive(&self, room: &str, from: i64, to: i64) -> Result<bool, StoreError>;
    /// How many hot messages were created before `cutoff` (what a pass would move at most).
    async fn count_archivable(&self, cutoff: &str) -> Result<i64, StoreError>;
    async fn archive_stats(&self) -> Result<ArchiveStats, StoreError>;
    /// The cold storage this store reads archived messages from.
    fn cold(&self) -> &Arc<dyn ColdStore>;
}

/// Cold storage: the archived messages, keyed by (room, epoch, seq).
///
/// Obligations: `insert` commits every row durably before it returns, leaving rows already
/// present unchanged; rows are stored as given (sealed ones stay sealed, under their key id). `history` reads the rows of (room, epoch) with `after < seq < before`,
/// at most `fetch`, newest first when `backwards`, else oldest first. `by_client_ids` returns
/// the stored rows matching any of the keys.
#[async_trait]
pub trait ColdStore: ResealStore {
    async fn insert(&self, epoch: &str, rows: &[StoredMessage]) -> Result<(), StoreError>;
    async fn history(
        &self,
        room: &str,
        epoch: &str,
        range: SeqRange,
    ) -> Result<Vec<Message>, StoreError>;
    async fn by_client_ids(&self, keys: &[ColdKey]) -> Result<Vec<Message>, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    fn pool_stats(&self) -> serde_json::Value;
    async fn close(&self);
}

/// `after < seq < before`, at most `fetch` rows, from the newer end when `backwards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    pub after: i64,
    pub before: i64,
    pub fetch: i64,
    pub backwards: bool,
}

impl SeqRange {
    /// The hot part of a history query: above the marker.
    pub fn hot(q: &HistoryQuery, archived_seq: i64) -> SeqRange {
        SeqRange {
            after: q.after_seq.unwrap_or(0).max(archived_seq),
            before: q.before_seq.unwrap_or(i64::MAX),
            fetch: q.fetch(),
            backwards: q.backwards(),
        }
    }

    /// The cold part of a history query: at or below the marker; None when the query does not
    /// reach below it.
    fn cold(q: &HistoryQuery, archived_seq: i64) -> Option<SeqRange> {
        let after = q.after_seq.unwrap_or(0);
        let before = q.before_seq.unwrap_or(i64::MAX).min(archived_seq + 1);
        (after < archived_seq && after + 1 < before).then_some(SeqRange {
            after,
            before,
            fetch: q.fetch(),
            backwards: q.backwards(),
        })
    }
}

/// A history page from the hot rows (read with `mark`, in one snapshot) and, where the query
/// reaches below the marker and the hot rows do not fill the page, the cold rows.
pub async fn merge_history(
    q: HistoryQuery,
    mut hot: Vec<Message>,
    room: &str,
    mark: &ArchiveMark,
    cold: &dyn ColdStore,
) -> Result<HistoryPage, StoreError> {
    let fetch = q.fetch() as usize;
    // SQL order: newest first when paging backwards (hot rows are all newer than cold ones)
    if q.backwards() {
        hot.sort_unstable_by_key(|m| std::cmp::Reverse(m.seq));
    } else {
        hot.sort_unstable_by_key(|m| m.seq);
    }
    let reach_cold = if q.backwards() {
        hot.len() < fetch
    } else {
        true
    };
    let rows = match SeqRange::cold(&q, mark.archived_seq).filter(|_| reach_cold) {
        None => hot,
        Some(range) => {
            let mut older = cold.history(room, &mark.epoch, range).await?;
            if q.backwards() {
                hot.extend(older);
                hot
            } else {
                older.extend(hot);
                older
            }
        }
    };
    let mut rows = rows;
    rows.truncate(fetch);
    Ok(q.page(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(after: Option<i64>, before: Option<i64>, limit: u32) -> HistoryQuery {
        HistoryQuery {
            after_seq: after,
            before_seq: before,
            limit,
        }
    }

    #[test]
    fn the_cold_part_is_at_or_below_the_marker() {
        assert_eq!(SeqRange::cold(&q(None, None, 10), 0), None);
        assert_eq!(SeqRange::cold(&q(Some(5), None, 10), 5), None);
        let r = SeqRange::cold(&q(Some(2), None, 10), 5).unwrap();
        assert_eq!((r.after, r.before, r.fetch, r.backwards), (2, 6, 11, false));
        let r = SeqRange::cold(&q(None, Some(4), 10), 5).unwrap();
        assert_eq!((r.after, r.before, r.backwards), (0, 4, true));
        // before_seq 1: nothing below it
        assert_eq!(SeqRange::cold(&q(None, Some(1), 10), 5), None);
        let h = SeqRange::hot(&q(Some(2), Some(9), 3), 5);
        assert_eq!((h.after, h.before, h.fetch), (5, 9, 4));
    }
}
