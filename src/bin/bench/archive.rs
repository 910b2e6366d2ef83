//! `tsunagi-bench archive`: what archiving (PROTOCOL.md §6.3) costs the senders. One run:
//!
//! 1. **fill**: `--messages` messages (default a million) spread over `--rooms` rooms, appended
//!    straight through the store (batches of 1000, each with a client_id) into the server's
//!    database; they are the history the archiver will move.
//! 2. `--senders` Socket.IO clients in a room of their own send in a closed loop (`--in-flight`
//!    unacked each, so the server runs as fast as it can), and three windows are measured: quiet
//!    (`--duration`), **archiving** (from `POST /api/v1/admin/archive { "older_than": "0s" }`
//!    until the job is `done`: every message moved, the million and the senders' own), and quiet
//!    again. Each window: acked sends/s and send → ack p50 / p99 / max, and the server's cores.
//!
//! A window with failed sends, or a pass that does not end `done` with nothing left hot, fails
//! the run (exit 1).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::{Value, json};
use tsunagi::auth::Tokens;
use tsunagi::client::{ClientError, SioClient};
use tsunagi::domain::RoomId;
use tsunagi::store::{NewMessage, NewRoom};

use super::{ACK_TIMEOUT, duration, now_ns, percentile_ms, round};

#[derive(clap::Args, Debug, Clone)]
pub struct ArchiveArgs {
    /// The server under test (started with TSUNAGI_ARCHIVE_AFTER=0: only this pass moves).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server's database (its TSUNAGI_DATABASE_URL), filled straight through the store.
    #[arg(long)]
    database_url: String,
    /// HS256 secret of the server, to mint the senders' and the admin's tokens.
    #[arg(long, env = "TSUNAGI_JWT_SECRET", hide_env_values = true)]
    token_secret: String,
    /// The server's pid, for its CPU time per window.
    #[arg(long)]
    pid: Option<u32>,
    /// Messages to archive.
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    /// Rooms they are spread over.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    #[arg(long, default_value_t = 10)]
    senders: usize,
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Each quiet window.
    #[arg(long, default_value = "10s", value_parser = duration)]
    duration: Duration,
}

#[derive(Default)]
pub(super) struct Tally {
    pub(super) acked: u64,
    pub(super) lat_us: Vec<u32>,
    pub(super) errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default)]
struct WindowFigures {
    name: &'static str,
    secs: f64,
    sends_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    error_codes: BTreeMap<String, u64>,
    server_cores: f64,
}

impl WindowFigures {
    fn to_json(&self) -> Value {
        json!({ "window": self.name, "secs": round(self.secs), "sends_per_s": round(self.sends_per_s),
            "ack_p50_ms": round(self.p50_ms), "ack_p99_ms": round(self.p99_ms),
            "ack_max_ms": round(self.max_ms), "errors": self.errors, "error_codes": self.error_codes,
            "server_cores": round(self.server_cores) })
    }
}

/// The server's CPU time so far (user + system), in seconds.
fn cpu_secs(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return f64::NAN };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

async fn fill(args: &ArchiveArgs, run: &str) -> anyhow::Result<()> {
    let env = HashMap::from([
        ("TSUNAGI_DATABASE_URL".to_owned(), args.database_url.clone()),
        ("TSUNAGI_JWT_SECRET".to_owned(), args.token_secret.clone()),
    ]);
    let config = tsunagi::config::Config::from_map(&env)?;
    let telemetry = tsunagi::telemetry::Telemetry::new(0);
    let (store, _) = tsunagi::store::build(&config, &telemetry).await?;
    let started = Instant::now();
    let rooms: Vec<RoomId> = (0..args.rooms)
        .map(|r| RoomId::parse(&format!("ar-{run}-{r}")).context("room id"))
        .collect::<anyhow::Result<_>>()?;
    for id in &rooms {
        store
            .create_room(NewRoom {
                id: id.clone(),
                name: id.as_str().to_owned(),
                private: false,
                owner_id: "bench".into(),
                metadata: None,
            })
            .await?;
    }
    let pad = "x".repeat(80);
    for start in (0..args.messages).step_by(1000) {
        let batch: Vec<NewMessage> = (start..(start + 1000).min(args.messages))
            .map(|i| NewMessage {
                room: rooms[i % rooms.len()].clone(),
                user_id: format!("writer-{}", i % 50),
                content: format!("{i} {pad}"),
                client_id: Some(format!("f{i}")),
            })
            .collect();
        store.append(&batch).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "filled {} messages in {} rooms in {secs:.1} s ({:.0}/s)",
        args.messages,
        args.rooms,
        args.messages as f64 / secs
    );
    store.close().await;
    Ok(())
}

