//! One client of the reconnect storm: connects, joins its room, `sync`s from the last seq it
//! saw up to the join's `last_seq`, then takes live messages; when the connection drops it
//! reconnects with socket.io-client's backoff and does it again. It checks what it holds: every
//! seq of its room exactly once and in order (a fold of the message ids, compared at the end
//! with the ids the senders were acked).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tsunagi::client::{ClientError, SioClient};

/// socket.io-client's defaults: `timeout` for a connection attempt, and the time an ack may take
/// before the client gives the connection up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// The page size a recovering client asks for (the contract's most).
const SYNC_LIMIT: u32 = 500;

/// socket.io-client's reconnection backoff (its `Backoff`, the npm `backo2` rules): reconnectionDelay
/// 1 s doubling per attempt up to reconnectionDelayMax 5 s, randomizationFactor 0.5. Hand-written
/// because the point is to behave exactly as the official client does, not as a Rust crate's.
pub struct Backoff {
    attempts: u32,
}

impl Backoff {
    const MIN_MS: f64 = 1000.0;
    const MAX_MS: f64 = 5000.0;
    const JITTER: f64 = 0.5;

    pub fn new() -> Self {
        Backoff { attempts: 0 }
    }

    pub fn next(&mut self) -> Duration {
        let mut ms = Self::MIN_MS * 2f64.powi(self.attempts.min(16) as i32);
        self.attempts += 1;
        let r: f64 = rand::random();
        let deviation = (r * Self::JITTER * ms).floor();
        ms = if ((r * 10.0).floor() as u64) & 1 == 0 {
            ms - deviation
        } else {
            ms + deviation
        };
        Duration::from_millis(ms.min(Self::MAX_MS) as u64)
    }

    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

/// What every client shares: the kill time, the finals to reach, and the counters of refusals.
#[derive(Default)]
pub struct Shared {
    /// Set when the server is killed: connections made after it count as recoveries.
    pub killed_at: OnceLock<Instant>,
    /// Each room's last seq once the senders are done: a client holding it is finished.
    pub finals: OnceLock<Vec<i64>>,
    pub finals_ready: CancellationToken,
    /// The end of the run (deadline or done): clients stop where they are.
    pub stop: CancellationToken,
    /// Clients joined and live (before the kill: the start-up is done when all are).
    pub live: AtomicUsize,
    /// Clients whose connection dropped after the kill (all of them with one instance; with
    /// several, those the killed instance held).
    pub dropped: AtomicUsize,
    pub recovered: AtomicUsize,
    /// Handshakes answered 503 (admission or the connection cap), retried with backoff.
    pub refused_503: AtomicU64,
    /// Connections refused by the kernel (nothing listening yet), retried with backoff.
    pub conn_refused: AtomicU64,
    /// Other failed connection attempts (timeouts, resets), by kind; and connect_error codes.
    pub connect_failures: Mutex<BTreeMap<String, u64>>,
    /// join/sync answered with a retryable error (unavailable, rate_limited), retried.
    pub event_retries: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn count(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        *map.lock().entry(key).or_default() += 1;
    }
}

/// One client's account of the run.
#[derive(Debug, Default)]
pub struct Outcome {
    pub room: usize,
    /// The next seq it expects: it holds 1..next of its room.
    pub next: i64,
    /// An order-sensitive fold of the ids it holds, in seq order.
    pub fold: u64,
    pub dups: u64,
    /// Seqs skipped (messages it will never have).
    pub skipped: u64,
    pub reconnects: u64,
    /// Its connection dropped after the kill: it must recover.
    pub dropped_after_kill: bool,
    /// From the kill to holding everything up to its join's last_seq after reconnecting.
    pub recovered_after: Option<Duration>,
    /// A failure that ended the client (an error code that is not retryable, a short sync).
    pub failed: Option<String>,
}

/// The fold of a room's ids in seq order (see [`Outcome::fold`]).
pub fn fold(acc: u64, id: &str) -> u64 {
    // FNV-1a of the id, folded order-sensitively
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    acc.rotate_left(7) ^ h
}

impl Outcome {
    fn apply(&mut self, m: &Value) {
        let seq = m["seq"].as_i64().unwrap_or(-1);
        if seq < self.next {
            self.dups += 1;
            return;
        }
        if seq > self.next {
            self.skipped += (seq - self.next) as u64;
        }
        self.fold = fold(self.fold, m["id"].as_str().unwrap_or_default());
        self.next = seq + 1;
    }

