//! [`StateStore`] on PostgreSQL: a room's writes are serialized by its row lock (`FOR UPDATE`,
//! the lock appends take too); values are `jsonb`.

use crate::store::webhooks::OutboxEvent;
use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};

use super::{PgStore, from_jsonb, rfc3339, to_jsonb};
use crate::at_rest::Sealer;
use crate::domain::{RoomId, State, StateKey};
use crate::store::StoreError;
use crate::store::state::{Plan, StateStore, StateWrite, plan_write};

/// A state row, its value opened (encryption at rest).
fn state_from_row(sealer: &Sealer, r: &PgRow) -> Result<State, StoreError> {
    let room: String = r.get("room_id");
    let key: String = r.get("key");
    let key_id: Option<&str> = r.get("value_key");
    let value = match key_id {
        None => r.get::<sqlx::types::Json<Value>, _>("value").0,
        Some(_) => {
            let stored = from_jsonb(r.get::<sqlx::types::Json<Value>, _>("value").0, key_id);
            sealer.open_state(&room, &key, key_id, stored)?
        }
    };
    Ok(State {
        room,
        key,
        value,
        version: r.get("version"),
        updated_by: r.get("updated_by"),
        updated_at: rfc3339(r.get("updated_at")),
    })
}

impl PgStore {
    /// Locks the room's row and reads the key's current STATE (`NotFound` for the room).
    async fn lock_and_read(
        &self,
        conn: &mut PgConnection,
        room: &RoomId,
        key: &StateKey,
    ) -> Result<Option<State>, StoreError> {
        let locked = self
            .telemetry
            .timed(
                "state_lock_room",
                sqlx::query("SELECT 1 FROM rooms WHERE id = $1 FOR UPDATE")
                    .bind(room.as_str())
                    .fetch_optional(&mut *conn),
            )
            .await?;
        if locked.is_none() {
            return Err(StoreError::NotFound(format!("room {room}")));
        }
        let row = self
            .telemetry
            .timed(
                "state_get",
                sqlx::query(
                    "SELECT room_id, key, value, value_key, version, updated_by, updated_at \
                     FROM room_state WHERE room_id = $1 AND key = $2",
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
        conn: &mut PgConnection,
        room: &RoomId,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "UPDATE rooms SET state_seq = state_seq + 1 WHERE id = $1 RETURNING state_seq",
        )
        .bind(room.as_str())
        .fetch_one(&mut *conn)
        .await?;
        Ok(row.get(0))
    }

    async fn write_state_inner(
        &self,
        room: &RoomId,
        key: &StateKey,
        value: Option<&Value>,
        expected: Option<i64>,
        by: &str,
    ) -> Result<StateWrite, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        let current = self.lock_and_read(&mut tx, room, key).await?;
        let state = match plan_write(room, key, current.as_ref(), value, expected, by) {
            Plan::Answer(answer) => return Ok(answer),
            Plan::Store(state) => state,
        };
        self.register_current_key(&mut tx).await?;
        // off: the value as it is (no round trip through text)
        let stored = match self.sealer.current() {
            Some(_) => to_jsonb(&self.sealer.seal_state(&state)),
            None => sqlx::types::Json(state.value.clone()),
        };
        let key_id = self.sealer.current();
        let statement = if state.value.is_null() {
            sqlx::query("DELETE FROM room_state WHERE room_id = $1 AND key = $2")
                .bind(&state.room)
                .bind(&state.key)
        } else {
            sqlx::query(
                "INSERT INTO room_state (room_id, key, value, version, updated_by, updated_at, \
                 value_key) VALUES ($1, $2, $3, $4, $5, $6::timestamptz, $7) \
                 ON CONFLICT (room_id, key) DO UPDATE \
                 SET value = excluded.value, version = excluded.version, \
                 updated_by = excluded.updated_by, updated_at = excluded.updated_at, \
                 value_key = excluded.value_key",
            )
            .bind(&state.room)
            .bind(&state.key)
            .bind(stored)
            .bind(state.version)
            .bind(&state.updated_by)
            .bind(&state.updated_at)
            .bind(key_id)
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
}

#[async_trait]
impl StateStore for PgStore {
    async fn write_state(
        &self,
        room: &RoomId,
        key: &StateKey,
        value: Option<&Value>,
        expected: Option<i64>,
        by: &str,
    ) -> Result<StateWrite, StoreError> {
        self.bounded(self.write_state_inner(room, key, value, expected, by))
            .await
    }

    async fn room_state(&self, room: &RoomId) -> Result<Option<(Vec<State>, i64)>, StoreError> {
        self.bounded(async {
            // one statement: the keys and the seq they are current at are one snapshot
            let rows = self
                .telemetry
                .timed(
                    "state_room",
                    sqlx::query(
                        "SELECT r.state_seq, s.room_id, s.key, s.value, s.value_key, s.version, \
                         s.updated_by, s.updated_at FROM rooms r LEFT JOIN room_state s ON s.room_id = r.id \
                         WHERE r.id = $1 ORDER BY s.key COLLATE \"C\"",
                    )
                    .bind(room.as_str())
                    .fetch_all(&mut *self.primary.acquire().await?),
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
        })
        .await
    }
}
