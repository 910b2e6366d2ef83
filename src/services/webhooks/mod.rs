//! Webhooks (PROTOCOL.md §6.4): registration with its rules (`mod.rs`), the SSRF guard
//! (`guard.rs`) and the delivery job (`deliver.rs`). Deliveries are enqueued by the store in
//! the transaction of the change itself (the outbox, `store/webhooks.rs`).

use std::sync::Arc;

use rand::RngCore;
use serde_json::{Map, Value};

use super::error::{ServiceError, ServiceResult};
use super::rooms::RoomsService;
use crate::auth::Identity;
use crate::domain::RoomId;
use crate::store::Store;
use crate::store::webhooks::{EVENTS, NewWebhook, Webhook};

pub mod deliver;
pub mod guard;

const MAX_URL_CHARS: usize = 2048;
const MAX_ROOMS: usize = 100;
const MAX_SECRET_CHARS: usize = 256;

pub struct WebhooksService {
    store: Arc<dyn Store>,
    rooms: Arc<RoomsService>,
    allow_private: bool,
}

/// A registration's fields, checked for shape (400s) before any rule.
struct Fields {
    url: reqwest::Url,
    events: Vec<String>,
    rooms: Option<Vec<RoomId>>,
    secret: Option<String>,
}

fn bad(msg: impl Into<String>) -> ServiceError {
    ServiceError::bad_request(msg)
}

fn parse(body: &Map<String, Value>) -> ServiceResult<Fields> {
    let url = match body.get("url") {
        Some(Value::String(u)) if u.chars().count() <= MAX_URL_CHARS => {
            reqwest::Url::parse(u).map_err(|_| bad("url is not a URL"))?
        }
        _ => {
            return Err(bad(format!(
                "url must be an http or https URL of at most {MAX_URL_CHARS} characters"
            )));
        }
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("url must be an http or https URL with a host"));
    }
    let events = match body.get("events") {
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|e| match e.as_str() {
                Some(name) if EVENTS.contains(&name) => Ok(name.to_owned()),
                _ => Err(bad(format!("events: each one of {}", EVENTS.join(", ")))),
            })
            .collect::<ServiceResult<Vec<String>>>()?,
        _ => {
            return Err(bad(format!(
                "events must be a non-empty array of {}",
                EVENTS.join(", ")
            )));
        }
    };
    let mut events = events;
    events.sort();
    events.dedup();
    let rooms = match body.get("rooms") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_ROOMS => Some(
            list.iter()
                .map(|r| {
                    r.as_str()
                        .and_then(|s| RoomId::parse(s).ok())
                        .ok_or_else(|| bad("rooms: each a room id"))
                })
                .collect::<ServiceResult<Vec<RoomId>>>()?,
        ),
        _ => {
            return Err(bad(format!(
                "rooms must be an array of 1 to {MAX_ROOMS} room ids"
            )));
        }
    };
    let secret = match body.get("secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(s))
            if !s.is_empty() && s.chars().count() <= MAX_SECRET_CHARS && !s.contains('\0') =>
        {
            Some(s.clone())
        }
        _ => {
            return Err(bad(format!(
                "secret must be a string of 1 to {MAX_SECRET_CHARS} characters"
            )));
        }
    };
    Ok(Fields {
        url,
        events,
        rooms,
        secret,
    })
}

/// 32 random bytes, hex.
fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl WebhooksService {
    pub fn new(store: Arc<dyn Store>, rooms: Arc<RoomsService>, allow_private: bool) -> Self {
        WebhooksService {
            store,
            rooms,
            allow_private,
        }
    }

    /// Registers a webhook → (WEBHOOK, its secret). Admins may hook every room; others only
    /// rooms they own, named in `rooms`.
    pub async fn create(
        &self,
        who: &Identity,
        body: &Map<String, Value>,
    ) -> ServiceResult<(Webhook, String)> {
        let f = parse(body)?;
        let host = f.url.host_str().unwrap_or_default().to_owned();
        let port = f.url.port_or_known_default().unwrap_or(80);
        guard::check_host(&host, port, self.allow_private)
            .await
            .map_err(|e| ServiceError::bad_request(e.to_string()))?;
        let mut owners = Vec::new();
        for room in f.rooms.iter().flatten() {
            owners.push(self.rooms.meta(room).await?.owner_id.clone());
        }
        if !who.admin {
            if f.rooms.is_none() {
                return Err(ServiceError::forbidden(
                    "only admins may hook every room: name your rooms in `rooms`",
                ));
            }
            if owners.iter().any(|o| *o != who.user_id) {
                return Err(ServiceError::forbidden("you may hook only rooms you own"));
            }
        }
        let secret = f.secret.unwrap_or_else(generate_secret);
        let hook = self
            .store
            .create_webhook(NewWebhook {
                url: f.url.to_string(),
                events: f.events,
                rooms: f
                    .rooms
                    .map(|r| r.iter().map(|x| x.as_str().to_owned()).collect()),
                secret: secret.clone(),
                created_by: who.user_id.clone(),
            })
            .await?;
        Ok((hook, secret))
    }

    /// Admins: every webhook; others: those they registered.
    pub async fn list(&self, who: &Identity) -> ServiceResult<Vec<Webhook>> {
        let mine = (!who.admin).then_some(who.user_id.as_str());
        Ok(self.store.webhooks(mine).await?)
    }

    /// By its creator or an admin.
    pub async fn delete(&self, who: &Identity, id: &str) -> ServiceResult<()> {
        let hook = self
            .store
            .webhook(id)
            .await?
            .ok_or_else(|| ServiceError::not_found("no such webhook"))?;
        if !who.admin && hook.created_by != who.user_id {
            return Err(ServiceError::forbidden(
                "only its creator or an admin may delete a webhook",
            ));
        }
        self.store.delete_webhook(id).await?;
        Ok(())
    }
}
