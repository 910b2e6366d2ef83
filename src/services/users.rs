//! Accounts (PROTOCOL.md §4): register, login, read through the cache, patch, list.

use std::sync::Arc;

use serde_json::{Value, json};

use super::ryw::ReadYourWrites;
use crate::auth::Identity;
use crate::cache::Versioned;
use crate::cache::layered::LayeredCache;
use crate::error::{ApiError, ApiResult, AuthCode};
use crate::password::{Passwords, check_policy};
use crate::payload::{Object, opt_str, req_str};
use crate::shared_state::RateLimiter;
use crate::store::Store;
use crate::store::users::{NewUser, UserPatch, UserRecord};

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

fn check_username(s: &str) -> ApiResult<()> {
    let ok = (3..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "username must be 3 to 32 of A-Z, a-z, 0-9, _, - and .",
        ))
    }
}

/// A practical check, not RFC 5322: one `@`, a local part, a dotted domain; stored lower case.
fn check_email(s: &str) -> ApiResult<String> {
    let bad = || ApiError::bad_request("email is not a valid address");
    if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = s.split_once('@').ok_or_else(bad)?;
    let domain_ok = domain.contains('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if local.is_empty() || local.len() > 64 || domain.contains('@') || !domain_ok {
        return Err(bad());
    }
    Ok(s.to_lowercase())
}

fn check_text(field: &str, s: &str, min: usize, max: usize) -> ApiResult<String> {
    let n = s.chars().count();
    if n < min || n > max || s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::bad_request(format!(
            "{field} must be {min} to {max} characters without control characters"
        )));
    }
    Ok(s.to_owned())
}

/// An open JSON object of at most `max` bytes (as JSON); `null` is absent.
pub fn opt_metadata(p: &Object, max: usize) -> ApiResult<Option<Value>> {
    match p.get("metadata") {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => {
            if v.to_string().len() > max {
                return Err(ApiError::TooLarge(format!(
                    "metadata must be at most {max} bytes of JSON"
                )));
            }
            Ok(Some(v.clone()))
        }
        Some(_) => Err(ApiError::bad_request("metadata must be a JSON object")),
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
    pub async fn register(&self, body: &Object) -> ApiResult<UserRecord> {
        let username = req_str(body, "username")?;
        let email = req_str(body, "email")?;
        let password = req_str(body, "password")?;
        let display_name = opt_str(body, "display_name")?;
        check_username(username)?;
        let email = check_email(email)?;
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
    pub async fn login(&self, body: &Object) -> ApiResult<UserRecord> {
        let login = req_str(body, "login")?;
        let password = req_str(body, "password")?;
        if login.is_empty() || login.chars().count() > 254 {
            return Err(ApiError::bad_request("login must be 1 to 254 characters"));
        }
        self.login_limiter
            .check(&format!("login:{}", login.to_lowercase()))
            .await
            .map_err(|retry_after_ms| ApiError::RateLimited { retry_after_ms })?;
        let user = self.store.user_by_login(login).await?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let ok = self.passwords.verify(password.to_owned(), hash).await;
        match user {
            Some(u) if ok => Ok(u),
            _ => Err(ApiError::Unauthorized(
                AuthCode::AuthRequired,
                "unknown login or wrong password".into(),
            )),
        }
    }

    /// Through the cache: L1, L2, then the primary.
    pub async fn get(&self, id: &str) -> ApiResult<Arc<UserRecord>> {
        if id.is_empty() || id.chars().count() > 128 {
            return Err(ApiError::bad_request("a user id is 1 to 128 characters"));
        }
        self.cache
            .get(id, || self.store.user(id))
            .await?
            .ok_or_else(|| ApiError::not_found(format!("user {id} does not exist")))
    }

    /// `PATCH /users/{id}`: `{ display_name?, bio?, email?, metadata?, role? (admins) }`.
    pub async fn patch(&self, who: &Identity, id: &str, body: &Object) -> ApiResult<UserRecord> {
        let patch = UserPatch {
            display_name: opt_str(body, "display_name")?
                .map(|d| check_text("display_name", d, 1, 64))
                .transpose()?,
            bio: opt_str(body, "bio")?
                .map(|b| check_text("bio", b, 0, 1000))
                .transpose()?,
            email: opt_str(body, "email")?.map(check_email).transpose()?,
            role: match opt_str(body, "role")? {
                None => None,
                Some(r @ ("user" | "admin")) => Some(r.to_owned()),
                Some(_) => return Err(ApiError::bad_request("role must be user or admin")),
            },
            metadata: opt_metadata(body, self.max_metadata_bytes)?,
        };
        self.get(id).await?; // a missing user is not_found before forbidden
        if !(who.admin || who.user_id == id) {
            return Err(ApiError::forbidden(
                "only the user or an admin edits a user",
            ));
        }
        if patch.role.is_some() && !who.admin {
            return Err(ApiError::forbidden("only an admin changes roles"));
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
    ) -> ApiResult<Vec<UserRecord>> {
        let from = self.ryw.read_for(&who.user_id);
        Ok(self.store.list_users(cursor, limit, from).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_rules() {
        assert!(check_username("alice_1.x").is_ok());
        assert!(check_username("al").is_err());
        assert!(check_username("a@b").is_err());
        assert_eq!(
            check_email("Al.Ice@Example.ORG").unwrap(),
            "al.ice@example.org"
        );
        for bad in ["a", "a@b", "@x.io", "a@x..io", "a b@x.io", "a@b@x.io"] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
        let mut o = Object::new();
        o.insert("metadata".into(), json!({ "k": "v".repeat(100) }));
        assert_eq!(opt_metadata(&o, 50).unwrap_err().code(), "too_large");
        assert!(opt_metadata(&o, 500).unwrap().is_some());
        o.insert("metadata".into(), json!([1]));
        assert_eq!(opt_metadata(&o, 500).unwrap_err().code(), "bad_request");
    }
}
