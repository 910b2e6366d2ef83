//! The archiver (PROTOCOL.md §6.3): moves messages older than a cutoff from the hot table to
//! cold storage, room by room, a batch at a time (the move, and why a crash anywhere in it loses
//! and duplicates nothing, is in `store/archive.rs`).
//!
//! Each batch is a read, a commit in cold storage and one short hot transaction under the
//! room's lock; before that transaction the archiver waits while sends are queued (at most
//! [`MAX_YIELD`]), so sends keep their priority. Any number of archivers (instances, the
//! `tsunagi archive` command) may run at once: the marker's compare-and-set lets one win each
//! batch, the others skip the room.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use metrics::{Counter, Gauge, Histogram};

use crate::store::archive::{ArchivableRoom, ArchiveStats};
use crate::store::{Store, StoreError};
use crate::telemetry::Telemetry;

/// The longest the archiver waits for queued sends before each hot transaction.
const MAX_YIELD: Duration = Duration::from_millis(50);
/// How long after start the background archiver's first pass runs.
const FIRST_PASS_AFTER: Duration = Duration::from_secs(30);
/// Rooms listed per query while a pass walks them.
const ROOMS_PER_PAGE: u32 = 100;

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PassReport {
    /// Rooms with at least one message moved.
    pub rooms: u64,
    pub moved: u64,
    pub batches: u64,
    /// The cutoff: messages created before it were moved.
    pub cutoff: String,
}

struct Metrics {
    moved: Counter,
    pass_seconds: Histogram,
    hot: Gauge,
    cold: Gauge,
    oldest_hot_age: Gauge,
}

pub struct Archiver {
    store: Arc<dyn Store>,
    metrics: Metrics,
    batch: u32,
    /// Whether sends are queued or committing now.
    sends_waiting: Arc<dyn Fn() -> bool + Send + Sync>,
    /// One pass at a time in this process (a queued pass waits for the running one).
    running: tokio::sync::Mutex<()>,
}

/// Seconds since the oldest hot message was created (0 when there is none).
pub fn oldest_age_seconds(stats: &ArchiveStats) -> f64 {
    stats
        .oldest_hot
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            (Utc::now() - t.with_timezone(&Utc))
                .as_seconds_f64()
                .max(0.0)
        })
        .unwrap_or(0.0)
}

