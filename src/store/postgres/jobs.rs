//! The job queue on PostgreSQL: a claim skips the rows other instances hold (`FOR UPDATE SKIP
//! LOCKED`), so workers never queue behind each other.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{Connection, Row};

use super::{PgStore, from_jsonb, rfc3339, to_jsonb};
use crate::at_rest::Sealer;
use crate::store::StoreError;
use crate::store::jobs::opened_or_null;
use crate::store::jobs::{Finished, Job, JobQuery, JobStore, job_columns, outcome_columns};

/// A job row, its payload opened (encryption at rest).
fn job_from_row(sealer: &Sealer, r: &PgRow) -> Result<Job, StoreError> {
    let id: String = r.get("id");
    let key_id: Option<&str> = r.get("payload_key");
    let payload = r.get::<sqlx::types::Json<Value>, _>("payload").0;
    let payload = match key_id {
        None => payload,
        Some(_) => opened_or_null(
            &id,
            sealer.open_job(&id, key_id, from_jsonb(payload, key_id)),
        ),
    };
    Ok(Job {
        id,
        kind: r.get("kind"),
        state: r.get("state"),
        attempts: i64::from(r.get::<i32, _>("attempts")),
        last_error: r.get("last_error"),
        run_at: rfc3339(r.get("run_at")),
        created_at: rfc3339(r.get("created_at")),
        updated_at: rfc3339(r.get("updated_at")),
        payload,
    })
}

#[async_trait]
impl JobStore for PgStore {
    async fn retry(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let row = self
            .telemetry
            .timed(
                "job_retry",
                sqlx::query(concat!(
                    "UPDATE jobs SET state = 'queued', attempts = 0, run_at = now(), \
                     updated_at = now() WHERE id = $1 AND state = 'dead' RETURNING ",
                    job_columns!()
                ))
                .bind(id)
                .fetch_optional(&mut *conn),
            )
            .await?;
        Ok(row
            .as_ref()
            .map(|r| job_from_row(&self.sealer, r))
            .transpose()?)
    }

    async fn job_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let rows = self
            .telemetry
            .timed(
                "job_counts",
                sqlx::query("SELECT kind, state, count(*) FROM jobs GROUP BY kind, state")
                    .fetch_all(&mut *conn),
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
        let id = uuid::Uuid::now_v7().to_string();
        let sealed = self.sealer.seal_job(&id, payload);
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        self.register_current_key(&mut tx).await?;
        let row = self
            .telemetry
            .timed(
                "job_insert",
                sqlx::query(concat!(
                    "INSERT INTO jobs (id, kind, state, payload, attempts, run_at, created_at, \
                     updated_at, payload_key) VALUES ($1, $2, 'queued', $3, 0, $4, now(), now(), \
                     $5) RETURNING ",
                    job_columns!()
                ))
                .bind(&id)
                .bind(kind)
                .bind(to_jsonb(&sealed))
                .bind(run_at)
                .bind(sealed.key_id.as_deref())
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
        let mut conn = self.primary.acquire().await?;
        let mut claimed = Vec::new();
        // one statement per state, each a range of the (state, run_at) index; rows another
        // instance is claiming are skipped, never waited for
        for (name, state, due_column) in [
            ("job_claim_lapsed", "running", "lease_until < $2"),
            ("job_claim", "queued", "run_at <= $2"),
        ] {
            let left = i64::from(limit) - claimed.len() as i64;
            if left <= 0 {
                break;
            }
            let sql = format!(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = $3, \
                 updated_at = $2 WHERE id IN (SELECT id FROM jobs WHERE state = '{state}' AND \
                 {due_column} AND kind = ANY($1) ORDER BY run_at LIMIT $4 \
                 FOR UPDATE SKIP LOCKED) RETURNING {}",
                job_columns!()
            );
            let rows = self
                .telemetry
                .timed(
                    name,
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(kinds)
                        .bind(now)
                        .bind(lease_until)
                        .bind(left)
                        .fetch_all(&mut *conn),
                )
                .await?;
            for r in &rows {
                claimed.push(job_from_row(&self.sealer, r)?);
            }
        }
        Ok(claimed)
    }

    async fn renew(
        &self,
        id: &str,
        attempt: i64,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let done = self
            .telemetry
            .timed(
                "job_renew",
                sqlx::query(
                    "UPDATE jobs SET lease_until = $1 \
                     WHERE id = $2 AND attempts = $3 AND state = 'running'",
                )
                .bind(lease_until)
                .bind(id)
                .bind(attempt as i32)
                .execute(&mut *conn),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_all(&self, finished: &[Finished]) -> Result<Vec<bool>, StoreError> {
        let mut ids = Vec::with_capacity(finished.len());
        let mut attempts = Vec::with_capacity(finished.len());
        let mut states = Vec::with_capacity(finished.len());
        let mut run_ats = Vec::with_capacity(finished.len());
        let mut errors = Vec::with_capacity(finished.len());
        for f in finished {
            let (state, run_at, error) = outcome_columns(&f.outcome);
            ids.push(f.id.as_str());
            attempts.push(f.attempt as i32);
            states.push(state);
            run_ats.push(run_at);
            errors.push(error);
        }
        let mut conn = self.primary.acquire().await?;
        // one statement for the whole batch
        let rows = self
            .telemetry
            .timed(
                "job_finish",
                sqlx::query(
                    "UPDATE jobs j SET state = f.state, run_at = coalesce(f.run_at, j.run_at), \
                     last_error = f.error, lease_until = NULL, updated_at = now() \
                     FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::text[]) \
                       AS f(id, attempt, state, run_at, error) \
                     WHERE j.id = f.id AND j.attempts = f.attempt AND j.state = 'running' \
                     RETURNING j.id",
                )
                .bind(&ids)
                .bind(&attempts)
                .bind(&states)
                .bind(&run_ats)
                .bind(&errors)
                .fetch_all(&mut *conn),
            )
            .await?;
        let applied: std::collections::HashSet<String> =
            rows.iter().map(|r| r.get::<String, _>(0)).collect();
        Ok(ids.iter().map(|id| applied.contains(*id)).collect())
    }

    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let row = self
            .telemetry
            .timed(
                "job_by_id",
                sqlx::query(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&mut *conn),
            )
            .await?;
        Ok(row
            .as_ref()
            .map(|r| job_from_row(&self.sealer, r))
            .transpose()?)
    }

    async fn jobs(&self, q: &JobQuery) -> Result<Vec<Job>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let rows = self
            .telemetry
            .timed(
                "jobs_list",
                sqlx::query(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE ($1::text IS NULL OR state = $1) \
                     AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR id < $3) \
                     ORDER BY id DESC LIMIT $4"
                ))
                .bind(&q.state)
                .bind(&q.kind)
                .bind(&q.before_id)
                .bind(i64::from(q.limit))
                .fetch_all(&mut *conn),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| job_from_row(&self.sealer, r))
            .collect::<Result<_, _>>()?)
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let done = self
            .telemetry
            .timed(
                "jobs_purge",
                sqlx::query("DELETE FROM jobs WHERE state = 'done' AND updated_at < $1")
                    .bind(before)
                    .execute(&mut *conn),
            )
            .await?;
        Ok(done.rows_affected())
    }
}
