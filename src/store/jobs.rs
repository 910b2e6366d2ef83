//! The durable job queue (PROTOCOL.md §6.4) in the primary database: work that must not slow a
//! request (an archive pass, a webhook delivery) survives `kill -9` and runs once at a time on
//! whichever instance takes it.
//!
//! A worker claims a due job (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so instances never wait for
//! each other; SQLite: its one writer) by moving it to `running` with a lease and one more
//! attempt; the attempt number fences the outcome, so a worker whose lease ran out (and whose
//! job another worker took up) cannot overwrite the newer attempt's result.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::StoreError;

/// JOB of PROTOCOL.md §6.4 (the payload stays inside).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub run_at: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip)]
    #[schema(ignore)]
    pub payload: Value,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    /// Run again at `run_at`.
    Retry {
        run_at: DateTime<Utc>,
        error: String,
    },
    Dead {
        error: String,
    },
}

/// The outcome of one attempt of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub id: String,
    pub attempt: i64,
    pub outcome: Outcome,
}

/// Which jobs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub state: Option<String>,
    pub kind: Option<String>,
    /// Jobs created before this one (its id; ids sort by creation).
    pub before_id: Option<String>,
    pub limit: u32,
}

/// Obligations: `enqueue` commits a `queued` job before it returns. `claim` takes up to
/// `limit` due jobs of `kinds` (running with their lease past first, then queued with
/// `run_at <= now`, oldest first) and makes them `running` with `lease_until`, `attempts + 1`,
/// atomically, so no two callers take the same attempt. `finish_all` and `renew` change the job only while it is still that attempt and
/// running. `purge` removes `done` jobs last updated before a time (`dead` ones stay for a retry).
#[async_trait]
pub trait JobStore: Send + Sync {
    async fn enqueue(
        &self,
        kind: &str,
        payload: &Value,
        run_at: DateTime<Utc>,
    ) -> Result<Job, StoreError>;
    async fn claim(
        &self,
        kinds: &[&str],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;
    async fn renew(
        &self,
        id: &str,
        attempt: i64,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Records several outcomes in one transaction (one commit for a batch of deliveries); for
    /// each, whether it was still that attempt and running.
    async fn finish_all(&self, finished: &[Finished]) -> Result<Vec<bool>, StoreError>;
    async fn finish(&self, id: &str, attempt: i64, outcome: &Outcome) -> Result<bool, StoreError> {
        let one = Finished {
            id: id.to_owned(),
            attempt,
            outcome: outcome.clone(),
        };
        Ok(self.finish_all(std::slice::from_ref(&one)).await?[0])
    }
    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError>;
    async fn jobs(&self, q: &JobQuery) -> Result<Vec<Job>, StoreError>;
    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// A `dead` job back to `queued`, due now, with its attempts reset; None when there is no
    /// such dead job.
    async fn retry(&self, id: &str) -> Result<Option<Job>, StoreError>;
    /// How many jobs there are per (kind, state).
    async fn job_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError>;
}

/// The state and columns an outcome writes: (state, new run_at or None to keep, last_error).
pub fn outcome_columns(outcome: &Outcome) -> (&'static str, Option<DateTime<Utc>>, Option<&str>) {
    match outcome {
        Outcome::Done => ("done", None, None),
        Outcome::Retry { run_at, error } => ("queued", Some(*run_at), Some(error)),
        Outcome::Dead { error } => ("dead", None, Some(error)),
    }
}

/// A job's payload that cannot be opened (encryption at rest: a key not configured, a tampered
/// value) reads as `null`, logged: its run then fails as a malformed payload (the job goes `dead`,
/// visible in the admin listing) instead of failing every claim and listing that meets it.
pub fn opened_or_null(id: &str, opened: Result<Value, crate::at_rest::SealError>) -> Value {
    opened.unwrap_or_else(|e| {
        tracing::error!(job = %id, error = %e, "job payload cannot be opened");
        Value::Null
    })
}

/// RFC3339 with milliseconds and `Z`, the stores' text form of a time (it sorts as time).
pub fn text_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The columns a job row is read with, the same in both stores.
macro_rules! job_columns {
    () => {
        "id, kind, state, attempts, last_error, run_at, created_at, updated_at, payload, payload_key"
    };
}
pub(crate) use job_columns;
