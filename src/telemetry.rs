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
        let telemetry = Telemetry(Arc::new(Inner {
            recorder,
            handle,
            slow_query_ms,
        }));
        telemetry.record(describe_all);
        telemetry
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

/// Which kind of metric a description is for.
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric tsunagi exports: its `# HELP` text, and the label sets it starts at zero with
/// (an empty list: unlabelled). A metric whose labels are only known at run time (pools, caches,
/// statements) gets its help text and appears with its first value. A new metric goes here too
/// (a test checks that every name recorded in `src/` is described).
/// Label sets a metric starts at zero with: each a list of (label, value).
type LabelSets = &'static [&'static [(&'static str, &'static str)]];

#[rustfmt::skip]
const METRICS: &[(Kind, &str, &str, LabelSets)] = {
    use Kind::*;
    &[
        (Gauge, "tsunagi_sockets_connected", "Socket.IO sockets connected to this instance", &[&[]]),
        (Gauge, "tsunagi_connections_open", "TCP connections open (HTTP, polling and WebSocket)", &[&[]]),
        (Counter, "tsunagi_connections_refused_total", "connections refused at the connection cap (503)", &[&[]]),
        (Counter, "tsunagi_admission_handshakes_total", "Engine.IO handshakes admitted, or refused 503 past TSUNAGI_HANDSHAKES_PENDING", &[&[("result", "admitted")], &[("result", "refused")]]),
        (Gauge, "tsunagi_admission_pending", "Engine.IO sessions opened and not yet CONNECTed", &[&[]]),
        (Gauge, "tsunagi_history_reads_waiting", "join/sync history reads queued for their turn (TSUNAGI_HISTORY_READS)", &[&[]]),
        (Histogram, "tsunagi_history_read_wait_seconds", "wait of a join/sync history read for its turn", &[&[]]),
        (Counter, "tsunagi_history_reads_total", "join/sync history reads let through, or refused unavailable after TSUNAGI_HISTORY_WAIT_MS", &[&[("result", "admitted")], &[("result", "refused")]]),
        (Counter, "tsunagi_connections_evicted_total", "idle connections closed at the cap to admit a new one", &[&[]]),
        (Counter, "tsunagi_polling_forwarded_total", "Engine.IO requests forwarded to the instance owning their session, by kind (poll, upgrade)", &[&[("kind", "poll")], &[("kind", "upgrade")]]),
        (Counter, "tsunagi_polling_forward_failures_total", "forwards whose owner did not answer (the client was told its session is unknown)", &[&[]]),
        (Counter, "tsunagi_tls_handshake_failures_total", "TLS handshakes that failed or timed out (plain HTTP to the HTTPS listener included)", &[&[]]),
        (Counter, "tsunagi_tls_reloads_total", "certificate reloads on SIGHUP, by result (ok, failed)", &[&[("result", "ok")], &[("result", "failed")]]),
        (Counter, "tsunagi_events_in_total", "Socket.IO events received, by event name", &[]),
        (Counter, "tsunagi_events_out_total", "Socket.IO events sent, by event name", &[]),
        (Histogram, "tsunagi_send_commit_seconds", "time from a send's arrival to its commit", &[&[]]),
        (Histogram, "tsunagi_commit_batch_size", "messages committed per group-commit transaction", &[&[]]),
        (Counter, "tsunagi_slow_consumer_disconnects_total", "sockets disconnected because they could not keep up (they recover with sync)", &[&[]]),
        (Counter, "tsunagi_delivery_gap_fills_total", "holes in a room's cross-instance feed filled from the primary", &[&[]]),
        (Counter, "tsunagi_delivery_gap_disconnects_total", "sockets disconnected after a hole in a room's feed could not be filled (they recover with sync)", &[&[]]),
        (Histogram, "tsunagi_db_query_seconds", "time of each database statement, by statement name", &[]),
        (Histogram, "tsunagi_db_acquire_seconds", "wait for a pooled database connection, by pool", &[]),
        (Counter, "tsunagi_db_acquire_timeouts_total", "waits for a database connection that timed out (503), by pool", &[]),
        (Gauge, "tsunagi_db_pool_connections", "database connections by pool and state (idle, in_use)", &[]),
        (Gauge, "tsunagi_db_pool_size", "database connections open, by pool", &[]),
        (Gauge, "tsunagi_db_pool_max", "most database connections a pool may open", &[]),
        (Gauge, "tsunagi_db_pool_waiting", "requests waiting for a connection, by pool", &[]),
        (Counter, "tsunagi_db_reads_total", "reads by the pool that served them (primary, replica-N)", &[]),
        (Gauge, "tsunagi_db_replica_healthy", "1 when a replica is in rotation, by pool", &[]),
        (Gauge, "tsunagi_db_replica_lag_seconds", "how far a replica is behind the primary, by pool", &[]),
        (Gauge, "tsunagi_bus_connected", "1 while the bus (Redis pub/sub, or in process) delivers", &[&[]]),
        (Counter, "tsunagi_bus_published_total", "messages published on the bus", &[&[]]),
        (Counter, "tsunagi_bus_received_total", "messages received from the bus", &[&[]]),
        (Counter, "tsunagi_bus_received_events_total", "events received from other instances, by kind (message, typing, presence, state, readings, invalidate)", &[&[("kind", "message")], &[("kind", "typing")], &[("kind", "presence")], &[("kind", "state")], &[("kind", "readings")], &[("kind", "invalidate")]]),
        (Gauge, "tsunagi_bus_shards_subscribed", "room shard channels this instance is subscribed to (those of the rooms its sockets are in, plus a short linger)", &[&[]]),
        (Counter, "tsunagi_bus_publish_errors_total", "bus publishes that failed", &[&[]]),
        (Counter, "tsunagi_bus_dropped_total", "low-priority bus messages dropped under load, by kind", &[]),
        (Counter, "tsunagi_bus_ack_timeouts_total", "cache invalidations another instance did not confirm in time", &[&[]]),
        (Counter, "tsunagi_cache_requests_total", "cache lookups by cache, layer (l1, l2) and result (hit, miss)", &[]),
        (Counter, "tsunagi_cache_loads_total", "cache misses loaded from the store, by cache", &[]),
        (Counter, "tsunagi_cache_errors_total", "cache layer errors, by cache and layer", &[]),
        (Counter, "tsunagi_cache_invalidation_failures_total", "cache invalidations that could not be published, by cache", &[]),
        (Counter, "tsunagi_hot_window_reads_total", "join and sync history reads by whether the hot window answered them (hit) or the database did (miss)", &[&[("read", "join"), ("result", "hit")], &[("read", "join"), ("result", "miss")], &[("read", "sync"), ("result", "hit")], &[("read", "sync"), ("result", "miss")]]),
        (Counter, "tsunagi_hot_window_evictions_total", "rooms dropped from the hot window to keep it within TSUNAGI_HOT_WINDOW_BYTES", &[&[]]),
        (Counter, "tsunagi_hot_window_invalidations_total", "rooms' hot windows dropped because they could no longer be trusted (a hole in the seqs, a feed resync)", &[&[]]),
        (Gauge, "tsunagi_hot_window_rooms", "rooms with a hot window (started or starting)", &[&[]]),
        (Gauge, "tsunagi_hot_window_bytes", "bytes of messages held by the hot window (estimated)", &[&[]]),
        (Counter, "tsunagi_state_cache_reads_total", "room state snapshots (join, state_get) by whether the state cache answered them (hit) or the database did (miss)", &[&[("result", "hit")], &[("result", "miss")]]),
        (Counter, "tsunagi_state_cache_evictions_total", "rooms dropped from the state cache to keep it within TSUNAGI_STATE_CACHE_BYTES", &[&[]]),
        (Counter, "tsunagi_state_cache_invalidations_total", "rooms dropped from the state cache because a write's outcome was not known", &[&[]]),
        (Gauge, "tsunagi_state_cache_rooms", "rooms with a state cache slot (filled or filling)", &[&[]]),
        (Gauge, "tsunagi_state_cache_bytes", "bytes of room state held by the state cache (estimated)", &[&[]]),
        (Counter, "tsunagi_rate_limit_fallbacks_total", "rate-limit checks made in process because Redis was unreachable", &[&[]]),
        (Counter, "tsunagi_rate_limited_total", "requests and events refused rate_limited, by limiter", &[]),
        (Gauge, "tsunagi_sensor_buffer_depth", "sensor readings waiting in memory or being written", &[&[]]),
        (Histogram, "tsunagi_sensor_flush_rows", "readings written per flush", &[&[]]),
        (Histogram, "tsunagi_sensor_flush_seconds", "time of each readings flush", &[&[]]),
        (Counter, "tsunagi_sensor_flush_errors_total", "readings flushes that failed (retried)", &[&[]]),
        (Counter, "tsunagi_sensor_readings_accepted_total", "sensor readings accepted", &[&[]]),
        (Counter, "tsunagi_sensor_readings_refused_total", "sensor readings refused, by reason", &[&[("reason", "buffer_full")]]),
        (Gauge, "tsunagi_sensor_partitions", "PostgreSQL day partitions of readings present", &[]),
        (Counter, "tsunagi_archive_moved_total", "messages moved to cold storage", &[&[]]),
        (Histogram, "tsunagi_archive_pass_seconds", "time of each archive pass", &[&[]]),
        (Gauge, "tsunagi_archive_hot_messages", "messages in the hot table", &[]),
        (Gauge, "tsunagi_archive_cold_messages", "messages in cold storage", &[]),
        (Gauge, "tsunagi_archive_oldest_hot_age_seconds", "age of the oldest hot message (the archive lag)", &[]),
        (Gauge, "tsunagi_jobs", "jobs in the queue by kind and state", &[]),
        (Counter, "tsunagi_job_attempts_total", "job attempts run, by kind", &[]),
        (Counter, "tsunagi_job_failures_total", "job attempts that failed, by kind", &[]),
        (Counter, "tsunagi_webhook_deliveries_total", "webhook delivery attempts by result", &[&[("result", "delivered")], &[("result", "failed")]]),
        (Histogram, "tsunagi_webhook_delivery_seconds", "time of each webhook delivery attempt", &[&[]]),
    ]
};

