//! The group committer: every send, from any socket or HTTP request, is queued here and
//! committed together with whatever else is waiting, so one fsync covers many messages.
//!
//! One task owns the queue, so commit order is queue order: a socket that queues its sends in
//! the order it sent them gets them committed in that order. After each commit the new
//! messages are handed to the hot window and published to the bus in seq order, before any
//! sender is answered.
//!
//! Bounded in space and time: the queue holds at most `queue` sends (past it a send is refused
//! `unavailable` at once), and every send carries a deadline (the acquire timeout plus one
//! statement timeout). A batch only takes sends with time left for one more attempt (one
//! statement timeout); the others are answered `unavailable` without being tried, so a stalled
//! database makes sends fail within the bound instead of piling up behind each other. Statement
//! timeouts and lock waits count as the database being unavailable, not as bad data, so they
//! are never retried one by one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::error::{ServiceError, ServiceResult};
use super::ryw::ReadYourWrites;
use crate::bus::{Bus, BusEvent};
use crate::hot_window::HotWindow;
use crate::store::{Appended, NewMessage, Store, WritePos};
use crate::telemetry::Telemetry;

pub struct CommitSettings {
    /// Most messages in one transaction.
    pub max_batch: usize,
    /// Most sends waiting for a commit.
    pub queue: usize,
    /// How long a send may wait for its answer, from queueing.
    pub deadline: Duration,
    /// The longest one commit attempt takes (the statement or busy timeout): a send with less
    /// time left than this is not tried.
    pub attempt: Duration,
}

enum Job {
    Append {
        message: NewMessage,
        waiter: Waiter,
    },
    /// Answered once everything queued before it is committed.
    Flush(oneshot::Sender<()>),
}

struct Waiter {
    queued: Instant,
    deadline: Instant,
    reply: oneshot::Sender<ServiceResult<Appended>>,
}

impl Waiter {
    /// Too little time left for an attempt of `attempt` to end before the deadline.
    fn expired(&self, now: Instant, attempt: Duration) -> bool {
        now + attempt > self.deadline
    }

    fn fail(self, e: ServiceError) {
        self.reply.send(Err(e)).ok();
    }
}

fn too_late() -> ServiceError {
    ServiceError::unavailable("the database did not commit in time, try again")
}

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
    /// A batch is being committed now.
    committing: Arc<AtomicBool>,
    deadline: Duration,
    /// The process's shutdown: once cancelled, new sends are refused.
    shutdown: CancellationToken,
}

impl Committer {
    pub fn start(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        ryw: Arc<ReadYourWrites>,
        hot: Arc<HotWindow>,
        settings: CommitSettings,
        shutdown: CancellationToken,
        telemetry: Telemetry,
    ) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let parts = Parts {
            store,
            bus,
            ryw,
            hot,
            telemetry,
        };
        let committing = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(
            rx,
            parts,
            settings.max_batch,
            settings.attempt,
            committing.clone(),
        ));
        Committer {
            tx,
            committing,
            deadline: settings.deadline,
            shutdown,
        }
    }

    /// Queues one message now (keeping the caller's order) and returns the wait for its commit.
    pub fn enqueue(
        &self,
        message: NewMessage,
    ) -> impl Future<Output = ServiceResult<Appended>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let queued = Instant::now();
        let job = Job::Append {
            message,
            waiter: Waiter {
                queued,
                deadline: queued + self.deadline,
                reply,
            },
        };
        let sent = if self.shutdown.is_cancelled() {
            Err(ServiceError::unavailable("the server is shutting down"))
        } else {
            self.tx.try_send(job).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    ServiceError::unavailable("too many sends are waiting for a commit, try again")
                }
                mpsc::error::TrySendError::Closed(_) => {
                    ServiceError::unavailable("the committer has stopped")
                }
            })
        };
        async move {
            sent?;
            rx.await
                .unwrap_or_else(|_| Err(ServiceError::unavailable("the committer has stopped")))
        }
    }

    /// Whether sends are queued or being committed: low-priority writers (sensor readings)
    /// give way while this is true.
    pub fn busy(&self) -> bool {
        self.committing.load(Ordering::Relaxed) || self.tx.capacity() < self.tx.max_capacity()
    }

    /// Waits until everything queued so far is committed (new sends are refused once the
    /// shutdown token is cancelled).
    pub async fn drain(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(tx)).await.is_ok() {
            rx.await.ok();
        }
    }
}

/// What the committer task works with.
struct Parts {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    ryw: Arc<ReadYourWrites>,
    /// Told of each new message before anyone is answered, so a read after an ack finds it.
    hot: Arc<HotWindow>,
    telemetry: Telemetry,
}

/// A batch taken from the queue.
#[derive(Default)]
struct Batch {
    messages: Vec<NewMessage>,
    waiters: Vec<Waiter>,
    /// Answered once this batch (and so everything queued before) is answered.
    flushes: Vec<oneshot::Sender<()>>,
}

