//! The group committer: every send, from any socket or HTTP request, is queued here and
//! committed together with whatever else is waiting, so one fsync covers many messages.
//!
//! One task owns the queue, so commit order is queue order: a socket that queues its sends in
//! the order it sent them gets them committed in that order. After each commit the new
//! messages are published to the bus in seq order, before any sender is answered.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::error::{ServiceError, ServiceResult};
use super::ryw::ReadYourWrites;
use crate::bus::{Bus, BusEvent};
use crate::store::{Appended, NewMessage, Store, WritePos};
use crate::telemetry::Telemetry;

enum Job {
    Append {
        message: NewMessage,
        queued: Instant,
        reply: oneshot::Sender<ServiceResult<Appended>>,
    },
    /// Answered once everything queued before it is committed.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::UnboundedSender<Job>,
    /// The process's shutdown: once cancelled, new sends are refused.
    shutdown: CancellationToken,
}

impl Committer {
    pub fn start(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        ryw: Arc<ReadYourWrites>,
        max_batch: usize,
        shutdown: CancellationToken,
        telemetry: Telemetry,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, store, bus, ryw, max_batch, telemetry));
        Committer { tx, shutdown }
    }

    /// Queues one message now (keeping the caller's order) and returns the wait for its commit.
    pub fn enqueue(
        &self,
        message: NewMessage,
    ) -> impl Future<Output = ServiceResult<Appended>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let queued = if self.shutdown.is_cancelled() {
            Err(ServiceError::unavailable("the server is shutting down"))
        } else {
            self.tx
                .send(Job::Append {
                    message,
                    queued: Instant::now(),
                    reply,
                })
                .map_err(|_| ServiceError::unavailable("the committer has stopped"))
        };
        async move {
            queued?;
            rx.await
                .unwrap_or_else(|_| Err(ServiceError::unavailable("the committer has stopped")))
        }
    }

    /// Waits until everything queued so far is committed (new sends are refused once the
    /// shutdown token is cancelled).
    pub async fn drain(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(tx)).is_ok() {
            rx.await.ok();
        }
    }
}

type Waiter = (Instant, oneshot::Sender<ServiceResult<Appended>>);

/// Publishes what a commit created (in seq order, before anyone is answered), then answers.
fn answer(
    telemetry: &Telemetry,
    bus: &dyn Bus,
    ryw: &ReadYourWrites,
    waiters: Vec<Waiter>,
    appended: Vec<Appended>,
    pos: WritePos,
) {
    for a in appended.iter().filter(|a| a.created) {
        bus.publish(BusEvent::Message(Arc::new(a.message.clone())));
    }
    let commit_seconds = telemetry.record(|| metrics::histogram!("tsunagi_send_commit_seconds"));
    for ((queued, reply), a) in waiters.into_iter().zip(appended) {
        ryw.wrote(&a.message.user_id, pos);
        commit_seconds.record(queued.elapsed().as_secs_f64());
        reply.send(Ok(a)).ok();
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Job>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    ryw: Arc<ReadYourWrites>,
    max_batch: usize,
    telemetry: Telemetry,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut jobs, max_batch).await > 0 {
        let mut messages = Vec::with_capacity(jobs.len());
        let mut waiters = Vec::with_capacity(jobs.len());
        let mut flushes = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Append {
                    message,
                    queued,
                    reply,
                } => {
                    messages.push(message);
                    waiters.push((queued, reply));
                }
                Job::Flush(done) => flushes.push(done),
            }
        }
        if !messages.is_empty() {
            telemetry.record(|| {
                metrics::histogram!("tsunagi_commit_batch_size").record(messages.len() as f64)
            });
            match store.append(&messages).await {
                Ok((appended, pos)) => answer(&telemetry, &*bus, &ryw, waiters, appended, pos),
                // A statement error is about the data, not the server: commit the others alone
                // so one bad message cannot fail its neighbours.
                Err(e) if !e.is_connection() && messages.len() > 1 => {
                    tracing::warn!(error = %e, "group commit failed; committing one by one");
                    for (m, waiter) in messages.chunks(1).zip(waiters) {
                        match store.append(m).await {
                            Ok((appended, pos)) => {
                                answer(&telemetry, &*bus, &ryw, vec![waiter], appended, pos)
                            }
                            Err(e) => {
                                waiter.1.send(Err(ServiceError::from(e))).ok();
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "group commit failed");
                    let err = ServiceError::from(e);
                    for (_, reply) in waiters {
                        reply.send(Err(err.clone())).ok();
                    }
                }
            }
        }
        for done in flushes {
            done.send(()).ok();
        }
    }
}
