//! [`StateStore`] on PostgreSQL: a room's writes are serialized by its row lock (`FOR UPDATE`,
//! the lock appends take too); values are `jsonb`.

use crate::store::webhooks::OutboxEvent;
use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};

use super::{PgStore, rfc3339};
use crate::domain::{RoomId, State, StateKey};
use crate::store::StoreError;
use crate::store::state::{Plan, StateStore, StateWrite, plan_write};

fn state_from_row(r: &PgRow) -> State {
    State {
        room: r.get("room_id"),
        key: r.get("key"),
        value: r.get::<sqlx::types::Json<Value>, _>("value").0,
        version: r.get("version"),
        updated_by: r.get("updated_by"),
        updated_at: rfc3339(r.get("updated_at")),
    }
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
                    "SELECT room_id, key, value, version, updated_by, updated_at FROM room_state \
                     WHERE room_id = $1 AND key = $2",
                )
                .bind(room.as_str())
                .bind(key.as_str())
                .fetch_optional(&mut *conn),
            )
            .await?;
        Ok(row.as_ref().map(state_from_row))
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
        let statement = if state.value.is_null() {
            sqlx::query("DELETE FROM room_state WHERE room_id = $1 AND key = $2")
                .bind(&state.room)
                .bind(&state.key)
        } else {
            sqlx::query(
                "INSERT INTO room_state (room_id, key, value, version, updated_by, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6::timestamptz) ON CONFLICT (room_id, key) DO UPDATE \
                 SET value = excluded.value, version = excluded.version, \
                 updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            )
            .bind(&state.room)
            .bind(&state.key)
            .bind(sqlx::types::Json(&state.value))
            .bind(state.version)
            .bind(&state.updated_by)
            .bind(&state.updated_at)
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
                        "SELECT r.state_seq, s.room_id, s.key, s.value, s.version, s.updated_by, \
                         s.updated_at FROM rooms r LEFT JOIN room_state s ON s.room_id = r.id \
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
                .map(state_from_row)
                .collect();
            Ok(Some((states, seq)))
        })
        .await
    }
}