/// One sender: `in_flight` sends outstanding until `stop`; each ack's latency goes to the tally
/// of the window it was sent in (`window` is read at send time).
pub(super) async fn send_loop(
    client: Arc<SioClient>,
    room: Arc<str>,
    in_flight: usize,
    tag: String,
    window: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<Tally> {
    let mut tallies: Vec<Tally> = (0..4).map(|_| Tally::default()).collect();
    let mut outstanding = FuturesUnordered::new();
    let mut n = 0u64;
    loop {
        while outstanding.len() < in_flight && !stop.load(Ordering::Relaxed) {
            let sent = now_ns();
            let w = window.load(Ordering::Relaxed);
            let msg = json!({ "room": &*room, "content": format!("{tag}-{n}"), "client_id": format!("{tag}-{n}") });
            n += 1;
            let ack = tokio::time::timeout(ACK_TIMEOUT, client.emit_with_ack("send", &msg));
            outstanding
                .push(async move { (w, sent, ack.await.unwrap_or(Err(ClientError::Timeout))) });
        }
        let Some((w, sent, r)) = outstanding.next().await else {
            break;
        };
        let t = &mut tallies[w];
        match r {
            Ok(v) if v["ok"] == json!(true) => {
                t.acked += 1;
                t.lat_us.push((now_ns().saturating_sub(sent) / 1000) as u32);
            }
            Ok(v) => {
                *t.errors
                    .entry(v["error"]["code"].as_str().unwrap_or("bad_ack").to_owned())
                    .or_default() += 1
            }
            Err(_) => *t.errors.entry("no_ack".into()).or_default() += 1,
        }
    }
    tallies
}

pub(super) struct Http {
    pub(super) client: reqwest::Client,
    pub(super) base: String,
    pub(super) admin: String,
}

impl Http {
    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }
}

