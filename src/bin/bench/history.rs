//! `tsunagi-bench history`: the latency of a hot room's `join` (its 50-message history) and of
//! a `sync` of its recent history, against several servers side by side, alternating per round:
//! typically tsunagi with its hot window, the same binary with `TSUNAGI_HOT_WINDOW_MESSAGES=0`
//! (every read from the database), and the Node peer (`bench/peer`, history in memory).
//!
//! Per target: a room with `--messages` messages (created and filled once), then `--readers`
//! sockets in a closed loop of `join` + `leave` for `--duration`, then the same of `sync` from
//! `--sync-back` messages before the end. Every answer is checked (the newest 50, in seq order,
//! ending at the room's last seq; the sync's messages exactly those after its `since_seq`), and for
//! tsunagi the history statements counted by `/metrics` during each phase are reported per read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tsunagi::auth::Tokens;
use tsunagi::client::SioClient;

use super::rounds::Rounds;
use super::{duration, percentile_ms, round};

const ACK: Duration = Duration::from_secs(30);
/// What a join returns (PROTOCOL.md §3).
const JOIN_HISTORY: i64 = 50;
/// Statements that read message history (hot or archived).
const HISTORY_STATEMENTS: [&str; 4] = [
    "history_backward",
    "history_forward",
    "archive_history",
    "room_archive_mark",
];

#[derive(clap::Args, Debug, Clone)]
pub struct HistoryArgs {
    /// Targets as NAME=URL (repeat): e.g. hot=http://127.0.0.1:8080 cold=http://127.0.0.1:8081.
    /// A target named `peer` is the Node peer (no room creation, no metrics).
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// HS256 secret of the tsunagi targets (the peer reads tokens without checking them).
    #[arg(long, env = "TSUNAGI_JWT_SECRET", hide_env_values = true)]
    token_secret: String,
    /// Messages in the room before reading.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Sockets reading at once, each in a closed loop.
    #[arg(long, default_value_t = 4)]
    readers: usize,
    /// A sync starts this many messages before the room's end.
    #[arg(long, default_value_t = 20)]
    sync_back: i64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Window of each phase (join, then sync) per round and target.
    #[arg(long, default_value = "5s", value_parser = duration)]
    duration: Duration,
}

#[derive(Debug, Clone, Default)]
struct Phase {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// History statements the server ran per read (NaN: not known, the peer).
    statements_per_read: f64,
    errors: u64,
    wrong: u64,
}

impl Phase {
    fn to_json(&self) -> Value {
        json!({ "per_s": round(self.per_s), "p50_ms": round(self.p50_ms), "p99_ms": round(self.p99_ms),
            "history_statements_per_read": if self.statements_per_read.is_nan() { Value::Null } else { json!(round(self.statements_per_read)) },
            "errors": self.errors, "wrong_answers": self.wrong })
    }

    fn median(runs: &[Phase]) -> Phase {
        let r = Rounds(runs);
        Phase {
            per_s: r.median(|f| f.per_s),
            p50_ms: r.median(|f| f.p50_ms),
            p99_ms: r.median(|f| f.p99_ms),
            statements_per_read: r.median(|f| f.statements_per_read),
            errors: r.sum(|f| f.errors),
            wrong: r.sum(|f| f.wrong),
        }
    }
}

struct Target {
    name: String,
    url: String,
    room: String,
    last_seq: i64,
}

/// How many history statements the target has run (None for the peer, which has no metrics:
/// its HTTP server leaves any path but Socket.IO's unanswered, so it is not asked).
async fn history_statements(http: &reqwest::Client, t: &Target) -> Option<f64> {
    if t.name == "peer" {
        return None;
    }
    let text = http
        .get(format!("{}/metrics", t.url))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut sum = None;
    for line in text.lines() {
        for s in HISTORY_STATEMENTS {
            let head = format!("tsunagi_db_query_seconds_count{{statement=\"{s}\"}} ");
            if let Some(v) = line.strip_prefix(&head).and_then(|v| v.parse::<f64>().ok()) {
                *sum.get_or_insert(0.0) += v;
            }
        }
    }
    Some(sum.unwrap_or(0.0))
}

/// Creates (tsunagi) and fills the target's room; returns its last seq.
async fn prepare(
    http: &reqwest::Client,
    t: &Target,
    tokens: &Tokens,
    messages: usize,
) -> anyhow::Result<i64> {
    if t.name != "peer" {
        let admin = tokens.mint("bench-admin", true, None, 24 * 3600);
        let r = http
            .post(format!("{}/api/v1/rooms", t.url))
            .bearer_auth(admin)
            .json(&json!({ "id": t.room }))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("creating room {}: {}", t.room, r.status());
        }
    }
    let token = tokens.mint("bench-history-sender", false, None, 24 * 3600);
    let sender = SioClient::connect(&t.url, Some(&token)).await?;
    let mut last = 0;
    for i in 0..messages {
        let a = sender
            .call(
                "send",
                json!({ "room": t.room, "content": format!("history bench {i}") }),
                ACK,
            )
            .await?;
        last = a["message"]["seq"].as_i64().context("send not acked")?;
    }
    sender.close();
    Ok(last)
}

/// The seqs of `list` are `from..=to`, in order.
fn seqs_are(list: &Value, from: i64, to: i64) -> bool {
    let Some(items) = list.as_array() else {
        return false;
    };
    items.len() as i64 == (to - from + 1).max(0)
        && items
            .iter()
            .zip(from..)
            .all(|(m, s)| m["seq"].as_i64() == Some(s))
}

