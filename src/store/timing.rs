//! Every statement is timed under its name (never its parameters); a slow one logs one warning.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

static SLOW_QUERY_MS: AtomicU64 = AtomicU64::new(200);

pub fn set_slow_query_threshold_ms(ms: u64) {
    SLOW_QUERY_MS.store(ms, Ordering::Relaxed);
}

pub async fn timed<T, F: Future<Output = T>>(statement: &'static str, fut: F) -> T {
    let started = Instant::now();
    let out = fut.await;
    let elapsed = started.elapsed();
    metrics::histogram!("tsunagi_db_query_seconds", "statement" => statement)
        .record(elapsed.as_secs_f64());
    let threshold = SLOW_QUERY_MS.load(Ordering::Relaxed);
    if elapsed.as_millis() as u64 >= threshold {
        tracing::warn!(
            statement,
            elapsed_ms = elapsed.as_millis() as u64,
            threshold_ms = threshold,
            "slow query"
        );
    }
    out
}
