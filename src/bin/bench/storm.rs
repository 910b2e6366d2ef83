//! `tsunagi-bench storm`: a reconnect storm (bench/storm.sh). The bench starts the server itself
//! (SQLite in a fresh directory), connects `--clients` Socket.IO clients over WebSocket,
//! `--per-room` to a room, and has `--senders` HTTP senders post into the rooms throughout.
//! After `--before` it kills the server with SIGKILL and starts it again on the same file and
//! port: every client reconnects with socket.io-client's backoff and jitter, joins, and `sync`s
//! from the last seq it saw (storm_client.rs). Senders retry every unacked post with the same
//! client_id until it is acked, so each room's seqs 1..=final are all acked messages.
//!
//! With `--ports P1,P2,…` (bench/storm_scaleout.sh) it starts one instance per port, sharing the
//! database and Redis given with `--env`, behind `--front` (nginx); it kills the first instance
//! and does not start it again: the instance is gone, and its clients reconnect through the
//! front to the others. The rest is the same; "recovered" counts the clients the kill dropped.
//!
//! Reported (one JSON line on stdout, a table on stderr): clients recovered / N, time from the
//! kill to each client's recovery (p50/p99/max), messages lost, duplicated or out of order (all
//! must be 0), the server's peak RSS and CPU, and the refused handshakes the clients retried.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::storm_client::{self, Outcome, Shared};
use super::{duration, mint_tokens};

#[derive(clap::Args, Debug, Clone)]
pub struct StormArgs {
    /// The tsunagi binary to run (default: beside this one).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Socket.IO clients.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Clients per room.
    #[arg(long, default_value_t = 50)]
    per_room: usize,
    /// HTTP senders, each posting to the rooms in turn, one post in flight.
    #[arg(long, default_value_t = 20)]
    senders: usize,
    /// Posts per second per sender.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Live traffic before the kill.
    #[arg(long, default_value = "5s", value_parser = duration)]
    before: Duration,
    /// Time the server stays down before it is started again.
    #[arg(long, default_value = "0s", value_parser = duration)]
    down: Duration,
    /// The senders keep sending this long after the restart.
    #[arg(long, default_value = "10s", value_parser = duration)]
    after: Duration,
    /// Longest wait, from the kill, for every client to recover and catch up.
    #[arg(long, default_value = "120s", value_parser = duration)]
    deadline: Duration,
    /// Clients connecting at once during the start-up (not during the storm).
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// The server's data directory (default: a fresh one under /tmp, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Extra server settings, KEY=VALUE (repeatable), e.g. --env TSUNAGI_HISTORY_READS=0.
    #[arg(long = "env")]
    env: Vec<String>,
    /// Instances, one per port (comma-separated), sharing the database and Redis set with
    /// `--env`; more than one needs `--front`. Default: one instance on a free port.
    #[arg(long, value_delimiter = ',')]
    ports: Vec<u16>,
    /// The URL clients and senders use (a proxy in front of the instances, e.g. nginx); default
    /// the only instance.
    #[arg(long)]
    front: Option<String>,
    /// A name for this run in the JSON line (bench/storm.sh: "admission" / "no-admission").
    #[arg(long, default_value = "storm")]
    label: String,
}

#[derive(Serialize, Debug, Default)]
pub struct StormReport {
    kind: &'static str,
    label: String,
    clients: usize,
    rooms: usize,
    senders: usize,
    server_env: Vec<String>,
    instances: usize,
    /// Clients whose connection the kill dropped (every client with one instance).
    dropped: usize,
    recovered: usize,
    recovered_share: f64,
    recover_p50_ms: f64,
    recover_p99_ms: f64,
    recover_max_ms: f64,
    /// From the kill to the last client holding its room's final seq.
    all_caught_up_ms: Option<f64>,
    acked_sends: u64,
    /// Acked messages some client does not hold (sum over clients).
    messages_lost: u64,
    duplicates: u64,
    /// Clients whose messages differ from the acked ones (ids or order).
    mismatched_clients: u64,
    failed_clients: u64,
    failures: BTreeMap<String, u64>,
    reconnects: u64,
    refused_503_retried: u64,
    connection_refused_retried: u64,
    connect_failures: BTreeMap<String, u64>,
    event_retries: BTreeMap<String, u64>,
    /// From the kill to the instance answering again (one instance; several: none restarts).
    restart_ready_ms: Option<f64>,
    server_peak_rss_mib_before: f64,
    server_peak_rss_mib_after: f64,
    /// Server CPU from its restart to the end of the recovery.
    server_cpu_s_storm: f64,
    /// The restarted server's own counters (admission, history reads, pool waits).
    server_metrics: BTreeMap<String, f64>,
    loadavg: String,
}