pub async fn run(args: ArchiveArgs) -> anyhow::Result<()> {
    let run_id = format!("{:x}", now_ns() % 0xffff_ffff);
    fill(&args, &run_id).await?;
    let tokens = Tokens::new(args.token_secret.as_bytes());
    let http = Http {
        client: reqwest::Client::new(),
        base: args.url.trim_end_matches('/').to_owned(),
        admin: tokens.mint("bench-admin", true, None, 24 * 3600),
    };
    let room = format!("ar-{run_id}-live");
    let (status, v) = http
        .call(
            reqwest::Method::POST,
            "/api/v1/rooms",
            Some(json!({ "id": room })),
        )
        .await?;
    if status != 201 {
        bail!("POST /api/v1/rooms: {status} {v}");
    }
    let clients = futures::future::try_join_all((0..args.senders).map(|i| {
        let token = tokens.mint(&format!("bench-sender-{i}"), false, None, 24 * 3600);
        let base = http.base.clone();
        let room = room.clone();
        async move {
            let mut c = SioClient::connect(&base, Some(&token)).await?;
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

    // window 0: warm-up (not reported); 1: quiet; 2: archiving; 3: quiet again
    let window = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let room: Arc<str> = room.into();
    let loops: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(send_loop(
                c.clone(),
                room.clone(),
                args.in_flight,
                format!("{run_id}-{i}"),
                window.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // (seconds, server cpu seconds) of each reported window
    let mut spans: Vec<(f64, f64)> = Vec::new();
    let timed = |span: Instant, cpu: f64| (span.elapsed().as_secs_f64(), cpu_secs(args.pid) - cpu);
    window.store(1, Ordering::Relaxed);
    let (t, c) = (Instant::now(), cpu_secs(args.pid));
    tokio::time::sleep(args.duration).await;
    spans.push(timed(t, c));

    window.store(2, Ordering::Relaxed);
    let (t, c) = (Instant::now(), cpu_secs(args.pid));
    let (status, job) = http
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/archive",
            Some(json!({ "older_than": "0s" })),
        )
        .await?;
    if status != 202 {
        bail!("POST /api/v1/admin/archive: {status} {job}");
    }
    let id = job["id"].as_str().context("JOB id")?.to_owned();
    let state = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, listed) = http
            .call(
                reqwest::Method::GET,
                "/api/v1/admin/jobs?kind=archive&limit=10",
                None,
            )
            .await?;
        let mine = listed["items"]
            .as_array()
            .and_then(|a| a.iter().find(|j| j["id"] == json!(id)).cloned());
        match mine.as_ref().and_then(|j| j["state"].as_str()) {
            Some("done") => break "done".to_owned(),
            Some("dead") => break format!("dead: {}", mine.unwrap_or_default()["last_error"]),
            _ => {}
        }
    };
    spans.push(timed(t, c));
    let pass_secs = spans[1].0;

    window.store(3, Ordering::Relaxed);
    let (t, c) = (Instant::now(), cpu_secs(args.pid));
    tokio::time::sleep(args.duration).await;
    spans.push(timed(t, c));
    stop.store(true, Ordering::Relaxed);

    let mut tallies: Vec<Tally> = (0..4).map(|_| Tally::default()).collect();
    for l in loops {
        for (w, t) in l.await?.into_iter().enumerate() {
            tallies[w].acked += t.acked;
            tallies[w].lat_us.extend(t.lat_us);
            for (k, v) in t.errors {
                *tallies[w].errors.entry(k).or_default() += v;
            }
        }
    }
    let (_, stats) = http
        .call(reqwest::Method::GET, "/api/v1/admin/stats", None)
        .await?;
    let names = ["warmup", "quiet", "archiving", "quiet_after"];
    let mut figures = Vec::new();
    for w in 1..4 {
        let t = &mut tallies[w];
        t.lat_us.sort_unstable();
        let (secs, cpu) = spans[w - 1];
        figures.push(WindowFigures {
            name: names[w],
            secs,
            sends_per_s: t.acked as f64 / secs,
            p50_ms: percentile_ms(&t.lat_us, 0.5),
            p99_ms: percentile_ms(&t.lat_us, 0.99),
            max_ms: t.lat_us.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
            errors: t.errors.values().sum(),
            error_codes: t.errors.clone(),
            server_cores: cpu / secs,
        });
    }
    let moved = stats["messages"]["cold"].as_i64().unwrap_or(0);
    for f in &figures {
        eprintln!(
            "{:12} {:6.1} s  {:7.0} sends/s acked  ack p50 {:6.2} ms  p99 {:7.2} ms  max {:7.2} ms  errors {} {:?}  server cores {:.2}",
            f.name,
            f.secs,
            f.sends_per_s,
            f.p50_ms,
            f.p99_ms,
            f.max_ms,
            f.errors,
            f.error_codes,
            f.server_cores
        );
    }
    eprintln!(
        "archive pass: {state}, {moved} messages in cold storage after {pass_secs:.1} s ({:.0} moved/s); hot left: {}",
        moved as f64 / pass_secs,
        stats["messages"]["hot"]
    );
    let quiet = (figures[0].sends_per_s + figures[2].sends_per_s) / 2.0;
    println!(
        "{}",
        json!({ "archive_summary": true, "messages": args.messages, "rooms": args.rooms,
            "senders": args.senders, "in_flight": args.in_flight, "pass_state": state,
            "pass_secs": round(pass_secs), "cold_after": moved, "moved_per_s": round(moved as f64 / pass_secs),
            "hot_after": stats["messages"]["hot"],
            "windows": figures.iter().map(WindowFigures::to_json).collect::<Vec<_>>(),
            "archiving_vs_quiet_sends": round(figures[1].sends_per_s / quiet) })
    );
    let errors: u64 = figures.iter().map(|f| f.errors).sum();
    if state != "done" || errors > 0 || moved < args.messages as i64 {
        bail!(
            "CHECK FAILED: pass {state}, {errors} failed sends, {moved} archived of at least {}",
            args.messages
        );
    }
    Ok(())
}
