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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_slow_statement_logs_its_name_once() {
        let logs = Captured::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        set_slow_query_threshold_ms(20);
        timed("fast_one", async {}).await;
        timed(
            "slow_one",
            tokio::time::sleep(std::time::Duration::from_millis(30)),
        )
        .await;
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("slow query").count(), 1, "{text}");
        assert!(
            text.contains("slow_one") && !text.contains("fast_one"),
            "{text}"
        );
    }
}
