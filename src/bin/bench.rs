//! Load generator: `--rooms` rooms (one by default), `--clients` Socket.IO clients spread over
//! them (client i joins room i mod rooms), the first `--senders` of them sending (so spread too). Measures acked sends/s, delivered messages/s and send→deliver latency, and, with
//! `--peer-url`, runs the same load against a reference server in the same run (alternating,
//! to spread the machine's noise over both) and prints tsunagi's figures as ratios to it.
//!
//! Every client lives in this one process, so a message's content carries its send time as
//! nanoseconds since a process-wide `Instant`: the receiver subtracts, no clock sync needed.
//! Each client checks its room's seq order (no gap, no duplicate) and each room's deliveries are
//! counted apart, so a message missing in one room is never hidden by another's.
//!
//! Output (`report.rs`): a progress bar on a terminal, then a table of the medians, or with
//! `--json` one JSON document; `--plot out.svg` draws the window second by second (`series.rs`,
//! `plot.rs`).
//!
//! `tsunagi-bench users …` is another load: `GET /api/v1/users/{id}` over keep-alive HTTP/1.1
//! against several servers side by side (`src/bin/bench/users.rs`); `tsunagi-bench readings …`
//! measures sensor readings: ingest with write-behind against one INSERT per reading, and `send`
//! ack latency with and without a reading flood (`src/bin/bench/readings.rs`); `tsunagi-bench
//! archive …` what a pass moving a million messages to cold storage costs the senders
//! (`src/bin/bench/archive.rs`).

#[path = "bench/archive.rs"]
mod archive;
#[path = "bench/cpu.rs"]
mod cpu;
#[path = "bench/history.rs"]
mod history;
#[path = "bench/idle.rs"]
mod idle;
#[path = "bench/plot.rs"]
mod plot;
#[path = "bench/readings.rs"]
mod readings;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/rounds.rs"]
mod rounds;
#[path = "bench/scale.rs"]
mod scale;
#[path = "bench/series.rs"]
mod series;
#[path = "bench/storm.rs"]
mod storm;
#[path = "bench/storm_client.rs"]
mod storm_client;
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
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tsunagi::client::{ClientError, SioClient};

use report::{Fmt, Reporter, Table};
use rounds::Rounds;
use series::{Buckets, Second};

static START: LazyLock<Instant> = LazyLock::new(Instant::now);
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Width of the timestamp at the head of each message's content.
const TS_WIDTH: usize = 20;
/// Clients connecting at once (thousands at once only measure the accept queue).
const CONNECT_CONCURRENCY: usize = 100;

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
    /// Clients, spread over the rooms (client i joins room i mod --rooms), senders included.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// How many of the clients send (the first ones: spread over the rooms like the others).
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Rooms the clients are spread over (with more than one, room ids get a -N suffix).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
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
    /// Room id (default bench-<random>; with --rooms N, ROOM-0 … ROOM-(N-1)); the same rooms
    /// serve every round.
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
    /// The --url server's process, whose CPU time per delivery is reported (default: the
    /// process listening on --url's port, when it is on this host).
    #[arg(long)]
    server_pid: Option<u32>,
    /// The --peer-url server's process (default: found the same way).
    #[arg(long)]
    peer_pid: Option<u32>,
    #[command(flatten)]
    report: report::ReportArgs,
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
    /// Reconnect storm: the server is killed (-9) and restarted under N clients, which all
    /// reconnect with socket.io-client's backoff and `sync`; share recovered, time, lost = 0.
    Storm(storm::StormArgs),
    /// Idle sockets: the server's RSS per idle WebSocket joined to a room (and the peer's).
    Idle(idle::IdleArgs),
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
    ack_lat: Buckets,
    errors: BTreeMap<String, u64>,
}

#[derive(Default)]
struct RecvStats {
    delivered_in_window: u64,
    lat: Buckets,
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
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// deliveries/s of the slowest and the fastest room (the same as delivered_per_s with one)
    room_min_delivered_per_s: f64,
    room_max_delivered_per_s: f64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    sent_per_s: f64,
    errors: u64,
    error_codes: BTreeMap<String, u64>,
    disconnects: u64,
    missing: u64,
    out_of_order: u64,
    /// The server's CPU time over the window per message delivered in it (NaN: no process).
    server_cpu_us_per_delivery: f64,
    gaps: u64,
    dups: u64,
}

