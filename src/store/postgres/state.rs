//! [`StateStore`] on PostgreSQL: a room's writes are serialized by its row lock (`FOR UPDATE`,
//! the lock appends take too); values are `jsonb`.

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};

use super::{PgStore, rfc3339};
use crate::domain::{RoomId, State, StateKey};
use crate::store::StoreError;
use crate::store::state::{StateStore, StateWrite, next_version};

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

    async fn set_state_inner(
        &self,
        room: &RoomId,
        key: &StateKey,
        value: &Value,
        expected: Option<i64>,
        by: &str,
    ) -> Result<StateWrite, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        let current = self.lock_and_read(&mut tx, room, key).await?;
        let version = match next_version(current.as_ref(), expected) {
            Ok(v) => v,
            Err(conflict) => return Ok(*conflict),
        };
        let now = Utc::now();
        self.telemetry
            .timed(
                "state_upsert",
                sqlx::query(
                    "INSERT INTO room_state (room_id, key, value, version, updated_by, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room_id, key) DO UPDATE SET \
                     value = excluded.value, version = excluded.version, \
                     updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                )
                .bind(room.as_str())
                .bind(key.as_str())
                .bind(sqlx::types::Json(value))
                .bind(version)
                .bind(by)
                .bind(now)
                .execute(&mut *tx),
            )
            .await?;
        let seq = self.bump_state_seq(&mut tx, room).await?;
        tx.commit().await?;
        let state = State {
            room: room.as_str().to_owned(),
            key: key.as_str().to_owned(),
            value: value.clone(),
            version,
            updated_by: by.to_owned(),
            updated_at: rfc3339(now),
        };
        Ok(StateWrite::Done { state, seq })
    }

    async fn delete_state_inner(
        &self,
        room: &RoomId,
        key: &StateKey,
        expected: Option<i64>,
        by: &str,
    ) -> Result<StateWrite, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        let current = self.lock_and_read(&mut tx, room, key).await?;
        if current.is_none() && expected.is_none_or(|v| v == 0) {
            return Ok(StateWrite::Missing);
        }
        let version = match next_version(current.as_ref(), expected) {
            Ok(v) => v,
            Err(conflict) => return Ok(*conflict),
        };
        self.telemetry
            .timed(
                "state_delete",
                sqlx::query("DELETE FROM room_state WHERE room_id = $1 AND key = $2")
                    .bind(room.as_str())
                    .bind(key.as_str())
                    .execute(&mut *tx),
            )
            .await?;
        let seq = self.bump_state_seq(&mut tx, room).await?;
        tx.commit().await?;
        let state = State {
            room: room.as_str().to_owned(),
            key: key.as_str().to_owned(),
            value: Value::Null,
            version,
            updated_by: by.to_owned(),
            updated_at: rfc3339(Utc::now()),
        };
        Ok(StateWrite::Done { state, seq })
    }
}

#[async_trait]
impl StateStore for PgStore {
    async fn set_state(
        &self,
        room: &RoomId,
        key: &StateKey,
        value: &Value,
        expected: Option<i64>,
        by: &str,
    ) -> Result<StateWrite, StoreError> {
        self.bounded(self.set_state_inner(room, key, value, expected, by))
            .await
    }

    async fn delete_state(
        &self,
        room: &RoomId,
        key: &StateKey,
        expected: Option<i64>,
        by: &str,
    ) -> Result<StateWrite, StoreError> {
        self.bounded(self.delete_state_inner(room, key, expected, by))
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
