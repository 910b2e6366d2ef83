//! `tsunagi-bench scale`: the same room load against several setups in one run (bench/scale.sh:
//! one instance behind nginx and three behind nginx), alternating per round, medians reported.
//! Besides the room figures it reads, over the measurement window, the CPU time of each setup's
//! processes (/proc/PID/stat: instances summed, nginx apart) and, with --redis-url, the Redis
//! commands run per acked send (INFO commandstats, the whole Redis server).
//!
//! Rooms: `--rooms` rooms of `--clients-per-room` clients, the first `--senders-per-room` of each
//! sending. Every client must receive every acked message of its room once and in seq order.
//!
//! Output as the room load's (`report.rs`): progress bar, table (last setup / first setup),
//! `--json`, `--plot`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tsunagi::client::SioClient;

use super::report::{self, Fmt, Reporter, Table};
use super::series::{self, Second};
use super::{
    CONNECT_CONCURRENCY, RecvStats, Rounds, START, SendPlan, SendStats, Window, create_room,
    duration, mint_tokens, now_ns, percentile_ms, receive, round, send_loop,
};

#[derive(clap::Args, Debug, Clone)]
pub struct ScaleArgs {
    /// A setup, NAME=URL (its load balancer); give two or more, they alternate in each round.
    #[arg(long = "target", value_parser = named, required = true)]
    targets: Vec<(String, String)>,
    /// A setup's server processes, NAME=PID,PID… (their CPU is summed per delivery).
    #[arg(long = "server-pids", value_parser = named)]
    server_pids: Vec<(String, String)>,
    /// A setup's load-balancer processes (nginx workers), NAME=PID,…, reported apart.
    #[arg(long = "proxy-pids", value_parser = named)]
    proxy_pids: Vec<(String, String)>,
    /// Redis to count commands on (INFO commandstats: every client of that server counts).
    #[arg(long)]
    redis_url: Option<String>,
    /// Rooms per setup.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Clients joined to each room (its senders included).
    #[arg(long, default_value_t = 60)]
    clients_per_room: usize,
    /// Senders in each room.
    #[arg(long, default_value_t = 12)]
    senders_per_room: usize,
    /// Most unacked sends per sender (with --rate 0: closed loop).
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Messages/s per sender (0: closed loop).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Content size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Measurement window.
    #[arg(long, default_value = "10s", value_parser = duration)]
    duration: Duration,
    /// Load before the window, not counted.
    #[arg(long, default_value = "2s", value_parser = duration)]
    warmup: Duration,
    /// Rounds per setup; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// HS256 secret to mint the clients' tokens and the admin token creating the rooms.
    #[arg(long, env = "TSUNAGI_JWT_SECRET", hide_env_values = true)]
    token_secret: String,
    #[command(flatten)]
    report: report::ReportArgs,
}

