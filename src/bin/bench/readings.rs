//! `tsunagi-bench readings`: sensor readings (PROTOCOL.md §6.1) against one tsunagi server, two
//! measurements in one run, each in alternating rounds (medians, `rounds.rs`):
//!
//! 1. **ingest**: readings/s written. `--producers` HTTP producers, each on a sensor of its own,
//!    post batches of `--batch` readings (ts increasing by 1 ms) as fast as the answers come back
//!    for `--duration`; a 503 push-back is counted and the batch retried after the answer's
//!    `retry_after_ms`. Then one `?durable=true` write forces the final flush: the rate is the
//!    readings accepted ÷ (the window, the requests still out at its end and that durable write),
//!    so only readings written count. Against it, in the same rounds, the straightforward way:
//!    one `INSERT … ON CONFLICT (sensor, ts) DO UPDATE` per reading in autocommit, from as many
//!    concurrent producers, straight into the same database with sqlx (a pool of 1 connection on
//!    SQLite, where a second writer would only wait for the lock; `--producers` connections on
//!    PostgreSQL). That baseline skips HTTP, JSON and tokens altogether, which favours it.
//! 2. **priority**: `send` → ack latency of `--senders` Socket.IO clients in one room, each paced
//!    at `--rate` messages/s (open loop: a slow ack never delays the next send), without and with
//!    a reading flood (the ingest producers, non-durable, as fast as they can) running at the same
//!    time; rounds alternate quiet and flood. After a flood one durable write drains the buffer,
//!    so the next round starts from an empty one.
//!
//! Each window also records the busy cores of the server (`--pid`), of this process and of the
//! whole machine, from `/proc`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::{Value, json};
use tsunagi::auth::Tokens;
use tsunagi::client::{ClientError, SioClient};
use tsunagi::domain::now_ms;
use tsunagi::store::postgres::sensors::partition_name;
use tsunagi::store::sensors::DAY_MS;

use super::rounds::Rounds;
use super::{ACK_TIMEOUT, START, Window, duration, now_ns, percentile_ms, round};

/// The advisory lock the server takes around partition DDL (`store/postgres/sensors.rs`).
const PARTITION_LOCK: i64 = 0x7473_756e_6167_6970;
/// Readings carry ts from this far in the past onwards (well clear of the 5 minutes in the
/// future the contract refuses, whatever the rate).
const TS_BACK_MS: i64 = 3_600_000;
/// Longest wait for the durable write that drains the buffer.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

#[derive(clap::Args, Debug, Clone)]
pub struct ReadingsArgs {
    /// The server under test.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server's database (its TSUNAGI_DATABASE_URL), which the baseline writes straight to.
    #[arg(long)]
    database_url: String,
    /// HS256 secret of the server, to mint the producers', senders' and admin's tokens.
    #[arg(long, env = "TSUNAGI_JWT_SECRET", hide_env_values = true)]
    token_secret: String,
    /// Rounds of each measurement; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Ingest window, and the priority measurement's window, e.g. 10s or 500ms.
    #[arg(long, default_value = "10s", value_parser = duration)]
    duration: Duration,
    /// Priority: sends (and flood) before the window, not counted.
    #[arg(long, default_value = "2s", value_parser = duration)]
    warmup: Duration,
    /// Concurrent producers (HTTP clients for tsunagi, database connections or tasks for the
    /// baseline), each on a sensor of its own.
    #[arg(long, default_value_t = 20)]
    producers: usize,
    /// Readings per HTTP request (1 to 1000).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Priority: Socket.IO clients sending in the room.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Priority: messages/s per sender.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Priority: content size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// The server's process id (Linux): its busy cores over each window are reported.
    #[arg(long)]
    pid: Option<u32>,
    /// Which measurement(s) to run.
    #[arg(long, value_enum, default_value = "both")]
    only: Only,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    Both,
    Ingest,
    Priority,
}

// ---------------------------------------------------------------------------------------------
// CPU time from /proc (the same reading as `users.rs`)

/// `/proc` counts CPU time in USER_HZ ticks, 100 a second on Linux.
const TICKS_PER_S: f64 = 100.0;

#[derive(Clone, Copy)]
struct CpuTicks {
    machine: Option<u64>,
    bench: Option<u64>,
    server: Option<u64>,
    at: Instant,
}

impl CpuTicks {
    fn now(server: Option<u32>) -> Self {
        CpuTicks {
            machine: machine_busy_ticks(),
            bench: process_ticks("self"),
            server: server.and_then(|p| process_ticks(&p.to_string())),
            at: Instant::now(),
        }
    }

    /// Busy cores on average since `earlier`: (server, bench, machine).
    fn cores_since(&self, earlier: &CpuTicks) -> Cores {
        let secs = self.at.duration_since(earlier.at).as_secs_f64();
        let c = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if secs > 0.0 => b.saturating_sub(a) as f64 / TICKS_PER_S / secs,
            _ => f64::NAN,
        };
        Cores {
            server: c(earlier.server, self.server),
            bench: c(earlier.bench, self.bench),
            machine: c(earlier.machine, self.machine),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Cores {
    server: f64,
    bench: f64,
    machine: f64,
}

impl Cores {
    fn to_json(self) -> Value {
        json!({ "server": round(self.server), "bench": round(self.bench),
            "machine": round(self.machine) })
    }

    fn median<F>(r: &Rounds<'_, F>, of: impl Fn(&F) -> Cores) -> Cores {
        Cores {
            server: r.median(|f| of(f).server),
            bench: r.median(|f| of(f).bench),
            machine: r.median(|f| of(f).machine),
        }
    }
}

impl std::fmt::Display for Cores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} / {:.2} / {:.2}",
            self.server, self.bench, self.machine
        )
    }
}

fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = v.iter().take(8).sum();
    Some(total - v.get(3)? - v.get(4)?)
}

// ---------------------------------------------------------------------------------------------
// The server's own figures, from /metrics at the edges of a period

/// One sample's name and labels.
type Key = (String, BTreeMap<String, String>);

