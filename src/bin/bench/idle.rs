//! `tsunagi-bench idle`: server RSS per idle socket. Opens `--sockets` Engine.IO v4 WebSockets,
//! each CONNECTs with its own token and joins one of `--sockets / --per-room` rooms, then sits
//! idle answering pings. The server's RSS (VmRSS) is sampled before connecting and once every
//! socket has joined and the heap has settled; the report is (after − before) / sockets, for
//! tsunagi and (with `--peer-url`) the Node peer in the same run, one after the other.
//!
//! The client is a bare tokio-tungstenite stream per socket (a task, small buffers), not
//! `SioClient` (two tasks and two channels each): 100 k of them must fit in this process too.
//! Sockets bind source addresses across 127.0.0.0/8 so their count is not capped by one
//! address's ephemeral ports.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Sockets per source address (the kernel has ~28 k ephemeral ports per address here).
const PER_SOURCE: usize = 20_000;
/// How long one socket may take to connect, CONNECT and join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// The server under test (tsunagi).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// tsunagi's pid (default: the process listening on --url's port).
    #[arg(long)]
    pid: Option<u32>,
    /// The Node peer (bench/peer), measured the same way after tsunagi.
    #[arg(long)]
    peer_url: Option<String>,
    /// The peer's pid (default: the process listening on --peer-url's port).
    #[arg(long)]
    peer_pid: Option<u32>,
    /// Idle sockets to open.
    #[arg(long, default_value_t = 10_000)]
    sockets: usize,
    /// Sockets per room (rooms are created on --url first).
    #[arg(long, default_value_t = 50)]
    per_room: usize,
    /// Also sample RSS when this many sockets have joined (e.g. 10000 on a 100 k run).
    #[arg(long)]
    checkpoint: Option<usize>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Least wait after the last join before RSS counts as settled (then it waits for two
    /// samples a second apart within 0.5 %, at most 30 s more).
    #[arg(long, default_value = "5s", value_parser = super::duration)]
    settle: Duration,
    /// How long the sockets stay open after the sample: past one ping interval (25 s) shows
    /// that every idle socket still gets and answers heartbeats.
    #[arg(long, default_value = "30s", value_parser = super::duration)]
    hold: Duration,
    /// First source address is 127.0.0.<this> (then .+1, … every 20 000 sockets).
    #[arg(long, default_value_t = 2)]
    first_source: u8,
    /// HS256 secret: one token per socket and an admin token to create the rooms.
    #[arg(long, env = "TSUNAGI_JWT_SECRET", hide_env_values = true)]
    token_secret: String,
    /// Print only the JSON lines.
    #[arg(long)]
    json: bool,
}

/// One server's figures.
#[derive(Serialize, Debug, Clone)]
pub struct IdleReport {
    pub kind: &'static str,
    pub target: String,
    pub sockets: usize,
    pub rooms: usize,
    /// VmRSS before the first connect, KiB.
    pub rss_before_kib: u64,
    /// VmRSS once all joined and settled, KiB.
    pub rss_after_kib: u64,
    /// (after − before) / sockets, KiB.
    pub kib_per_socket: f64,
    /// At `--checkpoint` sockets: (sockets, KiB per socket then).
    pub checkpoint: Option<(usize, f64)>,
    /// From the first connect to the last join ack.
    pub connect_s: f64,
    pub failed: usize,
    /// Sockets still open at the end of the hold, and pings they answered during it.
    pub alive_after_hold: u64,
    pub pings_answered: u64,
    pub hold_s: f64,
}

pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    if args.sockets == 0 || args.per_room == 0 {
        bail!("--sockets and --per-room must be at least 1");
    }
    raise_nofile(args.sockets as u64 * 2 + 1024);
    let (tokens, admin) = super::mint_tokens(&args.token_secret, args.sockets)?;
    let tokens: Vec<String> = tokens.into_iter().flatten().collect();
    let rooms = args.sockets.div_ceil(args.per_room);
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let room_of = |i: usize| format!("idle-{tag}-{}", i / args.per_room);
    create_rooms(
        &args.url,
        &admin,
        (0..rooms).map(|r| room_of(r * args.per_room)),
    )
    .await?;
    let mut targets = vec![("tsunagi", args.url.clone(), args.pid, 0u8)];
    if let Some(p) = &args.peer_url {
        // its own source addresses: the other run's closed sockets linger in TIME_WAIT
        let sources = args.sockets.div_ceil(PER_SOURCE) as u8;
        targets.push(("peer", p.clone(), args.peer_pid, sources));
    }
    let mut reports = Vec::new();
    for (name, url, pid, source_offset) in targets {
        let pid = match pid {
            Some(p) => p,
            None => pid_on_port(port_of(&url)?)?,
        };
        let run = Run {
            args: &args,
            url: &url,
            pid,
            first_source: args.first_source.saturating_add(source_offset),
        };
        let report = run.measure(name, &tokens, &room_of).await?;
        println!("{}", serde_json::to_string(&report)?);
        reports.push(report);
    }
    if !args.json {
        table(&reports);
    }
    Ok(())
}

