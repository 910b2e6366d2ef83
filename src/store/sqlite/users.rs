//! [`UserStore`] on SQLite: accounts, member listings and the audit log.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, Row};

use super::SqliteStore;
use crate::domain::{RoomId, now_rfc3339};
use crate::store::users::{
    AuditEntry, AuditQuery, AuditRow, MemberRow, NewUser, UserPatch, UserRecord, UserStore,
    user_columns, user_conflict,
};
use crate::store::{ReadFrom, StoreError, WritePos};

macro_rules! audit_select {
    ($filter:literal) => {
        concat!(
            "SELECT id, at, actor_id, action, target, old_value, new_value FROM audit_log \
             WHERE id < ? ",
            $filter,
            " ORDER BY id DESC LIMIT ?"
        )
    };
}

fn user_from_row(r: &SqliteRow) -> UserRecord {
    UserRecord {
        id: r.get("id"),
        username: r.get("username"),
        email: r.get("email"),
        password_hash: r.get("password_hash"),
        display_name: r.get("display_name"),
        bio: r.get("bio"),
        role: r.get("role"),
        metadata: serde_json::from_str(r.get::<&str, _>("metadata")).unwrap_or_default(),
        version: r.get("version"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        role_changed_at: r.get("role_changed_at"),
    }
}

/// A unique violation names the field in a 409; everything else maps as usual.
fn conflict_or(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => user_conflict(db.message()),
        _ => e.into(),
    }
}