/// What committing a batch came to: groups of waiters with their commit's result, in commit
/// order (one group, or one per message when the batch was retried one by one).
type Outcome = Vec<(Vec<Waiter>, Result<(Vec<Appended>, WritePos), ServiceError>)>;

impl Parts {
    /// Publishes what each commit created (in seq order, before anyone is answered), then
    /// answers.
    fn answer(&self, outcome: Outcome) {
        for (waiters, result) in outcome {
            let (appended, pos) = match result {
                Ok(done) => done,
                Err(e) => {
                    for w in waiters {
                        w.fail(e.clone());
                    }
                    continue;
                }
            };
            for a in appended.iter().filter(|a| a.created) {
                let message = Arc::new(a.message.clone());
                self.hot.committed(&message);
                self.bus.publish(BusEvent::Message(message));
            }
            let commit_seconds = self
                .telemetry
                .record(|| metrics::histogram!("tsunagi_send_commit_seconds"));
            for (w, a) in waiters.into_iter().zip(appended) {
                self.ryw.wrote(&a.message.user_id, pos);
                commit_seconds.record(w.queued.elapsed().as_secs_f64());
                w.reply.send(Ok(a)).ok();
            }
        }
    }

    /// Commits `messages` in one transaction; answers nothing (see [`Parts::answer`]).
    async fn commit(
        &self,
        messages: Vec<NewMessage>,
        waiters: Vec<Waiter>,
        attempt: Duration,
    ) -> Outcome {
        self.telemetry.record(|| {
            metrics::histogram!("tsunagi_commit_batch_size").record(messages.len() as f64)
        });
        match self.store.append(&messages).await {
            Ok(done) => vec![(waiters, Ok(done))],
            // A statement error is about the data, not the server (timeouts and lock waits
            // are `Unavailable`): commit the others alone so one bad message cannot fail its
            // neighbours, each only while its deadline allows.
            Err(e) if !e.is_connection() && messages.len() > 1 => {
                tracing::warn!(error = %e, "group commit failed; committing one by one");
                let mut out = Vec::with_capacity(waiters.len());
                for (m, w) in messages.chunks(1).zip(waiters) {
                    if w.expired(Instant::now(), attempt) {
                        out.push((vec![w], Err(too_late())));
                        continue;
                    }
                    let result = self.store.append(m).await.map_err(ServiceError::from);
                    out.push((vec![w], result));
                }
                out
            }
            Err(e) => {
                tracing::warn!(error = %e, "group commit failed");
                vec![(waiters, Err(ServiceError::from(e)))]
            }
        }
    }
}

/// Sorts queued jobs into a batch; those past their deadline fail without being tried.
fn form(jobs: &mut Vec<Job>, attempt: Duration) -> Batch {
    let now = Instant::now();
    let mut b = Batch::default();
    for job in jobs.drain(..) {
        match job {
            // waited past its deadline behind a stalled commit: not tried at all
            Job::Append { waiter, .. } if waiter.expired(now, attempt) => waiter.fail(too_late()),
            Job::Append { message, waiter } => {
                b.messages.push(message);
                b.waiters.push(waiter);
            }
            Job::Flush(done) => b.flushes.push(done),
        }
    }
    b
}

/// The pipeline: while batch N commits, the queue fills; as soon as N is committed, N+1 is taken
/// from the queue and sent to the database, and only then is N published and answered, so the
/// fan-out and the replies of one batch overlap the next commit. Commits stay one at a time and
/// in queue order (N+1 starts after N committed), and N is published before N+1 is.
async fn run(
    mut rx: mpsc::Receiver<Job>,
    parts: Parts,
    max_batch: usize,
    attempt: Duration,
    committing: Arc<AtomicBool>,
) {
    let parts = Arc::new(parts);
    let mut jobs = Vec::with_capacity(max_batch);
    // the batch being committed, and the flushes waiting for its answers
    let mut in_flight: Option<(tokio::task::JoinHandle<Outcome>, Vec<oneshot::Sender<()>>)> = None;
    loop {
        let done = match in_flight.take() {
            Some((task, flushes)) => Some((task.await, flushes)),
            None => None,
        };
        if done.is_none() {
            // nothing to answer: wait for work
            if rx.recv_many(&mut jobs, max_batch).await == 0 {
                break;
            }
        } else {
            while jobs.len() < max_batch {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        committing.store(true, Ordering::Relaxed);
        let batch = form(&mut jobs, attempt);
        let mut flushes = batch.flushes;
        if !batch.messages.is_empty() {
            let p = parts.clone();
            let task =
                tokio::spawn(async move { p.commit(batch.messages, batch.waiters, attempt).await });
            in_flight = Some((task, std::mem::take(&mut flushes)));
        }
        if let Some((outcome, earlier)) = done {
            // a panicked commit dropped its waiters: they are told the committer stopped
            if let Ok(outcome) = outcome {
                parts.answer(outcome);
            }
            for f in earlier {
                f.send(()).ok();
            }
        }
        // flushes queued with no sends: everything before them is answered now
        for f in flushes {
            f.send(()).ok();
        }
        committing.store(in_flight.is_some(), Ordering::Relaxed);
    }
}
