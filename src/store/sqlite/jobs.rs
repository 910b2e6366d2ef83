//! The job queue on SQLite: the one writer serializes claims, so a claim is one
//! `UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, Row};

use super::SqliteStore;
use crate::at_rest::Sealer;
use crate::store::StoreError;
use crate::store::jobs::opened_or_null;
use crate::store::jobs::{
    Finished, Job, JobQuery, JobStore, job_columns, outcome_columns, text_time,
};

/// A job row, its payload opened (encryption at rest).
fn job_from_row(sealer: &Sealer, r: &SqliteRow) -> Result<Job, StoreError> {
    let id: String = r.get("id");
    let payload = opened_or_null(
        &id,
        sealer.open_job(&id, r.get("payload_key"), r.get("payload")),
    );
    Ok(Job {
        id,
        kind: r.get("kind"),
        state: r.get("state"),
        attempts: r.get("attempts"),
        last_error: r.get("last_error"),
        run_at: r.get("run_at"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        payload,
    })
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn retry(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let now = text_time(Utc::now());
        let row = self
            .telemetry
            .timed(
                "job_retry",
                sqlx::query(concat!(
                    "UPDATE jobs SET state = 'queued', attempts = 0, run_at = ?2, updated_at = ?2 \
                     WHERE id = ?1 AND state = 'dead' RETURNING ",
                    job_columns!()
                ))
                .bind(id)
                .bind(&now)
                .fetch_optional(&mut *self.writer.acquire().await?),
            )
            .await?;
        Ok(row
            .as_ref()
            .map(|r| job_from_row(&self.sealer, r))
            .transpose()?)
    }

    async fn job_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = self
            .telemetry
            .timed(
                "job_counts",
                sqlx::query("SELECT kind, state, count(*) FROM jobs GROUP BY kind, state")
                    .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    async fn enqueue(
        &self,
        kind: &str,
        payload: &Value,
        run_at: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        let now = text_time(Utc::now());
        let id = uuid::Uuid::now_v7().to_string();
        let sealed = self.sealer.seal_job(&id, payload);
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        self.register_current_key(&mut tx).await?;
        let row = self
            .telemetry
            .timed(
                "job_insert",
                sqlx::query(concat!(
                    "INSERT INTO jobs (id, kind, state, payload, attempts, run_at, created_at, \
                     updated_at, payload_key) VALUES (?, ?, 'queued', ?, 0, ?, ?, ?, ?) RETURNING ",
                    job_columns!()
                ))
                .bind(&id)
                .bind(kind)
                .bind(sealed.text)
                .bind(text_time(run_at))
                .bind(&now)
                .bind(&now)
                .bind(sealed.key_id)
                .fetch_one(&mut *tx),
            )
            .await?;
        let job = job_from_row(&self.sealer, &row)?;
        tx.commit().await?;
        self.key_registered();
        Ok(job)
    }

    async fn claim(
        &self,
        kinds: &[&str],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let kinds = serde_json::to_string(kinds).unwrap_or_default();
        let (now, lease_until) = (text_time(now), text_time(lease_until));
        // Look on a reader first: an UPDATE takes the file's write lock even when it matches
        // nothing, and an idle runner polls several times a second (other processes on the
        // file, `tsunagi archive` among them, would wait on it). Each state is one range of the
        // (state, run_at) index.
        let due = self
            .telemetry
            .timed(
                "job_due",
                sqlx::query(
                    "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND run_at <= ?2 \
                     AND kind IN (SELECT value FROM json_each(?1))) OR EXISTS (SELECT 1 FROM jobs \
                     WHERE state = 'running' AND lease_until < ?2 \
                     AND kind IN (SELECT value FROM json_each(?1)))",
                )
                .bind(&kinds)
                .bind(&now)
                .fetch_one(&mut *self.reader.acquire().await?),
            )
            .await?;
        if !due.get::<bool, _>(0) {
            return Ok(Vec::new());
        }
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let mut claimed = Vec::new();
        for (name, state, due_column) in [
            ("job_claim_lapsed", "running", "lease_until < ?2"),
            ("job_claim", "queued", "run_at <= ?2"),
        ] {
            let left = i64::from(limit) - claimed.len() as i64;
            if left <= 0 {
                break;
            }
            let sql = format!(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = ?3, \
                 updated_at = ?2 WHERE id IN (SELECT id FROM jobs WHERE state = '{state}' AND \
                 {due_column} AND kind IN (SELECT value FROM json_each(?1)) \
                 ORDER BY run_at LIMIT ?4) RETURNING {}",
                job_columns!()
            );
            let rows = self
                .telemetry
                .timed(
                    name,
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&kinds)
                        .bind(&now)
                        .bind(&lease_until)
                        .bind(left)
                        .fetch_all(&mut *tx),
                )
                .await?;
            for r in &rows {
                claimed.push(job_from_row(&self.sealer, r)?);
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn renew(
        &self,
        id: &str,
        attempt: i64,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = self
            .telemetry
            .timed(
                "job_renew",
                sqlx::query(
                    "UPDATE jobs SET lease_until = ? \
                     WHERE id = ? AND attempts = ? AND state = 'running'",
                )
                .bind(text_time(lease_until))
                .bind(id)
                .bind(attempt)
                .execute(&mut *self.writer.acquire().await?),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_all(&self, finished: &[Finished]) -> Result<Vec<bool>, StoreError> {
        let now = text_time(Utc::now());
        let mut conn = self.writer.acquire().await?;
        // one transaction, one fsync, for the whole batch
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let mut applied = Vec::with_capacity(finished.len());
        for f in finished {
            let (state, run_at, error) = outcome_columns(&f.outcome);
            let done = self
                .telemetry
                .timed(
                    "job_finish",
                    sqlx::query(
                        "UPDATE jobs SET state = ?, run_at = coalesce(?, run_at), last_error = ?, \
                         lease_until = NULL, updated_at = ? \
                         WHERE id = ? AND attempts = ? AND state = 'running'",
                    )
                    .bind(state)
                    .bind(run_at.map(text_time))
                    .bind(error)
                    .bind(&now)
                    .bind(&f.id)
                    .bind(f.attempt)
                    .execute(&mut *tx),
                )
                .await?;
            applied.push(done.rows_affected() == 1);
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let row = self
            .telemetry
            .timed(
                "job_by_id",
                sqlx::query(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE id = ?"
                ))
                .bind(id)
                .fetch_optional(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(row
            .as_ref()
            .map(|r| job_from_row(&self.sealer, r))
            .transpose()?)
    }

    async fn jobs(&self, q: &JobQuery) -> Result<Vec<Job>, StoreError> {
        let rows = self
            .telemetry
            .timed(
                "jobs_list",
                sqlx::query(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR kind = ?2) \
                     AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
                ))
                .bind(&q.state)
                .bind(&q.kind)
                .bind(&q.before_id)
                .bind(i64::from(q.limit))
                .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| job_from_row(&self.sealer, r))
            .collect::<Result<_, _>>()?)
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = self
            .telemetry
            .timed(
                "jobs_purge",
                sqlx::query("DELETE FROM jobs WHERE state = 'done' AND updated_at < ?")
                    .bind(text_time(before))
                    .execute(&mut *self.writer.acquire().await?),
            )
            .await?;
        Ok(done.rows_affected())
    }
}
