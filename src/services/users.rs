//! Accounts (PROTOCOL.md §4): register, login, read through the cache, patch, list.

use std::sync::Arc;

use serde_json::{Value, json};

use super::error::{ServiceError, ServiceResult};
use super::ryw::ReadYourWrites;
use crate::auth::AuthCode;
use crate::auth::Identity;
use crate::cache::Versioned;
use crate::cache::layered::LayeredCache;
use crate::domain::{Email, UserId, Username};
use crate::password::{Passwords, check_policy};
use crate::payload::{Object, opt_str, req_str};
use crate::shared_state::RateLimiter;
use crate::store::Store;
pub use crate::store::users::UserRecord;
use crate::store::users::{NewUser, UserPatch};

impl Versioned for UserRecord {
    fn version(&self) -> i64 {
        self.version
    }
}

/// USER: never the hash; the email only to its owner and admins.
pub fn user_view(u: &UserRecord, viewer: &Identity) -> Value {
    let mut v = json!({
        "id": u.id,
        "username": u.username,
        "display_name": u.display_name,
        "bio": u.bio,
        "role": u.role,
        "metadata": u.metadata,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
    });
    if viewer.admin || viewer.user_id == u.id {
        v["email"] = u.email.clone().into();
    }
    v
}

/// The owner's own view, as register and login answer it.
pub fn own_view(u: &UserRecord) -> Value {
    user_view(u, &identity_of(u))
}

pub fn identity_of(u: &UserRecord) -> Identity {
    Identity {
        user_id: u.id.clone(),
        admin: u.role == "admin",
        name: Some(u.display_name.clone()),
    }
}

fn check_text(field: &str, s: &str, min: usize, max: usize) -> ServiceResult<String> {
    let n = s.chars().count();
    if n < min || n > max || s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ServiceError::bad_request(format!(
            "{field} must be {min} to {max} characters without control characters"
        )));
    }
    Ok(s.to_owned())
}

/// An open JSON object of at most `max` bytes (as JSON); `null` is absent.
pub fn opt_metadata(p: &Object, max: usize) -> ServiceResult<Option<Value>> {
    match p.get("metadata") {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => {
            if crate::payload::holds_nul(v) {
                return Err(ServiceError::bad_request(
                    "metadata must not contain U+0000",
                ));
            }
            if v.to_string().len() > max {
                return Err(ServiceError::TooLarge(format!(
                    "metadata must be at most {max} bytes of JSON"
                )));
            }
            Ok(Some(v.clone()))
        }
        Some(_) => Err(ServiceError::bad_request("metadata must be a JSON object")),
    }
}

pub struct UsersService {
    store: Arc<dyn Store>,
    ryw: Arc<ReadYourWrites>,
    pub cache: Arc<LayeredCache<UserRecord>>,
    passwords: Arc<Passwords>,
    login_limiter: Arc<dyn RateLimiter>,
    max_metadata_bytes: usize,
}

impl UsersService {
    pub fn new(
        store: Arc<dyn Store>,
        ryw: Arc<ReadYourWrites>,
        cache: Arc<LayeredCache<UserRecord>>,
        passwords: Arc<Passwords>,
        login_limiter: Arc<dyn RateLimiter>,
        max_metadata_bytes: usize,
    ) -> Self {
        UsersService {
            store,
            ryw,
            cache,
            passwords,
            login_limiter,
            max_metadata_bytes,
        }
    }

    /// `POST /auth/register`: `{ username, email, password, display_name? }`.
    pub async fn register(&self, body: &Object) -> ServiceResult<UserRecord> {
        let username = req_str(body, "username")?;
        let email = req_str(body, "email")?;
        let password = req_str(body, "password")?;
        let display_name = opt_str(body, "display_name")?;
        Username::parse(username)?;
        let email = Email::parse(email)?.into_string();
        let display_name = match display_name {
            Some(d) => check_text("display_name", d, 1, 64)?,
            None => username.to_owned(),
        };
        check_policy(password, username, &email)?;
        let password_hash = self.passwords.hash(password.to_owned()).await?;
        let new = NewUser {
            id: uuid::Uuid::now_v7().to_string(),
            username: username.to_owned(),
            email,
            password_hash,
            display_name,
        };
        let store = self.store.clone();
        // replaces a remembered "no such user" anywhere
        let (user, pos) = self
            .cache
            .write(
                new.id.clone(),
                async move { store.create_user(new).await },
                |r| r.0.clone(),
            )
            .await?;
        self.ryw.wrote(&user.id, pos);
        Ok(user)
    }

