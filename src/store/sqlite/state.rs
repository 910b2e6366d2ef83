//! [`StateStore`] on SQLite: the one writer connection serializes a room's writes; values are
//! JSON text.

use crate::store::webhooks::OutboxEvent;
use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, Row, SqliteConnection};

use super::SqliteStore;
use crate::at_rest::Sealer;
use crate::domain::{RoomId, State, StateKey};
use crate::store::StoreError;
use crate::store::state::{Plan, StateStore, StateWrite, plan_write};

/// A state row, its value opened (encryption at rest).
fn state_from_row(sealer: &Sealer, r: &SqliteRow) -> Result<State, StoreError> {
    let room: String = r.get("room_id");
    let key: String = r.get("key");
    let value = sealer.open_state(&room, &key, r.get("value_key"), r.get("value"))?;
    Ok(State {
        room,
        key,
        value,
        version: r.get("version"),
        updated_by: r.get("updated_by"),
        updated_at: r.get("updated_at"),
    })
}

impl SqliteStore {
    /// The key's current STATE inside the caller's transaction, or `NotFound` for the room.
    async fn current_state(
        &self,
        conn: &mut SqliteConnection,
        room: &RoomId,
        key: &StateKey,
    ) -> Result<Option<State>, StoreError> {
        let room_row = sqlx::query("SELECT 1 FROM rooms WHERE id = ?")
            .bind(room.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        if room_row.is_none() {
            return Err(StoreError::NotFound(format!("room {room}")));
        }
        let row = self
            .telemetry
            .timed(
                "state_get",
                sqlx::query(
                    "SELECT room_id, key, value, value_key, version, updated_by, updated_at \
                     FROM room_state WHERE room_id = ? AND key = ?",
                )
                .bind(room.as_str())
                .bind(key.as_str())
                .fetch_optional(&mut *conn),
            )
            .await?;
        row.as_ref()
            .map(|r| state_from_row(&self.sealer, r))
            .transpose()
    }

    async fn bump_state_seq(
        &self,
        conn: &mut SqliteConnection,
        room: &RoomId,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "UPDATE rooms SET state_seq = state_seq + 1 WHERE id = ? RETURNING state_seq",
        )
        .bind(room.as_str())
        .fetch_one(&mut *conn)
        .await?;
        Ok(row.get(0))
    }
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn write_state(
        &self,
        room: &RoomId,
        key: &StateKey,
        value: Option<&Value>,
        expected: Option<i64>,
        by: &str,
    ) -> Result<StateWrite, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let current = self.current_state(&mut tx, room, key).await?;
        let state = match plan_write(room, key, current.as_ref(), value, expected, by) {
            Plan::Answer(answer) => return Ok(answer),
            Plan::Store(state) => state,
        };
        self.register_current_key(&mut tx).await?;
        let sealed = self.sealer.seal_state(&state);
        let statement = if state.value.is_null() {
            sqlx::query("DELETE FROM room_state WHERE room_id = ? AND key = ?")
                .bind(&state.room)
                .bind(&state.key)
        } else {
            sqlx::query(
                "INSERT INTO room_state (room_id, key, value, version, updated_by, updated_at, \
                 value_key) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (room_id, key) DO UPDATE SET \
                 value = excluded.value, version = excluded.version, \
                 updated_by = excluded.updated_by, updated_at = excluded.updated_at, \
                 value_key = excluded.value_key",
            )
            .bind(&state.room)
            .bind(&state.key)
            .bind(sealed.text)
            .bind(state.version)
            .bind(&state.updated_by)
            .bind(&state.updated_at)
            .bind(sealed.key_id)
        };
        self.telemetry
            .timed("state_write", statement.execute(&mut *tx))
            .await?;
        let seq = self.bump_state_seq(&mut tx, room).await?;
        let event = OutboxEvent {
            event: "state",
            room: room.as_str(),
            data: &state,
        };
        self.enqueue_deliveries(&mut tx, &[event]).await?;
        tx.commit().await?;
        self.key_registered();
        Ok(StateWrite::Done { state, seq })
    }

    async fn room_state(&self, room: &RoomId) -> Result<Option<(Vec<State>, i64)>, StoreError> {
        // one statement: the keys and the seq they are current at are one snapshot
        let rows = self
            .telemetry
            .timed(
                "state_room",
                sqlx::query(
                    "SELECT r.state_seq, s.room_id, s.key, s.value, s.value_key, s.version, \
                     s.updated_by, s.updated_at FROM rooms r LEFT JOIN room_state s ON s.room_id = r.id \
                     WHERE r.id = ? ORDER BY s.key",
                )
                .bind(room.as_str())
                .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let seq: i64 = first.get("state_seq");
        let states = rows
            .iter()
            .filter(|r| r.get::<Option<String>, _>("key").is_some())
            .map(|r| state_from_row(&self.sealer, r))
            .collect::<Result<_, _>>()?;
        Ok(Some((states, seq)))
    }
}