/// Describes every metric and starts the fixed ones at zero (run once per recorder).
fn describe_all() {
    for (kind, name, help, label_sets) in METRICS {
        let (name, help) = (*name, *help);
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
        for labels in label_sets.iter() {
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, *v))
                .collect();
            match kind {
                Kind::Counter => metrics::counter!(name, labels).increment(0),
                // registered without a value of their own: a gauge's first set is its value
                Kind::Gauge => metrics::gauge!(name, labels).increment(0.0),
                Kind::Histogram => {
                    let _ = metrics::histogram!(name, labels);
                }
            }
        }
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

    #[test]
    fn every_metric_recorded_in_src_is_described() {
        let mut missing = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.ends_with("telemetry.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for (i, _) in text.match_indices("\"tsunagi_") {
                    let name: String = text[i + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    let base = ["_sum", "_count", "_bucket"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .unwrap_or(&name)
                        .to_owned();
                    if !METRICS.iter().any(|(_, n, _, _)| *n == base) && !missing.contains(&base) {
                        missing.push(base);
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "metrics without a description: {missing:?}"
        );
    }

    #[test]
    fn metrics_have_help_and_start_at_zero() {
        let text = Telemetry::detached().render();
        assert!(
            text.contains("# HELP tsunagi_slow_consumer_disconnects_total "),
            "{text}"
        );
        assert!(
            text.contains("tsunagi_slow_consumer_disconnects_total 0"),
            "{text}"
        );
        assert!(
            text.contains("tsunagi_webhook_deliveries_total{result=\"failed\"} 0"),
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
