//! Accounts (PROTOCOL.md §4): register, login, read through the cache, patch, list.

use std::sync::Arc;

use serde_json::{Value, json};

use super::error::{ServiceError, ServiceResult};
use super::ryw::ReadYourWrites;
use crate::auth::AuthCode;
use crate::auth::Identity;
use crate::cache::Versioned;
use crate::cache::layered::LayeredCache;
use crate::client_addr::AddressKey;
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
        issued_at: None,
    }
}

/// Whether a token issued at `issued_at` predates the role change of `user`, so its `role`
/// claim may be stale. A token without `iat` is taken as older; a role never changed here
/// leaves every claim as it is (tokens minted by the application's backend included).
fn claim_predates_role_change(issued_at: Option<f64>, user: &UserRecord) -> bool {
    let Some(changed) = user.role_changed_at.as_deref() else {
        return false;
    };
    let Ok(changed) = chrono::DateTime::parse_from_rfc3339(changed) else {
        return true; // unreadable: the stored role is the safe answer
    };
    let changed = changed.timestamp_millis() as f64 / 1000.0;
    issued_at.is_none_or(|iat| iat < changed)
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

/// The account limits (`TSUNAGI_LOGIN_RATE` and the per-address ones of PROTOCOL.md §7).
pub struct AccountLimits {
    /// Login attempts per (login name, client address): one address cannot lock the account
    /// for the others.
    pub login: Arc<dyn RateLimiter>,
    /// Failed logins per client address, peeked before the password is checked and charged
    /// only when it fails.
    pub login_failures: Arc<dyn RateLimiter>,
    /// Registrations per client address.
    pub register: Arc<dyn RateLimiter>,
}

pub struct UsersService {
    store: Arc<dyn Store>,
    ryw: Arc<ReadYourWrites>,
    pub cache: Arc<LayeredCache<UserRecord>>,
    passwords: Arc<Passwords>,
    limits: AccountLimits,
    max_metadata_bytes: usize,
}

impl UsersService {
    pub fn new(
        store: Arc<dyn Store>,
        ryw: Arc<ReadYourWrites>,
        cache: Arc<LayeredCache<UserRecord>>,
        passwords: Arc<Passwords>,
        limits: AccountLimits,
        max_metadata_bytes: usize,
    ) -> Self {
        UsersService {
            store,
            ryw,
            cache,
            passwords,
            limits,
            max_metadata_bytes,
        }
    }

    /// `POST /auth/register`: `{ username, email, password, display_name? }` from `client`.
    pub async fn register(&self, body: &Object, client: AddressKey) -> ServiceResult<UserRecord> {
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
        // after the field checks (bad_request comes first), before the costly hash
        self.limits
            .register
            .check(&client.to_string())
            .await
            .map_err(ServiceError::RateLimited)?;
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

    /// `POST /auth/login`: `{ login, password }` from `client`. One answer for an unknown login
    /// and a wrong password, in the same time.
    pub async fn login(&self, body: &Object, client: AddressKey) -> ServiceResult<UserRecord> {
        let login = req_str(body, "login")?;
        let password = req_str(body, "password")?;
        if login.is_empty() || login.chars().count() > 254 {
            return Err(ServiceError::bad_request(
                "login must be 1 to 254 characters",
            ));
        }
        let address = client.to_string();
        // An address that used up its failures is refused before the password is looked at,
        // even a right one: guessing from there must not be able to tell right from wrong.
        self.limits
            .login_failures
            .peek(&address)
            .await
            .map_err(ServiceError::RateLimited)?;
        self.limits
            .login
            .check(&format!("login:{}:{address}", login.to_lowercase()))
            .await
            .map_err(ServiceError::RateLimited)?;
        let user = self.store.user_by_login(login).await?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let ok = self.passwords.verify(password.to_owned(), hash).await?;
        match user {
            Some(u) if ok => Ok(u),
            _ => {
                // charged even if this failure is the one that goes past the budget: the
                // next attempt is the one refused
                let _ = self.limits.login_failures.check(&address).await;
                Err(ServiceError::Unauthorized(
                    AuthCode::AuthRequired,
                    "unknown login or wrong password".into(),
                ))
            }
        }
    }

    /// The identity a verified token stands for now: for a user registered here whose role
    /// changed after the token was issued, the stored role replaces the claim. Read through the
    /// users cache (an L1 hit in the common case; a role change drops the key on every
    /// instance before the change is answered), so it is cheap enough for every request and
    /// every socket event. Tokens of users not registered here keep their claim.
    pub async fn effective(&self, who: &Identity) -> ServiceResult<Identity> {
        let Some(user) = self
            .cache
            .get(&who.user_id, || self.store.user(&who.user_id))
            .await?
        else {
            return Ok(who.clone());
        };
        let stored_admin = user.role == "admin";
        if stored_admin == who.admin || !claim_predates_role_change(who.issued_at, &user) {
            return Ok(who.clone());
        }
        Ok(Identity {
            admin: stored_admin,
            ..who.clone()
        })
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
    fn stored_role_wins_only_over_older_tokens() {
        let mut u = UserRecord {
            id: "u".into(),
            username: "u".into(),
            email: "u@example.com".into(),
            password_hash: String::new(),
            display_name: "u".into(),
            bio: String::new(),
            role: "user".into(),
            metadata: json!({}),
            version: 2,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:10.500Z".into(),
            role_changed_at: None,
        };
        assert!(
            !claim_predates_role_change(None, &u),
            "never changed: the claim"
        );
        u.role_changed_at = Some("2026-01-01T00:00:10.500Z".into());
        let changed = 1_767_225_610.5;
        assert!(claim_predates_role_change(None, &u), "no iat: older");
        assert!(claim_predates_role_change(Some(changed - 0.5), &u));
        assert!(!claim_predates_role_change(Some(changed), &u));
        assert!(!claim_predates_role_change(Some(changed + 60.0), &u));
    }

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
