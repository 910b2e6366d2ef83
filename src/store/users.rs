//! The accounts part of the store: users, room member listings, the audit log.
//!
//! Every mutation writes its audit row in the same transaction as the change, so a change that
//! rolls back leaves no audit row, and an audit row always describes a change that happened.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ReadFrom, StoreError, WritePos};
use crate::domain::{RoomId, RoomInfo};

/// A user row. `password_hash` never leaves the services: the public shape is built from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub email: String,
    /// Never serialized: the L2 cache (Redis) must not hold password hashes. A record read back
    /// from L2 has it empty; login reads the primary.
    #[serde(skip_serializing, default)]
    pub password_hash: String,
    pub display_name: String,
    pub bio: String,
    pub role: String,
    pub metadata: Value,
    /// +1 on every update (the L2 cache keeps the highest version it has seen).
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
    /// When `role` last changed (RFC 3339); `None`: never. Tokens issued before it do not
    /// carry the current role (see `UsersService::effective`).
    #[serde(default)]
    pub role_changed_at: Option<String>,
}

impl UserRecord {
    /// What the audit log keeps of a user: everything but the hash.
    pub fn audit_value(&self) -> Value {
        serde_json::json!({
            "id": self.id, "username": self.username, "email": self.email,
            "display_name": self.display_name, "bio": self.bio, "role": self.role,
            "metadata": self.metadata, "version": self.version,
        })
    }
}

pub struct NewUser {
    pub id: String,
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub display_name: String,
}

/// Fields to change; `None` leaves a field as it is. Validated before.
#[derive(Debug, Default, Clone)]
pub struct UserPatch {
    pub display_name: Option<String>,
    pub bio: Option<String>,
    pub email: Option<String>,
    pub role: Option<String>,
    pub metadata: Option<Value>,
}

impl UserPatch {
    /// Whether applying this patch to `old` changes anything (if not: no update, no audit row).
    pub fn changes(&self, old: &UserRecord) -> bool {
        self.apply(old) != UserPatch::default().apply(old)
    }

    /// `old` with this patch applied (version and time are the store's to set).
    pub fn apply(&self, old: &UserRecord) -> UserRecord {
        let mut new = old.clone();
        if let Some(v) = &self.display_name {
            new.display_name = v.clone();
        }
        if let Some(v) = &self.bio {
            new.bio = v.clone();
        }
        if let Some(v) = &self.email {
            new.email = v.clone();
        }
        if let Some(v) = &self.role {
            new.role = v.clone();
        }
        if let Some(v) = &self.metadata {
            new.metadata = v.clone();
        }
        new.version = old.version + 1;
        new
    }
}

/// One member of a room with their account, when they have one here (tokens minted by the
/// application's own backend name users tsunagi has no row for).
#[derive(Debug, Clone)]
pub struct MemberRow {
    pub user_id: String,
    pub added_by: String,
    pub added_at: String,
    pub user: Option<UserRecord>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    #[serde(rename = "actor")]
    pub actor_id: String,
    pub action: String,
    pub target: String,
    #[serde(rename = "old")]
    #[schema(value_type = Option<Object>)]
    pub old_value: Option<Value>,
    #[serde(rename = "new")]
    #[schema(value_type = Option<Object>)]
    pub new_value: Option<Value>,
}

/// Newest first; `before_id` is the keyset cursor.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// The unique constraint a user write hit, named for the 409 message.
pub fn user_conflict(db_message: &str) -> StoreError {
    if db_message.contains("email") {
        StoreError::Conflict("a user with this email".into())
    } else {
        StoreError::Conflict("a user with this username".into())
    }
}

/// The columns of a user row, each prefixed with `$p` (a table alias or nothing); the same for
/// both stores (a macro, not a const: sqlx takes only literal SQL, and `concat!` keeps it literal).
macro_rules! user_columns {
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "username, ",
            $p,
            "email, ",
            $p,
            "password_hash, ",
            $p,
            "display_name, ",
            $p,
            "bio, ",
            $p,
            "role, ",
            $p,
            "metadata, ",
            $p,
            "version, ",
            $p,
            "created_at, ",
            $p,
            "updated_at, ",
            $p,
            "role_changed_at"
        )
    };
}
pub(crate) use user_columns;

impl NewUser {
    /// The row a registration inserts, created at `now` (RFC 3339).
    pub fn into_record(self, now: String) -> UserRecord {
        UserRecord {
            id: self.id,
            username: self.username,
            email: self.email,
            password_hash: self.password_hash,
            display_name: self.display_name,
            bio: String::new(),
            role: "user".into(),
            metadata: serde_json::json!({}),
            version: 1,
            created_at: now.clone(),
            updated_at: now,
            role_changed_at: None,
        }
    }
}

/// One audit row to write in the transaction of its change. Targets are `user:<id>` and
/// `room:<id>`; values are the public record (never a password hash).
pub struct AuditRow {
    pub actor: String,
    pub action: &'static str,
    pub target: String,
    pub old: Option<Value>,
    pub new: Value,
}

impl AuditRow {
    pub fn user_registered(user: &UserRecord) -> Self {
        AuditRow {
            actor: user.id.clone(),
            action: "user.register",
            target: format!("user:{}", user.id),
            old: None,
            new: user.audit_value(),
        }
    }

    pub fn user_updated(actor: &str, old: &UserRecord, new: &UserRecord) -> Self {
        AuditRow {
            actor: actor.to_owned(),
            action: "user.update",
            target: format!("user:{}", old.id),
            old: Some(old.audit_value()),
            new: new.audit_value(),
        }
    }

    pub fn room_created(info: &RoomInfo) -> Self {
        AuditRow {
            actor: info.owner_id.clone(),
            action: "room.create",
            target: format!("room:{}", info.id),
            old: None,
            new: serde_json::to_value(info).unwrap_or_default(),
        }
    }

    pub fn member_added(room: &RoomId, user_id: &str, by: &str) -> Self {
        AuditRow {
            actor: by.to_owned(),
            action: "room.member_add",
            target: format!("room:{room}"),
            old: None,
            new: serde_json::json!({ "room": room.as_str(), "user_id": user_id }),
        }
    }
}

/// Obligations: as [`super::Store`]; in addition every mutation audits in its own transaction,
/// and a unique violation is [`StoreError::Conflict`] naming the field.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    async fn create_user(&self, user: NewUser) -> Result<(UserRecord, WritePos), StoreError>;
    /// Always on the primary: a cache fill must not read a lagging replica.
    async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    /// By username (any case) or, when `login` holds an `@`, by email. On the primary.
    async fn user_by_login(&self, login: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Applies `patch` as `actor`; `NotFound` if there is no such user.
    async fn update_user(
        &self,
        id: &str,
        patch: &UserPatch,
        actor: &str,
    ) -> Result<(UserRecord, WritePos), StoreError>;
    /// Newest first, ids below `before_id`.
    async fn list_users(
        &self,
        before_id: Option<&str>,
        limit: u32,
        from: ReadFrom,
    ) -> Result<Vec<UserRecord>, StoreError>;
    /// A room's members by user id after `after_user`, each with their account, in one query.
    async fn list_members(
        &self,
        room: &RoomId,
        after_user: Option<&str>,
        limit: u32,
        from: ReadFrom,
    ) -> Result<Vec<MemberRow>, StoreError>;
    async fn audit_log(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
}
