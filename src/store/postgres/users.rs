//! [`UserStore`] on PostgreSQL: writes and cache fills on the primary; listings may use a replica.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, Row};

use super::{PgStore, audit, rfc3339};
use crate::domain::RoomId;
use crate::store::users::{
    AuditEntry, AuditQuery, AuditRow, MemberRow, NewUser, UserPatch, UserRecord, UserStore,
    user_columns, user_conflict,
};
use crate::store::{ReadFrom, StoreError, WritePos};
use crate::telemetry::Telemetry;

macro_rules! audit_select {
    ($filter:literal) => {
        concat!(
            "SELECT id, at, actor_id, action, target, old_value, new_value FROM audit_log \
             WHERE id < $1 ",
            $filter,
            " ORDER BY id DESC LIMIT $2"
        )
    };
}

// The statements of hot or large-table paths, public so a test can `EXPLAIN` exactly what runs.

/// Newest users first (the first page).
pub const USERS_NEWEST: &str = concat!(
    "SELECT ",
    user_columns!(""),
    " FROM users ORDER BY id DESC LIMIT $1"
);
/// Newest users first, below a keyset cursor.
pub const USERS_BEFORE: &str = concat!(
    "SELECT ",
    user_columns!(""),
    " FROM users WHERE id < $2 ORDER BY id DESC LIMIT $1"
);
/// A login by username, whatever its case (the expression index on `lower(username)`).
pub const USER_BY_USERNAME: &str = concat!(
    "SELECT ",
    user_columns!(""),
    " FROM users WHERE lower(username) = lower($1)"
);
/// The audit log of one target, newest first.
pub const AUDIT_BY_TARGET: &str = audit_select!("AND target = $3");
/// The audit log of one actor, newest first.
pub const AUDIT_BY_ACTOR: &str = audit_select!("AND actor_id = $3");

/// A room's members with their accounts, in one query.
pub const MEMBERS_WITH_USERS: &str = concat!(
    "SELECT m.user_id AS member_id, m.added_by, m.added_at, u.id AS user_row, ",
    user_columns!("u."),
    " FROM room_members m LEFT JOIN users u ON u.id = m.user_id \
     WHERE m.room_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3"
);

fn user_from_row(r: &PgRow) -> UserRecord {
    UserRecord {
        id: r.get("id"),
        username: r.get("username"),
        email: r.get("email"),
        password_hash: r.get("password_hash"),
        display_name: r.get("display_name"),
        bio: r.get("bio"),
        role: r.get("role"),
        metadata: r.get::<Json<serde_json::Value>, _>("metadata").0,
        version: r.get("version"),
        created_at: rfc3339(r.get("created_at")),
        updated_at: rfc3339(r.get("updated_at")),
        role_changed_at: r
            .get::<Option<chrono::DateTime<Utc>>, _>("role_changed_at")
            .map(rfc3339),
    }
}

fn conflict_or(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            user_conflict(db.constraint().unwrap_or(db.message()))
        }
        _ => e.into(),
    }
}

async fn user_where(
    t: &Telemetry,
    conn: &mut PgConnection,
    statement: &'static str,
    sql: &'static str,
    arg: &str,
) -> Result<Option<UserRecord>, StoreError> {
    let row = t
        .timed(statement, sqlx::query(sql).bind(arg).fetch_optional(conn))
        .await?;
    Ok(row.as_ref().map(user_from_row))
}

impl PgStore {
    async fn create_user_inner(&self, u: NewUser) -> Result<(UserRecord, WritePos), StoreError> {
        let now = Utc::now();
        let user = u.into_record(rfc3339(now));
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        audit(&self.telemetry, &mut tx, &AuditRow::user_registered(&user)).await?;
        self.telemetry
            .timed(
                "user_insert",
                sqlx::query(concat!(
                    "INSERT INTO users (",
                    user_columns!(""),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, NULL)"
                ))
                .bind(&user.id)
                .bind(&user.username)
                .bind(&user.email)
                .bind(&user.password_hash)
                .bind(&user.display_name)
                .bind(&user.bio)
                .bind(&user.role)
                .bind(Json(&user.metadata))
                .bind(user.version)
                .bind(now)
                .execute(&mut *tx),
            )
            .await
            .map_err(conflict_or)?;
        tx.commit().await?;
        Ok((user, self.commit_position(&mut conn).await))
    }

    async fn user_by_login_inner(&self, login: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        if login.contains('@') {
            let sql = concat!("SELECT ", user_columns!(""), " FROM users WHERE email = $1");
            user_where(
                &self.telemetry,
                &mut conn,
                "user_by_email",
                sql,
                &login.to_lowercase(),
            )
            .await
        } else {
            user_where(
                &self.telemetry,
                &mut conn,
                "user_by_username",
                USER_BY_USERNAME,
                login,
            )
            .await
        }
    }

    async fn update_user_inner(
        &self,
        id: &str,
        patch: &UserPatch,
        actor: &str,
    ) -> Result<(UserRecord, WritePos), StoreError> {
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        let sql = concat!(
            "SELECT ",
            user_columns!(""),
            " FROM users WHERE id = $1 FOR UPDATE"
        );
        let old = user_where(&self.telemetry, &mut tx, "user_by_id_for_update", sql, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user {id}")))?;
        if !patch.changes(&old) {
            return Ok((old, WritePos::default())); // nothing changes: no update, no audit row
        }
        let now = Utc::now();
        let mut new = patch.apply(&old);
        new.updated_at = rfc3339(now);
        let role_changed = (new.role != old.role).then_some(now);
        if role_changed.is_some() {
            new.role_changed_at = Some(new.updated_at.clone());
        }
        // The audit row goes first: if the update then fails (a taken email), both roll back.
        audit(
            &self.telemetry,
            &mut tx,
            &AuditRow::user_updated(actor, &old, &new),
        )
        .await?;
        self.telemetry
            .timed(
                "user_update",
                sqlx::query(
                    "UPDATE users SET display_name = $1, bio = $2, email = $3, role = $4, \
                 metadata = $5, version = $6, updated_at = $7, \
                 role_changed_at = COALESCE($9, role_changed_at) WHERE id = $8",
                )
                .bind(&new.display_name)
                .bind(&new.bio)
                .bind(&new.email)
                .bind(&new.role)
                .bind(Json(&new.metadata))
                .bind(new.version)
                .bind(now)
                .bind(id)
                .bind(role_changed)
                .execute(&mut *tx),
            )
            .await
            .map_err(conflict_or)?;
        tx.commit().await?;
        Ok((new, self.commit_position(&mut conn).await))
    }
}

