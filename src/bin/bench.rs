//! Load generator: one room, `--clients` Socket.IO clients joined to it, `--senders` of them
//! sending. Measures acked sends/s, delivered messages/s and send→deliver latency, and, with
//! `--peer-url`, runs the same load against a reference server in the same run (alternating,
//! to spread the machine's noise over both) and prints tsunagi's figures as ratios to it.
//!
//! Every client lives in this one process, so a message's content carries its send time as
//! nanoseconds since a process-wide `Instant`: the receiver subtracts, no clock sync needed.
//!
//! `tsunagi-bench users …` is another load: `GET /api/v1/users/{id}` over keep-alive HTTP/1.1
//! against several servers side by side (`src/bin/bench/users.rs`); `tsunagi-bench readings …`
//! measures sensor readings: ingest with write-behind against one INSERT per reading, and `send`
//! ack latency with and without a reading flood (`src/bin/bench/readings.rs`); `tsunagi-bench
//! archive …` what a pass moving a million messages to cold storage costs the senders
//! (`src/bin/bench/archive.rs`).

#[path = "bench/archive.rs"]
mod archive;
#[path = "bench/history.rs"]
mod history;
#[path = "bench/readings.rs"]
mod readings;
#[path = "bench/rounds.rs"]
mod rounds;
#[path = "bench/scale.rs"]
mod scale;
#[path = "bench/users.rs"]
mod users;
#[path = "bench/webhooks.rs"]
mod webhooks;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tsunagi::client::{ClientError, SioClient};

use rounds::Rounds;

static START: LazyLock<Instant> = LazyLock::new(Instant::now);
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Width of the timestamp at the head of each message's content.
const TS_WIDTH: usize = 20;

fn now_ns() -> u64 {
    START.elapsed().as_nanos() as u64
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "tsunagi-bench",
    about = "Socket.IO room load: acked sends/s, deliveries/s, send→deliver p50/p99",
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// Another load instead of the room's.
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The server under test (tsunagi).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A reference server (bench/peer) to run the same load against, alternating with --url.
    #[arg(long)]
    peer_url: Option<String>,
    /// Runs per server; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Clients joined to the room (senders included).
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// How many of the clients send.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Most unacked sends per sender; with --rate 0 the senders keep this many outstanding
    /// (closed loop), which finds the server's throughput.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Messages/s per sender (0: closed loop, as fast as acks come back).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Content size in bytes (the timestamp plus padding).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Measurement window, e.g. 10s or 500ms.
    #[arg(long, default_value = "10s", value_parser = duration)]
    duration: Duration,
    /// Load before the window, not counted.
    #[arg(long, default_value = "2s", value_parser = duration)]
    warmup: Duration,
    /// Room id (default bench-<random>); the same room serves every round.
    #[arg(long)]
    room: Option<String>,
    /// HS256 secret to mint one token per client (and an admin token for --create-room).
    #[arg(long, env = "TSUNAGI_JWT_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// One token for every client, instead of minting.
    #[arg(long)]
    token: Option<String>,
    /// Create the room on --url first (POST /api/v1/rooms); the peer needs none.
    #[arg(long)]
    create_room: bool,
    /// Send without a client_id (no idempotency key).
    #[arg(long)]
    no_client_id: bool,
}

