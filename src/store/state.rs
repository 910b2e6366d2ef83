//! The room state part of the store (PROTOCOL.md §6.2): versioned JSON documents per (room,
//! key), written under optimistic concurrency.
//!
//! Every write runs under the room row's lock (PostgreSQL `FOR UPDATE`; SQLite's one writer)
//! and advances the room's `state_seq` in the same transaction, so the room's writes have one
//! order that every instance can apply to the `state` events it receives.

use async_trait::async_trait;
use serde_json::Value;

use super::StoreError;
use crate::domain::{RoomId, State, StateKey, now_rfc3339};

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
/// - `write_state` of a value (or, with `None`, a delete) with `expected: Some(v)` succeeds only
///   if the key is at version `v` now (`0`: it must not exist), atomically with the write;
///   `None` is unconditional. A written key gets its old version + 1 (1 for a new key); a
///   delete of a key that does not exist is `Missing` (a conflict if another version was
///   expected). Each success advances the room's `state_seq` by one in the same transaction;
///   concurrent writers of a room are serialized. An unknown room is `NotFound`.
/// - `room_state` reads every key of the room and the `state_seq` they are current at, as one
///   snapshot, from the primary.
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn write_state(
        &self,
        room: &RoomId,
        key: &StateKey,
        value: Option<&Value>,
        expected: Option<i64>,
        by: &str,
    ) -> Result<StateWrite, StoreError>;
    /// Every key of the room by key, and the room's `state_seq` (None: no such room).
    async fn room_state(&self, room: &RoomId) -> Result<Option<(Vec<State>, i64)>, StoreError>;
}

/// What a write does, decided the same way by both stores once they hold the room's lock and
/// have read the key's `current` STATE: answer without writing, or store this STATE (a delete
/// when its `value` is null).
pub enum Plan {
    Answer(StateWrite),
    Store(State),
}

pub fn plan_write(
    room: &RoomId,
    key: &StateKey,
    current: Option<&State>,
    value: Option<&Value>,
    expected: Option<i64>,
    by: &str,
) -> Plan {
    let now = current.map_or(0, |s| s.version);
    if value.is_none() && current.is_none() && expected.is_none_or(|v| v == 0) {
        return Plan::Answer(StateWrite::Missing);
    }
    if expected.is_some_and(|v| v != now) {
        return Plan::Answer(StateWrite::Conflict(current.cloned()));
    }
    Plan::Store(State {
        room: room.as_str().to_owned(),
        key: key.as_str().to_owned(),
        value: value.cloned().unwrap_or(Value::Null),
        version: now + 1,
        updated_by: by.to_owned(),
        updated_at: now_rfc3339(),
    })
}
