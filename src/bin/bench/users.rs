//! `tsunagi-bench users`: `GET /api/v1/users/{id}` requests/s against several servers in one
//! run (alternating rounds, medians), each set up alike: `--users` accounts registered through
//! `POST /api/v1/auth/register`, then `--connections` keep-alive HTTP/1.1 connections, each
//! asking for a random one of them as fast as the answers come back (closed loop).
//!
//! What answered is checked on the server's own counters: `/metrics` is read at the start and
//! the end of each window, and the users cache's L1 hits, L2 hits and loads from the database
//! in that window are reported as shares of the requests answered in it, so a configuration
//! meant to be served by L2 shows whether it was (`--expect`). A failed check (a target not
//! served by the layer it expects, or any failed request) is printed as `CHECK FAILED` with the
//! summary, and makes the command exit non-zero.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use super::rounds::Rounds;
use super::{Window, duration, now_ns, percentile_ms, round};

/// Most failed requests whose message is kept (per worker), to say what went wrong.
const ERROR_SAMPLES: usize = 3;

#[derive(clap::Args, Debug, Clone)]
pub struct UsersArgs {
    /// A server under test as NAME=URL (repeat: each is run in every round, in this order in the
    /// first round, rotated by one in each next).
    #[arg(long = "target", value_name = "NAME=URL", required = true, value_parser = target)]
    targets: Vec<(String, String)>,
    /// What should answer a target's GETs, as NAME=LAYER with LAYER l1, l2 or store; the window's
    /// cache counters are checked against it: l1, at least 99 % of the requests are L1 hits; l2
    /// or store (L1 off), at least 99 % of the fills (L1 misses) are L2 hits, or loads.
    #[arg(long = "expect", value_name = "NAME=LAYER", value_parser = expectation)]
    expect: Vec<(String, Layer)>,
    /// The target the others are given as ratios to.
    #[arg(long, default_value = "uncached")]
    baseline: String,
    /// Accounts registered on each target; every GET asks for a random one of them.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Registrations in flight at once during the setup.
    #[arg(long, default_value_t = 16)]
    register_concurrency: usize,
    /// Concurrent keep-alive connections, each with one request outstanding at a time.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Runs per target; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measurement window, e.g. 10s or 500ms.
    #[arg(long, default_value = "10s", value_parser = duration)]
    duration: Duration,
    /// Load before the window, not counted.
    #[arg(long, default_value = "2s", value_parser = duration)]
    warmup: Duration,
    /// A target's process id, as NAME=PID (Linux): its CPU time over each window is reported,
    /// as cores and as CPU time per request.
    #[arg(long = "pid", value_name = "NAME=PID", value_parser = pid)]
    pids: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    L1,
    L2,
    Store,
}

fn target(s: &str) -> Result<(String, String), String> {
    let (name, url) = s.split_once('=').ok_or("use NAME=URL")?;
    if name.is_empty() || !url.starts_with("http://") {
        return Err(format!("`{s}`: use NAME=http://host:port"));
    }
    Ok((name.to_owned(), url.trim_end_matches('/').to_owned()))
}

fn pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("use NAME=PID")?;
    let pid = pid
        .parse()
        .map_err(|_| format!("`{pid}` is not a process id"))?;
    Ok((name.to_owned(), pid))
}

fn expectation(s: &str) -> Result<(String, Layer), String> {
    let (name, layer) = s.split_once('=').ok_or("use NAME=LAYER")?;
    let layer = match layer {
        "l1" => Layer::L1,
        "l2" => Layer::L2,
        "store" => Layer::Store,
        _ => return Err(format!("`{layer}`: use l1, l2 or store")),
    };
    Ok((name.to_owned(), layer))
}

/// One target's accounts: the ids to ask for and a token per connection.
struct Accounts {
    ids: Arc<Vec<String>>,
    tokens: Vec<Arc<str>>,
}

