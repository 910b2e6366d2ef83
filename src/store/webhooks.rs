//! Webhooks (PROTOCOL.md §6.4): who wants which events of which rooms, and the outbox — the
//! delivery jobs a change enqueues in its own transaction, so a committed message (state write,
//! new room) always gets its deliveries and a rolled-back one never does.

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Value, json};

use super::StoreError;

/// The events a webhook may ask for.
pub const EVENTS: &[&str] = &["message", "state", "room.created"];
/// The job kind of one delivery.
pub const DELIVERY_JOB: &str = "webhook";

/// WEBHOOK of PROTOCOL.md §6.4 (the secret stays inside: it is shown once, at creation).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// None: every room.
    pub rooms: Option<Vec<String>>,
    pub created_at: String,
    pub created_by: String,
    #[serde(skip)]
    #[schema(ignore)]
    pub secret: String,
}

impl Webhook {
    /// Whether an `event` of `room` goes to this webhook.
    pub fn wants(&self, event: &str, room: &str) -> bool {
        self.events.iter().any(|e| e == event)
            && self
                .rooms
                .as_ref()
                .is_none_or(|rooms| rooms.iter().any(|r| r == room))
    }
}

/// One change the outbox turns into deliveries: its event, room and payload (`data`, made into
/// JSON only when a webhook wants it, so commits without webhooks pay nothing for it).
#[derive(Debug, Clone)]
pub struct OutboxEvent<'a> {
    pub event: &'static str,
    pub room: &'a str,
    pub data: &'a (dyn ErasedSerialize + Sync),
}

/// What an outbox event's `data` may be: anything that serializes (MESSAGE, STATE, ROOM-INFO).
pub trait ErasedSerialize: std::fmt::Debug {
    fn to_json(&self) -> Value;
}

impl<T: Serialize + std::fmt::Debug> ErasedSerialize for T {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The outbox events of newly committed messages (MESSAGE as `data`).
pub fn message_events(rows: &[crate::domain::Message]) -> Vec<OutboxEvent<'_>> {
    rows.iter()
        .map(|m| OutboxEvent {
            event: "message",
            room: &m.room,
            data: m,
        })
        .collect()
}

/// A delivery job to insert with the change: (job id, payload).
pub type Delivery = (String, Value);

/// The deliveries of `events` to the webhooks that want them, one job each. The job's id is the
/// delivery id (`X-Tsunagi-Delivery`, the body's `id`), the same on every attempt.
pub fn deliveries(hooks: &[Webhook], events: &[OutboxEvent<'_>]) -> Vec<Delivery> {
    let mut out = Vec::new();
    for e in events {
        for hook in hooks.iter().filter(|h| h.wants(e.event, e.room)) {
            out.push((
                uuid::Uuid::now_v7().to_string(),
                json!({ "webhook": hook.id, "event": e.event, "data": e.data.to_json() }),
            ));
        }
    }
    out
}

/// A webhook to register (checked before: URL, events, rooms, rights).
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub secret: String,
    pub created_by: String,
}

/// Obligations: `create_webhook` commits and returns the WEBHOOK (with its secret);
/// `webhooks` lists them by creation (all, or those `created_by` one user); `delete_webhook`
/// is true when it removed one. The outbox: every `append`, `write_state` and `create_room`
/// inserts, in its own transaction, one `webhook` job per (change, webhook that wants it).
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_webhook(&self, hook: NewWebhook) -> Result<Webhook, StoreError>;
    async fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError>;
    async fn webhooks(&self, created_by: Option<&str>) -> Result<Vec<Webhook>, StoreError>;
    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError>;
}

/// The columns a webhook row is read with, the same in both stores.
macro_rules! webhook_columns {
    () => {
        "id, url, events, rooms, secret, created_at, created_by"
    };
}
pub(crate) use webhook_columns;

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(id: &str, events: &[&str], rooms: Option<&[&str]>) -> Webhook {
        Webhook {
            id: id.into(),
            url: "https://example.test/h".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            rooms: rooms.map(|r| r.iter().map(|x| x.to_string()).collect()),
            created_at: "t".into(),
            created_by: "u".into(),
            secret: "s".into(),
        }
    }

    #[test]
    fn each_change_goes_to_the_hooks_that_want_its_event_and_room() {
        let hooks = [
            hook("all", &["message", "state"], None),
            hook("lobby", &["message"], Some(&["lobby"])),
            hook("rooms", &["room.created"], None),
        ];
        let events = [
            OutboxEvent {
                event: "message",
                room: "lobby",
                data: &1,
            },
            OutboxEvent {
                event: "message",
                room: "other",
                data: &2,
            },
            OutboxEvent {
                event: "state",
                room: "lobby",
                data: &3,
            },
        ];
        let out = deliveries(&hooks, &events);
        let got: Vec<(String, Value)> = out
            .iter()
            .map(|(_, p)| (p["webhook"].as_str().unwrap().to_owned(), p["data"].clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("all".into(), json!(1)),
                ("lobby".into(), json!(1)),
                ("all".into(), json!(2)),
                ("all".into(), json!(3)),
            ]
        );
        let ids: std::collections::HashSet<&String> = out.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), 4, "one delivery id per delivery");
    }
}