    /// `POST /auth/login`: `{ login, password }`. One answer for an unknown login and a wrong
    /// password, in the same time.
    pub async fn login(&self, body: &Object) -> ServiceResult<UserRecord> {
        let login = req_str(body, "login")?;
        let password = req_str(body, "password")?;
        if login.is_empty() || login.chars().count() > 254 {
            return Err(ServiceError::bad_request(
                "login must be 1 to 254 characters",
            ));
        }
        self.login_limiter
            .check(&format!("login:{}", login.to_lowercase()))
            .await
            .map_err(ServiceError::RateLimited)?;
        let user = self.store.user_by_login(login).await?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let ok = self.passwords.verify(password.to_owned(), hash).await?;
        match user {
            Some(u) if ok => Ok(u),
            _ => Err(ServiceError::Unauthorized(
                AuthCode::AuthRequired,
                "unknown login or wrong password".into(),
            )),
        }
    }

    /// Through the cache: L1, L2, then the primary.
    pub async fn get(&self, id: &str) -> ServiceResult<Arc<UserRecord>> {
        UserId::parse(id)?;
        self.cache
            .get(id, || self.store.user(id))
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("user {id} does not exist")))
    }

    /// `PATCH /users/{id}`: `{ display_name?, bio?, email?, metadata?, role? (admins) }`.
    pub async fn patch(
        &self,
        who: &Identity,
        id: &str,
        body: &Object,
    ) -> ServiceResult<UserRecord> {
        let patch = UserPatch {
            display_name: opt_str(body, "display_name")?
                .map(|d| check_text("display_name", d, 1, 64))
                .transpose()?,
            bio: opt_str(body, "bio")?
                .map(|b| check_text("bio", b, 0, 1000))
                .transpose()?,
            email: opt_str(body, "email")?
                .map(|e| Email::parse(e).map(Email::into_string))
                .transpose()?,
            role: match opt_str(body, "role")? {
                None => None,
                Some(r @ ("user" | "admin")) => Some(r.to_owned()),
                Some(_) => return Err(ServiceError::bad_request("role must be user or admin")),
            },
            metadata: opt_metadata(body, self.max_metadata_bytes)?,
        };
        self.get(id).await?; // a missing user is not_found before forbidden
        if !(who.admin || who.user_id == id) {
            return Err(ServiceError::forbidden(
                "only the user or an admin edits a user",
            ));
        }
        if patch.role.is_some() && !who.admin {
            return Err(ServiceError::forbidden("only an admin changes roles"));
        }
        let (store, key, actor) = (self.store.clone(), id.to_owned(), who.user_id.clone());
        let write = async move { store.update_user(&key, &patch, &actor).await };
        let (user, pos) = self
            .cache
            .write(id.to_owned(), write, |r| r.0.clone())
            .await?;
        self.ryw.wrote(&who.user_id, pos);
        Ok(user)
    }

    /// `GET /users`: newest first, keyset by id.
    pub async fn list(
        &self,
        who: &Identity,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<Vec<UserRecord>> {
        let from = self.ryw.read_for(&who.user_id);
        Ok(self.store.list_users(cursor, limit, from).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_rules() {
        let mut o = Object::new();
        o.insert("metadata".into(), json!({ "k": "v".repeat(100) }));
        assert!(matches!(
            opt_metadata(&o, 50),
            Err(ServiceError::TooLarge(_))
        ));
        assert!(opt_metadata(&o, 500).unwrap().is_some());
        o.insert("metadata".into(), json!({ "a": [{ "b\u{0}": 1 }] }));
        assert!(matches!(
            opt_metadata(&o, 5),
            Err(ServiceError::BadRequest(_))
        ));
        o.insert("metadata".into(), json!([1]));
        assert!(matches!(
            opt_metadata(&o, 500),
            Err(ServiceError::BadRequest(_))
        ));
    }
}
