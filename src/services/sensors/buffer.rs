//! Write-behind for sensor readings (PROTOCOL.md §6.1): accepted readings wait in a bounded
//! buffer and one task writes them in batches, when `batch` are waiting or `flush` after the
//! oldest, whichever comes first (a durable write asks for a flush at once). A full buffer
//! refuses (push-back) instead of growing; readings being written still count against it, so a
//! slow database pushes back too.
//!
//! Last wins per (sensor, ts): the waiting map replaces an earlier reading of the same key, and
//! batches are written one after another, so a later acceptance is never overwritten by an
//! earlier one. A batch that fails is retried (with backoff) before anything newer is written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::domain::Reading;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Whether higher-priority writes (message sends) are waiting or being committed.
pub type Priority = Arc<dyn Fn() -> bool + Send + Sync>;

/// Readings written per transaction: a send that arrives during a flush waits for one chunk
/// at most (SQLite has one writer; on PostgreSQL a big commit's WAL is flushed before the
/// send's).
const CHUNK: usize = 500;
/// The longest a chunk gives way to sends before it is written anyway (else a steady stream
/// of sends would starve the readings; the full buffer then pushes back).
const MAX_YIELD: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy)]
pub struct BufferSettings {
    /// Readings waiting that start a write.
    pub batch: usize,
    /// Longest wait of the oldest reading.
    pub flush: Duration,
    /// Readings waiting or being written, at most.
    pub capacity: usize,
}

/// Why readings were not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The buffer is full: try again after this many milliseconds.
    Full { retry_after_ms: u64 },
    /// The process is stopping.
    Closing,
}

/// A generation of the buffer: every reading accepted into it is durable once the committed
/// generation reaches it.
pub type Generation = u64;

struct State {
    waiting: HashMap<(String, i64), Reading>,
    /// When the oldest waiting reading was accepted.
    oldest: Option<Instant>,
    /// The generation the waiting readings will be written in.
    generation: Generation,
    /// Readings taken by the writer and not yet committed.
    in_flight: usize,
    /// A durable write waits: flush now.
    urgent: bool,
    closed: bool,
}

struct Metrics {
    depth: Gauge,
    accepted: Counter,
    refused_full: Counter,
    flush_rows: Histogram,
    flush_seconds: Histogram,
    flush_errors: Counter,
}

pub struct WriteBehind {
    state: Mutex<State>,
    settings: BufferSettings,
    wake: Notify,
    /// The newest generation fully committed.
    committed: watch::Sender<Generation>,
    store: Arc<dyn Store>,
    metrics: Metrics,
    /// Since when writes have been failing (None while they succeed).
    failing_since: Mutex<Option<Instant>>,
    /// Sends go first: each chunk waits (a while) until none is waiting.
    sends_waiting: Priority,
}

impl WriteBehind {
    /// Starts the writer task; it runs until [`Self::close`] has written everything.
    pub fn start(
        store: Arc<dyn Store>,
        settings: BufferSettings,
        sends_waiting: Priority,
        t: &Telemetry,
    ) -> Arc<Self> {
        let metrics = t.record(|| Metrics {
            depth: metrics::gauge!("tsunagi_sensor_buffer_depth"),
            accepted: metrics::counter!("tsunagi_sensor_readings_accepted_total"),
            refused_full: metrics::counter!("tsunagi_sensor_readings_refused_total", "reason" => "buffer_full"),
            flush_rows: metrics::histogram!("tsunagi_sensor_flush_rows"),
            flush_seconds: metrics::histogram!("tsunagi_sensor_flush_seconds"),
            flush_errors: metrics::counter!("tsunagi_sensor_flush_errors_total"),
        });
        let (committed, _) = watch::channel(0);
        let wb = Arc::new(WriteBehind {
            state: Mutex::new(State {
                waiting: HashMap::new(),
                oldest: None,
                generation: 1,
                in_flight: 0,
                urgent: false,
                closed: false,
            }),
            settings,
            wake: Notify::new(),
            committed,
            store,
            metrics,
            failing_since: Mutex::new(None),
            sends_waiting,
        });
        tokio::spawn(wb.clone().run());
        wb
    }

