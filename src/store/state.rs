//! The room state part of the store (PROTOCOL.md §6.2): versioned JSON documents per (room,
//! key), written under optimistic concurrency.
//!
//! Every write runs under the room row's lock (PostgreSQL `FOR UPDATE`; SQLite's one writer)
//! and advances the room's `state_seq` in the same transaction, so the room's writes have one
//! order that every instance can apply to the `state` events it receives.

use async_trait::async_trait;
use serde_json::Value;

use super::StoreError;
use crate::domain::{RoomId, State, StateKey};

/// What a conditional write or delete came to.
#[derive(Debug, Clone, PartialEq)]
pub enum StateWrite {
    /// Committed: the key's new STATE (a deletion: `value` null, `version` one past the last
    /// stored) and the room's `state_seq` after it.
    Done { state: State, seq: i64 },
    /// The key is not at the expected version: its current STATE (None: it does not exist).
    Conflict(Option<State>),
    /// A delete of a key that does not exist (without an expected version).
    Missing,
}

/// Obligations of every implementation:
/// - `set_state` / `delete_state` with `expected: Some(v)` succeed only if the key is at version
///   `v` now (`0`: it must not exist), atomically with the write; `None` is unconditional. A
///   written key gets its old version + 1 (1 for a new key). Each success advances the room's
///   `state_seq` by one in the same transaction; concurrent writers of a room are serialized.
/// - `room_state` reads every key of the room and the `state_seq` they are current at, as one
///   snapshot, from the primary.
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn set_state(
        &self,
        room: &RoomId,
        key: &StateKey,
        value: &Value,
        expected: Option<i64>,
        by: &str,
    ) -> Result<StateWrite, StoreError>;
    async fn delete_state(
        &self,
        room: &RoomId,
        key: &StateKey,
        expected: Option<i64>,
        by: &str,
    ) -> Result<StateWrite, StoreError>;
    /// Every key of the room by key, and the room's `state_seq` (None: no such room).
    async fn room_state(&self, room: &RoomId) -> Result<Option<(Vec<State>, i64)>, StoreError>;
}

/// The decision both stores make once they hold the room's lock and read the key's `current`
/// STATE: the version to write, or the conflict to answer when `expected` does not match.
pub fn next_version(
    current: Option<&State>,
    expected: Option<i64>,
) -> Result<i64, Box<StateWrite>> {
    let now = current.map_or(0, |s| s.version);
    match expected {
        Some(v) if v != now => Err(Box::new(StateWrite::Conflict(current.cloned()))),
        _ => Ok(now + 1),
    }
}
