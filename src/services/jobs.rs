//! The job runner (PROTOCOL.md §6.4): takes due jobs from the durable queue (`store/jobs.rs`)
//! and runs each with the handler of its kind, a few at a time, renewing the lease while it
//! runs; a failed attempt is retried after 1 s, 2 s, 4 s … (±20 % jitter, at most 10 min apart)
//! until the kind's attempts are spent, then the job is `dead`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::error::{ServiceError, ServiceResult};
use crate::store::Store;
use crate::store::jobs::{Finished, Job, JobQuery, Outcome};
use crate::telemetry::Telemetry;

/// Jobs of one instance running at once (webhook deliveries mostly wait on receivers).
const CONCURRENT: usize = 32;
/// How often the queue is looked at when nothing woke the runner (jobs queued elsewhere, or
/// retries coming due): a retry runs at most this late.
const POLL: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Outcomes are recorded in batches: the first waits this long for others to join it (on SQLite
/// every write transaction is an fsync on the one writer the message commits need too).
const FINISH_LINGER: Duration = Duration::from_millis(20);
/// While jobs are waiting, a claim waits this long for more slots to free, so claims (write
/// transactions too) come in batches rather than one per finished job.
const CLAIM_LINGER: Duration = Duration::from_millis(20);

/// Why an attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (the database or a receiver was unavailable).
    #[error("{0}")]
    Retry(String),
    /// Another attempt would fail the same way (a malformed payload).
    #[error("{0}")]
    Fatal(String),
}

/// What runs the jobs of one kind.
#[async_trait]
pub trait JobHandler: Send + Sync {
    /// One attempt. `stop` is cancelled when the process stops: return soon (the job is
    /// taken up again after its lease).
    async fn run(&self, job: &Job, stop: &CancellationToken) -> Result<(), JobError>;
    /// Attempts before the job is `dead`.
    fn max_attempts(&self) -> i64 {
        5
    }
}

/// The wait before attempt `attempts + 1`: 1 s × 2^(attempts − 1), ±20 %, at most 10 min.
pub fn backoff(attempts: i64) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(1u32 << attempts.clamp(1, 20).saturating_sub(1) as u32)
        .min(MAX_BACKOFF);
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    base.mul_f64(jitter).min(MAX_BACKOFF)
}

pub struct Jobs {
    store: Arc<dyn Store>,
    telemetry: Telemetry,
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
    lease: Duration,
    keep: Duration,
    wake: Notify,
}

impl Jobs {
    pub fn new(store: Arc<dyn Store>, lease: Duration, keep: Duration, t: &Telemetry) -> Self {
        Jobs {
            store,
            telemetry: t.clone(),
            handlers: HashMap::new(),
            lease,
            keep,
            wake: Notify::new(),
        }
    }

    /// Registers the handler of `kind` (before [`Jobs::start`]).
    pub fn handle(&mut self, kind: &'static str, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(kind, handler);
    }

    /// Queues a job to run now; committed before it returns.
    pub async fn enqueue(&self, kind: &str, payload: &Value) -> ServiceResult<Job> {
        let job = self.store.enqueue(kind, payload, Utc::now()).await?;
        self.wake.notify_one();
        Ok(job)
    }

    pub async fn list(&self, q: &JobQuery) -> ServiceResult<Vec<Job>> {
        Ok(self.store.jobs(q).await?)
    }

    /// A `dead` job back to `queued` (its attempts reset): `not_found` without the job,
    /// `conflict` when it is not dead.
    pub async fn retry(&self, id: &str) -> ServiceResult<Job> {
        if let Some(job) = self.store.retry(id).await? {
            self.wake.notify_one();
            return Ok(job);
        }
        match self.store.job(id).await? {
            None => Err(ServiceError::not_found("no such job")),
            Some(job) => Err(ServiceError::Conflict(format!(
                "the job is {}: only a dead job is retried",
                job.state
            ))),
        }
    }

