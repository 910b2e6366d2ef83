//! Webhooks and the outbox on SQLite (events and rooms as JSON arrays).

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::SqliteStore;
use crate::domain::now_rfc3339;
use crate::store::StoreError;
use crate::store::webhooks::{
    DELIVERY_JOB, NewWebhook, OutboxEvent, Webhook, WebhookStore, deliveries, webhook_columns,
};

fn webhook_from_row(r: &SqliteRow) -> Webhook {
    let list = |col: &str| -> Option<Vec<String>> {
        r.get::<Option<String>, _>(col)
            .and_then(|s| serde_json::from_str(&s).ok())
    };
    Webhook {
        id: r.get("id"),
        url: r.get("url"),
        events: list("events").unwrap_or_default(),
        rooms: list("rooms"),
        secret: r.get("secret"),
        created_at: r.get("created_at"),
        created_by: r.get("created_by"),
    }
}

impl SqliteStore {
    /// The outbox: the delivery jobs of `events`, inserted in the caller's transaction, their
    /// payloads sealed (the current key registered first). True when it inserted any: the caller
    /// then marks the key registered after its commit.
    pub(super) async fn enqueue_deliveries(
        &self,
        tx: &mut SqliteConnection,
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
        let jobs = deliveries(&hooks, events);
        if jobs.is_empty() {
            return Ok(false);
        }
        self.register_current_key(tx).await?;
        let now = now_rfc3339();
        for chunk in jobs.chunks(1000) {
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO jobs (id, kind, state, payload, attempts, run_at, created_at, \
                 updated_at, payload_key) ",
            );
            insert.push_values(chunk, |mut row, (id, payload)| {
                let payload = self.sealer.seal_job(id, payload);
                row.push_bind(id)
                    .push_bind(DELIVERY_JOB)
                    .push_bind("queued")
                    .push_bind(payload.text)
                    .push_bind(0)
                    .push_bind(&now)
                    .push_bind(&now)
                    .push_bind(&now)
                    .push_bind(payload.key_id);
            });
            self.telemetry
                .timed("outbox_insert", insert.build().execute(&mut *tx))
                .await?;
        }
        Ok(true)
    }
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook(&self, hook: NewWebhook) -> Result<Webhook, StoreError> {
        let row = self
            .telemetry
            .timed(
                "webhook_insert",
                sqlx::query(concat!(
                    "INSERT INTO webhooks (id, url, events, rooms, secret, created_at, \
                     created_by) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING ",
                    webhook_columns!()
                ))
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(&hook.url)
                .bind(serde_json::to_string(&hook.events).unwrap_or_default())
                .bind(
                    hook.rooms
                        .as_ref()
                        .map(|r| serde_json::to_string(r).unwrap_or_default()),
                )
                .bind(&hook.secret)
                .bind(now_rfc3339())
                .bind(&hook.created_by)
                .fetch_one(&mut *self.writer.acquire().await?),
            )
            .await?;
        Ok(webhook_from_row(&row))
    }

    async fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
        let row = self
            .telemetry
            .timed(
                "webhook_by_id",
                sqlx::query(concat!(
                    "SELECT ",
                    webhook_columns!(),
                    " FROM webhooks WHERE id = ?"
                ))
                .bind(id)
                .fetch_optional(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(row.as_ref().map(webhook_from_row))
    }

    async fn webhooks(&self, created_by: Option<&str>) -> Result<Vec<Webhook>, StoreError> {
        let rows = self
            .telemetry
            .timed(
                "webhooks_list",
                sqlx::query(concat!(
                    "SELECT ",
                    webhook_columns!(),
                    " FROM webhooks WHERE ?1 IS NULL OR created_by = ?1 ORDER BY id"
                ))
                .bind(created_by)
                .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows.iter().map(webhook_from_row).collect())
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let done = self
            .telemetry
            .timed(
                "webhook_delete",
                sqlx::query("DELETE FROM webhooks WHERE id = ?")
                    .bind(id)
                    .execute(&mut *self.writer.acquire().await?),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
