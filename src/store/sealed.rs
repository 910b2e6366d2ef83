//! The encryption-at-rest part of the store (see `src/at_rest/`): the registry of key ids that
//! values are stored under (read by the start check), and the row access `tsunagi rekey` needs.

use async_trait::async_trait;

use super::StoreError;
use crate::at_rest::{Binding, Stored};

/// The columns that hold sealed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedTable {
    /// `messages.content`
    HotMessages,
    /// `messages_archive.content` (cold storage)
    ColdMessages,
    /// `room_state.value`
    State,
    /// `jobs.payload`
    Jobs,
}

impl SealedTable {
    pub const ALL: [SealedTable; 4] = [
        // hot before cold: a row archived while the hot pass runs is then found by the cold one
        SealedTable::HotMessages,
        SealedTable::ColdMessages,
        SealedTable::State,
        SealedTable::Jobs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SealedTable::HotMessages => "hot messages",
            SealedTable::ColdMessages => "archived messages",
            SealedTable::State => "state values",
            SealedTable::Jobs => "job payloads",
        }
    }
}

/// A row's identity: its primary key, and what its sealed value is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowId {
    Message {
        room: String,
        seq: i64,
        id: String,
    },
    ColdMessage {
        room: String,
        epoch: String,
        seq: i64,
        id: String,
    },
    State {
        room: String,
        key: String,
    },
    Job {
        id: String,
    },
}

impl RowId {
    pub fn binding(&self) -> Binding<'_> {
        match self {
            RowId::Message { room, id, .. } | RowId::ColdMessage { room, id, .. } => {
                Binding::Message { room, id }
            }
            RowId::State { room, key } => Binding::State { room, key },
            RowId::Job { id } => Binding::Job { id },
        }
    }
}

/// A row whose value is not under the current key, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    pub row: RowId,
    pub stored: Stored,
}

/// One re-encryption: the row as it was read, and its value under the current key.
#[derive(Debug, Clone)]
pub struct Reseal {
    pub old: SealedRow,
    pub new: Stored,
}

/// Obligations: `stale_rows` reads, in primary key order after `after`, at most `limit` rows of
/// `table` whose value is not under `current` (plaintext ones too). `reseal` writes each new
/// value only if the row still holds exactly the old one (compare-and-set: a concurrent write
/// or move is never clobbered), in one short transaction, and returns how many it changed.
/// `count_stale` counts what `stale_rows` would walk. A table the store does not hold (cold
/// messages, on the primary store) is empty.
#[async_trait]
pub trait ResealStore: Send + Sync {
    async fn stale_rows(
        &self,
        table: SealedTable,
        after: Option<&RowId>,
        current: &str,
        limit: u32,
    ) -> Result<Vec<SealedRow>, StoreError>;
    async fn reseal(&self, table: SealedTable, rows: &[Reseal]) -> Result<u64, StoreError>;
    async fn count_stale(&self, table: SealedTable, current: &str) -> Result<i64, StoreError>;
}

/// The registry of key ids values are stored under, in the primary. Writes register the current
/// key (once per process, in their own transaction); rekey unregisters the keys it emptied.
#[async_trait]
pub trait KeyRegistry: Send + Sync {
    async fn keys_in_use(&self) -> Result<Vec<String>, StoreError>;
    async fn register_key(&self, key_id: &str) -> Result<(), StoreError>;
    /// Removes every key id but `keep`; returns the ids removed.
    async fn unregister_keys_except(&self, keep: &str) -> Result<Vec<String>, StoreError>;
}
