//! Pacing of the history reads of `join` and `sync` (`TSUNAGI_HISTORY_READS`,
//! `TSUNAGI_HISTORY_WAIT_MS`). After a reconnect storm thousands of sockets join and sync at
//! once; let through, they all wait on the read pool, whose acquire timeout then answers many of
//! them `unavailable` and has them retry into the same crowd. Here at most N reads run at once
//! (N at or below the read pool's size) and the others queue in arrival order (the semaphore is
//! fair); a read that waited `TSUNAGI_HISTORY_WAIT_MS` without its turn is answered `unavailable`
//! (try again), so the queue is bounded in time, and in length by the sockets (each session runs
//! its events one at a time).

use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use tokio::sync::Semaphore;

use super::error::{ServiceError, ServiceResult};
use crate::telemetry::Telemetry;

pub struct HistoryGate {
    /// `None`: no pacing (0).
    permits: Option<Semaphore>,
    wait: Duration,
    waiting: Gauge,
    waited: Histogram,
    admitted: Counter,
    refused: Counter,
}

impl HistoryGate {
    pub fn new(reads: usize, wait: Duration, t: &Telemetry) -> Self {
        t.record(|| HistoryGate {
            permits: (reads > 0).then(|| Semaphore::new(reads)),
            wait,
            waiting: gauge!("tsunagi_history_reads_waiting"),
            waited: histogram!("tsunagi_history_read_wait_seconds"),
            admitted: counter!("tsunagi_history_reads_total", "result" => "admitted"),
            refused: counter!("tsunagi_history_reads_total", "result" => "refused"),
        })
    }

    /// Runs `read` when its turn comes, or `unavailable` after the longest wait.
    pub async fn run<T>(&self, read: impl Future<Output = ServiceResult<T>>) -> ServiceResult<T> {
        let Some(permits) = &self.permits else {
            return read.await;
        };
        let started = Instant::now();
        self.waiting.increment(1.0);
        let permit = tokio::time::timeout(self.wait, permits.acquire()).await;
        self.waiting.decrement(1.0);
        self.waited.record(started.elapsed().as_secs_f64());
        match permit {
            Ok(Ok(_permit)) => {
                self.admitted.increment(1);
                read.await
            }
            _ => {
                self.refused.increment(1);
                Err(ServiceError::unavailable(
                    "too many history reads waiting, try again",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn at_most_n_at_once_and_a_bounded_wait() {
        let gate = Arc::new(HistoryGate::new(
            2,
            Duration::from_secs(5),
            &Telemetry::new(1000),
        ));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (release, hold) = tokio::sync::watch::channel(false);
        let reads: Vec<_> = (0..6)
            .map(|_| {
                let (gate, running, most, mut hold) =
                    (gate.clone(), running.clone(), most.clone(), hold.clone());
                tokio::spawn(async move {
                    gate.run(async {
                        let n = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        hold.wait_for(|r| *r).await.ok();
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
                })
            })
            .collect();
        // two are in, the others queue
        while running.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        for r in reads {
            r.await.unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);

        // a read that cannot get its turn in time is refused, retryably
        let short = HistoryGate::new(1, Duration::from_millis(20), &Telemetry::new(1000));
        let (_keep, never) = tokio::sync::watch::channel(false);
        let blocker = short.run(async {
            never.clone().wait_for(|r| *r).await.ok();
            Ok(())
        });
        tokio::select! {
            biased;
            _ = blocker => unreachable!("the first read holds its turn"),
            r = short.run(async { Ok(()) }) => {
                assert!(matches!(r, Err(ServiceError::Unavailable(_))));
            }
        }
    }
}