impl Figures {
    fn to_json(&self) -> Value {
        json!({
            "acked_sends_per_s": round(self.acked_sends_per_s),
            "delivered_per_s": round(self.delivered_per_s),
            "p50_ms": round(self.p50_ms), "p90_ms": round(self.p90_ms),
            "p99_ms": round(self.p99_ms), "max_ms": round(self.max_ms),
            "room_min_delivered_per_s": round(self.room_min_delivered_per_s),
            "room_max_delivered_per_s": round(self.room_max_delivered_per_s),
            "ack_p50_ms": round(self.ack_p50_ms), "ack_p99_ms": round(self.ack_p99_ms),
            "sent_per_s": round(self.sent_per_s),
            "errors": self.errors, "error_codes": self.error_codes,
            "disconnects": self.disconnects, "missing": self.missing,
            "out_of_order": self.out_of_order, "gaps": self.gaps, "dups": self.dups,
            "server_cpu_us_per_delivery": round(self.server_cpu_us_per_delivery),
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
                            st.lat.push(w, now, (now.saturating_sub(sent) / 1000) as u32);
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
                    // random, as clients/js makes them (crypto.randomUUID): each lands at a
                    // random place in the room's idempotency index, as a real client's would
                    msg["client_id"] = json!(uuid::Uuid::new_v4().to_string());
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
                st.ack_lat
                    .push(w, now, (now.saturating_sub(sent) / 1000) as u32);
            }
            return;
        }
        Ok(v) => v["error"]["code"].as_str().unwrap_or("bad_ack").to_owned(),
        Err(ClientError::Timeout) => "ack_timeout".into(),
        Err(_) => "closed".into(),
    };
    *st.errors.entry(code).or_default() += 1;
}

/// One client, joined to its room, with its event stream taken out and the room's last seq.
type Joined = (
    Arc<SioClient>,
    mpsc::UnboundedReceiver<(String, Value)>,
    i64,
);