/// Registers `n` accounts on `base` (usernames unique to this run) and checks that one of them
/// reads back.
async fn register(
    http: &reqwest::Client,
    base: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Accounts> {
    let tag = format!("{:08x}", rand::random::<u32>());
    let password = format!("pw-{:016x}", rand::random::<u64>());
    let url = format!("{base}/api/v1/auth/register");
    let mut done: Vec<(String, String)> = futures::stream::iter(0..n)
        .map(|i| {
            let body = json!({
                "username": format!("bu{tag}{i:05}"),
                "email": format!("bu{tag}{i:05}@bench.example"),
                "password": password,
            });
            let req = http.post(&url).json(&body).send();
            async move {
                let resp = req.await?;
                let status = resp.status();
                let v: Value = resp.json().await?;
                if status != reqwest::StatusCode::CREATED {
                    bail!("register: {status} {v}");
                }
                let id = v["user"]["id"].as_str().context("register: no user.id")?;
                let token = v["token"].as_str().context("register: no token")?;
                anyhow::Ok((id.to_owned(), token.to_owned()))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    done.sort();
    let (id, token) = &done[0];
    let resp = http
        .get(format!("{base}/api/v1/users/{id}"))
        .bearer_auth(token)
        .send()
        .await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    if status != reqwest::StatusCode::OK || v["id"] != json!(id) {
        bail!("GET /api/v1/users/{id} after registering it: {status} {v}");
    }
    Ok(Accounts {
        ids: Arc::new(done.iter().map(|(id, _)| id.clone()).collect()),
        tokens: done.into_iter().map(|(_, t)| t.into()).collect(),
    })
}

/// `/proc` counts CPU time in USER_HZ ticks, 100 a second on Linux whatever the kernel's HZ.
const TICKS_PER_S: f64 = 100.0;

/// CPU time in ticks at one moment: the machine's busy time (all cores), this process's and the
/// target's (when its pid is known). `None` where `/proc` does not tell.
#[derive(Clone, Copy)]
struct CpuTicks {
    machine: Option<u64>,
    bench: Option<u64>,
    server: Option<u64>,
}

impl CpuTicks {
    fn now(server: Option<u32>) -> Self {
        CpuTicks {
            machine: machine_busy_ticks(),
            bench: process_ticks("self"),
            server: server.and_then(|p| process_ticks(&p.to_string())),
        }
    }
}

/// `utime + stime` of a process, from `/proc/<pid>/stat`.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name may hold spaces and parentheses: the fields start after the last `)`
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Every core's time not idle (nor waiting for I/O), from the `cpu` line of `/proc/stat`.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let total: u64 = v.iter().take(8).sum();
    Some(total - v.get(3)? - v.get(4)?)
}

/// Cores busy on average between `a` and `b`, `secs` apart.
fn cores(a: Option<u64>, b: Option<u64>, secs: f64) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / TICKS_PER_S / secs,
        _ => f64::NAN,
    }
}

/// The users cache's counters, from `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
struct CacheCounters {
    l1_hit: f64,
    l1_miss: f64,
    l2_hit: f64,
    l2_miss: f64,
    l2_error: f64,
    loads: f64,
}

impl CacheCounters {
    /// Each counter of `self` and `o` combined by `op`.
    fn each(&self, o: &CacheCounters, op: fn(f64, f64) -> f64) -> CacheCounters {
        CacheCounters {
            l1_hit: op(self.l1_hit, o.l1_hit),
            l1_miss: op(self.l1_miss, o.l1_miss),
            l2_hit: op(self.l2_hit, o.l2_hit),
            l2_miss: op(self.l2_miss, o.l2_miss),
            l2_error: op(self.l2_error, o.l2_error),
            loads: op(self.loads, o.loads),
        }
    }

    /// What was counted since `o` (an earlier reading).
    fn minus(&self, o: &CacheCounters) -> CacheCounters {
        self.each(o, |a, b| a - b)
    }

    fn plus(&self, o: &CacheCounters) -> CacheCounters {
        self.each(o, |a, b| a + b)
    }
}

/// A sample's name and labels, e.g. `name{a="x",b="y"} 3`, and its value.
fn sample(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head, BTreeMap::new()),
        Some((name, rest)) => {
            let labels = rest
                .strip_suffix('}')?
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            (name, labels)
        }
    };
    Some((name, labels, value))
}