    /// Publishes the queue's depth by kind and state every 15 s until `stop`.
    pub fn publish_depth(self: Arc<Self>, stop: CancellationToken) {
        tokio::spawn(async move {
            // the first after one period, not at start (where every part opens connections)
            let every = Duration::from_secs(15);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match self.store.job_counts().await {
                    Ok(counts) => self.telemetry.record(|| {
                        for state in ["queued", "running", "done", "dead"] {
                            for kind in self.handlers.keys() {
                                let n = counts
                                    .iter()
                                    .find(|(k, s, _)| k == kind && s == state)
                                    .map_or(0, |c| c.2);
                                metrics::gauge!("tsunagi_jobs", "kind" => *kind, "state" => state)
                                    .set(n as f64);
                            }
                        }
                    }),
                    Err(e) => tracing::debug!(error = %e, "job counts unavailable"),
                }
            }
        });
    }

    /// Runs due jobs until `stop`; a running attempt is told to stop with it.
    pub fn start(self: Arc<Self>, stop: CancellationToken) {
        let (outcomes, finished) = mpsc::channel(CONCURRENT * 16);
        tokio::spawn(self.clone().record_outcomes(finished));
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(CONCURRENT));
            let mut backlog = false;
            let kinds: Vec<&str> = self.handlers.keys().copied().collect();
            // the first purge one period after start (not among the start's connections)
            let mut last_purge = tokio::time::Instant::now();
            loop {
                // as many jobs as there are free slots (at least one: wait for it), in one claim
                let Ok(first) = permits.clone().acquire_owned().await else {
                    return;
                };
                if backlog {
                    tokio::time::sleep(CLAIM_LINGER).await;
                }
                let mut slots = vec![first];
                while let Ok(more) = permits.clone().try_acquire_owned() {
                    slots.push(more);
                }
                let now = Utc::now();
                let claimed = self
                    .store
                    .claim(
                        &kinds,
                        now,
                        now + chrono_duration(self.lease),
                        slots.len() as u32,
                    )
                    .await;
                match claimed {
                    Ok(jobs) => {
                        backlog = jobs.len() == slots.len();
                        for job in jobs {
                            let slot = slots.pop();
                            let this = self.clone();
                            let stop = stop.clone();
                            let outcomes = outcomes.clone();
                            tokio::spawn(async move {
                                if let Some(done) = this.run(job, &stop).await {
                                    // a closed channel: the process is stopping; the job runs
                                    // again after its lease
                                    let _ = outcomes.send(done).await;
                                }
                                drop(slot);
                            });
                        }
                        drop(slots);
                        if backlog {
                            continue;
                        }
                    }
                    Err(e) => {
                        backlog = false;
                        drop(slots);
                        tracing::warn!(error = %e, "taking jobs failed; retrying");
                    }
                }
                if last_purge.elapsed() > PURGE_EVERY {
                    last_purge = tokio::time::Instant::now();
                    if let Err(e) = self
                        .store
                        .purge(Utc::now() - chrono_duration(self.keep))
                        .await
                    {
                        tracing::warn!(error = %e, "purging completed jobs failed");
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        });
    }

    /// Writes finished attempts' outcomes in batches until every sender is gone.
    async fn record_outcomes(self: Arc<Self>, mut finished: mpsc::Receiver<Finished>) {
        let mut batch = Vec::new();
        while let Some(first) = finished.recv().await {
            batch.push(first);
            tokio::time::sleep(FINISH_LINGER).await;
            while batch.len() < 512 {
                match finished.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            match self.store.finish_all(&batch).await {
                Ok(applied) => {
                    for (f, ok) in batch.iter().zip(applied) {
                        if !ok {
                            tracing::warn!(job = %f.id, "a job's lease ran out before it finished");
                        }
                    }
                }
                // left running: taken up again after their leases (deliveries are at least once)
                Err(e) => {
                    tracing::warn!(error = %e, jobs = batch.len(), "recording jobs' outcomes failed")
                }
            }
            batch.clear();
        }
    }

    /// One attempt of `job`, its lease renewed meanwhile; its outcome, to be recorded (None when
    /// it was stopped mid-attempt).
    async fn run(&self, job: Job, stop: &CancellationToken) -> Option<Finished> {
        let handler = self.handlers.get(job.kind.as_str())?;
        let renew_every = self.lease / 3;
        let attempt = job.attempts;
        let result = {
            let work = handler.run(&job, stop);
            tokio::pin!(work);
            let mut next_renewal = renew_every;
            loop {
                tokio::select! {
                    r = &mut work => break r,
                    _ = tokio::time::sleep(next_renewal) => {
                        let until = Utc::now() + chrono_duration(self.lease);
                        next_renewal = match self.store.renew(&job.id, attempt, until).await {
                            Ok(_) => renew_every,
                            Err(e) => {
                                // try again soon: two thirds of the lease are left for it
                                tracing::warn!(job = %job.id, error = %e, "renewing a job's lease failed; retrying");
                                Duration::from_secs(1).min(renew_every)
                            }
                        };
                    }
                }
            }
        };
        if stop.is_cancelled() && result.is_err() {
            // stopped mid-attempt: left running, taken up again after its lease
            return None;
        }
        let kind = job.kind.clone();
        self.telemetry.record(|| {
            metrics::counter!("tsunagi_job_attempts_total", "kind" => kind.clone()).increment(1);
            if result.is_err() {
                metrics::counter!("tsunagi_job_failures_total", "kind" => kind.clone())
                    .increment(1);
            }
        });
        let outcome = match result {
            Ok(()) => Outcome::Done,
            Err(JobError::Retry(error)) if attempt < handler.max_attempts() => Outcome::Retry {
                run_at: Utc::now() + chrono_duration(backoff(attempt)),
                error,
            },
            Err(JobError::Retry(error) | JobError::Fatal(error)) => Outcome::Dead { error },
        };
        Some(Finished {
            id: job.id,
            attempt,
            outcome,
        })
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_ten_minutes() {
        for (attempts, secs) in [(1, 1.0), (2, 2.0), (3, 4.0), (8, 128.0)] {
            let d = backoff(attempts).as_secs_f64();
            assert!(d >= secs * 0.8 && d <= secs * 1.2, "{attempts}: {d}");
        }
        assert!(backoff(30) <= MAX_BACKOFF);
        assert!(backoff(30) >= MAX_BACKOFF.mul_f64(0.8));
    }
}