/// Connects and joins every client (client i to room i mod rooms), runs the load, and gathers
/// the figures and the window's seconds. `index` and `label` place the run on the progress bar.
async fn run(
    args: Arc<Args>,
    url: &str,
    rooms: &[String],
    tokens: &[Option<String>],
    server_pid: Option<u32>,
    rep: &Reporter,
    (index, label): (usize, &str),
) -> anyhow::Result<(Figures, Vec<Second>)> {
    let room_of = |i: usize| i % rooms.len();
    let joined: Vec<Joined> = futures::stream::iter(tokens.iter().enumerate())
        .map(|(i, t)| async move {
            let room = &rooms[room_of(i)];
            let mut c = SioClient::connect(url, t.as_deref()).await?;
            let ack = c
                .call("join", json!({ "room": room }), Duration::from_secs(10))
                .await?;
            if ack["ok"] != json!(true) {
                bail!("join {room} at {url}: {ack}");
            }
            let events = std::mem::replace(&mut c.events, mpsc::unbounded_channel().1);
            anyhow::Ok((Arc::new(c), events, ack["last_seq"].as_i64().unwrap_or(0)))
        })
        // in order: client i stays at index i, so its room is room_of(i)
        .buffered(CONNECT_CONCURRENCY)
        .try_collect()
        .await?;
    let start = now_ns();
    let from = start + args.warmup.as_nanos() as u64;
    let w = Window {
        from,
        to: from + args.duration.as_nanos() as u64,
    };
    let at = |t: u64| *START + Duration::from_nanos(t);
    let server_cpu =
        server_pid.map(|pid| tokio::spawn(cpu::over_window(pid, at(w.from), at(w.to))));
    // deliveries counted per room: a room short of messages is never made up by another
    let per_room: Vec<Arc<AtomicU64>> = rooms.iter().map(|_| Arc::default()).collect();
    let mut members = vec![0u64; rooms.len()];
    let _live = rep.watch(index, label, start, w, report::summed(per_room.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = Vec::new();
    let mut receivers = Vec::new();
    for (i, (c, events, last_seq)) in joined.into_iter().enumerate() {
        members[room_of(i)] += 1;
        receivers.push(tokio::spawn(receive(
            events,
            last_seq + 1,
            w,
            per_room[room_of(i)].clone(),
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
                rooms[room_of(i)].clone(),
                plan.clone(),
                w,
            ))
        })
        .collect();
    let mut sends = Vec::new();
    for s in senders {
        sends.push(s.await?);
    }
    // every client of a room should see every acked message of it: wait (bounded), then stop
    let mut expected = vec![0u64; rooms.len()];
    for (i, s) in sends.iter().enumerate() {
        expected[room_of(i)] += s.acked_total * members[room_of(i)];
    }
    let short = || {
        (0..rooms.len())
            .map(|r| expected[r].saturating_sub(per_room[r].load(Ordering::Relaxed)))
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while short() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let missing = short();
    stop_tx.send(true).ok();
    let mut recvs = Vec::new();
    for r in receivers {
        recvs.push(r.await?);
    }
    for c in &clients {
        c.close();
    }
    let server_cpu_s = match server_cpu {
        Some(h) => h.await?.context("reading the server's CPU time")?,
        None => f64::NAN,
    };

    let secs = args.duration.as_secs_f64();
    let delivered: u64 = recvs.iter().map(|r| r.delivered_in_window).sum();
    let mut room_delivered = vec![0u64; rooms.len()];
    for (i, r) in recvs.iter().enumerate() {
        room_delivered[room_of(i)] += r.delivered_in_window;
    }
    let room_rate = |pick: fn(u64, u64) -> u64| {
        room_delivered.iter().copied().reduce(pick).unwrap_or(0) as f64 / secs
    };
    let mut error_codes = BTreeMap::new();
    for (code, n) in sends.iter().flat_map(|s| &s.errors) {
        *error_codes.entry(code.clone()).or_default() += n;
    }
    let f = Figures {
        acked_sends_per_s: sends.iter().map(|s| s.acked_in_window).sum::<u64>() as f64 / secs,
        delivered_per_s: delivered as f64 / secs,
        room_min_delivered_per_s: room_rate(u64::min),
        room_max_delivered_per_s: room_rate(u64::max),
        sent_per_s: sends.iter().map(|s| s.sent).sum::<u64>() as f64
            / (secs + args.warmup.as_secs_f64()),
        errors: error_codes.values().sum(),
        error_codes,
        disconnects: recvs.iter().filter(|r| r.disconnected).count() as u64,
        missing,
        out_of_order: recvs.iter().map(|r| r.out_of_order).sum(),
        server_cpu_us_per_delivery: server_cpu_s * 1e6 / delivered as f64,
        gaps: recvs.iter().map(|r| r.gaps).sum(),
        dups: recvs.iter().map(|r| r.dups).sum(),
        ..Figures::default()
    };
    let m = series::merge(
        w,
        recvs.into_iter().map(|r| r.lat),
        sends.into_iter().map(|s| s.ack_lat),
    );
    Ok((
        Figures {
            p50_ms: percentile_ms(&m.lat_us, 0.50),
            p90_ms: percentile_ms(&m.lat_us, 0.90),
            p99_ms: percentile_ms(&m.lat_us, 0.99),
            max_ms: m.lat_us.last().map_or(f64::NAN, |&x| f64::from(x) / 1e3),
            ack_p50_ms: percentile_ms(&m.ack_lat_us, 0.50),
            ack_p99_ms: percentile_ms(&m.ack_lat_us, 0.99),
            ..f
        },
        m.seconds,
    ))
}

/// The median of each figure on its own (counts are summed: they are failures to report).
fn median(runs: &[Figures]) -> Figures {
    let r = Rounds(runs);
    Figures {
        acked_sends_per_s: r.median(|f| f.acked_sends_per_s),
        delivered_per_s: r.median(|f| f.delivered_per_s),
        p50_ms: r.median(|f| f.p50_ms),
        p90_ms: r.median(|f| f.p90_ms),
        p99_ms: r.median(|f| f.p99_ms),
        max_ms: r.median(|f| f.max_ms),
        room_min_delivered_per_s: r.median(|f| f.room_min_delivered_per_s),
        room_max_delivered_per_s: r.median(|f| f.room_max_delivered_per_s),
        ack_p50_ms: r.median(|f| f.ack_p50_ms),
        ack_p99_ms: r.median(|f| f.ack_p99_ms),
        sent_per_s: r.median(|f| f.sent_per_s),
        errors: r.sum(|f| f.errors),
        error_codes: r.sum_codes(|f| &f.error_codes),
        disconnects: r.sum(|f| f.disconnects),
        missing: r.sum(|f| f.missing),
        out_of_order: r.sum(|f| f.out_of_order),
        server_cpu_us_per_delivery: r.median(|f| f.server_cpu_us_per_delivery),
        gaps: r.sum(|f| f.gaps),
        dups: r.sum(|f| f.dups),
    }
}

/// The medians side by side (`targets` in column order), tsunagi/peer when both ran.
fn table(title: String, targets: &[(&str, &Figures)]) -> Table {
    let mut t = Table::new(title, targets.iter().map(|(n, _)| n.to_string()).collect())
        .ratio("tsunagi", "peer");
    let rows: [report::Row<Figures>; 18] = [
        ("acked sends/s", Fmt::Whole, |f| f.acked_sends_per_s),
        ("delivered/s", Fmt::Whole, |f| f.delivered_per_s),
        ("slowest room delivered/s", Fmt::Whole, |f| {
            f.room_min_delivered_per_s
        }),
        ("fastest room delivered/s", Fmt::Whole, |f| {
            f.room_max_delivered_per_s
        }),
        ("send→deliver p50 ms", Fmt::Dec2, |f| f.p50_ms),
        ("send→deliver p90 ms", Fmt::Dec2, |f| f.p90_ms),
        ("send→deliver p99 ms", Fmt::Dec2, |f| f.p99_ms),
        ("send→deliver max ms", Fmt::Dec2, |f| f.max_ms),
        ("send→ack p50 ms", Fmt::Dec2, |f| f.ack_p50_ms),
        ("send→ack p99 ms", Fmt::Dec2, |f| f.ack_p99_ms),
        ("server CPU µs/delivery", Fmt::Dec2, |f| {
            f.server_cpu_us_per_delivery
        }),
        ("sent/s (warm-up included)", Fmt::Whole, |f| f.sent_per_s),
        ("errors", Fmt::Count, |f| f.errors as f64),
        ("disconnects", Fmt::Count, |f| f.disconnects as f64),
        ("missing", Fmt::Count, |f| f.missing as f64),
        ("gaps", Fmt::Count, |f| f.gaps as f64),
        ("dups", Fmt::Count, |f| f.dups as f64),
        ("out of order", Fmt::Count, |f| f.out_of_order as f64),
    ];
    for (label, fmt, get) in rows {
        t.row(label, fmt, targets.iter().map(|(_, f)| get(f)).collect());
    }
    t
}

fn summary(name: &str, f: &Figures) -> String {
    format!(
        "{name:>8}: {:>9.0} acked sends/s {:>10.0} delivered/s  send→deliver p50 {:>7.2} ms p99 {:>8.2} ms  \
         CPU/delivery {:.2} µs (ack p50 {:.2} ms p99 {:.2} ms; errors {}, disconnects {}, missing {}, \
         out of order {})",
        f.acked_sends_per_s,
        f.delivered_per_s,
        f.p50_ms,
        f.p99_ms,
        f.server_cpu_us_per_delivery,
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
        Some(Mode::Storm(s)) => return storm::run(s).await,
        Some(Mode::Idle(i)) => return idle::run(i).await,
        Some(Mode::History(h)) => return history::run(h).await,
        None => {}
    }
    let args = Arc::new(args);
    if args.clients == 0 || args.in_flight == 0 || args.rounds == 0 || args.rooms == 0 {
        bail!("--clients, --in-flight, --rounds and --rooms must be at least 1");
    }
    if args.rooms > args.clients {
        bail!(
            "--rooms {} is more than --clients {}: a room would have no client",
            args.rooms,
            args.clients
        );
    }
    let room = args
        .room
        .clone()
        .unwrap_or_else(|| format!("bench-{:08x}", rand::random::<u32>()));
    let rooms: Vec<String> = if args.rooms == 1 {
        vec![room.clone()]
    } else {
        (0..args.rooms).map(|r| format!("{room}-{r}")).collect()
    };
    let (tokens, admin) = tokens(&args)?;
    if args.create_room {
        let admin = admin.context("--create-room needs --token-secret or --token")?;
        for r in &rooms {
            create_room(&args.url, &admin, r).await?;
        }
    }
    let mut targets = vec![("tsunagi", args.url.clone())];
    if let Some(p) = &args.peer_url {
        // the peer first in each round, so neither server always runs on a warmer machine
        targets.insert(0, ("peer", p.clone()));
    }
    let rep = Reporter::new(
        &args.report,
        args.rounds * targets.len(),
        args.warmup + args.duration,
    );
    let load = if args.rate > 0.0 {
        format!("{}/s per sender", args.rate)
    } else {
        format!("closed loop, {} in flight per sender", args.in_flight)
    };
    let shape = format!(
        "{} room(s), {} clients, {} senders, {load}, {} B",
        args.rooms, args.clients, args.senders, args.size
    );
    rep.line(format!(
        "room {}: {shape}, warmup {:?}, window {:?}, {} round(s)",
        if args.rooms == 1 {
            room.clone()
        } else {
            format!("{room}-0…{}", args.rooms - 1)
        },
        args.warmup,
        args.duration,
        args.rounds
    ));
    let pids: Vec<Option<u32>> = targets
        .iter()
        .map(|(name, url)| {
            let given = if *name == "peer" {
                args.peer_pid
            } else {
                args.server_pid
            };
            let pid = given.or_else(|| cpu::listening_pid(url));
            if pid.is_none() {
                eprintln!("{name}: no process found for {url}: no CPU per delivery");
            }
            pid
        })
        .collect();
    let mut results: BTreeMap<&str, Vec<Figures>> = BTreeMap::new();
    let mut seconds: BTreeMap<&str, Vec<Vec<Second>>> = BTreeMap::new();
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for ((name, url), pid) in targets.iter().zip(&pids) {
            let label = format!("round {round}/{} {name}", args.rounds);
            let (f, s) = run(
                args.clone(),
                url,
                &rooms,
                &tokens,
                *pid,
                &rep,
                (runs.len(), &label),
            )
            .await
            .with_context(|| format!("{name} at {url}"))?;
            rep.line(format!("round {round} {}", summary(name, &f)));
            runs.push(
                json!({ "target": name, "round": round, "figures": f.to_json(),
                "seconds": series::to_json(&s) }),
            );
            results.entry(name).or_default().push(f);
            seconds.entry(name).or_default().push(s);
            // let the last run's sockets close before the next one connects
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let medians: BTreeMap<&str, Figures> = results.iter().map(|(k, v)| (*k, median(v))).collect();
    let median_seconds: BTreeMap<&str, Vec<Second>> = seconds
        .iter()
        .map(|(k, v)| (*k, series::median_series(v)))
        .collect();
    let mut out = json!({ "kind": "summary", "room": room, "rooms": rooms, "rounds": args.rounds,
        "settings": { "rooms": args.rooms, "clients": args.clients, "senders": args.senders,
            "in_flight": args.in_flight, "rate_per_sender": args.rate, "size": args.size,
            "duration_s": args.duration.as_secs_f64(), "warmup_s": args.warmup.as_secs_f64(),
            "client_id": !args.no_client_id },
        "runs": runs,
        "seconds": median_seconds.iter().map(|(k, v)| (k.to_string(), series::to_json(v))).collect::<serde_json::Map<_, _>>() });
    for (name, f) in &medians {
        out[name] = f.to_json();
    }
    if let (Some(t), Some(p)) = (medians.get("tsunagi"), medians.get("peer")) {
        let r = |a: f64, b: f64| round(a / b);
        out["ratio_tsunagi_to_peer"] = json!({
            "acked_sends_per_s": r(t.acked_sends_per_s, p.acked_sends_per_s),
            "delivered_per_s": r(t.delivered_per_s, p.delivered_per_s),
            "p50_ms": r(t.p50_ms, p.p50_ms),
            "p90_ms": r(t.p90_ms, p.p90_ms),
            "p99_ms": r(t.p99_ms, p.p99_ms),
            "server_cpu_us_per_delivery": r(t.server_cpu_us_per_delivery, p.server_cpu_us_per_delivery),
        });
    }
    // tsunagi's column first, then the peer's
    let columns: Vec<(&str, &Figures)> = targets
        .iter()
        .rev()
        .map(|(n, _)| (*n, &medians[n]))
        .collect();
    let title = format!(
        "{shape}: medians of {} round(s), counts summed over them\n(tsunagi/peer: above 1 is \
         faster for a rate, below 1 is quicker for a latency)",
        args.rounds
    );
    let plot = report::plot_of(
        format!(
            "tsunagi-bench: {shape}; per second, median of {} round(s)",
            args.rounds
        ),
        columns
            .iter()
            .map(|(n, _)| (n.to_string(), median_seconds[n].clone()))
            .collect(),
    );
    rep.finish(&out, &table(title, &columns), plot)?;
    // The contract's guarantees, checked on what tsunagi delivered (the peer promises none).
    if let Some(t) = medians.get("tsunagi") {
        let failed = broken_guarantees(t);
        if !failed.is_empty() {
            bail!("CHECK FAILED: tsunagi: {}", failed.join(", "));
        }
    }
    Ok(())
}

/// Which guarantees a run's figures break: every acked send delivered to every client of its
/// room, in seq order (no gap, no duplicate), no send refused, no client disconnected.
fn broken_guarantees(f: &Figures) -> Vec<String> {
    [
        ("acked messages never delivered", f.missing),
        ("deliveries out of seq order", f.out_of_order),
        ("deliveries skipped a seq", f.gaps),
        ("deliveries duplicated", f.dups),
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
