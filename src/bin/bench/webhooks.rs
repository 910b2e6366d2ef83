//! `tsunagi-bench webhooks`: what webhooks (PROTOCOL.md §6.4) cost the senders, and how fast
//! deliveries go out. A receiver runs in this process (it answers 200 at once and counts
//! delivery ids); the server must allow private targets (`TSUNAGI_WEBHOOK_ALLOW_PRIVATE=true`).
//!
//! `--senders` Socket.IO clients send in a closed loop (`--in-flight` unacked each) in one room;
//! rounds alternate **without** webhooks and **with** `--hooks` webhooks registered for the
//! room's `message` events (registered before the window, deleted after it, once the receiver has
//! every delivery of the window). Each window: acked sends/s and send → ack p50 / p99. Each
//! "with" round: deliveries/s while sending, and the drain rate (every delivery of the window,
//! over the time from the window's start until the last one arrived).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tsunagi::auth::Tokens;
use tsunagi::client::SioClient;

use super::archive::{Http, Tally, send_loop};
use super::rounds::Rounds;
use super::{duration, now_ns, percentile_ms, round};

#[derive(clap::Args, Debug, Clone)]
pub struct WebhooksArgs {
    /// The server under test (with TSUNAGI_WEBHOOK_ALLOW_PRIVATE=true).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// HS256 secret of the server, to mint the senders' and the admin's tokens.
    #[arg(long, env = "TSUNAGI_JWT_SECRET", hide_env_values = true)]
    token_secret: String,
    /// Webhooks registered in the "with" rounds.
    #[arg(long, default_value_t = 3)]
    hooks: usize,
    #[arg(long, default_value_t = 10)]
    senders: usize,
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value = "10s", value_parser = duration)]
    duration: Duration,
    /// Longest wait for the deliveries of a "with" window.
    #[arg(long, default_value = "300s", value_parser = duration)]
    drain_limit: Duration,
}

/// Deliveries received: ids seen, and when the latest new one arrived.
#[derive(Default)]
struct Received {
    ids: HashSet<String>,
    last: Option<Instant>,
    signed: u64,
}