    /// Takes `readings` (all or none); returns the generation to wait for if they must be
    /// durable. A durable write asks for a flush at once.
    pub fn accept(&self, readings: Vec<Reading>, durable: bool) -> Result<Generation, Refused> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(Refused::Closing);
        }
        let new = readings
            .iter()
            .filter(|r| !st.waiting.contains_key(&(r.sensor.clone(), r.ts)))
            .count();
        if st.waiting.len() + st.in_flight + new > self.settings.capacity {
            self.metrics.refused_full.increment(readings.len() as u64);
            return Err(Refused::Full {
                retry_after_ms: self.settings.flush.as_millis().max(100) as u64,
            });
        }
        let n = readings.len();
        for r in readings {
            st.waiting.insert((r.sensor.clone(), r.ts), r);
        }
        // the first reading waiting starts the writer's interval; a durable one or a full batch
        // starts a write
        let first = st.oldest.is_none();
        st.oldest.get_or_insert_with(Instant::now);
        st.urgent |= durable;
        let wake = first || durable || st.waiting.len() >= self.settings.batch;
        let generation = st.generation;
        self.metrics.accepted.increment(n as u64);
        self.metrics
            .depth
            .set((st.waiting.len() + st.in_flight) as f64);
        drop(st);
        if wake {
            self.wake.notify_one();
        }
        Ok(generation)
    }

    /// Resolves once `generation` is committed; false if that took longer than `limit`.
    pub async fn committed(&self, generation: Generation, limit: Duration) -> bool {
        let mut rx = self.committed.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|&c| c >= generation))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Readings waiting or being written.
    pub fn depth(&self) -> usize {
        let st = self.state.lock();
        st.waiting.len() + st.in_flight
    }

    /// Refuses new readings and resolves once every accepted one is written: true then, false if
    /// writes kept failing for `limit` (a slow but working database is waited for: SIGTERM
    /// writes every accepted reading, PROTOCOL.md §6.1).
    pub async fn close(&self, limit: Duration) -> bool {
        let last = {
            let mut st = self.state.lock();
            st.closed = true;
            st.urgent = true;
            st.generation
        };
        self.wake.notify_one();
        loop {
            if self.committed(last, Duration::from_millis(100)).await {
                return true;
            }
            let failing = *self.failing_since.lock();
            if failing.is_some_and(|since| since.elapsed() >= limit) {
                return false;
            }
        }
    }

    /// The writer: waits for a reason to flush, writes what is waiting, repeats.
    async fn run(self: Arc<Self>) {
        loop {
            let (batch, generation) = loop {
                let deadline = {
                    let mut st = self.state.lock();
                    let due = st
                        .oldest
                        .is_some_and(|t| t.elapsed() >= self.settings.flush);
                    if st.urgent || due || st.waiting.len() >= self.settings.batch {
                        if st.waiting.is_empty() {
                            // nothing to write: this generation is trivially committed
                            st.urgent = false;
                            let g = st.generation;
                            st.generation += 1;
                            let closed = st.closed;
                            drop(st);
                            self.committed.send_replace(g);
                            if closed {
                                return;
                            }
                            continue;
                        }
                        break self.take(&mut st);
                    }
                    st.oldest.map(|t| t + self.settings.flush)
                };
                match deadline {
                    Some(at) => {
                        tokio::select! {
                            _ = self.wake.notified() => {}
                            _ = tokio::time::sleep_until(at) => {}
                        }
                    }
                    None => self.wake.notified().await,
                }
            };
            self.write(batch).await;
            {
                let mut st = self.state.lock();
                st.in_flight = 0;
                self.metrics
                    .depth
                    .set((st.waiting.len() + st.in_flight) as f64);
            }
            self.committed.send_replace(generation);
        }
    }

    fn take(&self, st: &mut State) -> (Vec<Reading>, Generation) {
        let batch: Vec<Reading> = st.waiting.drain().map(|(_, r)| r).collect();
        st.in_flight = batch.len();
        st.oldest = None;
        st.urgent = false;
        let g = st.generation;
        st.generation += 1;
        (batch, g)
    }

    /// Writes `batch` until it is committed, a chunk at a time, each giving way to sends first:
    /// a reading once accepted is never dropped (while the database is down the buffer fills
    /// and pushes back instead).
    async fn write(&self, batch: Vec<Reading>) {
        let started = std::time::Instant::now();
        for chunk in batch.chunks(CHUNK) {
            self.give_way().await;
            let mut backoff = Duration::from_millis(100);
            while let Err(e) = self.store.write_readings(chunk).await {
                self.failing_since.lock().get_or_insert_with(Instant::now);
                self.metrics.flush_errors.increment(1);
                tracing::warn!(error = %e, readings = chunk.len(), "writing sensor readings failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            *self.failing_since.lock() = None;
        }
        self.metrics.flush_rows.record(batch.len() as f64);
        self.metrics
            .flush_seconds
            .record(started.elapsed().as_secs_f64());
    }

    /// Waits while sends are queued or committing, at most [`MAX_YIELD`].
    async fn give_way(&self) {
        let until = Instant::now() + MAX_YIELD;
        while (self.sends_waiting)() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