/// One phase: `readers` sockets reading in a closed loop for `window`.
async fn phase(
    http: &reqwest::Client,
    t: &Target,
    tokens: &Tokens,
    args: &HistoryArgs,
    sync: bool,
) -> anyhow::Result<Phase> {
    let mut clients = Vec::new();
    for i in 0..args.readers {
        let token = tokens.mint(&format!("bench-history-reader-{i}"), false, None, 24 * 3600);
        clients.push(Arc::new(SioClient::connect(&t.url, Some(&token)).await?));
    }
    let before = history_statements(http, t).await;
    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let runs = clients.iter().map(|c| {
        let c = c.clone();
        let (room, last) = (t.room.clone(), t.last_seq);
        let since = (last - args.sync_back).max(0);
        async move {
            let (mut lat_us, mut errors, mut wrong) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let (event, body) = if sync {
                    ("sync", json!({ "room": room, "since_seq": since }))
                } else {
                    ("join", json!({ "room": room }))
                };
                let r = c.call(event, body, ACK).await;
                lat_us.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                match r {
                    Ok(v) if v["ok"] == true => {
                        let right = if sync {
                            seqs_are(&v["messages"], since + 1, last)
                        } else {
                            v["last_seq"].as_i64() == Some(last)
                                && seqs_are(&v["history"], (last - JOIN_HISTORY + 1).max(1), last)
                        };
                        wrong += u64::from(!right);
                    }
                    _ => errors += 1,
                }
                if !sync && c.call("leave", json!({ "room": room }), ACK).await.is_err() {
                    errors += 1;
                }
            }
            (lat_us, errors, wrong)
        }
    });
    let results = futures::future::join_all(runs).await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = history_statements(http, t).await;
    for c in &clients {
        c.close();
    }
    let mut lat: Vec<u32> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    lat.sort_unstable();
    let reads = lat.len() as f64;
    Ok(Phase {
        per_s: reads / elapsed,
        p50_ms: percentile_ms(&lat, 0.50),
        p99_ms: percentile_ms(&lat, 0.99),
        statements_per_read: match (before, after) {
            (Some(b), Some(a)) if reads > 0.0 => (a - b) / reads,
            _ => f64::NAN,
        },
        errors: results.iter().map(|r| r.1).sum(),
        wrong: results.iter().map(|r| r.2).sum(),
    })
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let tokens = Tokens::new(args.token_secret.as_bytes());
    // a request that is never answered must not stall the run
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let mut targets = Vec::new();
    for spec in &args.targets {
        let (name, url) = spec.split_once('=').context("--target is NAME=URL")?;
        let mut t = Target {
            name: name.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            room: format!("hist-{tag}-{name}"),
            last_seq: 0,
        };
        t.last_seq = prepare(&http, &t, &tokens, args.messages)
            .await
            .with_context(|| format!("{name} at {url}"))?;
        targets.push(t);
    }
    eprintln!(
        "{} messages per room, {} readers, sync from {} before the end, {:?} per phase, {} round(s)",
        args.messages, args.readers, args.sync_back, args.duration, args.rounds
    );
    let mut joins: Vec<Vec<Phase>> = vec![Vec::new(); targets.len()];
    let mut syncs: Vec<Vec<Phase>> = vec![Vec::new(); targets.len()];
    for round_no in 1..=args.rounds {
        // each round in another order, so no target always runs first
        let mut order: Vec<usize> = (0..targets.len()).collect();
        order.rotate_left((round_no - 1) % targets.len());
        for i in order {
            let t = &targets[i];
            let j = phase(&http, t, &tokens, &args, false).await?;
            let s = phase(&http, t, &tokens, &args, true).await?;
            println!(
                "{}",
                json!({ "kind": "run", "target": t.name, "round": round_no, "join": j.to_json(), "sync": s.to_json() })
            );
            eprintln!("round {round_no} {:>8}: {}", t.name, line(&j, &s));
            joins[i].push(j);
            syncs[i].push(s);
        }
    }
    eprintln!("\nmedians of {} round(s):", args.rounds);
    let mut out = json!({ "kind": "summary", "rounds": args.rounds, "settings": { "messages": args.messages,
        "readers": args.readers, "sync_back": args.sync_back, "duration_s": args.duration.as_secs_f64() } });
    let mut failed = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let (j, s) = (Phase::median(&joins[i]), Phase::median(&syncs[i]));
        eprintln!("{:>8}: {}", t.name, line(&j, &s));
        out[&t.name] = json!({ "join": j.to_json(), "sync": s.to_json() });
        if j.errors + j.wrong + s.errors + s.wrong > 0 {
            failed.push(t.name.clone());
        }
    }
    println!("{out}");
    if !failed.is_empty() {
        bail!(
            "CHECK FAILED: errors or wrong answers on {}",
            failed.join(", ")
        );
    }
    Ok(())
}

fn line(j: &Phase, s: &Phase) -> String {
    format!(
        "join {:>7.0}/s p50 {:>6.3} ms p99 {:>6.3} ms ({:.2} history statements/read) | \
         sync {:>7.0}/s p50 {:>6.3} ms p99 {:>6.3} ms ({:.2}) | errors {} wrong {}",
        j.per_s,
        j.p50_ms,
        j.p99_ms,
        j.statements_per_read,
        s.per_s,
        s.p50_ms,
        s.p99_ms,
        s.statements_per_read,
        j.errors + s.errors,
        j.wrong + s.wrong
    )
}