fn parse_counters(text: &str) -> CacheCounters {
    let mut c = CacheCounters::default();
    for (name, labels, v) in text.lines().filter_map(sample) {
        if labels.get("cache") != Some(&"users") {
            continue;
        }
        let slot = match (
            name,
            labels.get("layer").copied(),
            labels.get("result").copied(),
        ) {
            ("tsunagi_cache_requests_total", Some("l1"), Some("hit")) => &mut c.l1_hit,
            ("tsunagi_cache_requests_total", Some("l1"), Some("miss")) => &mut c.l1_miss,
            ("tsunagi_cache_requests_total", Some("l2"), Some("hit")) => &mut c.l2_hit,
            ("tsunagi_cache_requests_total", Some("l2"), Some("miss")) => &mut c.l2_miss,
            ("tsunagi_cache_errors_total", Some("l2"), _) => &mut c.l2_error,
            ("tsunagi_cache_loads_total", _, _) => &mut c.loads,
            _ => continue,
        };
        *slot += v;
    }
    c
}

async fn scrape(http: &reqwest::Client, base: &str) -> anyhow::Result<CacheCounters> {
    let resp = http.get(format!("{base}/metrics")).send().await?;
    if !resp.status().is_success() {
        bail!("GET /metrics: {}", resp.status());
    }
    Ok(parse_counters(&resp.text().await?))
}

#[derive(Default)]
struct WorkerStats {
    ok_in_window: u64,
    lat_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    samples: Vec<String>,
}