async fn start_receiver(got: Arc<Mutex<Received>>) -> anyhow::Result<String> {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap| {
            let got = got.clone();
            async move {
                let id = headers
                    .get("x-tsunagi-delivery")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let mut g = got.lock();
                if headers.contains_key("x-tsunagi-signature") {
                    g.signed += 1;
                }
                if g.ids.insert(id) {
                    g.last = Some(Instant::now());
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/hook"))
}

#[derive(Debug, Clone, Default)]
struct RoundFigures {
    sends_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    error_codes: BTreeMap<String, u64>,
    /// "with" rounds: deliveries received during the window, per second.
    deliveries_per_s_in_window: f64,
    /// "with" rounds: the window's deliveries over the time until the last one arrived.
    drain_deliveries_per_s: f64,
    deliveries: u64,
}

impl RoundFigures {
    fn to_json(&self) -> Value {
        json!({ "sends_per_s": round(self.sends_per_s), "ack_p50_ms": round(self.p50_ms),
            "ack_p99_ms": round(self.p99_ms), "errors": self.errors, "error_codes": self.error_codes,
            "deliveries": self.deliveries,
            "deliveries_per_s_in_window": round(self.deliveries_per_s_in_window),
            "drain_deliveries_per_s": round(self.drain_deliveries_per_s) })
    }

    fn median(runs: &[RoundFigures]) -> RoundFigures {
        let r = Rounds(runs);
        RoundFigures {
            sends_per_s: r.median(|f| f.sends_per_s),
            p50_ms: r.median(|f| f.p50_ms),
            p99_ms: r.median(|f| f.p99_ms),
            errors: r.sum(|f| f.errors),
            error_codes: r.sum_codes(|f| &f.error_codes),
            deliveries_per_s_in_window: r.median(|f| f.deliveries_per_s_in_window),
            drain_deliveries_per_s: r.median(|f| f.drain_deliveries_per_s),
            deliveries: r.sum(|f| f.deliveries),
        }
    }
}

pub async fn run(args: WebhooksArgs) -> anyhow::Result<()> {
    let run_id = format!("{:x}", now_ns() % 0xffff_ffff);
    let tokens = Tokens::new(args.token_secret.as_bytes());
    let http = Http {
        client: reqwest::Client::new(),
        base: args.url.trim_end_matches('/').to_owned(),
        admin: tokens.mint("bench-admin", true, None, 24 * 3600),
    };
    let got = Arc::new(Mutex::new(Received::default()));
    let hook_url = start_receiver(got.clone()).await?;
    let room = format!("wh-{run_id}");
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
    let room: Arc<str> = room.into();
    let mut without = Vec::new();
    let mut with = Vec::new();
    for r in 0..args.rounds {
        for hooked in [false, true] {
            let mut hook_ids = Vec::new();
            if hooked {
                for _ in 0..args.hooks {
                    let (status, v) = http
                        .call(reqwest::Method::POST, "/api/v1/webhooks",
                            Some(json!({ "url": hook_url, "events": ["message"], "rooms": [&*room] })))
                        .await?;
                    if status != 201 {
                        bail!(
                            "POST /api/v1/webhooks: {status} {v} (is TSUNAGI_WEBHOOK_ALLOW_PRIVATE=true?)"
                        );
                    }
                    hook_ids.push(v["id"].as_str().context("WEBHOOK id")?.to_owned());
                }
            }
            let before = got.lock().ids.len();
            // window 0 = warm-up (1 s), 1 = measured
            let window = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let loops: Vec<_> = clients
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    tokio::spawn(send_loop(
                        c.clone(),
                        room.clone(),
                        args.in_flight,
                        format!("{run_id}-{r}-{hooked}-{i}"),
                        window.clone(),
                        stop.clone(),
                    ))
                })
                .collect();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let started = Instant::now();
            let at_start = got.lock().ids.len();
            window.store(1, Ordering::Relaxed);
            tokio::time::sleep(args.duration).await;
            window.store(2, Ordering::Relaxed);
            let in_window = got.lock().ids.len() - at_start;
            let secs = started.elapsed().as_secs_f64();
            stop.store(true, Ordering::Relaxed);
            let mut t = Tally::default();
            let mut all_acked = 0;
            for l in loops {
                let tallies = l.await?;
                for (w, x) in tallies.into_iter().enumerate() {
                    all_acked += x.acked;
                    if w == 1 {
                        t.acked += x.acked;
                        t.lat_us.extend(x.lat_us);
                    }
                    for (k, v) in x.errors {
                        *t.errors.entry(k).or_default() += v;
                    }
                }
            }
            t.lat_us.sort_unstable();
            let mut f = RoundFigures {
                sends_per_s: t.acked as f64 / secs,
                p50_ms: percentile_ms(&t.lat_us, 0.5),
                p99_ms: percentile_ms(&t.lat_us, 0.99),
                errors: t.errors.values().sum(),
                error_codes: t.errors.clone(),
                ..RoundFigures::default()
            };
            if hooked {
                // every acked send of the round (warm-up included) makes one delivery per hook
                let want = before + all_acked as usize * args.hooks;
                let deadline = Instant::now() + args.drain_limit;
                while got.lock().ids.len() < want {
                    if Instant::now() > deadline {
                        bail!(
                            "CHECK FAILED: {} of {} deliveries after {:?}",
                            got.lock().ids.len() - before,
                            want - before,
                            args.drain_limit
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let last = got.lock().last.unwrap_or_else(Instant::now);
                f.deliveries = (want - before) as u64;
                f.deliveries_per_s_in_window = in_window as f64 / secs;
                f.drain_deliveries_per_s =
                    (want - before) as f64 / last.duration_since(started).as_secs_f64();
                for id in hook_ids {
                    http.call(
                        reqwest::Method::DELETE,
                        &format!("/api/v1/webhooks/{id}"),
                        None,
                    )
                    .await?;
                }
            }
            eprintln!(
                "round {} {:8}: {:7.0} sends/s acked  ack p50 {:6.2} ms  p99 {:7.2} ms  errors {}{}",
                r + 1,
                if hooked { "with" } else { "without" },
                f.sends_per_s,
                f.p50_ms,
                f.p99_ms,
                f.errors,
                if hooked {
                    format!(
                        "; {} deliveries, {:.0}/s during the window, {:.0}/s until the last",
                        f.deliveries, f.deliveries_per_s_in_window, f.drain_deliveries_per_s
                    )
                } else {
                    String::new()
                }
            );
            if hooked {
                with.push(f)
            } else {
                without.push(f)
            }
        }
    }
    let (w, wo) = (RoundFigures::median(&with), RoundFigures::median(&without));
    let unsigned = {
        // one guard: the receiver's lock is not reentrant
        let got = got.lock();
        got.ids.len() as u64 - got.signed.min(got.ids.len() as u64)
    };
    println!(
        "{}",
        json!({ "webhooks_summary": true, "hooks": args.hooks, "senders": args.senders,
            "in_flight": args.in_flight, "rounds": args.rounds,
            "without": wo.to_json(), "with": w.to_json(),
            "with_vs_without_sends": round(w.sends_per_s / wo.sends_per_s) })
    );
    eprintln!(
        "with {} webhooks / without: ×{:.2} acked sends/s; deliveries {:.0}/s until the last",
        args.hooks,
        w.sends_per_s / wo.sends_per_s,
        w.drain_deliveries_per_s
    );
    if w.errors + wo.errors > 0 || unsigned > 0 {
        bail!(
            "CHECK FAILED: {} failed sends, {unsigned} unsigned deliveries",
            w.errors + wo.errors
        );
    }
    Ok(())
}