fn json_text(v: Option<String>) -> Option<serde_json::Value> {
    v.and_then(|s| serde_json::from_str(&s).ok())
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, u: NewUser) -> Result<(UserRecord, WritePos), StoreError> {
        let user = u.into_record(now_rfc3339());
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        self.audit(&mut tx, &AuditRow::user_registered(&user))
            .await?;
        self.telemetry
            .timed(
                "user_insert",
                sqlx::query(concat!(
                    "INSERT INTO users (",
                    user_columns!(""),
                    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)"
                ))
                .bind(&user.id)
                .bind(&user.username)
                .bind(&user.email)
                .bind(&user.password_hash)
                .bind(&user.display_name)
                .bind(&user.bio)
                .bind(&user.role)
                .bind(user.metadata.to_string())
                .bind(user.version)
                .bind(&user.created_at)
                .bind(&user.updated_at)
                .execute(&mut *tx),
            )
            .await
            .map_err(conflict_or)?;
        tx.commit().await?;
        Ok((user, WritePos::default()))
    }

    async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = self
            .telemetry
            .timed(
                "user_by_id",
                sqlx::query(concat!(
                    "SELECT ",
                    user_columns!(""),
                    " FROM users WHERE id = ?"
                ))
                .bind(id)
                .fetch_optional(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn user_by_login(&self, login: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let row = if login.contains('@') {
            self.telemetry
                .timed(
                    "user_by_email",
                    sqlx::query(concat!(
                        "SELECT ",
                        user_columns!(""),
                        " FROM users WHERE email = ?"
                    ))
                    .bind(login.to_lowercase())
                    .fetch_optional(&mut *conn),
                )
                .await?
        } else {
            self.telemetry
                .timed(
                    "user_by_username",
                    sqlx::query(concat!(
                        "SELECT ",
                        user_columns!(""),
                        " FROM users WHERE lower(username) = lower(?)"
                    ))
                    .bind(login)
                    .fetch_optional(&mut *conn),
                )
                .await?
        };
        Ok(row.as_ref().map(user_from_row))
    }

    async fn update_user(
        &self,
        id: &str,
        patch: &UserPatch,
        actor: &str,
    ) -> Result<(UserRecord, WritePos), StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let old = self
            .telemetry
            .timed(
                "user_by_id_for_update",
                sqlx::query(concat!(
                    "SELECT ",
                    user_columns!(""),
                    " FROM users WHERE id = ?"
                ))
                .bind(id)
                .fetch_optional(&mut *tx),
            )
            .await?
            .map(|r| user_from_row(&r))
            .ok_or_else(|| StoreError::NotFound(format!("user {id}")))?;
        if !patch.changes(&old) {
            return Ok((old, WritePos::default())); // nothing changes: no update, no audit row
        }
        let mut new = patch.apply(&old);
        new.updated_at = now_rfc3339();
        if new.role != old.role {
            new.role_changed_at = Some(new.updated_at.clone());
        }
        // The audit row goes first: if the update then fails (a taken email), both roll back.
        self.audit(&mut tx, &AuditRow::user_updated(actor, &old, &new))
            .await?;
        self.telemetry.timed(
            "user_update",
            sqlx::query(
                "UPDATE users SET display_name = ?, bio = ?, email = ?, role = ?, metadata = ?, \
                 version = ?, updated_at = ?, role_changed_at = ? WHERE id = ?",
            )
            .bind(&new.display_name)
            .bind(&new.bio)
            .bind(&new.email)
            .bind(&new.role)
            .bind(new.metadata.to_string())
            .bind(new.version)
            .bind(&new.updated_at)
            .bind(&new.role_changed_at)
            .bind(id)
            .execute(&mut *tx),
        )
        .await
        .map_err(conflict_or)?;
        tx.commit().await?;
        Ok((new, WritePos::default()))
    }

    async fn list_users(
        &self,
        before_id: Option<&str>,
        limit: u32,
        _from: ReadFrom,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let rows = self
            .telemetry
            .timed(
                "users_list",
                sqlx::query(concat!(
                    "SELECT ",
                    user_columns!(""),
                    " FROM users WHERE id < ? ORDER BY id DESC LIMIT ?"
                ))
                // every UUID sorts below U+10FFFF
                .bind(before_id.unwrap_or("\u{10FFFF}"))
                .bind(i64::from(limit))
                .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows.iter().map(user_from_row).collect())
    }

    async fn list_members(
        &self,
        room: &RoomId,
        after_user: Option<&str>,
        limit: u32,
        _from: ReadFrom,
    ) -> Result<Vec<MemberRow>, StoreError> {
        let rows = self
            .telemetry
            .timed(
                "members_with_users",
                sqlx::query(concat!(
                    "SELECT m.user_id AS member_id, m.added_by, m.added_at, u.id AS user_row, ",
                    user_columns!("u."),
                    " FROM room_members m LEFT JOIN users u ON u.id = m.user_id \
                 WHERE m.room_id = ? AND m.user_id > ? ORDER BY m.user_id LIMIT ?"
                ))
                .bind(room.as_str())
                .bind(after_user.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| MemberRow {
                user_id: r.get("member_id"),
                added_by: r.get("added_by"),
                added_at: r.get("added_at"),
                user: r
                    .get::<Option<String>, _>("user_row")
                    .map(|_| user_from_row(r)),
            })
            .collect())
    }

    async fn audit_log(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = match (&q.actor, &q.target) {
            (None, None) => audit_select!(""),
            (Some(_), None) => audit_select!("AND actor_id = ?"),
            (None, Some(_)) => audit_select!("AND target = ?"),
            (Some(_), Some(_)) => audit_select!("AND actor_id = ? AND target = ?"),
        };
        let mut query = sqlx::query(sql).bind(q.before_id.unwrap_or(i64::MAX));
        for v in [&q.actor, &q.target].into_iter().flatten() {
            query = query.bind(v);
        }
        let rows = self
            .telemetry
            .timed(
                "audit_list",
                query
                    .bind(i64::from(q.limit))
                    .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get("id"),
                at: r.get("at"),
                actor_id: r.get("actor_id"),
                action: r.get("action"),
                target: r.get("target"),
                old_value: json_text(r.get("old_value")),
                new_value: json_text(r.get("new_value")),
            })
            .collect())
    }
}