struct Run<'a> {
    args: &'a IdleArgs,
    url: &'a str,
    pid: u32,
    first_source: u8,
}

impl Run<'_> {
    async fn measure(
        &self,
        name: &str,
        tokens: &[String],
        room_of: &dyn Fn(usize) -> String,
    ) -> anyhow::Result<IdleReport> {
        let n = self.args.sockets;
        let before = rss_kib(self.pid)?;
        let port = port_of(self.url)?;
        let gate = Arc::new(Semaphore::new(self.args.concurrency));
        let pings = Arc::new(AtomicU64::new(0));
        let (joined_tx, mut joined_rx) = tokio::sync::mpsc::unbounded_channel();
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for (i, token) in tokens.iter().enumerate() {
            let source = Ipv4Addr::new(127, 0, 0, self.first_source + (i / PER_SOURCE) as u8);
            let target = SocketAddr::from(([127, 0, 0, 1], port));
            let (token, room) = (token.clone(), room_of(i));
            let (gate, pings, joined) = (gate.clone(), pings.clone(), joined_tx.clone());
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await.ok();
                let ws = tokio::time::timeout(JOIN_TIMEOUT, join(source, target, &token, &room))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
                drop(permit);
                let ws = match ws {
                    Ok(ws) => {
                        joined.send(Ok(())).ok();
                        ws
                    }
                    Err(e) => {
                        joined.send(Err(e)).ok();
                        return false;
                    }
                };
                idle(ws, &pings).await
            }));
        }
        drop(joined_tx);
        let (mut done, mut failed, mut checkpoint) = (0usize, 0usize, None);
        let mut first_error = None;
        let progress = (!self.args.json).then(|| progress_bar(n as u64, name));
        while let Some(r) = joined_rx.recv().await {
            done += 1;
            if let Err(e) = r {
                failed += 1;
                first_error.get_or_insert(e);
            }
            if Some(done) == self.args.checkpoint {
                let kib = rss_kib(self.pid)?.saturating_sub(before);
                checkpoint = Some((done, kib as f64 / done as f64));
            }
            if let Some(p) = &progress {
                p.inc(1);
            }
            if done == n {
                break;
            }
        }
        let connect_s = started.elapsed().as_secs_f64();
        if let Some(p) = progress {
            p.finish_and_clear();
        }
        if let Some(e) = first_error {
            eprintln!("{name}: {failed} of {n} sockets failed; first: {e:#}");
        }
        let after = settled_rss(self.pid, self.args.settle).await?;
        let pings_before_hold = pings.load(Ordering::Relaxed);
        tokio::time::sleep(self.args.hold).await;
        let alive = tasks.iter().filter(|t| !t.is_finished()).count() as u64;
        let pings_answered = pings.load(Ordering::Relaxed) - pings_before_hold;
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            t.await.ok();
        }
        // the server frees the sockets before the next target is measured
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ok = n - failed;
        Ok(IdleReport {
            kind: "idle",
            target: name.to_owned(),
            sockets: ok,
            rooms: n.div_ceil(self.args.per_room),
            rss_before_kib: before,
            rss_after_kib: after,
            kib_per_socket: after.saturating_sub(before) as f64 / ok.max(1) as f64,
            checkpoint,
            connect_s,
            failed,
            alive_after_hold: alive,
            pings_answered,
            hold_s: self.args.hold.as_secs_f64(),
        })
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Engine.IO OPEN, Socket.IO CONNECT with `token`, `join` of `room` (acked ok).
async fn join(source: Ipv4Addr, target: SocketAddr, token: &str, room: &str) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    no_port_at_bind(&socket);
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    // the client's own buffers small: 100 k of them live in this process
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0);
    let url = format!("ws://{target}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        bail!("expected OPEN, got {open}");
    }
    let auth = serde_json::json!({ "token": token });
    ws.send(Message::text(format!("40{auth}"))).await?;
    let join = serde_json::json!(["join", { "room": room }]);
    let mut sent_join = false;
    loop {
        let t = next_text(&mut ws).await?;
        if t == "2" {
            ws.send(Message::text("3")).await?;
        } else if t.starts_with("40") && !sent_join {
            ws.send(Message::text(format!("420{join}"))).await?;
            sent_join = true;
        } else if let Some(body) = t.strip_prefix("44") {
            bail!("connect_error {body}");
        } else if let Some(body) = t.strip_prefix("430") {
            let ack: serde_json::Value = serde_json::from_str(body)?;
            if ack[0]["ok"] != serde_json::json!(true) {
                bail!("join {room}: {body}");
            }
            return Ok(ws);
        }
    }
}