/// Metric lines of the restarted server worth keeping (prefix match on the sample name).
const KEPT_METRICS: &[&str] = &[
    "tsunagi_admission_handshakes_total",
    "tsunagi_admission_pending",
    "tsunagi_history_reads_total",
    "tsunagi_history_reads_waiting",
    "tsunagi_connections_refused_total",
    "tsunagi_db_acquire_timeouts_total",
    "tsunagi_db_pool_waiting",
    "tsunagi_rate_limited_total",
    "tsunagi_slow_consumer_disconnects_total",
];

pub async fn run(a: StormArgs) -> anyhow::Result<()> {
    if a.clients == 0 || a.per_room == 0 || a.senders == 0 || a.rate <= 0.0 {
        bail!("--clients, --per-room, --senders and --rate must be above 0");
    }
    raise_fd_limit(a.clients as u64 + 4096);
    let bin = match &a.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("tsunagi"),
    };
    let (dir, temp) = match &a.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("tsunagi-storm-{:08x}", rand::random::<u32>())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir)?;
    let ports = match a.ports.as_slice() {
        [] => vec![
            std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port(),
        ],
        given => given.to_vec(),
    };
    if ports.len() > 1 && a.front.is_none() {
        bail!("several instances need --front (the proxy the clients use)");
    }
    let instance_url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    let url = a.front.clone().unwrap_or_else(|| instance_url(0));
    let secret = format!("storm-{:032x}", rand::random::<u128>());
    let servers: Vec<ServerCmd> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| ServerCmd {
            bin: bin.clone(),
            dir: dir.clone(),
            log: format!("server-{i}.log"),
            port,
            secret: secret.clone(),
            env: a.env.clone(),
        })
        .collect();
    let rooms = a.clients.div_ceil(a.per_room);
    let (tokens, admin) = mint_tokens(&secret, a.clients + a.senders)?;
    let tokens: Vec<String> = tokens.into_iter().flatten().collect();

    let mut children = Vec::with_capacity(servers.len());
    for (i, server) in servers.iter().enumerate() {
        children.push(server.spawn()?);
        wait_ready(&instance_url(i), Duration::from_secs(30)).await?;
    }
    wait_ready(&url, Duration::from_secs(30)).await?;
    let http = reqwest::Client::new();
    let room_ids: Vec<String> = (0..rooms).map(|r| format!("storm-{r}")).collect();
    for r in &room_ids {
        let resp = http
            .post(format!("{url}/api/v1/rooms"))
            .bearer_auth(&admin)
            .json(&json!({ "id": r }))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("creating room {r}: {}", resp.status());
        }
    }

    eprintln!(
        "storm: {} clients in {rooms} rooms, {} senders at {}/s, {} instance(s); logs {}",
        a.clients,
        a.senders,
        a.rate,
        servers.len(),
        dir.display()
    );
    let sh = Arc::new(Shared::default());
    let ramp = Arc::new(tokio::sync::Semaphore::new(a.connect_concurrency));
    let clients: Vec<_> = (0..a.clients)
        .map(|i| {
            let room = i / a.per_room;
            tokio::spawn(storm_client::run(
                url.clone(),
                tokens[i].clone(),
                room,
                room_ids[room].clone(),
                sh.clone(),
                ramp.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    while sh.live.load(Ordering::Relaxed) < a.clients {
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "only {} of {} clients joined in 300 s",
                sh.live.load(Ordering::Relaxed),
                a.clients
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "storm: {} clients live after {:.1} s; senders start",
        a.clients,
        started.elapsed().as_secs_f64()
    );

    let acked: Arc<Mutex<Vec<BTreeMap<i64, String>>>> =
        Arc::new(Mutex::new(vec![BTreeMap::new(); rooms]));
    let senders_stop = CancellationToken::new();
    let senders: Vec<_> = (0..a.senders)
        .map(|s| {
            let mine: Vec<usize> = (s..rooms).step_by(a.senders).collect();
            tokio::spawn(sender(
                http.clone(),
                url.clone(),
                tokens[a.clients + s].clone(),
                s,
                mine,
                room_ids.clone(),
                a.rate,
                acked.clone(),
                senders_stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(a.before).await;

    let rss_before = peak_rss_mib(children[0].id());
    let killed = Instant::now();
    sh.killed_at.set(killed).ok();
    children[0].start_kill()?; // SIGKILL
    children[0].wait().await?;
    eprintln!(
        "storm: instance 0 killed (-9) after {:?} of traffic",
        a.before
    );
    // One instance: started again on the same file and port. Several: the first is gone and
    // the others take its clients; what is measured is on them.
    let restart_ready_ms = if servers.len() == 1 {
        tokio::time::sleep(a.down).await;
        children[0] = servers[0].spawn()?;
        wait_ready(&url, Duration::from_secs(60)).await?;
        Some(killed.elapsed().as_secs_f64() * 1e3)
    } else {
        None
    };
    let serving = if servers.len() == 1 {
        0..1
    } else {
        1..servers.len()
    };
    let pids: Vec<Option<u32>> = children[serving.clone()].iter().map(Child::id).collect();
    let cpu_now = || pids.iter().map(|&p| cpu_secs(p)).sum::<f64>();
    let cpu_at_restart = cpu_now();

    // progress until the senders stop, then until every client holds its room's final seq
    let stop_senders_at = Instant::now() + a.after;
    let deadline = killed + a.deadline;
    let mut senders_done = false;
    let mut all_caught_up = None;
    let mut cpu_storm = 0.0;
    loop {
        let rec = sh.recovered.load(Ordering::Relaxed);
        // several instances: how many the kill dropped is known once the senders are done
        // (a killed instance's connections end at once)
        let all_recovered = match servers.len() {
            1 => rec == a.clients,
            _ => senders_done && rec == sh.dropped.load(Ordering::Relaxed),
        };
        if all_recovered && cpu_storm == 0.0 {
            cpu_storm = cpu_now() - cpu_at_restart;
        }
        if !senders_done && Instant::now() >= stop_senders_at {
            senders_stop.cancel();
            for s in &senders {
                while !s.is_finished() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let finals: Vec<i64> = acked
                .lock()
                .iter()
                .map(|m| m.keys().next_back().copied().unwrap_or(0))
                .collect();
            sh.finals.set(finals).ok();
            sh.finals_ready.cancel();
            senders_done = true;
        }
        if senders_done && clients.iter().all(|c| c.is_finished()) {
            all_caught_up = Some(killed.elapsed().as_secs_f64() * 1e3);
            break;
        }
        if Instant::now() >= deadline {
            eprintln!("storm: deadline reached");
            break;
        }
        eprint!(
            "\rstorm: {:>6.1} s after the kill: {rec}/{} recovered   ",
            killed.elapsed().as_secs_f64(),
            sh.dropped.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!();
    if cpu_storm == 0.0 {
        cpu_storm = cpu_now() - cpu_at_restart;
    }
    let rss_after = pids.iter().map(|&p| peak_rss_mib(p)).fold(0.0, f64::max);
    // the first serving instance's own counters (not the front's)
    let server_metrics = scrape(&http, &instance_url(serving.start))
        .await
        .unwrap_or_default();
    sh.stop.cancel();
    let mut outcomes = Vec::with_capacity(a.clients);
    for c in clients {
        outcomes.push(c.await?);
    }
    for child in &mut children[serving] {
        stop(child).await;
    }
    if temp {
        std::fs::remove_dir_all(&dir).ok();
    }

    let acked = acked.lock();
    let mut r = report(&a, rooms, &outcomes, &acked);
    r.instances = servers.len();
    r.dropped = sh.dropped.load(Ordering::Relaxed);
    r.recovered_share = r.recovered as f64 / r.dropped.max(1) as f64;
    r.all_caught_up_ms = all_caught_up;
    r.refused_503_retried = sh.refused_503.load(Ordering::Relaxed);
    r.connection_refused_retried = sh.conn_refused.load(Ordering::Relaxed);
    r.connect_failures = sh.connect_failures.lock().clone();
    r.event_retries = sh.event_retries.lock().clone();
    r.restart_ready_ms = restart_ready_ms;
    r.server_peak_rss_mib_before = rss_before;
    r.server_peak_rss_mib_after = rss_after;
    r.server_cpu_s_storm = cpu_storm;
    r.server_metrics = server_metrics;
    println!("{}", serde_json::to_string(&r)?);
    print_table(&r);
    let broken = r.messages_lost + r.duplicates + r.mismatched_clients + r.failed_clients;
    // with one instance every client must have been dropped and recovered
    let must_recover = if r.instances == 1 {
        a.clients
    } else {
        r.dropped
    };
    if broken > 0 || r.recovered < must_recover || r.dropped == 0 {
        bail!(
            "CHECK FAILED: {} of {} recovered, lost {}, duplicates {}, mismatched {}, failed {}",
            r.recovered,
            must_recover,
            r.messages_lost,
            r.duplicates,
            r.mismatched_clients,
            r.failed_clients
        );
    }
    Ok(())
}

/// One sender: a post every 1/rate s to its rooms in turn, each retried with its client_id
/// until acked (the server may be down), the acked seq and id recorded.
#[allow(clippy::too_many_arguments)]
async fn sender(
    http: reqwest::Client,
    url: String,
    token: String,
    me: usize,
    rooms: Vec<usize>,
    room_ids: Vec<String>,
    rate: f64,
    acked: Arc<Mutex<Vec<BTreeMap<i64, String>>>>,
    stop: CancellationToken,
) {
    if rooms.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let room = rooms[n % rooms.len()];
        let body =
            json!({ "content": format!("storm {me}-{n}"), "client_id": format!("s{me}-{n}") });
        let target = format!("{url}/api/v1/rooms/{}/messages", room_ids[room]);
        // once posted, a send is retried until acked even after `stop`: its seq may be taken
        loop {
            let resp = http
                .post(&target)
                .bearer_auth(&token)
                .json(&body)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Ok(resp) = resp
                && resp.status().is_success()
                && let Ok(m) = resp.json::<serde_json::Value>().await
                && let (Some(seq), Some(id)) = (m["seq"].as_i64(), m["id"].as_str())
            {
                acked.lock()[room].insert(seq, id.to_owned());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn report(
    a: &StormArgs,
    rooms: usize,
    outcomes: &[Outcome],
    acked: &[BTreeMap<i64, String>],
) -> StormReport {
    // each room's expected fold; a room's seqs 1..=final must all have been acked
    let expected: Vec<(i64, u64, bool)> = acked
        .iter()
        .map(|m| {
            let last = m.keys().next_back().copied().unwrap_or(0);
            let complete = m.len() as i64 == last;
            (
                last,
                m.values().fold(0, |acc, id| storm_client::fold(acc, id)),
                complete,
            )
        })
        .collect();
    let mut rec: Vec<Duration> = outcomes.iter().filter_map(|o| o.recovered_after).collect();
    rec.sort_unstable();
    let pct = |p: f64| {
        rec.get(((rec.len() as f64 * p) as usize).min(rec.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let mut failures = BTreeMap::new();
    for (room, (_, _, complete)) in expected.iter().enumerate() {
        if !complete {
            *failures
                .entry(format!("room {room}: acked seqs are not 1..=last"))
                .or_default() += 1;
        }
    }
    for o in outcomes.iter().filter_map(|o| o.failed.as_ref()) {
        *failures.entry(o.chars().take(120).collect()).or_default() += 1;
    }
    StormReport {
        kind: "storm",
        label: a.label.clone(),
        clients: a.clients,
        rooms,
        senders: a.senders,
        server_env: a.env.clone(),
        recovered: rec.len(),
        recovered_share: rec.len() as f64 / a.clients as f64,
        recover_p50_ms: pct(0.50),
        recover_p99_ms: pct(0.99),
        recover_max_ms: rec.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        acked_sends: acked.iter().map(|m| m.len() as u64).sum(),
        messages_lost: outcomes
            .iter()
            .map(|o| o.skipped + (expected[o.room].0 + 1 - o.next).max(0) as u64)
            .sum(),
        duplicates: outcomes.iter().map(|o| o.dups).sum(),
        mismatched_clients: outcomes
            .iter()
            .filter(|o| o.next == expected[o.room].0 + 1 && o.fold != expected[o.room].1)
            .count() as u64,
        failed_clients: outcomes.iter().filter(|o| o.failed.is_some()).count() as u64,
        failures,
        reconnects: outcomes.iter().map(|o| o.reconnects).sum(),
        loadavg: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        ..StormReport::default()
    }
}

fn print_table(r: &StormReport) {
    let rows = [
        (
            "clients dropped by the kill, recovered",
            format!(
                "{} / {} ({:.1} %) of {} clients on {} instance(s)",
                r.recovered,
                r.dropped,
                r.recovered_share * 100.0,
                r.clients,
                r.instances
            ),
        ),
        (
            "kill → recovered p50 / p99 / max",
            format!(
                "{:.0} / {:.0} / {:.0} ms",
                r.recover_p50_ms, r.recover_p99_ms, r.recover_max_ms
            ),
        ),
        (
            "kill → all caught up",
            r.all_caught_up_ms
                .map_or("not reached".into(), |ms| format!("{ms:.0} ms")),
        ),
        (
            "server ready again after",
            r.restart_ready_ms
                .map_or("not restarted (others took its clients)".into(), |ms| {
                    format!("{ms:.0} ms")
                }),
        ),
        ("acked sends", r.acked_sends.to_string()),
        (
            "messages lost / duplicates / mismatched clients",
            format!(
                "{} / {} / {}",
                r.messages_lost, r.duplicates, r.mismatched_clients
            ),
        ),
        ("failed clients", r.failed_clients.to_string()),
        (
            "handshakes refused 503, retried",
            r.refused_503_retried.to_string(),
        ),
        (
            "connects refused (down), retried",
            r.connection_refused_retried.to_string(),
        ),
        (
            "other connect failures",
            format!("{:?}", r.connect_failures),
        ),
        ("join/sync retried", format!("{:?}", r.event_retries)),
        (
            "server peak RSS before / after",
            format!(
                "{:.0} / {:.0} MiB",
                r.server_peak_rss_mib_before, r.server_peak_rss_mib_after
            ),
        ),
        (
            "server CPU, restart → all recovered",
            format!("{:.2} s", r.server_cpu_s_storm),
        ),
        ("load average at the end", r.loadavg.clone()),
    ];
    eprintln!(
        "\nreconnect storm [{}] ({} clients, {} rooms, {} senders)",
        r.label, r.clients, r.rooms, r.senders
    );
    for (k, v) in rows {
        eprintln!("  {k:<48} {v}");
    }
    for (k, v) in &r.server_metrics {
        eprintln!("  {k:<48} {v}");
    }
}

/// How the server is started (twice: before and after the kill, same file and port).
struct ServerCmd {
    bin: PathBuf,
    dir: PathBuf,
    /// The log file's name in `dir`.
    log: String,
    port: u16,
    secret: String,
    env: Vec<String>,
}

impl ServerCmd {
    fn spawn(&self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(&self.log))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .env("TSUNAGI_LISTEN", format!("127.0.0.1:{}", self.port))
            .env(
                "TSUNAGI_DATABASE_URL",
                format!("sqlite://{}", self.dir.join("storm.db").display()),
            )
            .env("TSUNAGI_JWT_SECRET", &self.secret)
            .env("TSUNAGI_SEND_RATE", "0")
            .env("TSUNAGI_WRITE_RATE", "0")
            .env("TSUNAGI_CONNECTIONS_PER_ADDRESS", "0")
            .env("TSUNAGI_MAX_CONNECTIONS", "100000")
            .env("TSUNAGI_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        for kv in &self.env {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--env {kv}: not KEY=VALUE"))?;
            cmd.env(k, v);
        }
        cmd.spawn()
            .with_context(|| format!("starting {}", self.bin.display()))
    }
}

async fn wait_ready(url: &str, within: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let until = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("{url} not ready within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        child.start_kill().ok();
    }
}

async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && KEPT_METRICS.iter().any(|p| l.starts_with(p)))
        .filter(|l| !l.contains("_bucket{"))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_owned(), v.parse().ok()?))
        })
        .collect())
}

fn proc_status(pid: Option<u32>) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc").join(pid?.to_string()).join("status")).ok()
}

/// VmHWM: the process's peak resident set.
fn peak_rss_mib(pid: Option<u32>) -> f64 {
    proc_status(pid)
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// User + system CPU seconds of a process (/proc/PID/stat fields 14 and 15).
fn cpu_secs(pid: Option<u32>) -> f64 {
    let Some(stat) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
    else {
        return f64::NAN;
    };
    // fields after the command name, which may hold spaces: state is field 3
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / hz
}

/// Raises the descriptor limit: to `want` (both limits, as root may), else the soft one to the hard.
fn raise_fd_limit(want: u64) {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= want {
            return;
        }
        let both = libc::rlimit {
            rlim_cur: want.max(lim.rlim_max),
            rlim_max: want.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &both) != 0 {
            let soft = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
    }
}