    /// Holding the room's final seq, and recovered if the kill dropped it. (A client the kill
    /// dropped cannot hold the final seq without reconnecting: the senders' last acks come from
    /// the instances left, after the kill.)
    fn done(&self, sh: &Shared) -> bool {
        sh.finals.get().is_some_and(|f| {
            self.next > f[self.room] && (!self.dropped_after_kill || self.recovered_after.is_some())
        })
    }
}

enum Ended {
    /// The connection dropped: reconnect.
    Dropped,
    /// Done, stopped or failed: the client ends.
    Finished,
}

/// Runs one client until it holds its room's final seq (or the run stops).
pub async fn run(
    url: String,
    token: String,
    room: usize,
    room_id: String,
    sh: Arc<Shared>,
    first_connect: Arc<tokio::sync::Semaphore>,
) -> Outcome {
    let mut out = Outcome {
        room,
        next: 1,
        ..Outcome::default()
    };
    let mut backoff = Backoff::new();
    let mut reconnecting = false;
    loop {
        let client = {
            // the start-up ramp is paced; reconnections are not (that is the storm)
            let _permit = if reconnecting {
                None
            } else {
                first_connect.acquire().await.ok()
            };
            match connect(&url, &token, &sh, &mut backoff, reconnecting).await {
                Some(c) => c,
                None => return out,
            }
        };
        match session(client, &room_id, &sh, &mut out).await {
            Ended::Finished => return out,
            Ended::Dropped if sh.stop.is_cancelled() => return out,
            Ended::Dropped => {
                out.reconnects += 1;
                reconnecting = true;
                if sh.killed_at.get().is_some() && !out.dropped_after_kill {
                    out.dropped_after_kill = true;
                    sh.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A connected client, trying again with backoff after each failure (as the official client's
/// manager does on a failed open); `None` when the run stops first.
async fn connect(
    url: &str,
    token: &str,
    sh: &Shared,
    backoff: &mut Backoff,
    mut delay_first: bool,
) -> Option<SioClient> {
    loop {
        if delay_first {
            tokio::select! {
                _ = tokio::time::sleep(backoff.next()) => {}
                _ = sh.stop.cancelled() => return None,
            }
        }
        delay_first = true;
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, SioClient::connect(url, Some(token)));
        match attempt.await {
            Ok(Ok(c)) => {
                backoff.reset();
                return Some(c);
            }
            Ok(Err(ClientError::Ws(tungstenite::Error::Http(r)))) if r.status() == 503 => {
                sh.refused_503.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(ClientError::Ws(tungstenite::Error::Io(e))))
                if e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                sh.conn_refused.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(ClientError::Refused(v))) => {
                // the official client stops here; an application would call connect() again
                let code = v["data"]["code"].as_str().unwrap_or("none");
                Shared::count(&sh.connect_failures, format!("connect_error:{code}"));
            }
            Ok(Err(e)) => Shared::count(&sh.connect_failures, error_kind(&e)),
            Err(_) => Shared::count(&sh.connect_failures, "timeout".into()),
        }
    }
}

fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Ws(tungstenite::Error::Io(io)) => format!("io:{:?}", io.kind()),
        ClientError::Ws(tungstenite::Error::Http(r)) => format!("http:{}", r.status().as_u16()),
        ClientError::Ws(_) => "websocket".into(),
        ClientError::Refused(_) => "connect_error".into(),
        ClientError::Protocol(_) => "protocol".into(),
        ClientError::Timeout => "timeout".into(),
        ClientError::Closed => "closed".into(),
    }
}

/// Joins, catches up with `sync`, then takes live messages until the connection drops or the
/// client is done.
async fn session(mut c: SioClient, room_id: &str, sh: &Shared, out: &mut Outcome) -> Ended {
    let Some(joined) = call(&c, "join", json!({ "room": room_id }), sh, out).await else {
        return ended(out);
    };
    let last_seq = joined["last_seq"].as_i64().unwrap_or(0);
    // Live delivery starts right after last_seq; the messages before it come from sync.
    while out.next <= last_seq {
        let q = json!({ "room": room_id, "since_seq": out.next - 1, "limit": SYNC_LIMIT });
        let Some(page) = call(&c, "sync", q, sh, out).await else {
            return ended(out);
        };
        let items = page["messages"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            out.failed = Some(format!(
                "sync ended at {} before the join's last_seq {last_seq}",
                out.next - 1
            ));
            return Ended::Finished;
        }
        for m in items
            .iter()
            .take_while(|m| m["seq"].as_i64().unwrap_or(0) <= last_seq)
        {
            out.apply(m);
        }
    }
    if let Some(killed) = sh.killed_at.get()
        && out.dropped_after_kill
        && out.recovered_after.is_none()
    {
        out.recovered_after = Some(killed.elapsed());
        sh.recovered.fetch_add(1, Ordering::Relaxed);
    } else if sh.killed_at.get().is_none() && out.reconnects == 0 {
        sh.live.fetch_add(1, Ordering::Relaxed);
    }
    loop {
        if out.done(sh) {
            c.close();
            return Ended::Finished;
        }
        tokio::select! {
            ev = c.events.recv() => match ev {
                None => return Ended::Dropped,
                Some((name, m)) if name == "message" => out.apply(&m),
                Some(_) => {}
            },
            _ = sh.finals_ready.cancelled(), if sh.finals.get().is_none() => {}
            _ = sh.stop.cancelled() => { c.close(); return Ended::Finished; }
        }
    }
}

fn ended(out: &Outcome) -> Ended {
    if out.failed.is_some() {
        Ended::Finished
    } else {
        Ended::Dropped
    }
}

/// An event's ack; a retryable refusal (`unavailable`, `rate_limited`) is waited out and retried.
/// `None` when the connection is gone (or the ack never came: the client gives the connection
/// up) or the answer is an error that is not retryable (then `out.failed` says so).
async fn call(
    c: &SioClient,
    event: &str,
    data: Value,
    sh: &Shared,
    out: &mut Outcome,
) -> Option<Value> {
    loop {
        let ack = match c.call(event, data.clone(), ACK_TIMEOUT).await {
            Ok(a) => a,
            Err(ClientError::Timeout) => {
                Shared::count(&sh.event_retries, format!("{event}:ack_timeout"));
                c.close();
                return None;
            }
            Err(_) => return None,
        };
        if ack["ok"] == json!(true) {
            return Some(ack);
        }
        let code = ack["error"]["code"]
            .as_str()
            .unwrap_or("bad_ack")
            .to_owned();
        let wait = match code.as_str() {
            "rate_limited" => ack["error"]["retry_after_ms"].as_u64().unwrap_or(1000),
            "unavailable" => 250 + rand::random::<u64>() % 500,
            _ => {
                out.failed = Some(format!("{event}: {ack}"));
                return None;
            }
        };
        Shared::count(&sh.event_retries, format!("{event}:{code}"));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = sh.stop.cancelled() => return None,
        }
    }
}