#[async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, user: NewUser) -> Result<(UserRecord, WritePos), StoreError> {
        self.bounded(self.create_user_inner(user)).await
    }

    async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.bounded(async {
            let mut conn = self.primary.acquire().await?;
            let sql = concat!("SELECT ", user_columns!(""), " FROM users WHERE id = $1");
            user_where(&self.telemetry, &mut conn, "user_by_id", sql, id).await
        })
        .await
    }

    async fn user_by_login(&self, login: &str) -> Result<Option<UserRecord>, StoreError> {
        self.bounded(self.user_by_login_inner(login)).await
    }

    async fn update_user(
        &self,
        id: &str,
        patch: &UserPatch,
        actor: &str,
    ) -> Result<(UserRecord, WritePos), StoreError> {
        self.bounded(self.update_user_inner(id, patch, actor)).await
    }

    async fn list_users(
        &self,
        before_id: Option<&str>,
        limit: u32,
        from: ReadFrom,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let before = before_id.map(str::to_owned);
        self.read(from, move |conn, t| {
            let before = before.clone();
            Box::pin(async move {
                let query = match before {
                    None => sqlx::query(USERS_NEWEST).bind(i64::from(limit)),
                    Some(b) => sqlx::query(USERS_BEFORE).bind(i64::from(limit)).bind(b),
                };
                let rows = t.timed("users_list", query.fetch_all(conn)).await?;
                Ok(rows.iter().map(user_from_row).collect())
            })
        })
        .await
    }

    async fn list_members(
        &self,
        room: &RoomId,
        after_user: Option<&str>,
        limit: u32,
        from: ReadFrom,
    ) -> Result<Vec<MemberRow>, StoreError> {
        let room = room.as_str().to_owned();
        let after = after_user.unwrap_or("").to_owned();
        self.read(from, move |conn, t| {
            let (room, after) = (room.clone(), after.clone());
            Box::pin(async move {
                let rows = t
                    .timed(
                        "members_with_users",
                        sqlx::query(MEMBERS_WITH_USERS)
                            .bind(room)
                            .bind(after)
                            .bind(i64::from(limit))
                            .fetch_all(conn),
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| MemberRow {
                        user_id: r.get("member_id"),
                        added_by: r.get("added_by"),
                        added_at: rfc3339(r.get("added_at")),
                        user: r
                            .get::<Option<String>, _>("user_row")
                            .map(|_| user_from_row(r)),
                    })
                    .collect())
            })
        })
        .await
    }

    async fn audit_log(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let q = q.clone();
        // The audit log is read on the primary: an admin reading it after a change expects it.
        self.bounded(async move {
            let sql = match (&q.actor, &q.target) {
                (None, None) => audit_select!(""),
                (Some(_), None) => AUDIT_BY_ACTOR,
                (None, Some(_)) => AUDIT_BY_TARGET,
                (Some(_), Some(_)) => audit_select!("AND actor_id = $3 AND target = $4"),
            };
            let mut query = sqlx::query(sql)
                .bind(q.before_id.unwrap_or(i64::MAX))
                .bind(i64::from(q.limit));
            for v in [&q.actor, &q.target].into_iter().flatten() {
                query = query.bind(v);
            }
            let mut conn = self.primary.acquire().await?;
            let rows = self
                .telemetry
                .timed("audit_list", query.fetch_all(&mut *conn))
                .await?;
            Ok(rows
                .iter()
                .map(|r| AuditEntry {
                    id: r.get("id"),
                    at: rfc3339(r.get("at")),
                    actor_id: r.get("actor_id"),
                    action: r.get("action"),
                    target: r.get("target"),
                    old_value: r
                        .get::<Option<Json<serde_json::Value>>, _>("old_value")
                        .map(|j| j.0),
                    new_value: r
                        .get::<Option<Json<serde_json::Value>>, _>("new_value")
                        .map(|j| j.0),
                })
                .collect())
        })
        .await
    }
}