/// Every sample of a `/metrics` text (or the difference of two).
#[derive(Default)]
struct Scrape(BTreeMap<Key, f64>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut m = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((head, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match head.split_once('{') {
                None => (head, BTreeMap::new()),
                Some((name, rest)) => (
                    name,
                    rest.trim_end_matches('}')
                        .split(',')
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=')?;
                            Some((k.to_owned(), v.trim_matches('"').to_owned()))
                        })
                        .collect(),
                ),
            };
            m.insert((name.to_owned(), labels), value);
        }
        Scrape(m)
    }

    /// What was counted since `earlier`.
    fn minus(&self, earlier: &Scrape) -> Scrape {
        Scrape(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - earlier.0.get(k).copied().unwrap_or(0.0)))
                .collect(),
        )
    }

    /// The sum of the samples named `name` whose labels include `label` (if given).
    fn get(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        self.0
            .iter()
            .filter(|((n, l), _)| {
                n == name && label.is_none_or(|(k, v)| l.get(k).is_some_and(|x| x == v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// A histogram's mean in milliseconds (NaN without samples).
    fn mean_ms(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let n = self.get(&format!("{name}_count"), label);
        if n > 0.0 {
            self.get(&format!("{name}_sum"), label) / n * 1e3
        } else {
            f64::NAN
        }
    }

    /// The upper bound (ms) of the histogram bucket that holds quantile `q`: at most that.
    fn quantile_le_ms(&self, name: &str, q: f64) -> f64 {
        let bucket = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter(|((n, _), _)| *n == bucket)
            .filter_map(|((_, l), v)| {
                let le = l.get("le")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last().map_or(0.0, |b| b.1);
        if total <= 0.0 {
            return f64::NAN;
        }
        buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= q * total)
            .map_or(f64::NAN, |(le, _)| le * 1e3)
    }
}

/// What the server says about one period: its sensor writer and its sends' commits.
#[derive(Debug, Clone, Copy, Default)]
struct ServerSide {
    /// Flushes of the write-behind buffer, and the readings they wrote.
    flushes: f64,
    flushed: f64,
    /// Share of the period the sensor writer spent writing.
    writer_busy: f64,
    /// Readings/s while it was writing.
    writer_rows_per_s: f64,
    /// Mean of one `readings_insert` statement (a chunk: 1000 rows on SQLite, 5000 on PostgreSQL).
    insert_ms: f64,
    /// Sends: queued to committed (`tsunagi_send_commit_seconds`), mean and the bucket of p99.
    send_commit_ms: f64,
    send_commit_p99_le_ms: f64,
    /// Mean wait for a connection of the pool that writes (SQLite's one writer, PostgreSQL's
    /// primary), every statement's (readings' and messages').
    writer_acquire_ms: f64,
}

impl ServerSide {
    fn of(d: &Scrape, secs: f64, writer_pool: &str) -> ServerSide {
        let busy = d.get("tsunagi_sensor_flush_seconds_sum", None);
        let flushed = d.get("tsunagi_sensor_flush_rows_sum", None);
        ServerSide {
            flushes: d.get("tsunagi_sensor_flush_seconds_count", None),
            flushed,
            writer_busy: busy / secs,
            writer_rows_per_s: if busy > 0.0 { flushed / busy } else { f64::NAN },
            insert_ms: d.mean_ms(
                "tsunagi_db_query_seconds",
                Some(("statement", "readings_insert")),
            ),
            send_commit_ms: d.mean_ms("tsunagi_send_commit_seconds", None),
            send_commit_p99_le_ms: d.quantile_le_ms("tsunagi_send_commit_seconds", 0.99),
            writer_acquire_ms: d.mean_ms("tsunagi_db_acquire_seconds", Some(("pool", writer_pool))),
        }
    }

    fn to_json(self) -> Value {
        json!({ "flushes": self.flushes, "flushed": self.flushed,
            "writer_busy": round(self.writer_busy),
            "writer_rows_per_s": round(self.writer_rows_per_s),
            "readings_insert_ms": round(self.insert_ms),
            "send_commit_ms": round(self.send_commit_ms),
            "send_commit_p99_le_ms": round(self.send_commit_p99_le_ms),
            "writer_acquire_ms": round(self.writer_acquire_ms) })
    }

    fn median<F>(r: &Rounds<'_, F>, of: impl Fn(&F) -> ServerSide) -> ServerSide {
        ServerSide {
            flushes: r.median(|f| of(f).flushes),
            flushed: r.median(|f| of(f).flushed),
            writer_busy: r.median(|f| of(f).writer_busy),
            writer_rows_per_s: r.median(|f| of(f).writer_rows_per_s),
            insert_ms: r.median(|f| of(f).insert_ms),
            send_commit_ms: r.median(|f| of(f).send_commit_ms),
            send_commit_p99_le_ms: r.median(|f| of(f).send_commit_p99_le_ms),
            writer_acquire_ms: r.median(|f| of(f).writer_acquire_ms),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Setup shared by both measurements

struct Ctx {
    args: ReadingsArgs,
    base: Arc<str>,
    admin: Arc<str>,
    /// One token per producer (`bench-producer-N`, the owner of that producer's sensors).
    producer_tokens: Vec<Arc<str>>,
    /// One HTTP client per producer (one keep-alive connection each), kept across rounds.
    producer_http: Vec<reqwest::Client>,
    /// For setup requests and the durable writes.
    http: reqwest::Client,
    /// The sensor the durable writes go to (the admin's).
    final_sensor: String,
    run_id: String,
    /// The server's pool that writes (`tsunagi_db_acquire_seconds{pool}`).
    writer_pool: &'static str,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client without TLS builds")
}

impl Ctx {
    async fn post(&self, token: &str, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let v = resp.json().await.unwrap_or(Value::Null);
        Ok((status, v))
    }

    async fn scrape(&self) -> anyhow::Result<Scrape> {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("GET /metrics: {}", resp.status());
        }
        Ok(Scrape::parse(&resp.text().await?))
    }

    async fn create_sensor(&self, token: &str, id: &str) -> anyhow::Result<()> {
        let (status, v) = self
            .post(token, "/api/v1/sensors", json!({ "id": id }))
            .await?;
        if status != 201 {
            bail!("POST /api/v1/sensors {id}: {status} {v}");
        }
        Ok(())
    }

    /// One sensor per producer, named `<run>-<tag>-<i>`, each created by its producer.
    async fn sensors(&self, tag: &str) -> anyhow::Result<Vec<String>> {
        let ids: Vec<String> = (0..self.args.producers)
            .map(|i| format!("rb-{}-{tag}-{i}", self.run_id))
            .collect();
        futures::future::try_join_all(
            ids.iter()
                .zip(&self.producer_tokens)
                .map(|(id, t)| self.create_sensor(t, id)),
        )
        .await?;
        Ok(ids)
    }

    /// One reading with `?durable=true`: answers once everything accepted before it is
    /// committed (the buffer writes generations in order). A 503 (the wait ran out, or push-back)
    /// is retried: the reading's ts is fixed, so a retry replaces it. Returns the time to the
    /// 201 and the number of 503s on the way.
    async fn durable_write(&self) -> anyhow::Result<(Duration, u64)> {
        let t0 = Instant::now();
        let mut refused = 0;
        let ts = now_ms();
        let path = format!(
            "/api/v1/sensors/{}/readings?durable=true",
            self.final_sensor
        );
        loop {
            let (status, v) = self
                .post(
                    &self.admin,
                    &path,
                    json!({ "readings": [{ "value": 0.0, "ts": ts }] }),
                )
                .await?;
            match status {
                201 => return Ok((t0.elapsed(), refused)),
                // the buffer is still full (push-back) or the wait ran out: ask again soon
                // rather than after `retry_after_ms` (a flush interval), so the time measured
                // is the buffer's drain and not this client's back-off
                503 if t0.elapsed() < DRAIN_LIMIT => {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => bail!("the durable write: {status} {v}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP producers

#[derive(Default)]
struct ProducerStats {
    accepted: u64,
    requests: u64,
    pushbacks: u64,
    errors: BTreeMap<String, u64>,
    sample: Option<String>,
}

/// Merged over the producers of one run.
#[derive(Debug, Clone, Default)]
struct ProducerTotals {
    accepted: u64,
    requests: u64,
    pushbacks: u64,
    errors: BTreeMap<String, u64>,
}

fn totals(stats: Vec<ProducerStats>) -> ProducerTotals {
    let mut t = ProducerTotals::default();
    for s in stats {
        t.accepted += s.accepted;
        t.requests += s.requests;
        t.pushbacks += s.pushbacks;
        for (code, n) in s.errors {
            *t.errors.entry(code).or_default() += n;
        }
        if let Some(why) = s.sample {
            eprintln!("  a producer's first failure: {why}");
        }
    }
    t
}

/// The body of one request: `batch` readings from `ts` on, 1 ms apart.
fn readings_body(batch: usize, ts: i64) -> String {
    let mut body = String::with_capacity(16 + batch * 40);
    body.push_str("{\"readings\":[");
    for k in 0..batch as i64 {
        if k > 0 {
            body.push(',');
        }
        let t = ts + k;
        let value = 20.0 + (t % 1000) as f64 / 100.0;
        write!(body, "{{\"value\":{value},\"ts\":{t}}}").expect("writing to a String");
    }
    body.push_str("]}");
    body
}

/// Sleeps `d`, or less if `stop` is raised meanwhile.
async fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20).min(end - Instant::now())).await;
    }
}

/// Posts batches to `sensor` until `stop`, one request at a time (closed loop).
async fn produce(
    http: reqwest::Client,
    url: String,
    token: Arc<str>,
    batch: usize,
    stop: Arc<AtomicBool>,
) -> ProducerStats {
    let mut st = ProducerStats::default();
    let mut ts = now_ms() - TS_BACK_MS;
    while !stop.load(Ordering::Relaxed) {
        st.requests += 1;
        let sent = http
            .post(&url)
            .bearer_auth(&*token)
            .header("content-type", "application/json")
            .body(readings_body(batch, ts))
            .send()
            .await;
        let (code, why) = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_header = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|h| h.to_str().ok())
                    .and_then(|s| s.parse::<u64>().ok());
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                match status {
                    202 => {
                        st.accepted += v["accepted"].as_u64().unwrap_or(0);
                        ts += batch as i64;
                        continue;
                    }
                    // push-back: the same batch again after the time the server asks for
                    503 if v["error"]["code"] == "unavailable" => {
                        st.pushbacks += 1;
                        let ms = v["error"]["retry_after_ms"]
                            .as_u64()
                            .or(retry_header.map(|s| s * 1000))
                            .unwrap_or(1000);
                        sleep_unless(&stop, Duration::from_millis(ms)).await;
                        continue;
                    }
                    _ => (status.to_string(), format!("{status} {v}")),
                }
            }
            Err(e) => ("transport".to_owned(), e.to_string()),
        };
        *st.errors.entry(code).or_default() += 1;
        st.sample.get_or_insert(why);
        ts += batch as i64;
        sleep_unless(&stop, Duration::from_millis(100)).await;
    }
    st
}

/// Starts one producer per sensor; raise the flag to stop them.
fn start_producers(
    ctx: &Ctx,
    sensors: &[String],
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<ProducerStats>> {
    sensors
        .iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(produce(
                ctx.producer_http[i].clone(),
                format!("{}/api/v1/sensors/{s}/readings", ctx.base),
                ctx.producer_tokens[i].clone(),
                ctx.args.batch,
                stop.clone(),
            ))
        })
        .collect()
}

async fn join_producers(
    tasks: Vec<tokio::task::JoinHandle<ProducerStats>>,
) -> anyhow::Result<ProducerTotals> {
    let mut stats = Vec::new();
    for t in tasks {
        stats.push(t.await?);
    }
    Ok(totals(stats))
}

// ---------------------------------------------------------------------------------------------
// The baseline: one INSERT per reading, autocommit, straight into the database

enum Baseline {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

const UPSERT_SQLITE: &str = "INSERT INTO readings (sensor, ts, value, tags) VALUES (?, ?, ?, '{}') \
     ON CONFLICT (sensor, ts) DO UPDATE SET value = excluded.value, tags = excluded.tags";
const UPSERT_PG: &str = "INSERT INTO readings (sensor, ts, value, tags) VALUES ($1, $2, $3, '{}') \
     ON CONFLICT (sensor, ts) DO UPDATE SET value = excluded.value, tags = excluded.tags";

impl Baseline {
    async fn connect(url: &str, producers: usize) -> anyhow::Result<Self> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            use sqlx::sqlite::{
                SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
            };
            // the file the server opens (`Config::sqlite_path`), with its settings: WAL,
            // synchronous=FULL, a busy timeout (the server's writer may hold the lock)
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let path = rest.split('?').next().unwrap_or(rest);
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(opts)
                .await
                .with_context(|| format!("opening {path}"))?;
            return Ok(Baseline::Sqlite(pool));
        }
        if url.starts_with("postgres") {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(producers as u32)
                .acquire_timeout(Duration::from_secs(60))
                .connect(url)
                .await
                .context("connecting to PostgreSQL")?;
            // every connection open before the first round
            futures::future::try_join_all(
                (0..producers).map(|_| sqlx::query("SELECT pg_sleep(0.05)").execute(&pool)),
            )
            .await?;
            return Ok(Baseline::Postgres(pool));
        }
        bail!("--database-url must start with sqlite: or postgres")
    }

    fn connections(&self, producers: usize) -> usize {
        match self {
            Baseline::Sqlite(_) => 1,
            Baseline::Postgres(_) => producers,
        }
    }

    /// PostgreSQL: the day partitions from `from` to `to` (ms), made as the server makes them.
    async fn ensure_partitions(&self, from: i64, to: i64) -> anyhow::Result<()> {
        let Baseline::Postgres(pool) = self else {
            return Ok(());
        };
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK)
            .execute(&mut *tx)
            .await?;
        let mut day = from - from.rem_euclid(DAY_MS);
        while day < to {
            // the name and bounds are made here from integers: nothing from outside
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF readings FOR VALUES FROM ({day}) TO ({})",
                partition_name(day),
                day + DAY_MS
            );
            sqlx::query(sqlx::AssertSqlSafe(ddl))
                .execute(&mut *tx)
                .await?;
            day += DAY_MS;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert(&self, sensor: &str, ts: i64, value: f64) -> Result<(), sqlx::Error> {
        match self {
            Baseline::Sqlite(pool) => sqlx::query(UPSERT_SQLITE)
                .bind(sensor)
                .bind(ts)
                .bind(value)
                .execute(pool)
                .await
                .map(|_| ()),
            Baseline::Postgres(pool) => sqlx::query(UPSERT_PG)
                .bind(sensor)
                .bind(ts)
                .bind(value)
                .execute(pool)
                .await
                .map(|_| ()),
        }
    }
}

/// One baseline producer: one reading per statement, each its own transaction, until `stop`.
async fn insert_loop(db: Arc<Baseline>, sensor: String, stop: Arc<AtomicBool>) -> ProducerStats {
    let mut st = ProducerStats::default();
    let mut ts = now_ms() - TS_BACK_MS;
    while !stop.load(Ordering::Relaxed) {
        st.requests += 1;
        let value = 20.0 + (ts % 1000) as f64 / 100.0;
        match db.insert(&sensor, ts, value).await {
            Ok(()) => st.accepted += 1,
            Err(e) => {
                let code = match &e {
                    sqlx::Error::Database(d) => d.code().map_or("database".into(), |c| c.into()),
                    sqlx::Error::PoolTimedOut => "pool_timeout".into(),
                    _ => "sqlx".into(),
                };
                *st.errors.entry(code).or_default() += 1;
                st.sample.get_or_insert(e.to_string());
            }
        }
        ts += 1;
    }
    st
}

// ---------------------------------------------------------------------------------------------
// Measurement 1: ingest

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Tsunagi,
    Baseline,
}

impl Writer {
    fn name(self) -> &'static str {
        match self {
            Writer::Tsunagi => "tsunagi",
            Writer::Baseline => "baseline",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct IngestFigures {
    /// Readings written per second (accepted ÷ elapsed).
    readings_per_s: f64,
    written: u64,
    /// From the start to the last reading committed.
    elapsed_s: f64,
    /// The window and the requests (or statements) still out at its end.
    window_s: f64,
    /// tsunagi: the final durable write (the buffer's last flush).
    final_durable_ms: f64,
    /// tsunagi: 503s the final durable write met before its 201 (the buffer still full).
    final_refused: u64,
    requests: u64,
    pushbacks: u64,
    errors: u64,
    error_codes: BTreeMap<String, u64>,
    cores: Cores,
    /// tsunagi: its sensor writer over the run.
    server: ServerSide,
}

impl IngestFigures {
    fn to_json(&self) -> Value {
        json!({ "readings_per_s": round(self.readings_per_s), "written": self.written,
            "elapsed_s": round(self.elapsed_s), "window_s": round(self.window_s),
            "final_durable_ms": round(self.final_durable_ms),
            "final_refused": self.final_refused, "requests": self.requests,
            "pushbacks": self.pushbacks, "errors": self.errors, "error_codes": self.error_codes,
            "cores": self.cores.to_json(), "server": self.server.to_json() })
    }

    fn median(runs: &[IngestFigures]) -> IngestFigures {
        let r = Rounds(runs);
        IngestFigures {
            readings_per_s: r.median(|f| f.readings_per_s),
            written: r.sum(|f| f.written),
            elapsed_s: r.median(|f| f.elapsed_s),
            window_s: r.median(|f| f.window_s),
            final_durable_ms: r.median(|f| f.final_durable_ms),
            final_refused: r.sum(|f| f.final_refused),
            requests: r.sum(|f| f.requests),
            pushbacks: r.sum(|f| f.pushbacks),
            errors: r.sum(|f| f.errors),
            error_codes: r.sum_codes(|f| &f.error_codes),
            cores: Cores::median(&r, |f| f.cores),
            server: ServerSide::median(&r, |f| f.server),
        }
    }
}

async fn ingest_tsunagi(ctx: &Ctx, tag: &str) -> anyhow::Result<IngestFigures> {
    let sensors = ctx.sensors(tag).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let before = ctx.scrape().await?;
    let cpu0 = CpuTicks::now(ctx.args.pid);
    let t0 = Instant::now();
    let tasks = start_producers(ctx, &sensors, &stop);
    tokio::time::sleep(ctx.args.duration).await;
    stop.store(true, Ordering::Relaxed);
    let t = join_producers(tasks).await?;
    let window = t0.elapsed();
    let (durable, final_refused) = ctx.durable_write().await?;
    let elapsed = t0.elapsed();
    let cores = CpuTicks::now(ctx.args.pid).cores_since(&cpu0);
    let server = ServerSide::of(
        &ctx.scrape().await?.minus(&before),
        elapsed.as_secs_f64(),
        ctx.writer_pool,
    );
    // the durable reading is written too
    let written = t.accepted + 1;
    Ok(IngestFigures {
        readings_per_s: written as f64 / elapsed.as_secs_f64(),
        written,
        elapsed_s: elapsed.as_secs_f64(),
        window_s: window.as_secs_f64(),
        final_durable_ms: durable.as_secs_f64() * 1e3,
        final_refused,
        requests: t.requests + 1,
        pushbacks: t.pushbacks,
        errors: t.errors.values().sum(),
        error_codes: t.errors,
        cores,
        server,
    })
}

async fn ingest_baseline(
    ctx: &Ctx,
    db: &Arc<Baseline>,
    tag: &str,
) -> anyhow::Result<IngestFigures> {
    let sensors = ctx.sensors(tag).await?;
    let now = now_ms();
    db.ensure_partitions(now - TS_BACK_MS, now + DAY_MS).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = CpuTicks::now(ctx.args.pid);
    let t0 = Instant::now();
    let tasks: Vec<_> = sensors
        .into_iter()
        .map(|s| tokio::spawn(insert_loop(db.clone(), s, stop.clone())))
        .collect();
    tokio::time::sleep(ctx.args.duration).await;
    stop.store(true, Ordering::Relaxed);
    let t = join_producers(tasks).await?;
    // each statement is committed when it returns: the last one out ends the run
    let elapsed = t0.elapsed();
    let cores = CpuTicks::now(ctx.args.pid).cores_since(&cpu0);
    Ok(IngestFigures {
        readings_per_s: t.accepted as f64 / elapsed.as_secs_f64(),
        written: t.accepted,
        elapsed_s: elapsed.as_secs_f64(),
        window_s: elapsed.as_secs_f64(),
        final_durable_ms: 0.0,
        final_refused: 0,
        requests: t.requests,
        pushbacks: 0,
        errors: t.errors.values().sum(),
        error_codes: t.errors,
        cores,
        server: ServerSide {
            writer_busy: f64::NAN,
            writer_rows_per_s: f64::NAN,
            insert_ms: f64::NAN,
            send_commit_ms: f64::NAN,
            send_commit_p99_le_ms: f64::NAN,
            writer_acquire_ms: f64::NAN,
            ..ServerSide::default()
        },
    })
}

fn ingest_summary(name: &str, f: &IngestFigures) -> String {
    let mut s = format!(
        "{name:>8}: {:>9.0} readings/s written  ({} in {:.2} s: window {:.2} s + final durable write {:.0} ms; \
         requests {}, 503 push-backs {}, errors {}; cores server/bench/machine {})",
        f.readings_per_s,
        f.written,
        f.elapsed_s,
        f.window_s,
        f.final_durable_ms,
        f.requests,
        f.pushbacks,
        f.errors,
        f.cores
    );
    let v = &f.server;
    if v.flushes > 0.0 {
        s += &format!(
            "; its writer: {:.0} flushes of {:.0} readings on average, busy {:.0} % of the time, \
             {:.0} readings/s while writing, readings_insert {:.1} ms",
            v.flushes,
            v.flushed / v.flushes,
            v.writer_busy * 100.0,
            v.writer_rows_per_s,
            v.insert_ms
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Measurement 2: send ack latency, quiet and under a reading flood

#[derive(Default)]
struct SendStats {
    sent_in_window: u64,
    acked_in_window: u64,
    lat_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

/// One sender, `rate` sends/s from `phase` on, open loop, until the window ends; latency is
/// recorded for the sends made in the window (each waited for, whenever its ack comes).
async fn send_paced(
    client: Arc<SioClient>,
    room: Arc<str>,
    rate: f64,
    phase: Duration,
    w: Window,
    tag: String,
    pad: Arc<str>,
) -> SendStats {
    let mut st = SendStats::default();
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let end = tokio::time::sleep_until((*START + Duration::from_nanos(w.to)).into());
    tokio::pin!(end);
    let mut inflight = FuturesUnordered::new();
    let mut n = 0u64;
    let record = |st: &mut SendStats, sent: u64, r: Result<Value, ClientError>| {
        let code = match r {
            Ok(v) if v["ok"] == json!(true) => {
                if w.has(sent) {
                    st.acked_in_window += 1;
                    st.lat_us
                        .push((now_ns().saturating_sub(sent) / 1000) as u32);
                }
                return;
            }
            Ok(v) => v["error"]["code"].as_str().unwrap_or("bad_ack").to_owned(),
            Err(ClientError::Timeout) => "ack_timeout".into(),
            Err(_) => "closed".into(),
        };
        *st.errors.entry(code).or_default() += 1;
    };
    loop {
        tokio::select! {
            biased;
            _ = &mut end => break,
            Some((sent, r)) = inflight.next(), if !inflight.is_empty() => record(&mut st, sent, r),
            _ = ticker.tick() => {
                let sent = now_ns();
                if w.has(sent) {
                    st.sent_in_window += 1;
                }
                let msg = json!({ "room": &*room, "content": format!("{tag}-{n}|{pad}"),
                    "client_id": format!("{tag}-{n}") });
                n += 1;
                let ack = tokio::time::timeout(ACK_TIMEOUT, client.emit_with_ack("send", &msg));
                inflight.push(async move { (sent, ack.await.unwrap_or(Err(ClientError::Timeout))) });
            }
        }
    }
    while let Some((sent, r)) = inflight.next().await {
        record(&mut st, sent, r);
    }
    st
}

#[derive(Debug, Clone, Default)]
struct PriorityFigures {
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    ack_max_ms: f64,
    sent_in_window: u64,
    acked_in_window: u64,
    errors: u64,
    error_codes: BTreeMap<String, u64>,
    /// The flood: readings accepted per second while it ran (0 when quiet).
    flood_readings_per_s: f64,
    flood_pushbacks: u64,
    /// The durable write that drained the flood's buffer afterwards.
    drain_ms: f64,
    cores: Cores,
    /// The server over the window.
    server: ServerSide,
}

impl PriorityFigures {
    fn to_json(&self) -> Value {
        json!({ "ack_p50_ms": round(self.ack_p50_ms), "ack_p99_ms": round(self.ack_p99_ms),
            "ack_max_ms": round(self.ack_max_ms), "sent_in_window": self.sent_in_window,
            "acked_in_window": self.acked_in_window, "errors": self.errors,
            "error_codes": self.error_codes,
            "flood_readings_per_s": round(self.flood_readings_per_s),
            "flood_pushbacks": self.flood_pushbacks, "drain_ms": round(self.drain_ms),
            "cores": self.cores.to_json(), "server": self.server.to_json() })
    }

    fn median(runs: &[PriorityFigures]) -> PriorityFigures {
        let r = Rounds(runs);
        PriorityFigures {
            ack_p50_ms: r.median(|f| f.ack_p50_ms),
            ack_p99_ms: r.median(|f| f.ack_p99_ms),
            ack_max_ms: r.median(|f| f.ack_max_ms),
            sent_in_window: r.sum(|f| f.sent_in_window),
            acked_in_window: r.sum(|f| f.acked_in_window),
            errors: r.sum(|f| f.errors),
            error_codes: r.sum_codes(|f| &f.error_codes),
            flood_readings_per_s: r.median(|f| f.flood_readings_per_s),
            flood_pushbacks: r.sum(|f| f.flood_pushbacks),
            drain_ms: r.median(|f| f.drain_ms),
            cores: Cores::median(&r, |f| f.cores),
            server: ServerSide::median(&r, |f| f.server),
        }
    }
}

struct Senders {
    clients: Vec<Arc<SioClient>>,
    room: Arc<str>,
}

/// Creates the room (admin) and connects and joins the senders, each with its own token; their
/// deliveries are read and dropped.
async fn senders(ctx: &Ctx, tokens: &Tokens) -> anyhow::Result<Senders> {
    let room = format!("rb-{}", ctx.run_id);
    let (status, v) = ctx
        .post(
            &ctx.admin,
            "/api/v1/rooms",
            json!({ "id": room, "name": room }),
        )
        .await?;
    if status != 201 {
        bail!("POST /api/v1/rooms: {status} {v}");
    }
    let clients = futures::future::try_join_all((0..ctx.args.senders).map(|i| {
        let token = tokens.mint(&format!("bench-sender-{i}"), false, None, 24 * 3600);
        let room = room.clone();
        async move {
            let mut c = SioClient::connect(&ctx.base, Some(&token)).await?;
            let ack = c
                .call("join", json!({ "room": room }), Duration::from_secs(10))
                .await?;
            if ack["ok"] != json!(true) {
                bail!("join {room}: {ack}");
            }
            let mut events =
                std::mem::replace(&mut c.events, tokio::sync::mpsc::unbounded_channel().1);
            tokio::spawn(async move { while events.recv().await.is_some() {} });
            anyhow::Ok(Arc::new(c))
        }
    }))
    .await?;
    Ok(Senders {
        clients,
        room: room.into(),
    })
}

async fn priority_run(
    ctx: &Ctx,
    s: &Senders,
    flood: bool,
    tag: &str,
) -> anyhow::Result<PriorityFigures> {
    let stop = Arc::new(AtomicBool::new(false));
    let flood_start = Instant::now();
    let producers = if flood {
        let sensors = ctx.sensors(tag).await?;
        start_producers(ctx, &sensors, &stop)
    } else {
        Vec::new()
    };
    let from = now_ns() + ctx.args.warmup.as_nanos() as u64;
    let w = Window {
        from,
        to: from + ctx.args.duration.as_nanos() as u64,
    };
    let pad: Arc<str> = "x"
        .repeat(ctx.args.size.saturating_sub(tag.len() + 12))
        .into();
    let period = 1.0 / ctx.args.rate;
    let n = s.clients.len();
    let tasks: Vec<_> = s
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            // spread over the period, so the senders do not all send at the same instant
            let phase = Duration::from_secs_f64(period * i as f64 / n as f64);
            tokio::spawn(send_paced(
                c.clone(),
                s.room.clone(),
                ctx.args.rate,
                phase,
                w,
                format!("{}-{tag}-{i}", ctx.run_id),
                pad.clone(),
            ))
        })
        .collect();
    let at = |t: u64| tokio::time::sleep_until((*START + Duration::from_nanos(t)).into());
    at(w.from).await;
    let cpu0 = CpuTicks::now(ctx.args.pid);
    let before = ctx.scrape().await?;
    at(w.to).await;
    let cores = CpuTicks::now(ctx.args.pid).cores_since(&cpu0);
    let server = ServerSide::of(
        &ctx.scrape().await?.minus(&before),
        ctx.args.duration.as_secs_f64(),
        ctx.writer_pool,
    );
    let mut sends = Vec::new();
    for t in tasks {
        sends.push(t.await?);
    }
    stop.store(true, Ordering::Relaxed);
    let (flood_readings_per_s, flood_pushbacks, drain_ms) = if flood {
        let t = join_producers(producers).await?;
        let ran = flood_start.elapsed().as_secs_f64();
        let (drain, _) = ctx.durable_write().await?;
        if t.errors.values().sum::<u64>() > 0 {
            eprintln!("  the flood's producers failed: {:?}", t.errors);
        }
        (
            t.accepted as f64 / ran,
            t.pushbacks,
            drain.as_secs_f64() * 1e3,
        )
    } else {
        (0.0, 0, 0.0)
    };
    let mut lat: Vec<u32> = sends
        .iter_mut()
        .flat_map(|s| std::mem::take(&mut s.lat_us))
        .collect();
    lat.sort_unstable();
    let mut error_codes = BTreeMap::new();
    for (code, n) in sends.iter().flat_map(|s| &s.errors) {
        *error_codes.entry(code.clone()).or_default() += n;
    }
    Ok(PriorityFigures {
        ack_p50_ms: percentile_ms(&lat, 0.50),
        ack_p99_ms: percentile_ms(&lat, 0.99),
        ack_max_ms: lat.last().map_or(f64::NAN, |&m| f64::from(m) / 1e3),
        sent_in_window: sends.iter().map(|s| s.sent_in_window).sum(),
        acked_in_window: sends.iter().map(|s| s.acked_in_window).sum(),
        errors: error_codes.values().sum(),
        error_codes,
        flood_readings_per_s,
        flood_pushbacks,
        drain_ms,
        cores,
        server,
    })
}

fn priority_summary(name: &str, f: &PriorityFigures) -> String {
    let mut s = format!(
        "{name:>5}: send→ack p50 {:>6.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} sends in the window, {} acked, \
         errors {}; cores server/bench/machine {})",
        f.ack_p50_ms,
        f.ack_p99_ms,
        f.ack_max_ms,
        f.sent_in_window,
        f.acked_in_window,
        f.errors,
        f.cores
    );
    let v = &f.server;
    s += &format!(
        "; server: send commit mean {:.2} ms, p99 ≤ {:.0} ms, writer pool acquire mean {:.2} ms",
        v.send_commit_ms, v.send_commit_p99_le_ms, v.writer_acquire_ms
    );
    if f.flood_readings_per_s > 0.0 {
        s += &format!(
            "; flood {:.0} readings/s accepted, {} push-backs, drained in {:.0} ms; \
             sensor writer busy {:.0} %, readings_insert {:.1} ms",
            f.flood_readings_per_s,
            f.flood_pushbacks,
            f.drain_ms,
            v.writer_busy * 100.0,
            v.insert_ms
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------

pub async fn main(args: ReadingsArgs) -> anyhow::Result<()> {
    if args.producers == 0 || args.senders == 0 || args.rounds == 0 {
        bail!("--producers, --senders and --rounds must be at least 1");
    }
    if !(1..=1000).contains(&args.batch) {
        bail!("--batch must be 1 to 1000 (PROTOCOL.md §6.1)");
    }
    if args.rate <= 0.0 {
        bail!("--rate must be above 0");
    }
    let tokens = Tokens::new(args.token_secret.as_bytes());
    let run_id = format!("{:08x}", rand::random::<u32>());
    let ctx = Ctx {
        base: args.url.trim_end_matches('/').into(),
        admin: tokens.mint("bench-admin", true, None, 24 * 3600).into(),
        producer_tokens: (0..args.producers)
            .map(|i| {
                tokens
                    .mint(&format!("bench-producer-{i}"), false, None, 24 * 3600)
                    .into()
            })
            .collect(),
        producer_http: (0..args.producers).map(|_| http_client()).collect(),
        http: http_client(),
        final_sensor: format!("rb-{run_id}-final"),
        run_id,
        writer_pool: if args.database_url.starts_with("sqlite:") {
            "sqlite_writer"
        } else {
            "primary"
        },
        args,
    };
    let args = &ctx.args;
    ctx.create_sensor(&ctx.admin, &ctx.final_sensor)
        .await
        .context("setting up")?;
    let db = Arc::new(Baseline::connect(&args.database_url, args.producers).await?);
    let kind = match *db {
        Baseline::Sqlite(_) => "sqlite",
        Baseline::Postgres(_) => "postgres",
    };
    let mut out = json!({ "kind": "readings_summary", "db": kind, "rounds": args.rounds,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "settings": { "producers": args.producers, "batch": args.batch,
            "baseline_connections": db.connections(args.producers), "senders": args.senders,
            "rate_per_sender": args.rate, "size": args.size,
            "duration_s": args.duration.as_secs_f64(), "warmup_s": args.warmup.as_secs_f64() } });
    let mut failed = Vec::new();

    if args.only != Only::Priority {
        eprintln!(
            "ingest on {kind}: {} producers, batches of {} over HTTP against one INSERT per reading \
             ({} connection(s)), window {:?}, {} round(s)",
            args.producers,
            args.batch,
            db.connections(args.producers),
            args.duration,
            args.rounds
        );
        let mut runs: BTreeMap<&str, Vec<IngestFigures>> = BTreeMap::new();
        for r in 0..args.rounds {
            // each round starts with the other one, so neither always runs first
            let order = if r % 2 == 0 {
                [Writer::Tsunagi, Writer::Baseline]
            } else {
                [Writer::Baseline, Writer::Tsunagi]
            };
            for w in order {
                let tag = format!("i{}{}", &w.name()[..1], r + 1);
                let f = match w {
                    Writer::Tsunagi => ingest_tsunagi(&ctx, &tag).await,
                    Writer::Baseline => ingest_baseline(&ctx, &db, &tag).await,
                }
                .with_context(|| format!("ingest, {}, round {}", w.name(), r + 1))?;
                println!(
                    "{}",
                    json!({ "kind": "readings_ingest_run", "db": kind, "writer": w.name(),
                        "round": r + 1, "figures": f.to_json() })
                );
                eprintln!("round {} {}", r + 1, ingest_summary(w.name(), &f));
                runs.entry(w.name()).or_default().push(f);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let t = IngestFigures::median(&runs["tsunagi"]);
        let b = IngestFigures::median(&runs["baseline"]);
        let ratio = t.readings_per_s / b.readings_per_s;
        eprintln!("\ningest, medians of {} round(s):", args.rounds);
        eprintln!("{}", ingest_summary("tsunagi", &t));
        eprintln!("{}", ingest_summary("baseline", &b));
        eprintln!("tsunagi / baseline: ×{ratio:.2} readings/s written\n");
        for (name, f) in [("tsunagi", &t), ("baseline", &b)] {
            if f.errors > 0 {
                failed.push(format!(
                    "ingest {name}: {} failed requests: {:?}",
                    f.errors, f.error_codes
                ));
            }
        }
        out["ingest"] = json!({ "tsunagi": t.to_json(), "baseline": b.to_json(),
            "ratio_readings_per_s": round(ratio) });
    }

    if args.only != Only::Ingest {
        let s = senders(&ctx, &tokens)
            .await
            .context("setting up the senders")?;
        eprintln!(
            "priority on {kind}: {} senders at {}/s each in room {}, quiet against a flood of {} \
             producers × {} readings, warmup {:?}, window {:?}, {} round(s)",
            args.senders,
            args.rate,
            s.room,
            args.producers,
            args.batch,
            args.warmup,
            args.duration,
            args.rounds
        );
        let mut runs: BTreeMap<&str, Vec<PriorityFigures>> = BTreeMap::new();
        for r in 0..args.rounds {
            let order = if r % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for flood in order {
                let name = if flood { "flood" } else { "quiet" };
                let tag = format!("p{}{}", &name[..1], r + 1);
                let f = priority_run(&ctx, &s, flood, &tag)
                    .await
                    .with_context(|| format!("priority, {name}, round {}", r + 1))?;
                println!(
                    "{}",
                    json!({ "kind": "readings_priority_run", "db": kind, "load": name,
                        "round": r + 1, "figures": f.to_json() })
                );
                eprintln!("round {} {}", r + 1, priority_summary(name, &f));
                runs.entry(name).or_default().push(f);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        for c in &s.clients {
            c.close();
        }
        let q = PriorityFigures::median(&runs["quiet"]);
        let f = PriorityFigures::median(&runs["flood"]);
        let (r50, r99) = (f.ack_p50_ms / q.ack_p50_ms, f.ack_p99_ms / q.ack_p99_ms);
        eprintln!("\npriority, medians of {} round(s):", args.rounds);
        eprintln!("{}", priority_summary("quiet", &q));
        eprintln!("{}", priority_summary("flood", &f));
        eprintln!("flood / quiet: send→ack p50 ×{r50:.2}, p99 ×{r99:.2}\n");
        for (name, x) in [("quiet", &q), ("flood", &f)] {
            if x.errors > 0 {
                failed.push(format!(
                    "priority {name}: {} sends failed: {:?}",
                    x.errors, x.error_codes
                ));
            }
            if x.acked_in_window < x.sent_in_window {
                failed.push(format!(
                    "priority {name}: {} of {} sends in the windows were not acked",
                    x.sent_in_window - x.acked_in_window,
                    x.sent_in_window
                ));
            }
        }
        out["priority"] = json!({ "quiet": q.to_json(), "flood": f.to_json(),
            "ratio_flood_to_quiet": { "ack_p50_ms": round(r50), "ack_p99_ms": round(r99) } });
    }

    for c in &failed {
        eprintln!("CHECK FAILED: {c}");
    }
    out["checks_failed"] = json!(failed);
    println!("{out}");
    if !failed.is_empty() {
        bail!("{} check(s) failed (CHECK FAILED above)", failed.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_valid_json_with_increasing_ts() {
        let v: Value = serde_json::from_str(&readings_body(3, 1_000)).unwrap();
        let items = v["readings"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        let ts: Vec<i64> = items.iter().map(|r| r["ts"].as_i64().unwrap()).collect();
        assert_eq!(ts, [1_000, 1_001, 1_002]);
        assert!(
            items
                .iter()
                .all(|r| r["value"].is_f64() || r["value"].is_i64())
        );
    }

    #[test]
    fn server_figures_come_from_metric_differences() {
        let before = Scrape::parse(
            "# TYPE tsunagi_send_commit_seconds histogram\n\
             tsunagi_send_commit_seconds_bucket{le=\"0.005\"} 10\n\
             tsunagi_send_commit_seconds_bucket{le=\"0.05\"} 10\n\
             tsunagi_send_commit_seconds_bucket{le=\"+Inf\"} 10\n\
             tsunagi_send_commit_seconds_sum 0.01\n\
             tsunagi_send_commit_seconds_count 10\n",
        );
        let after = Scrape::parse(
            "tsunagi_send_commit_seconds_bucket{le=\"0.005\"} 108\n\
             tsunagi_send_commit_seconds_bucket{le=\"0.05\"} 110\n\
             tsunagi_send_commit_seconds_bucket{le=\"+Inf\"} 110\n\
             tsunagi_send_commit_seconds_sum 0.31\n\
             tsunagi_send_commit_seconds_count 110\n\
             tsunagi_db_acquire_seconds_sum{pool=\"primary\"} 2\n\
             tsunagi_db_acquire_seconds_count{pool=\"primary\"} 4\n\
             tsunagi_db_acquire_seconds_sum{pool=\"replica\"} 9\n\
             tsunagi_db_acquire_seconds_count{pool=\"replica\"} 1\n",
        );
        let d = after.minus(&before);
        assert!((d.mean_ms("tsunagi_send_commit_seconds", None) - 3.0).abs() < 1e-9);
        // 98 of 100 within 5 ms: p50 in the first bucket, p99 in the second
        assert_eq!(d.quantile_le_ms("tsunagi_send_commit_seconds", 0.5), 5.0);
        assert_eq!(d.quantile_le_ms("tsunagi_send_commit_seconds", 0.99), 50.0);
        assert_eq!(
            d.mean_ms("tsunagi_db_acquire_seconds", Some(("pool", "primary"))),
            500.0
        );
        assert!(d.mean_ms("tsunagi_sensor_flush_seconds", None).is_nan());
    }
}