/// One connection: GET a random account until the window ends.
async fn worker(
    http: reqwest::Client,
    base: Arc<str>,
    token: Arc<str>,
    ids: Arc<Vec<String>>,
    w: Window,
) -> WorkerStats {
    let mut st = WorkerStats::default();
    loop {
        let start = now_ns();
        if start >= w.to {
            break;
        }
        let id = &ids[rand::random_range(0..ids.len())];
        let sent = http
            .get(format!("{base}/api/v1/users/{id}"))
            .bearer_auth(&*token)
            .send()
            .await;
        // the whole body is read, so the connection goes back to the pool for the next request
        let failure = match sent {
            Ok(resp) => {
                let status = resp.status();
                match resp.bytes().await {
                    Ok(_) if status == reqwest::StatusCode::OK => None,
                    Ok(body) => Some((
                        status.as_u16().to_string(),
                        String::from_utf8_lossy(&body).into_owned(),
                    )),
                    Err(e) => Some(("body".into(), e.to_string())),
                }
            }
            Err(e) if e.is_timeout() => Some(("timeout".into(), e.to_string())),
            Err(e) => Some(("transport".into(), e.to_string())),
        };
        let done = now_ns();
        match failure {
            None if w.has(done) => {
                st.ok_in_window += 1;
                st.lat_us.push((done.saturating_sub(start) / 1000) as u32);
            }
            None => {}
            Some((code, why)) => {
                *st.errors.entry(code).or_default() += 1;
                if st.samples.len() < ERROR_SAMPLES {
                    st.samples.push(why);
                }
                // a server that is gone would otherwise be asked in a tight loop
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    st
}

/// One run's figures.
#[derive(Debug, Clone, Default)]
struct Figures {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    error_codes: BTreeMap<String, u64>,
    /// The users cache's counters over the window.
    cache: CacheCounters,
    /// Requests answered (200) in the window.
    answered: u64,
    /// Cores busy over the window: the target (NaN without --pid), this load generator, and the
    /// whole machine (everything else included: the database, Redis, other work).
    server_cores: f64,
    bench_cores: f64,
    machine_cores: f64,
    /// The target's CPU time per request answered, in microseconds.
    server_us_per_request: f64,
}

impl Figures {
    /// `x` per request answered in the window.
    fn share(&self, x: f64) -> f64 {
        if self.answered == 0 {
            f64::NAN
        } else {
            x / self.answered as f64
        }
    }

    fn shares_json(&self) -> Value {
        let c = &self.cache;
        json!({
            "l1_hit": round3(self.share(c.l1_hit)), "l1_miss": round3(self.share(c.l1_miss)),
            "l2_hit": round3(self.share(c.l2_hit)), "l2_miss": round3(self.share(c.l2_miss)),
            "l2_error": round3(self.share(c.l2_error)), "load": round3(self.share(c.loads)),
        })
    }

    fn to_json(&self) -> Value {
        let c = &self.cache;
        json!({
            "requests_per_s": round(self.requests_per_s),
            "cpu_cores": { "server": round(self.server_cores), "bench": round(self.bench_cores),
                "machine": round(self.machine_cores) },
            "server_cpu_us_per_request": round(self.server_us_per_request),
            "p50_ms": round3(self.p50_ms), "p99_ms": round3(self.p99_ms), "max_ms": round3(self.max_ms),
            "errors": self.errors, "error_codes": self.error_codes,
            "answered_in_window": self.answered,
            "cache_in_window": {
                "l1_hit": c.l1_hit, "l1_miss": c.l1_miss, "l2_hit": c.l2_hit,
                "l2_miss": c.l2_miss, "l2_error": c.l2_error, "loads": c.loads,
            },
            "per_request": self.shares_json(),
        })
    }

    /// Whether `layer` answered the window's requests: its share, and whether that is enough.
    ///
    /// With L1 on, the share of the requests answered by L1 hits. With L1 off (capacity 0) every
    /// request is an L1 miss and a fill (L2, else the database), except those that arrive while a
    /// fill of the same key is running: they share it and the server counts them as L1 hits. So
    /// for L2 and the database the share is of the fills (the L1 misses): L2 hits, or loads.
    fn check(&self, layer: Layer) -> (f64, bool) {
        let c = &self.cache;
        let fills = |x: f64| {
            if c.l1_miss > 0.0 {
                x / c.l1_miss
            } else {
                f64::NAN
            }
        };
        let share = match layer {
            Layer::L1 => self.share(c.l1_hit),
            Layer::L2 => fills(c.l2_hit),
            Layer::Store => fills(c.loads),
        };
        let clean = match layer {
            Layer::L1 => true,
            Layer::L2 => c.loads <= 0.01 * c.l1_miss,
            Layer::Store => c.l2_hit == 0.0,
        };
        (share, share >= 0.99 && clean)
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The load on one target: `connections` clients of one connection each, the counters read at
/// both ends of the window.
async fn run(
    args: &UsersArgs,
    base: &str,
    pid: Option<u32>,
    accounts: &Accounts,
    admin: &reqwest::Client,
) -> anyhow::Result<Figures> {
    let from = now_ns() + args.warmup.as_nanos() as u64;
    let w = Window {
        from,
        to: from + args.duration.as_nanos() as u64,
    };
    let base: Arc<str> = base.into();
    let workers: Vec<_> = (0..args.connections)
        .map(|i| {
            let http = reqwest::Client::builder()
                .http1_only()
                .pool_max_idle_per_host(1)
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client without TLS builds");
            tokio::spawn(worker(
                http,
                base.clone(),
                accounts.tokens[i % accounts.tokens.len()].clone(),
                accounts.ids.clone(),
                w,
            ))
        })
        .collect();
    let at = |t: u64| tokio::time::sleep_until((*super::START + Duration::from_nanos(t)).into());
    at(w.from).await;
    let cpu_before = CpuTicks::now(pid);
    let before = scrape(admin, &base)
        .await
        .context("/metrics at window start")?;
    at(w.to).await;
    let cpu_after = CpuTicks::now(pid);
    let after = scrape(admin, &base)
        .await
        .context("/metrics at window end")?;
    let mut stats = Vec::new();
    for wk in workers {
        stats.push(wk.await?);
    }

    let mut lat: Vec<u32> = stats
        .iter_mut()
        .flat_map(|s| std::mem::take(&mut s.lat_us))
        .collect();
    lat.sort_unstable();
    let mut error_codes = BTreeMap::new();
    for (code, n) in stats.iter().flat_map(|s| &s.errors) {
        *error_codes.entry(code.clone()).or_default() += n;
    }
    if let Some(why) = stats.iter().flat_map(|s| &s.samples).next() {
        eprintln!("  first failure at {base}: {why}");
    }
    let answered: u64 = stats.iter().map(|s| s.ok_in_window).sum();
    let secs = args.duration.as_secs_f64();
    let server_cores = cores(cpu_before.server, cpu_after.server, secs);
    Ok(Figures {
        requests_per_s: answered as f64 / secs,
        p50_ms: percentile_ms(&lat, 0.50),
        p99_ms: percentile_ms(&lat, 0.99),
        max_ms: lat.last().map_or(f64::NAN, |&m| f64::from(m) / 1e3),
        errors: error_codes.values().sum(),
        error_codes,
        cache: after.minus(&before),
        answered,
        server_cores,
        server_us_per_request: server_cores * 1e6 * secs / answered as f64,
        bench_cores: cores(cpu_before.bench, cpu_after.bench, secs),
        machine_cores: cores(cpu_before.machine, cpu_after.machine, secs),
    })
}

/// The median of each figure on its own; errors and cache counters are summed over the runs.
fn median(runs: &[Figures]) -> Figures {
    let r = Rounds(runs);
    Figures {
        requests_per_s: r.median(|f| f.requests_per_s),
        p50_ms: r.median(|f| f.p50_ms),
        p99_ms: r.median(|f| f.p99_ms),
        max_ms: r.median(|f| f.max_ms),
        errors: r.sum(|f| f.errors),
        error_codes: r.sum_codes(|f| &f.error_codes),
        cache: runs
            .iter()
            .fold(CacheCounters::default(), |sum, f| sum.plus(&f.cache)),
        answered: r.sum(|f| f.answered),
        server_cores: r.median(|f| f.server_cores),
        bench_cores: r.median(|f| f.bench_cores),
        machine_cores: r.median(|f| f.machine_cores),
        server_us_per_request: r.median(|f| f.server_us_per_request),
    }
}

/// Per request answered: "l1 hit 1.000, l1 miss 0.000, l2 hit 0.000, load 0.000".
fn served(f: &Figures) -> String {
    let c = &f.cache;
    let mut s = format!(
        "l1 hit {:.3}, l1 miss {:.3}, l2 hit {:.3}, load {:.3}",
        f.share(c.l1_hit),
        f.share(c.l1_miss),
        f.share(c.l2_hit),
        f.share(c.loads)
    );
    if c.l2_miss > 0.0 || c.l2_error > 0.0 {
        s += &format!(
            " (l2 miss {:.3}, l2 error {:.3})",
            f.share(c.l2_miss),
            f.share(c.l2_error)
        );
    }
    s
}

fn summary(name: &str, f: &Figures) -> String {
    format!(
        "{name:>10}: {:>8.0} requests/s  p50 {:>6.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  errors {:>3}  \
         server {:>5.1} µs CPU/request; cores: server {:.2}, bench {:.2}, machine {:.2}  per request: {}",
        f.requests_per_s,
        f.p50_ms,
        f.p99_ms,
        f.max_ms,
        f.errors,
        f.server_us_per_request,
        f.server_cores,
        f.bench_cores,
        f.machine_cores,
        served(f)
    )
}

pub async fn main(args: UsersArgs) -> anyhow::Result<()> {
    if args.users == 0 || args.connections == 0 || args.rounds == 0 {
        bail!("--users, --connections and --rounds must be at least 1");
    }
    for (name, _) in &args.expect {
        if !args.targets.iter().any(|(n, _)| n == name) {
            bail!("--expect {name}: no --target of that name");
        }
    }
    let admin = reqwest::Client::builder()
        .http1_only()
        .timeout(Duration::from_secs(30))
        .build()?;
    eprintln!(
        "GET /api/v1/users/{{id}}: {} accounts per target, {} connections, warmup {:?}, window {:?}, {} round(s)",
        args.users, args.connections, args.warmup, args.duration, args.rounds
    );
    let mut accounts = Vec::new();
    for (name, base) in &args.targets {
        let t0 = std::time::Instant::now();
        // a client of its own, dropped with its connections before the load
        let http = reqwest::Client::builder()
            .http1_only()
            .timeout(Duration::from_secs(30))
            .build()?;
        let a = register(&http, base, args.users, args.register_concurrency)
            .await
            .with_context(|| format!("setting up {name} at {base}"))?;
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "{name}: registered {} accounts in {secs:.1} s ({:.0}/s)",
            a.ids.len(),
            a.ids.len() as f64 / secs
        );
        println!(
            "{}",
            json!({ "kind": "users_setup", "target": name, "accounts": a.ids.len(),
                "register_s": round(secs) })
        );
        accounts.push(a);
    }

    let mut results: BTreeMap<String, Vec<Figures>> = BTreeMap::new();
    let n = args.targets.len();
    for r in 0..args.rounds {
        // each round starts one target later, so none always runs first (or last)
        for k in 0..n {
            let i = (r + k) % n;
            let (name, base) = &args.targets[i];
            let pid = args.pids.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
            let f = run(&args, base, pid, &accounts[i], &admin)
                .await
                .with_context(|| format!("{name} at {base}"))?;
            println!(
                "{}",
                json!({ "kind": "users_run", "target": name, "round": r + 1, "figures": f.to_json() })
            );
            eprintln!("round {} {}", r + 1, summary(name, &f));
            results.entry(name.clone()).or_default().push(f);
            // the closed connections' sockets settle before the next load starts
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    let medians: Vec<(&str, Figures)> = args
        .targets
        .iter()
        .map(|(name, _)| (name.as_str(), median(&results[name])))
        .collect();
    let base = medians
        .iter()
        .find(|(n, _)| *n == args.baseline)
        .map(|(_, f)| f.clone());
    let mut out = json!({ "kind": "users_summary", "rounds": args.rounds, "baseline": args.baseline,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "settings": { "users": args.users, "connections": args.connections,
            "duration_s": args.duration.as_secs_f64(), "warmup_s": args.warmup.as_secs_f64() },
        "targets": {} });
    let (mut checks, mut failed_checks) = (Vec::new(), Vec::new());
    eprintln!(
        "\nmedians of {} round(s); \"per request\" is the users cache's counters over the windows \
         of all rounds, per request answered:",
        args.rounds
    );
    eprintln!(
        "| target | requests/s | ×{b} | p50 ms | p99 ms | server CPU µs/request | ×{b} | \
         cores: server / bench / machine | per request |",
        b = args.baseline
    );
    eprintln!("|---|---:|---:|---:|---:|---:|---:|---|---|");
    let ratio = |f: &Figures, x: fn(&Figures) -> f64| base.as_ref().map(|b| x(f) / x(b));
    let times = |r: Option<f64>| r.map_or("-".into(), |r| format!("×{r:.2}"));
    for (name, f) in &medians {
        let mut t = f.to_json();
        if base.is_some() {
            let r = |x: fn(&Figures) -> f64| ratio(f, x).map(round);
            t["ratio_to_baseline"] = json!({
                "requests_per_s": r(|f| f.requests_per_s),
                "p50_ms": r(|f| f.p50_ms),
                "p99_ms": r(|f| f.p99_ms),
                "server_cpu_us_per_request": r(|f| f.server_us_per_request),
            });
        }
        if let Some((_, layer)) = args.expect.iter().find(|(n, _)| n == name) {
            let (share, ok) = f.check(*layer);
            let of = if *layer == Layer::L1 {
                "requests"
            } else {
                "fills"
            };
            t["expect"] = json!({ "layer": format!("{layer:?}").to_lowercase(),
                "share": round3(share), "of": of, "ok": ok });
            let line = format!(
                "{name}: expected {layer:?}: it answered {share:.3} of the {of} ({})",
                served(f)
            );
            if ok {
                checks.push(line);
            } else {
                failed_checks.push(line);
            }
        }
        out["targets"][name] = t;
        eprintln!(
            "| {name} | {:.0} | {} | {:.2} | {:.2} | {:.1} | {} | {:.2} / {:.2} / {:.2} | {} |",
            f.requests_per_s,
            times(ratio(f, |f| f.requests_per_s)),
            f.p50_ms,
            f.p99_ms,
            f.server_us_per_request,
            times(ratio(f, |f| f.server_us_per_request)),
            f.server_cores,
            f.bench_cores,
            f.machine_cores,
            served(f)
        );
    }
    // a window with failed requests measured something else than the read path
    for (name, f) in &medians {
        if f.errors > 0 {
            let line = format!(
                "{name}: {} requests failed (all rounds): {:?}",
                f.errors, f.error_codes
            );
            failed_checks.push(line);
        }
    }
    for c in &checks {
        eprintln!("check ok: {c}");
    }
    for c in &failed_checks {
        eprintln!("CHECK FAILED: {c}");
    }
    out["checks_failed"] = json!(failed_checks);
    println!("{out}");
    // the figures are printed either way; the exit status says whether they can be trusted
    if !failed_checks.is_empty() {
        bail!(
            "{} check(s) failed (CHECK FAILED above)",
            failed_checks.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_users_cache_counters() {
        let text = "# TYPE tsunagi_cache_requests_total counter\n\
            tsunagi_cache_requests_total{cache=\"users\",layer=\"l1\",result=\"hit\"} 7\n\
            tsunagi_cache_requests_total{cache=\"rooms\",layer=\"l1\",result=\"hit\"} 100\n\
            tsunagi_cache_requests_total{layer=\"l2\",cache=\"users\",result=\"hit\"} 5\n\
            tsunagi_cache_requests_total{cache=\"users\",layer=\"l2\",result=\"miss\"} 2\n\
            tsunagi_cache_errors_total{cache=\"users\",layer=\"l2\"} 1\n\
            tsunagi_cache_loads_total{cache=\"users\"} 3\n\
            tsunagi_cache_loads_total{cache=\"members\"} 9\n";
        let c = parse_counters(text);
        assert_eq!(
            (
                c.l1_hit, c.l1_miss, c.l2_hit, c.l2_miss, c.l2_error, c.loads
            ),
            (7.0, 0.0, 5.0, 2.0, 1.0, 3.0)
        );
    }

    #[test]
    fn targets_and_expectations_parse() {
        assert_eq!(
            target("l1=http://127.0.0.1:1/").unwrap(),
            ("l1".into(), "http://127.0.0.1:1".into())
        );
        assert!(target("l1").is_err());
        assert!(target("l1=https://x").is_err());
        assert_eq!(expectation("x=l2").unwrap(), ("x".into(), Layer::L2));
        assert!(expectation("x=l3").is_err());
    }
}
