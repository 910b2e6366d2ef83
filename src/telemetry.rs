//! One app's metrics, and the timing of its statements.
//!
//! The `metrics` facade records into one process-wide recorder; tsunagi records into its app's
//! own instead (`metrics::with_local_recorder` around each record), so several apps in one
//! process — the integration tests — keep their figures and their slow-query threshold apart.
//! Every part that records holds the `Telemetry` of the app that built it.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

#[derive(Clone)]
pub struct Telemetry(Arc<Inner>);

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Telemetry {{ slow_query_ms: {} }}", self.0.slow_query_ms)
    }
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Statements at least this slow log one warning (`TSUNAGI_SLOW_QUERY_MS`).
    slow_query_ms: u64,
}

/// Latency buckets of every histogram, in seconds.
const LATENCY: [f64; 13] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Buckets of histograms that count rows (names ending in `_rows`).
const ROWS: [f64; 10] = [
    1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 50000.0, 100000.0,
];

impl Telemetry {
    pub fn new(slow_query_ms: u64) -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY)
            .expect("non-empty buckets")
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_rows".into()),
                &ROWS,
            )
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        Telemetry(Arc::new(Inner {
            recorder,
            handle,
            slow_query_ms,
        }))
    }

    /// For parts built outside an app (tests of one engine): figures nobody reads.
    pub fn detached() -> Self {
        Telemetry::new(200)
    }

    /// Runs `f` with this app's recorder as the one `counter!`, `gauge!` and `histogram!` use.
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.0.recorder, f)
    }

    /// The Prometheus text of everything recorded.
    pub fn render(&self) -> String {
        self.0.handle.render()
    }

    /// Folds recorded histogram samples into their buckets (called periodically).
    pub fn upkeep(&self) {
        self.0.handle.run_upkeep();
    }

    /// Times `fut` as the statement `statement` (its name, never its parameters); a slow one
    /// logs one warning.
    pub async fn timed<T, F: Future<Output = T>>(&self, statement: &'static str, fut: F) -> T {
        let started = Instant::now();
        let out = fut.await;
        let elapsed = started.elapsed();
        self.record(|| {
            metrics::histogram!("tsunagi_db_query_seconds", "statement" => statement)
                .record(elapsed.as_secs_f64())
        });
        let threshold = self.0.slow_query_ms;
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
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

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
        let t = Telemetry::new(20);
        t.timed("fast_one", async {}).await;
        t.timed(
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

    #[tokio::test]
    async fn two_apps_keep_their_figures_apart() {
        let (a, b) = (Telemetry::detached(), Telemetry::detached());
        a.record(|| metrics::counter!("tsunagi_test_total").increment(3));
        b.record(|| metrics::counter!("tsunagi_test_total").increment(1));
        assert!(
            a.render().contains("tsunagi_test_total 3"),
            "{}",
            a.render()
        );
        assert!(
            b.render().contains("tsunagi_test_total 1"),
            "{}",
            b.render()
        );
    }
}