/// Answers pings until the server closes; false when it did.
async fn idle(mut ws: Ws, pings: &AtomicU64) -> bool {
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m
            && t.as_str() == "2"
        {
            if ws.send(Message::text("3")).await.is_err() {
                break;
            }
            pings.fetch_add(1, Ordering::Relaxed);
        }
    }
    false
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await.context("closed")?? {
            Message::Text(t) => return Ok(t.as_str().to_owned()),
            Message::Close(_) => bail!("closed"),
            _ => {}
        }
    }
}

/// Lets connect() pick the port per destination, so one source address serves as many
/// sockets per server as the port range allows (not one port per address overall).
fn no_port_at_bind(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor and a c_int option of the right size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Creates the rooms on `base`, 16 at a time.
async fn create_rooms(
    base: &str,
    admin: &str,
    rooms: impl Iterator<Item = String>,
) -> anyhow::Result<()> {
    let mut pending = futures::stream::iter(rooms)
        .map(|r| async move { super::create_room(base, admin, &r).await })
        .buffer_unordered(16);
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(())
}

/// VmRSS once the last join is `least` ago and two samples a second apart differ < 0.5 %.
async fn settled_rss(pid: u32, least: Duration) -> anyhow::Result<u64> {
    tokio::time::sleep(least).await;
    let mut last = rss_kib(pid)?;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_kib(pid)?;
        if now.abs_diff(last) * 200 <= last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

fn port_of(url: &str) -> anyhow::Result<u16> {
    url::Url::parse(url)?
        .port_or_known_default()
        .context("the url has no port")
}

/// The process listening on TCP `port` (its socket's inode, found among /proc/*/fd).
fn pid_on_port(port: u16) -> anyhow::Result<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let listening = f.get(3) == Some(&"0A");
            let on_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening
                && on_port
                && let Some(inode) = f.get(9)
            {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    for proc in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = proc.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                return Ok(pid);
            }
        }
    }
    bail!("no process listens on port {port} (pass --pid)")
}

/// Raises this process's descriptor limit to `want` (the hard one too, as root).
fn raise_nofile(want: u64) {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: want.max(lim.rlim_cur),
            rlim_max: want.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn progress_bar(len: u64, name: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} joined {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(name.to_owned());
    bar
}

fn table(reports: &[IdleReport]) {
    eprintln!(
        "\n{:>8} {:>8} {:>6} {:>12} {:>12} {:>10} {:>12} {:>9} {:>7} {:>12}",
        "server",
        "sockets",
        "rooms",
        "RSS before",
        "RSS after",
        "KiB/sock",
        "checkpoint",
        "connect",
        "failed",
        "alive/pings"
    );
    for r in reports {
        let cp = r
            .checkpoint
            .map(|(n, k)| format!("{k:.1}@{n}"))
            .unwrap_or_else(|| "-".into());
        eprintln!(
            "{:>8} {:>8} {:>6} {:>9} MiB {:>8} MiB {:>10.2} {:>12} {:>7.1} s {:>7} {:>12}",
            r.target,
            r.sockets,
            r.rooms,
            r.rss_before_kib / 1024,
            r.rss_after_kib / 1024,
            r.kib_per_socket,
            cp,
            r.connect_s,
            r.failed,
            format!("{}/{}", r.alive_after_hold, r.pings_answered)
        );
    }
}