/// The RFC3339 instant `older_than` ago, in the stores' text form (millisecond, `Z`), which
/// sorts as time.
pub fn cutoff(older_than: Duration) -> String {
    let age = chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
    Utc::now()
        .checked_sub_signed(age)
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Archiver {
    pub fn new(
        store: Arc<dyn Store>,
        batch: u32,
        sends_waiting: Arc<dyn Fn() -> bool + Send + Sync>,
        t: &Telemetry,
    ) -> Self {
        Archiver {
            store,
            metrics: t.record(|| Metrics {
                moved: metrics::counter!("tsunagi_archive_moved_total"),
                pass_seconds: metrics::histogram!("tsunagi_archive_pass_seconds"),
                hot: metrics::gauge!("tsunagi_archive_hot_messages"),
                cold: metrics::gauge!("tsunagi_archive_cold_messages"),
                oldest_hot_age: metrics::gauge!("tsunagi_archive_oldest_hot_age_seconds"),
            }),
            batch,
            sends_waiting,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// How many hot messages are older than `older_than` (what a pass would move).
    pub async fn count(&self, older_than: Duration) -> Result<i64, StoreError> {
        self.store.count_archivable(&cutoff(older_than)).await
    }

    /// Hot and cold counts and the oldest hot message (also published as gauges).
    pub async fn stats(&self) -> crate::services::error::ServiceResult<ArchiveStats> {
        let stats = self.store.archive_stats().await?;
        self.metrics.hot.set(stats.hot_messages as f64);
        self.metrics.cold.set(stats.cold_messages as f64);
        self.metrics.oldest_hot_age.set(oldest_age_seconds(&stats));
        Ok(stats)
    }

    /// Moves every message created more than `older_than` ago (each room's run of them from
    /// its oldest); `progress` gets the count moved so far after each batch. Stops early (with
    /// what it did) when `stop` is cancelled.
    pub async fn pass(
        &self,
        older_than: Duration,
        stop: &CancellationToken,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<PassReport, StoreError> {
        let _one_at_a_time = self.running.lock().await;
        let started = Instant::now();
        let mut report = PassReport {
            cutoff: cutoff(older_than),
            ..PassReport::default()
        };
        let mut after_room = String::new();
        loop {
            let rooms = self
                .store
                .archivable_rooms(&report.cutoff, &after_room, ROOMS_PER_PAGE)
                .await?;
            let Some(last) = rooms.last() else { break };
            after_room = last.room.clone();
            for room in rooms {
                if stop.is_cancelled() {
                    return Ok(report);
                }
                let cutoff = report.cutoff.clone();
                let moved = self.move_room(room, &cutoff, &mut report, progress, stop);
                if moved.await? > 0 {
                    report.rooms += 1;
                }
            }
        }
        self.metrics
            .pass_seconds
            .record(started.elapsed().as_secs_f64());
        Ok(report)
    }

    /// Moves the room's messages older than `cutoff`, a batch at a time, from its oldest.
    async fn move_room(
        &self,
        room: ArchivableRoom,
        cutoff: &str,
        report: &mut PassReport,
        progress: &(dyn Fn(u64) + Send + Sync),
        stop: &CancellationToken,
    ) -> Result<u64, StoreError> {
        let mut mark = room.mark.archived_seq;
        let mut moved = 0;
        while !stop.is_cancelled() {
            let mut rows = self
                .store
                .archive_batch(&room.room, mark, self.batch)
                .await?;
            // a run from the oldest: the archived part stays a prefix of the room's history
            let old = rows
                .iter()
                .take_while(|m| m.created_at.as_str() < cutoff)
                .count();
            rows.truncate(old);
            let Some(newest) = rows.last().map(|m| m.seq) else {
                break;
            };
            if rows[0].seq != mark + 1 || newest != mark + rows.len() as i64 {
                // another archiver moved the marker since; its rows are no longer ours
                break;
            }
            self.store.cold().insert(&room.mark.epoch, &rows).await?;
            self.give_way().await;
            if !self.store.advance_archive(&room.room, mark, newest).await? {
                break;
            }
            self.metrics.moved.increment(rows.len() as u64);
            moved += rows.len() as u64;
            report.moved += rows.len() as u64;
            report.batches += 1;
            progress(report.moved);
            mark = newest;
            if old < self.batch as usize {
                // the batch held a newer message, or was the room's last: the room is done
                break;
            }
        }
        Ok(moved)
    }

    /// Waits while sends are queued or committing, at most [`MAX_YIELD`].
    async fn give_way(&self) {
        let until = Instant::now() + MAX_YIELD;
        while (self.sends_waiting)() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Refreshes the hot/cold gauges every 15 s until `stop`.
    pub fn publish_stats(self: Arc<Self>, stop: CancellationToken) {
        tokio::spawn(async move {
            // the first after one period, not at start (where every part opens connections)
            let every = Duration::from_secs(15);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = self.stats().await {
                    tracing::debug!(error = %e, "archive stats unavailable");
                }
            }
        });
    }

    /// Runs a pass with `older_than` now and every `every` until `stop`; failures are logged
    /// and retried at the next tick.
    pub fn run_in_background(
        self: Arc<Self>,
        older_than: Duration,
        every: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // the first pass a little after start, not while every part opens its connections
            let first = tokio::time::Instant::now() + FIRST_PASS_AFTER.min(every);
            let mut tick = tokio::time::interval_at(first, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match self.pass(older_than, &stop, &|_| {}).await {
                    Ok(r) if r.moved > 0 => tracing::info!(
                        moved = r.moved,
                        rooms = r.rooms,
                        cutoff = %r.cutoff,
                        "archived old messages"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "archive pass failed; retrying later"),
                }
            }
        })
    }
}

/// Queues one archive pass (admins): messages older than `older_than`, by default
/// `TSUNAGI_ARCHIVE_AFTER` (None: archiving is off, the pass moves nothing).
pub async fn queue_pass(
    jobs: &crate::services::jobs::Jobs,
    who: &crate::auth::Identity,
    older_than: Option<Duration>,
) -> crate::services::error::ServiceResult<crate::store::jobs::Job> {
    if !who.admin {
        return Err(crate::services::error::ServiceError::forbidden(
            "admins only",
        ));
    }
    let payload = serde_json::json!({ "older_than_s": older_than.map(|d| d.as_secs()) });
    jobs.enqueue(ARCHIVE_JOB, &payload).await
}

/// The kind of an archive pass's job.
pub const ARCHIVE_JOB: &str = "archive";

/// The `archive` job: one pass, `{ "older_than_s": N }`.
pub struct ArchiveJob(pub Arc<Archiver>);

#[async_trait::async_trait]
impl crate::services::jobs::JobHandler for ArchiveJob {
    async fn run(
        &self,
        job: &crate::store::jobs::Job,
        stop: &CancellationToken,
    ) -> Result<(), crate::services::jobs::JobError> {
        use crate::services::jobs::JobError;
        let secs = match &job.payload["older_than_s"] {
            // archiving is off (TSUNAGI_ARCHIVE_AFTER=0) and the pass named no age: nothing moves
            serde_json::Value::Null => return Ok(()),
            v => v
                .as_u64()
                .ok_or_else(|| JobError::Fatal("payload: older_than_s is not a number".into()))?,
        };
        let report = self
            .0
            .pass(Duration::from_secs(secs), stop, &|_| {})
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        if stop.is_cancelled() {
            return Err(JobError::Retry("stopped before the pass ended".into()));
        }
        tracing::info!(job = %job.id, moved = report.moved, rooms = report.rooms, "archive pass done");
        Ok(())
    }
}