#[derive(clap::Subcommand, Debug, Clone)]
enum Mode {
    /// GET /api/v1/users/{id} requests/s and latency against several servers side by side,
    /// with the users cache's counters (L1 hits, L2 hits, loads) checked per window.
    Users(users::UsersArgs),
    /// Sensor readings: readings/s written through the write-behind buffer against one INSERT
    /// per reading, and `send` ack latency with and without a reading flood.
    Readings(readings::ReadingsArgs),
    /// Archiving: acked sends/s and ack latency of closed-loop senders, quiet and while a pass
    /// moves a million messages to cold storage.
    Archive(archive::ArchiveArgs),
    /// Webhooks: acked sends/s with and without webhooks registered, and deliveries/s to a
    /// receiver in this process.
    Webhooks(webhooks::WebhooksArgs),
    /// Scale-out: the same load (one big room or many rooms) against several setups (1 vs 3
    /// instances behind nginx), alternating, with the servers' CPU per delivery.
    Scale(scale::ScaleArgs),
    /// A hot room's join and sync latency against several servers side by side (hot window
    /// on and off, the Node peer).
    History(history::HistoryArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" => n * 60.0,
        _ => return Err(format!("`{s}`: use s, ms or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// The measurement window, in `now_ns` time.
#[derive(Clone, Copy)]
struct Window {
    from: u64,
    to: u64,
}

impl Window {
    fn has(&self, t: u64) -> bool {
        (self.from..self.to).contains(&t)
    }
}

#[derive(Default)]
struct SendStats {
    sent: u64,
    acked_total: u64,
    acked_in_window: u64,
    ack_lat_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

#[derive(Default)]
struct RecvStats {
    delivered_in_window: u64,
    lat_us: Vec<u32>,
    out_of_order: u64,
    /// deliveries that skipped a seq (a gap) and that repeated or went back (a duplicate)
    gaps: u64,
    dups: u64,
    disconnected: bool,
}

/// What each sender does: shared by the one-room load and `scale`.
struct SendPlan {
    rate: f64,
    in_flight: usize,
    size: usize,
    client_id: bool,
}

/// One run's figures.
#[derive(Debug, Clone, Default)]
struct Figures {
    acked_sends_per_s: f64,
    delivered_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    sent_per_s: f64,
    errors: u64,
    error_codes: BTreeMap<String, u64>,
    disconnects: u64,
    missing: u64,
    out_of_order: u64,
}

impl Figures {
    fn to_json(&self) -> Value {
        json!({
            "acked_sends_per_s": round(self.acked_sends_per_s),
            "delivered_per_s": round(self.delivered_per_s),
            "p50_ms": round(self.p50_ms), "p99_ms": round(self.p99_ms), "max_ms": round(self.max_ms),
            "ack_p50_ms": round(self.ack_p50_ms), "ack_p99_ms": round(self.ack_p99_ms),
            "sent_per_s": round(self.sent_per_s),
            "errors": self.errors, "error_codes": self.error_codes,
            "disconnects": self.disconnects, "missing": self.missing,
            "out_of_order": self.out_of_order,
        })
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 * p) as usize).min(sorted_us.len() - 1);
    f64::from(sorted_us[i]) / 1e3
}

fn tokens(args: &Args) -> anyhow::Result<(Vec<Option<String>>, Option<String>)> {
    if let Some(t) = &args.token {
        return Ok((vec![Some(t.clone()); args.clients], Some(t.clone())));
    }
    let Some(secret) = &args.token_secret else {
        return Ok((vec![None; args.clients], None));
    };
    let (users, admin) = mint_tokens(secret, args.clients)?;
    Ok((users, Some(admin)))
}

/// One user token per client (`sub` bench-N) and an admin token, signed with `secret`.
fn mint_tokens(secret: &str, clients: usize) -> anyhow::Result<(Vec<Option<String>>, String)> {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let exp = jsonwebtoken::get_current_timestamp() + 24 * 3600;
    let mint = |sub: String, role: &str| {
        let claims = json!({ "sub": sub, "exp": exp, "role": role });
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
    };
    let users = (0..clients)
        .map(|i| mint(format!("bench-{i}"), "user").map(Some))
        .collect::<Result<_, _>>()?;
    Ok((users, mint("bench-admin".into(), "admin")?))
}

/// POST /api/v1/rooms over a bare HTTP/1.1 connection (the bins have no HTTP client);
/// 409 means the room is already there, which is as good.
async fn create_room(base: &str, token: &str, room: &str) -> anyhow::Result<()> {
    let url = url::Url::parse(base)?;
    let host = url.host_str().context("--url has no host")?;
    let port = url.port_or_known_default().context("--url has no port")?;
    let mut s = tokio::net::TcpStream::connect((host, port)).await?;
    let body = json!({ "id": room, "name": room }).to_string();
    let req = format!(
        "POST /api/v1/rooms HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).await?;
    match resp.split_whitespace().nth(1) {
        Some("201" | "409") => Ok(()),
        _ => bail!(
            "creating room {room}: {}",
            resp.lines().next().unwrap_or("no answer")
        ),
    }
}

/// Reads one client's events until `stop`: latency of each `message` and its seq order.
async fn receive(
    mut events: mpsc::UnboundedReceiver<(String, Value)>,
    mut next_seq: i64,
    w: Window,
    total: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> RecvStats {
    let mut st = RecvStats::default();
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                None => { st.disconnected = true; break; }
                Some((name, m)) if name == "message" => {
                    let now = now_ns();
                    total.fetch_add(1, Ordering::Relaxed);
                    let seq = m["seq"].as_i64().unwrap_or(-1);
                    if seq != next_seq { st.out_of_order += 1; }
                    if seq > next_seq { st.gaps += 1; }
                    if seq < next_seq { st.dups += 1; }
                    next_seq = seq + 1;
                    if w.has(now) {
                        st.delivered_in_window += 1;
                        if let Some(sent) = sent_ns_of(&m) {
                            st.lat_us.push((now.saturating_sub(sent) / 1000) as u32);
                        }
                    }
                }
                Some(_) => {}
            },
            _ = stop.changed() => break,
        }
    }
    st
}

/// One sender: keeps up to `in_flight` sends unacked, paced by `rate` if set, until `w.to`.
async fn send_loop(
    client: Arc<SioClient>,
    room: String,
    args: Arc<SendPlan>,
    w: Window,
    tag: String,
) -> SendStats {
    let mut st = SendStats::default();
    let mut inflight = FuturesUnordered::new();
    let mut ticker = (args.rate > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
        // a full window skips ticks instead of bursting to catch up
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        t
    });
    let end = tokio::time::sleep_until((*START + Duration::from_nanos(w.to)).into());
    tokio::pin!(end);
    let pad = "x".repeat(args.size.saturating_sub(TS_WIDTH + 1));
    loop {
        tokio::select! {
            biased;
            _ = &mut end => break,
            Some((sent, r)) = inflight.next(), if !inflight.is_empty() => record(&mut st, w, sent, r),
            _ = pace(&mut ticker), if inflight.len() < args.in_flight => {
                let sent = now_ns();
                let mut msg = json!({ "room": room, "content": format!("{sent:0TS_WIDTH$}|{pad}") });
                if args.client_id {
                    msg["client_id"] = json!(format!("{tag}-{}", st.sent));
                }
                st.sent += 1;
                let ack = tokio::time::timeout(ACK_TIMEOUT, client.emit_with_ack("send", &msg));
                inflight.push(async move { (sent, ack.await.unwrap_or(Err(ClientError::Timeout))) });
            }
        }
    }
    // the sends still out count towards completeness, not towards the window
    while let Some((sent, r)) = inflight.next().await {
        record(&mut st, w, sent, r);
    }
    st
}

async fn pace(ticker: &mut Option<tokio::time::Interval>) {
    if let Some(t) = ticker {
        t.tick().await;
    }
}

fn record(st: &mut SendStats, w: Window, sent: u64, r: Result<Value, ClientError>) {
    let code = match r {
        // an ack for some other message (an idempotent replay of an old client_id) is no send
        Ok(v) if v["ok"] == json!(true) && sent_ns_of(&v["message"]) != Some(sent) => {
            "stale_ack".into()
        }
        Ok(v) if v["ok"] == json!(true) => {
            st.acked_total += 1;
            let now = now_ns();
            if w.has(now) {
                st.acked_in_window += 1;
                st.ack_lat_us.push((now.saturating_sub(sent) / 1000) as u32);
            }
            return;
        }
        Ok(v) => v["error"]["code"].as_str().unwrap_or("bad_ack").to_owned(),
        Err(ClientError::Timeout) => "ack_timeout".into(),
        Err(_) => "closed".into(),
    };
    *st.errors.entry(code).or_default() += 1;
}

/// Connects and joins every client, runs the load, and gathers the figures.
async fn run(
    args: Arc<Args>,
    url: &str,
    room: &str,
    tokens: &[Option<String>],
) -> anyhow::Result<Figures> {
    let joined = futures::future::try_join_all(tokens.iter().map(|t| async move {
        let mut c = SioClient::connect(url, t.as_deref()).await?;
        let ack = c
            .call("join", json!({ "room": room }), Duration::from_secs(10))
            .await?;
        if ack["ok"] != json!(true) {
            bail!("join {room} at {url}: {ack}");
        }
        let events = std::mem::replace(&mut c.events, mpsc::unbounded_channel().1);
        anyhow::Ok((Arc::new(c), events, ack["last_seq"].as_i64().unwrap_or(0)))
    }))
    .await?;
    // client_ids unique to this run: a repeated one would be answered as a retry
    let run_id = format!("{:08x}", rand::random::<u32>());
    let from = now_ns() + args.warmup.as_nanos() as u64;
    let w = Window {
        from,
        to: from + args.duration.as_nanos() as u64,
    };
    let total = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = Vec::new();
    let mut receivers = Vec::new();
    for (c, events, last_seq) in joined {
        receivers.push(tokio::spawn(receive(
            events,
            last_seq + 1,
            w,
            total.clone(),
            stop_rx.clone(),
        )));
        clients.push(c);
    }
    let plan = Arc::new(SendPlan {
        rate: args.rate,
        in_flight: args.in_flight,
        size: args.size,
        client_id: !args.no_client_id,
    });
    let senders: Vec<_> = (0..args.senders.min(clients.len()))
        .map(|i| {
            tokio::spawn(send_loop(
                clients[i].clone(),
                room.to_owned(),
                plan.clone(),
                w,
                format!("{run_id}-{i}"),
            ))
        })
        .collect();
    let mut sends = Vec::new();
    for s in senders {
        sends.push(s.await?);
    }
    // every client should see every acked message: wait for them (bounded), then stop
    let acked_total: u64 = sends.iter().map(|s| s.acked_total).sum();
    let expected = acked_total * clients.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while total.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(true).ok();
    let mut recvs = Vec::new();
    for r in receivers {
        recvs.push(r.await?);
    }
    for c in &clients {
        c.close();
    }

    let secs = args.duration.as_secs_f64();
    let mut lat: Vec<u32> = recvs
        .iter_mut()
        .flat_map(|r| std::mem::take(&mut r.lat_us))
        .collect();
    let mut ack_lat: Vec<u32> = sends
        .iter_mut()
        .flat_map(|s| std::mem::take(&mut s.ack_lat_us))
        .collect();
    lat.sort_unstable();
    ack_lat.sort_unstable();
    let mut error_codes = BTreeMap::new();
    for (code, n) in sends.iter().flat_map(|s| &s.errors) {
        *error_codes.entry(code.clone()).or_default() += n;
    }
    Ok(Figures {
        acked_sends_per_s: sends.iter().map(|s| s.acked_in_window).sum::<u64>() as f64 / secs,
        delivered_per_s: recvs.iter().map(|r| r.delivered_in_window).sum::<u64>() as f64 / secs,
        p50_ms: percentile_ms(&lat, 0.50),
        p99_ms: percentile_ms(&lat, 0.99),
        max_ms: lat.last().map_or(f64::NAN, |&m| f64::from(m) / 1e3),
        ack_p50_ms: percentile_ms(&ack_lat, 0.50),
        ack_p99_ms: percentile_ms(&ack_lat, 0.99),
        sent_per_s: sends.iter().map(|s| s.sent).sum::<u64>() as f64
            / (secs + args.warmup.as_secs_f64()),
        errors: error_codes.values().sum(),
        error_codes,
        disconnects: recvs.iter().filter(|r| r.disconnected).count() as u64,
        missing: expected.saturating_sub(total.load(Ordering::Relaxed)),
        out_of_order: recvs.iter().map(|r| r.out_of_order).sum(),
    })
}

/// The median of each figure on its own (counts are summed: they are failures to report).
fn median(runs: &[Figures]) -> Figures {
    let r = Rounds(runs);
    Figures {
        acked_sends_per_s: r.median(|f| f.acked_sends_per_s),
        delivered_per_s: r.median(|f| f.delivered_per_s),
        p50_ms: r.median(|f| f.p50_ms),
        p99_ms: r.median(|f| f.p99_ms),
        max_ms: r.median(|f| f.max_ms),
        ack_p50_ms: r.median(|f| f.ack_p50_ms),
        ack_p99_ms: r.median(|f| f.ack_p99_ms),
        sent_per_s: r.median(|f| f.sent_per_s),
        errors: r.sum(|f| f.errors),
        error_codes: r.sum_codes(|f| &f.error_codes),
        disconnects: r.sum(|f| f.disconnects),
        missing: r.sum(|f| f.missing),
        out_of_order: r.sum(|f| f.out_of_order),
    }
}

fn summary(name: &str, f: &Figures) -> String {
    format!(
        "{name:>8}: {:>9.0} acked sends/s {:>10.0} delivered/s  send→deliver p50 {:>7.2} ms p99 {:>8.2} ms  \
         (ack p50 {:.2} ms p99 {:.2} ms; errors {}, disconnects {}, missing {}, out of order {})",
        f.acked_sends_per_s,
        f.delivered_per_s,
        f.p50_ms,
        f.p99_ms,
        f.ack_p50_ms,
        f.ack_p99_ms,
        f.errors,
        f.disconnects,
        f.missing,
        f.out_of_order
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    LazyLock::force(&START);
    let mut args = Args::parse();
    match args.mode.take() {
        Some(Mode::Users(u)) => return users::main(u).await,
        Some(Mode::Readings(r)) => return readings::main(r).await,
        Some(Mode::Archive(a)) => return archive::run(a).await,
        Some(Mode::Webhooks(w)) => return webhooks::run(w).await,
        Some(Mode::Scale(s)) => return scale::run(s).await,
        Some(Mode::History(h)) => return history::run(h).await,
        None => {}
    }
    let args = Arc::new(args);
    if args.clients == 0 || args.in_flight == 0 || args.rounds == 0 {
        bail!("--clients, --in-flight and --rounds must be at least 1");
    }
    let room = args
        .room
        .clone()
        .unwrap_or_else(|| format!("bench-{:08x}", rand::random::<u32>()));
    let (tokens, admin) = tokens(&args)?;
    if args.create_room {
        let admin = admin.context("--create-room needs --token-secret or --token")?;
        create_room(&args.url, &admin, &room).await?;
    }
    let mut targets = vec![("tsunagi", args.url.clone())];
    if let Some(p) = &args.peer_url {
        // the peer first in each round, so neither server always runs on a warmer machine
        targets.insert(0, ("peer", p.clone()));
    }
    eprintln!(
        "room {room}: {} clients, {} senders, in-flight {}, rate {}, {} B, warmup {:?}, window {:?}, {} round(s)",
        args.clients,
        args.senders,
        args.in_flight,
        if args.rate > 0.0 {
            format!("{}/s per sender", args.rate)
        } else {
            "closed loop".into()
        },
        args.size,
        args.warmup,
        args.duration,
        args.rounds
    );
    let mut results: BTreeMap<&str, Vec<Figures>> = BTreeMap::new();
    for round in 1..=args.rounds {
        for (name, url) in &targets {
            let f = run(args.clone(), url, &room, &tokens)
                .await
                .with_context(|| format!("{name} at {url}"))?;
            println!(
                "{}",
                json!({ "kind": "run", "target": name, "round": round, "figures": f.to_json() })
            );
            eprintln!("round {round} {}", summary(name, &f));
            results.entry(name).or_default().push(f);
            // let the last run's sockets close before the next one connects
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let medians: BTreeMap<&str, Figures> = results.iter().map(|(k, v)| (*k, median(v))).collect();
    let mut out = json!({ "kind": "summary", "room": room, "rounds": args.rounds,
        "settings": { "clients": args.clients, "senders": args.senders, "in_flight": args.in_flight,
            "rate_per_sender": args.rate, "size": args.size, "duration_s": args.duration.as_secs_f64(),
            "warmup_s": args.warmup.as_secs_f64(), "client_id": !args.no_client_id } });
    eprintln!("\nmedians of {} round(s):", args.rounds);
    for (name, f) in &medians {
        out[name] = f.to_json();
        eprintln!("{}", summary(name, f));
    }
    if let (Some(t), Some(p)) = (medians.get("tsunagi"), medians.get("peer")) {
        let r = |a: f64, b: f64| round(a / b);
        out["ratio_tsunagi_to_peer"] = json!({
            "acked_sends_per_s": r(t.acked_sends_per_s, p.acked_sends_per_s),
            "delivered_per_s": r(t.delivered_per_s, p.delivered_per_s),
            "p50_ms": r(t.p50_ms, p.p50_ms),
            "p99_ms": r(t.p99_ms, p.p99_ms),
        });
        eprintln!(
            "tsunagi/peer: acked sends/s ×{:.2}, delivered/s ×{:.2} (above 1: tsunagi faster); \
             p50 ×{:.2}, p99 ×{:.2} (below 1: tsunagi lower latency)",
            r(t.acked_sends_per_s, p.acked_sends_per_s),
            r(t.delivered_per_s, p.delivered_per_s),
            r(t.p50_ms, p.p50_ms),
            r(t.p99_ms, p.p99_ms)
        );
    }
    println!("{out}");
    // The contract's guarantees, checked on what tsunagi delivered (the peer promises none).
    if let Some(t) = medians.get("tsunagi") {
        let failed = broken_guarantees(t);
        if !failed.is_empty() {
            bail!("CHECK FAILED: tsunagi: {}", failed.join(", "));
        }
    }
    Ok(())
}

/// Which guarantees a run's figures break: every acked send delivered to every client, in seq
/// order, no send refused, no client disconnected.
fn broken_guarantees(f: &Figures) -> Vec<String> {
    [
        ("acked messages never delivered", f.missing),
        ("deliveries out of seq order", f.out_of_order),
        ("sends refused", f.errors),
        ("clients disconnected", f.disconnects),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(what, n)| format!("{n} {what}"))
    .collect()
}

/// The send time a MESSAGE's content starts with.
fn sent_ns_of(message: &Value) -> Option<u64> {
    message["content"].as_str()?.get(..TS_WIDTH)?.parse().ok()
}