fn named(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}`: expected NAME=VALUE"))
}

/// One setup's run.
#[derive(Debug, Clone, Default)]
struct Figures {
    acked_sends_per_s: f64,
    delivered_per_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    ack_p99_ms: f64,
    server_cpu_s: f64,
    proxy_cpu_s: f64,
    server_cpu_us_per_delivery: f64,
    proxy_cpu_us_per_delivery: f64,
    redis_commands_per_send: f64,
    errors: u64,
    error_codes: BTreeMap<String, u64>,
    disconnects: u64,
    gaps: u64,
    dups: u64,
    missing: u64,
}

impl Figures {
    fn to_json(&self) -> Value {
        json!({
            "acked_sends_per_s": round(self.acked_sends_per_s),
            "delivered_per_s": round(self.delivered_per_s),
            "p50_ms": round(self.p50_ms), "p90_ms": round(self.p90_ms),
            "p99_ms": round(self.p99_ms), "ack_p99_ms": round(self.ack_p99_ms),
            "server_cpu_s": round(self.server_cpu_s), "proxy_cpu_s": round(self.proxy_cpu_s),
            "server_cpu_us_per_delivery": round(self.server_cpu_us_per_delivery),
            "proxy_cpu_us_per_delivery": round(self.proxy_cpu_us_per_delivery),
            "redis_commands_per_send": round(self.redis_commands_per_send),
            "errors": self.errors, "error_codes": self.error_codes,
            "disconnects": self.disconnects, "gaps": self.gaps, "dups": self.dups,
            "missing": self.missing,
        })
    }

    fn summary(&self, name: &str) -> String {
        format!(
            "{name:>6}: {:>7.0} acked sends/s {:>8.0} delivered/s  p50 {:>7.2} ms p99 {:>8.2} ms \
             (ack p99 {:.2} ms)  CPU/delivery {:.1} µs servers + {:.1} µs nginx  \
             redis cmds/send {:.2}  [gaps {}, dups {}, missing {}, errors {}, disconnects {}]",
            self.acked_sends_per_s,
            self.delivered_per_s,
            self.p50_ms,
            self.p99_ms,
            self.ack_p99_ms,
            self.server_cpu_us_per_delivery,
            self.proxy_cpu_us_per_delivery,
            self.redis_commands_per_send,
            self.gaps,
            self.dups,
            self.missing,
            self.errors,
            self.disconnects
        )
    }

    fn broken(&self) -> Vec<String> {
        [
            ("deliveries skipped a seq", self.gaps),
            ("deliveries duplicated", self.dups),
            ("acked messages never delivered", self.missing),
            ("sends refused", self.errors),
            ("clients disconnected", self.disconnects),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{n} {what}"))
        .collect()
    }
}

fn median(runs: &[Figures]) -> Figures {
    let r = Rounds(runs);
    Figures {
        acked_sends_per_s: r.median(|f| f.acked_sends_per_s),
        delivered_per_s: r.median(|f| f.delivered_per_s),
        p50_ms: r.median(|f| f.p50_ms),
        p90_ms: r.median(|f| f.p90_ms),
        p99_ms: r.median(|f| f.p99_ms),
        ack_p99_ms: r.median(|f| f.ack_p99_ms),
        server_cpu_s: r.median(|f| f.server_cpu_s),
        proxy_cpu_s: r.median(|f| f.proxy_cpu_s),
        server_cpu_us_per_delivery: r.median(|f| f.server_cpu_us_per_delivery),
        proxy_cpu_us_per_delivery: r.median(|f| f.proxy_cpu_us_per_delivery),
        redis_commands_per_send: r.median(|f| f.redis_commands_per_send),
        errors: r.sum(|f| f.errors),
        error_codes: r.sum_codes(|f| &f.error_codes),
        disconnects: r.sum(|f| f.disconnects),
        gaps: r.sum(|f| f.gaps),
        dups: r.sum(|f| f.dups),
        missing: r.sum(|f| f.missing),
    }
}

fn pids_cpu(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|&p| crate::cpu::cpu_seconds(p)).sum()
}

/// Commands the Redis server has run so far (the sum of INFO commandstats' calls).
async fn redis_calls(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    Ok(info
        .lines()
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum())
}

/// What the samplers read at the window's edges.
#[derive(Default, Clone, Copy)]
struct Sample {
    server_cpu: f64,
    proxy_cpu: f64,
    redis_calls: u64,
}

struct Setup {
    name: String,
    url: String,
    server_pids: Vec<u32>,
    proxy_pids: Vec<u32>,
    rooms: Vec<String>,
}

impl Setup {
    async fn sample(
        &self,
        redis: &mut Option<redis::aio::MultiplexedConnection>,
    ) -> anyhow::Result<Sample> {
        Ok(Sample {
            server_cpu: pids_cpu(&self.server_pids)?,
            proxy_cpu: pids_cpu(&self.proxy_pids)?,
            redis_calls: match redis {
                Some(c) => redis_calls(c).await?,
                None => 0,
            },
        })
    }
}

fn pid_list(named: &[(String, String)], name: &str) -> anyhow::Result<Vec<u32>> {
    named
        .iter()
        .filter(|(n, _)| n == name)
        .flat_map(|(_, v)| v.split(','))
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().with_context(|| format!("pid `{p}` of {name}")))
        .collect()
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    if args.rooms == 0 || args.clients_per_room == 0 || args.rounds == 0 || args.in_flight == 0 {
        bail!("--rooms, --clients-per-room, --rounds and --in-flight must be at least 1");
    }
    let clients = args.rooms * args.clients_per_room;
    let (tokens, admin) = mint_tokens(&args.token_secret, clients)?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let mut setups = Vec::new();
    for (name, url) in &args.targets {
        let rooms: Vec<String> = (0..args.rooms)
            .map(|r| format!("scale-{tag}-{name}-{r}"))
            .collect();
        for room in &rooms {
            create_room(url, &admin, room)
                .await
                .with_context(|| format!("{name} at {url}"))?;
        }
        setups.push(Setup {
            name: name.clone(),
            url: url.clone(),
            server_pids: pid_list(&args.server_pids, name)?,
            proxy_pids: pid_list(&args.proxy_pids, name)?,
            rooms,
        });
    }
    let mut redis = match &args.redis_url {
        Some(u) => Some(
            redis::Client::open(u.as_str())?
                .get_multiplexed_async_connection()
                .await?,
        ),
        None => None,
    };
    let plan = Arc::new(SendPlan {
        rate: args.rate,
        in_flight: args.in_flight,
        size: args.size,
        client_id: true,
    });
    let rep = Reporter::new(
        &args.report,
        args.rounds * setups.len(),
        args.warmup + args.duration,
    );
    let load = if args.rate > 0.0 {
        format!("{}/s per sender", args.rate)
    } else {
        format!("closed loop, {} in flight per sender", args.in_flight)
    };
    let shape = format!(
        "{} room(s) x {} clients, {} sender(s) per room, {load}, {} B",
        args.rooms, args.clients_per_room, args.senders_per_room, args.size
    );
    rep.line(format!(
        "{shape}, warmup {:?}, window {:?}, {} round(s)",
        args.warmup, args.duration, args.rounds
    ));
    let mut results: BTreeMap<String, Vec<Figures>> = BTreeMap::new();
    let mut seconds: BTreeMap<String, Vec<Vec<Second>>> = BTreeMap::new();
    let mut runs = Vec::new();
    for round_no in 1..=args.rounds {
        // alternate which setup goes first, so neither always gets the warmer machine
        let order: Vec<&Setup> = if round_no % 2 == 1 {
            setups.iter().collect()
        } else {
            setups.iter().rev().collect()
        };
        for s in order {
            let label = format!("round {round_no}/{} {}", args.rounds, s.name);
            let (f, secs) = run_once(
                &args,
                s,
                &tokens,
                plan.clone(),
                &mut redis,
                &rep,
                (runs.len(), &label),
            )
            .await
            .with_context(|| format!("{} at {}", s.name, s.url))?;
            rep.line(format!("round {round_no} {}", f.summary(&s.name)));
            runs.push(
                json!({ "target": s.name, "round": round_no, "figures": f.to_json(),
                "seconds": series::to_json(&secs) }),
            );
            results.entry(s.name.clone()).or_default().push(f);
            seconds.entry(s.name.clone()).or_default().push(secs);
            // let the last run's sockets close before the next one connects
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let mut out = json!({ "kind": "scale_summary", "rounds": args.rounds,
        "settings": { "rooms": args.rooms, "clients_per_room": args.clients_per_room,
            "senders_per_room": args.senders_per_room, "in_flight": args.in_flight,
            "rate_per_sender": args.rate, "size": args.size,
            "duration_s": args.duration.as_secs_f64(), "warmup_s": args.warmup.as_secs_f64() },
        "runs": runs });
    let mut failed = Vec::new();
    let mut medians = Vec::new();
    let mut plotted = Vec::new();
    for s in &setups {
        let m = median(&results[&s.name]);
        let secs = series::median_series(&seconds[&s.name]);
        out[&s.name] = m.to_json();
        out["seconds"][&s.name] = series::to_json(&secs);
        failed.extend(m.broken().into_iter().map(|b| format!("{}: {b}", s.name)));
        medians.push((s.name.clone(), m));
        plotted.push((s.name.clone(), secs));
    }
    let title = format!(
        "{shape}: medians of {} round(s), counts summed over them",
        args.rounds
    );
    let plot = report::plot_of(
        format!(
            "tsunagi-bench scale: {shape}; per second, median of {} round(s)",
            args.rounds
        ),
        plotted,
    );
    rep.finish(&out, &table(title, &medians), plot)?;
    if !failed.is_empty() {
        bail!("CHECK FAILED: {}", failed.join(", "));
    }
    Ok(())
}

/// The setups side by side, with the last one over the first (e.g. three/one).
fn table(title: String, setups: &[(String, Figures)]) -> Table {
    let names: Vec<String> = setups.iter().map(|(n, _)| n.clone()).collect();
    let mut t = Table::new(title, names.clone());
    if let [first, .., last] = &names[..] {
        t = t.ratio(last, first);
    }
    let rows: [report::Row<Figures>; 16] = [
        ("acked sends/s", Fmt::Whole, |f| f.acked_sends_per_s),
        ("delivered/s", Fmt::Whole, |f| f.delivered_per_s),
        ("send→deliver p50 ms", Fmt::Dec2, |f| f.p50_ms),
        ("send→deliver p90 ms", Fmt::Dec2, |f| f.p90_ms),
        ("send→deliver p99 ms", Fmt::Dec2, |f| f.p99_ms),
        ("send→ack p99 ms", Fmt::Dec2, |f| f.ack_p99_ms),
        ("server CPU µs/delivery", Fmt::Dec1, |f| {
            f.server_cpu_us_per_delivery
        }),
        ("nginx CPU µs/delivery", Fmt::Dec1, |f| {
            f.proxy_cpu_us_per_delivery
        }),
        ("server CPU s", Fmt::Dec1, |f| f.server_cpu_s),
        ("redis commands/send", Fmt::Dec2, |f| {
            f.redis_commands_per_send
        }),
        ("errors", Fmt::Count, |f| f.errors as f64),
        ("disconnects", Fmt::Count, |f| f.disconnects as f64),
        ("missing", Fmt::Count, |f| f.missing as f64),
        ("gaps", Fmt::Count, |f| f.gaps as f64),
        ("dups", Fmt::Count, |f| f.dups as f64),
        ("nginx CPU s", Fmt::Dec1, |f| f.proxy_cpu_s),
    ];
    for (label, fmt, get) in rows {
        t.row(label, fmt, setups.iter().map(|(_, f)| get(f)).collect());
    }
    t
}

/// One client, joined to its room, with its event stream taken out.
type Joined = (
    usize,
    Arc<SioClient>,
    mpsc::UnboundedReceiver<(String, Value)>,
    i64,
);

async fn connect_all(
    args: &ScaleArgs,
    s: &Setup,
    tokens: &[Option<String>],
) -> anyhow::Result<Vec<Joined>> {
    let per = args.clients_per_room;
    let joined: Vec<anyhow::Result<Joined>> = futures::stream::iter(0..tokens.len())
        .map(|i| async move {
            let room = &s.rooms[i / per];
            let mut c = SioClient::connect(&s.url, tokens[i].as_deref())
                .await
                .with_context(|| format!("client {i} connecting"))?;
            let ack = c
                .call("join", json!({ "room": room }), Duration::from_secs(30))
                .await
                .with_context(|| format!("client {i} joining {room}"))?;
            if ack["ok"] != json!(true) {
                bail!("join {room}: {ack}");
            }
            let events = std::mem::replace(&mut c.events, mpsc::unbounded_channel().1);
            Ok((
                i / per,
                Arc::new(c),
                events,
                ack["last_seq"].as_i64().unwrap_or(0),
            ))
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    joined.into_iter().collect()
}

async fn run_once(
    args: &ScaleArgs,
    s: &Setup,
    tokens: &[Option<String>],
    plan: Arc<SendPlan>,
    redis: &mut Option<redis::aio::MultiplexedConnection>,
    rep: &Reporter,
    (index, label): (usize, &str),
) -> anyhow::Result<(Figures, Vec<Second>)> {
    let joined = connect_all(args, s, tokens).await?;
    let start = now_ns();
    let from = start + args.warmup.as_nanos() as u64;
    let w = Window {
        from,
        to: from + args.duration.as_nanos() as u64,
    };
    let per_room: Vec<Arc<AtomicU64>> = (0..args.rooms).map(|_| Arc::default()).collect();
    let _live = rep.watch(index, label, start, w, report::summed(per_room.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = Vec::new();
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (room_ix, c, events, last_seq) in joined {
        receivers.push(tokio::spawn(receive(
            events,
            last_seq + 1,
            w,
            per_room[room_ix].clone(),
            stop_rx.clone(),
        )));
        // connect_all keeps no order: the first `senders_per_room` seen of each room send
        let seen = clients.iter().filter(|(r, _)| *r == room_ix).count();
        if seen < args.senders_per_room {
            senders.push((
                room_ix,
                tokio::spawn(send_loop(
                    c.clone(),
                    s.rooms[room_ix].clone(),
                    plan.clone(),
                    w,
                )),
            ));
        }
        clients.push((room_ix, c));
    }
    let at = |t: u64| tokio::time::sleep_until((*START + Duration::from_nanos(t)).into());
    at(w.from).await;
    let before = s.sample(redis).await?;
    at(w.to).await;
    let after = s.sample(redis).await?;

    let mut sends: Vec<(usize, SendStats)> = Vec::new();
    for (room_ix, h) in senders {
        sends.push((room_ix, h.await?));
    }
    // every client of a room should see every acked message of it: wait (bounded), then stop
    let mut expected = vec![0u64; args.rooms];
    for (room_ix, st) in &sends {
        expected[*room_ix] += st.acked_total * args.clients_per_room as u64;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let short = || {
        (0..args.rooms)
            .map(|r| expected[r].saturating_sub(per_room[r].load(Ordering::Relaxed)))
            .sum::<u64>()
    };
    while short() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let missing = short();
    stop_tx.send(true).ok();
    let mut recvs: Vec<RecvStats> = Vec::new();
    for r in receivers {
        recvs.push(r.await?);
    }
    for (_, c) in &clients {
        c.close();
    }

    let secs = args.duration.as_secs_f64();
    let mut error_codes = BTreeMap::new();
    for (code, n) in sends.iter().flat_map(|(_, s)| &s.errors) {
        *error_codes.entry(code.clone()).or_default() += n;
    }
    let delivered: u64 = recvs.iter().map(|r| r.delivered_in_window).sum();
    let acked: u64 = sends.iter().map(|(_, s)| s.acked_in_window).sum();
    let server_cpu_s = after.server_cpu - before.server_cpu;
    let proxy_cpu_s = after.proxy_cpu - before.proxy_cpu;
    let per_delivery_us = |cpu: f64| cpu * 1e6 / delivered as f64;
    let disconnects = recvs.iter().filter(|r| r.disconnected).count() as u64;
    let gaps = recvs.iter().map(|r| r.gaps).sum();
    let dups = recvs.iter().map(|r| r.dups).sum();
    let m = series::merge(
        w,
        recvs.into_iter().map(|r| r.lat),
        sends.into_iter().map(|(_, s)| s.ack_lat),
    );
    let f = Figures {
        acked_sends_per_s: acked as f64 / secs,
        delivered_per_s: delivered as f64 / secs,
        p50_ms: percentile_ms(&m.lat_us, 0.50),
        p90_ms: percentile_ms(&m.lat_us, 0.90),
        p99_ms: percentile_ms(&m.lat_us, 0.99),
        ack_p99_ms: percentile_ms(&m.ack_lat_us, 0.99),
        server_cpu_s,
        proxy_cpu_s,
        server_cpu_us_per_delivery: per_delivery_us(server_cpu_s),
        proxy_cpu_us_per_delivery: per_delivery_us(proxy_cpu_s),
        redis_commands_per_send: if redis.is_some() {
            after.redis_calls.saturating_sub(before.redis_calls) as f64 / acked as f64
        } else {
            f64::NAN
        },
        errors: error_codes.values().sum(),
        error_codes,
        disconnects,
        gaps,
        dups,
        missing,
    };
    Ok((f, m.seconds))
}
