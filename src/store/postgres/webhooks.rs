//! Webhooks and the outbox on PostgreSQL (events and rooms as `jsonb` arrays).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use super::{PgStore, rfc3339};
use crate::store::StoreError;
use crate::store::webhooks::{
    DELIVERY_JOB, NewWebhook, OutboxEvent, Webhook, WebhookStore, deliveries, webhook_columns,
};

fn webhook_from_row(r: &PgRow) -> Webhook {
    Webhook {
        id: r.get("id"),
        url: r.get("url"),
        events: r.get::<Json<Vec<String>>, _>("events").0,
        rooms: r.get::<Option<Json<Vec<String>>>, _>("rooms").map(|j| j.0),
        secret: r.get("secret"),
        created_at: rfc3339(r.get::<DateTime<Utc>, _>("created_at")),
        created_by: r.get("created_by"),
    }
}

impl PgStore {
    /// The outbox: the delivery jobs of `events`, inserted in the caller's transaction, their
    /// payloads sealed (the current key registered first). True when it inserted any: the caller
    /// then marks the key registered after its commit.
    pub(super) async fn enqueue_deliveries(
        &self,
        tx: &mut PgConnection,
        events: &[OutboxEvent<'_>],
    ) -> Result<bool, StoreError> {
        if events.is_empty() {
            return Ok(false);
        }
        let rows = self
            .telemetry
            .timed(
                "webhooks_for_outbox",
                sqlx::query(concat!("SELECT ", webhook_columns!(), " FROM webhooks"))
                    .fetch_all(&mut *tx),
            )
            .await?;
        if rows.is_empty() {
            return Ok(false);
        }
        let hooks: Vec<Webhook> = rows.iter().map(webhook_from_row).collect();
        let mut ids = Vec::new();
        let mut payloads: Vec<Json<serde_json::Value>> = Vec::new();
        let mut keys: Vec<Option<String>> = Vec::new();
        for (id, payload) in deliveries(&hooks, events) {
            let sealed = self.sealer.seal_job(&id, &payload);
            payloads.push(super::to_jsonb(&sealed));
            keys.push(sealed.key_id);
            ids.push(id);
        }
        if ids.is_empty() {
            return Ok(false);
        }
        self.register_current_key(tx).await?;
        self.telemetry
            .timed(
                "outbox_insert",
                sqlx::query(
                    "INSERT INTO jobs (id, kind, state, payload, attempts, run_at, created_at, \
                     updated_at, payload_key) SELECT i, $1, 'queued', p, 0, now(), now(), now(), \
                     pk FROM UNNEST($2::text[], $3::jsonb[], $4::text[]) AS x(i, p, pk)",
                )
                .bind(DELIVERY_JOB)
                .bind(ids)
                .bind(payloads)
                .bind(keys)
                .execute(&mut *tx),
            )
            .await?;
        Ok(true)
    }
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_webhook(&self, hook: NewWebhook) -> Result<Webhook, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let row = self
            .telemetry
            .timed(
                "webhook_insert",
                sqlx::query(concat!(
                    "INSERT INTO webhooks (id, url, events, rooms, secret, created_at, \
                     created_by) VALUES ($1, $2, $3, $4, $5, now(), $6) RETURNING ",
                    webhook_columns!()
                ))
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(&hook.url)
                .bind(Json(&hook.events))
                .bind(hook.rooms.as_ref().map(Json))
                .bind(&hook.secret)
                .bind(&hook.created_by)
                .fetch_one(&mut *conn),
            )
            .await?;
        Ok(webhook_from_row(&row))
    }

    async fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let row = self
            .telemetry
            .timed(
                "webhook_by_id",
                sqlx::query(concat!(
                    "SELECT ",
                    webhook_columns!(),
                    " FROM webhooks WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&mut *conn),
            )
            .await?;
        Ok(row.as_ref().map(webhook_from_row))
    }

    async fn webhooks(&self, created_by: Option<&str>) -> Result<Vec<Webhook>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let rows = self
            .telemetry
            .timed(
                "webhooks_list",
                sqlx::query(concat!(
                    "SELECT ",
                    webhook_columns!(),
                    " FROM webhooks WHERE $1::text IS NULL OR created_by = $1 ORDER BY id"
                ))
                .bind(created_by)
                .fetch_all(&mut *conn),
            )
            .await?;
        Ok(rows.iter().map(webhook_from_row).collect())
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let done = self
            .telemetry
            .timed(
                "webhook_delete",
                sqlx::query("DELETE FROM webhooks WHERE id = $1")
                    .bind(id)
                    .execute(&mut *conn),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
