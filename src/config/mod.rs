//! Configuration (PROTOCOL.md §1): environment variables, optionally a `tsunagi.toml`
//! (path in `TSUNAGI_CONFIG`, else `./tsunagi.toml` when present); the environment wins.
//! Every value is checked at start; a bad one stops the process with a message naming it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod check;
mod secrets;
pub use check::{CheckReport, check, connections};
pub use secrets::{EncryptionKey, SECRET_SETTINGS, TlsFiles};

/// How often the Redis bus pings its subscription: a dead link is noticed within this plus the
/// Redis timeout, which bounds `TSUNAGI_BUS_ACK_TIMEOUT_MS` from below.
pub const BUS_HEARTBEAT: Duration = Duration::from_millis(250);

/// Every setting: (environment variable, default, one line for the README table).
pub const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "TSUNAGI_LISTEN",
        "127.0.0.1:8080",
        "HTTP + WebSocket address",
    ),
    (
        "TSUNAGI_DATABASE_URL",
        "sqlite://./data/tsunagi.db",
        "primary database",
    ),
    (
        "TSUNAGI_REPLICA_URLS",
        "",
        "comma-separated read replicas (PostgreSQL)",
    ),
    (
        "TSUNAGI_REDIS_URL",
        "",
        "Redis for cross-instance state; several comma-separated seed URLs = Redis Cluster; empty = in-process",
    ),
    (
        "TSUNAGI_JWT_SECRET",
        "",
        "HS256 key; generated and kept in the data dir with SQLite",
    ),
    ("TSUNAGI_LOG", "info", "log filter"),
    ("TSUNAGI_LOG_FORMAT", "text", "`text` or `json`"),
    (
        "TSUNAGI_MAX_MESSAGE_BYTES",
        "16384",
        "largest message content in UTF-8 bytes",
    ),
    (
        "TSUNAGI_SEND_RATE",
        "20",
        "sustained sends per second per user; 0 = off",
    ),
    (
        "TSUNAGI_SEND_BURST",
        "40",
        "sends a user may make at once above the rate",
    ),
    (
        "TSUNAGI_TYPING_RATE",
        "5",
        "typing events per second per user; 0 = off",
    ),
    (
        "TSUNAGI_DB_READ_POOL_SIZE",
        "8",
        "read connections (SQLite: the writer is always 1)",
    ),
    (
        "TSUNAGI_DB_ACQUIRE_TIMEOUT_MS",
        "3000",
        "wait for a free connection, then 503",
    ),
    ("TSUNAGI_DB_BUSY_TIMEOUT_MS", "5000", "SQLite busy_timeout"),
    (
        "TSUNAGI_READ_RATE_KIB",
        "8192",
        "KiB/s of join/sync history per user over sockets (burst 4x)",
    ),
    (
        "TSUNAGI_DB_POOL_SIZE",
        "10",
        "PostgreSQL primary pool: most connections",
    ),
    (
        "TSUNAGI_DB_MIN_IDLE",
        "1",
        "connections each pool keeps open when idle",
    ),
    (
        "TSUNAGI_DB_TEST_BEFORE_ACQUIRE",
        "true",
        "ping a pooled connection before handing it out",
    ),
    (
        "TSUNAGI_DB_STATEMENT_TIMEOUT_MS",
        "5000",
        "PostgreSQL statement_timeout of every connection",
    ),
    (
        "TSUNAGI_DB_APPLICATION_NAME",
        "tsunagi",
        "PostgreSQL application_name prefix",
    ),
    (
        "TSUNAGI_DB_POOL_WARN_SHARE",
        "0.8",
        "warn when this share of a pool is in use",
    ),
    (
        "TSUNAGI_REPLICA_MAX_LAG_MS",
        "2000",
        "replicas further behind are skipped",
    ),
    (
        "TSUNAGI_REPLICA_CHECK_MS",
        "1000",
        "how often replicas' health and lag are checked",
    ),
    (
        "TSUNAGI_DB_IDLE_TIMEOUT_S",
        "600",
        "close a connection idle this long",
    ),
    (
        "TSUNAGI_DB_MAX_LIFETIME_S",
        "1800",
        "recycle a connection after this long",
    ),
    (
        "TSUNAGI_SQLITE_SYNCHRONOUS",
        "full",
        "SQLite `synchronous`: `full` or `normal`",
    ),
    (
        "TSUNAGI_SQLITE_WAL_MAX_MB",
        "64",
        "SQLite WAL kept under about this size under steady writes",
    ),
    (
        "TSUNAGI_SLOW_QUERY_MS",
        "200",
        "statements slower than this log a warning",
    ),
    (
        "TSUNAGI_GROUP_COMMIT_MAX",
        "512",
        "most messages committed in one transaction",
    ),
    (
        "TSUNAGI_SOCKET_BUFFER",
        "1024",
        "outgoing packets queued per socket before it is dropped",
    ),
    (
        "TSUNAGI_SOCKET_BUFFER_BYTES",
        "4194304",
        "bytes a WebSocket may have queued and unwritten before it is dropped as a slow consumer",
    ),
    (
        "TSUNAGI_SOCKET_STALL_MS",
        "30000",
        "a WebSocket with bytes waiting that writes nothing for this long is dropped the same way",
    ),
    (
        "TSUNAGI_EVENT_RATE",
        "2000",
        "Socket.IO events per second per socket, unknown ones too (burst twice that); 0 = off",
    ),
    (
        "TSUNAGI_WRITE_RATE",
        "20",
        "room creations and member adds per second per user (burst 10 times that); 0 = off",
    ),
    (
        "TSUNAGI_COMMIT_QUEUE",
        "10000",
        "sends waiting for a commit; past it a send is answered unavailable at once",
    ),
    (
        "TSUNAGI_HANDSHAKES_PENDING",
        "1000",
        "Engine.IO sessions opened and not yet CONNECTed; past it a handshake gets 503 (retried with backoff); 0 = off",
    ),
    (
        "TSUNAGI_HISTORY_READS",
        "8",
        "join/sync history reads at once (keep at or below the read pool); the others queue; 0 = off",
    ),
    (
        "TSUNAGI_HISTORY_WAIT_MS",
        "10000",
        "longest wait of a queued join/sync read, then unavailable",
    ),
    (
        "TSUNAGI_MAX_CONNECTIONS",
        "10000",
        "concurrent TCP connections; at the cap the longest-idle one is closed, else 503",
    ),
    (
        "TSUNAGI_HTTP_HEADER_TIMEOUT_MS",
        "10000",
        "longest wait for a request's headers, and for the next request on a kept-alive connection",
    ),
    (
        "TSUNAGI_HTTP_MAX_HEADER_BYTES",
        "32768",
        "largest request head (request line and headers); past it 431",
    ),
    (
        "TSUNAGI_SHUTDOWN_TIMEOUT_S",
        "10",
        "longest wait for in-flight work at SIGTERM",
    ),
    (
        "TSUNAGI_REDIS_PREFIX",
        "tsunagi",
        "prefix of every Redis key and channel (no spaces, no braces)",
    ),
    (
        "TSUNAGI_REDIS_TIMEOUT_MS",
        "250",
        "longest wait for one Redis command, then the store is used",
    ),
    (
        "TSUNAGI_BUS_ACK_TIMEOUT_MS",
        "1000",
        "longest wait of a write for the other instances to confirm a cache invalidation",
    ),
    (
        "TSUNAGI_BUS_SHARDS",
        "1024",
        "shard channels rooms are spread over (Redis sharded pub/sub): an instance receives the rooms of the shards its sockets' rooms hash to; all instances must agree",
    ),
    (
        "TSUNAGI_CACHE_L1_CAPACITY",
        "100000",
        "entries per in-process cache",
    ),
    (
        "TSUNAGI_HOT_WINDOW_MESSAGES",
        "64",
        "newest messages per recently read room kept in memory for join and sync; 0 = off",
    ),
    (
        "TSUNAGI_HOT_WINDOW_BYTES",
        "67108864",
        "bytes of messages the hot window holds in all (least recently read rooms dropped past it); 0 = off",
    ),
    (
        "TSUNAGI_STATE_CACHE_BYTES",
        "16777216",
        "bytes of room state kept in memory for join and state_get on one instance (least recently read rooms dropped past it); 0 = off",
    ),
    (
        "TSUNAGI_CACHE_L1_TTL_S",
        "60",
        "in-process cache entry lifetime",
    ),
    (
        "TSUNAGI_CACHE_L2_TTL_S",
        "600",
        "Redis cache entry lifetime",
    ),
    (
        "TSUNAGI_CACHE_NEGATIVE_TTL_MS",
        "5000",
        "how long a missing user or room is remembered",
    ),
    (
        "TSUNAGI_TOKEN_TTL_S",
        "86400",
        "lifetime of tokens issued by register and login",
    ),
    (
        "TSUNAGI_LOGIN_RATE",
        "10",
        "login attempts per minute per login name and client address (burst the same); 0 = off",
    ),
    (
        "TSUNAGI_TRUSTED_PROXIES",
        "",
        "comma-separated CIDRs whose X-Forwarded-For is believed; empty = the peer is the client",
    ),
    (
        "TSUNAGI_LOGIN_FAILURES_PER_ADDRESS",
        "10",
        "failed logins per minute per client address before 429; 0 = off",
    ),
    (
        "TSUNAGI_REGISTER_RATE_PER_ADDRESS",
        "600",
        "registrations per minute per client address (burst the same); 0 = off",
    ),
    (
        "TSUNAGI_CONNECTIONS_PER_ADDRESS",
        "1000",
        "concurrent Socket.IO connections per client address, per instance; 0 = off",
    ),
    (
        "TSUNAGI_TLS_CERT",
        "",
        "PEM certificate chain: with TSUNAGI_TLS_KEY the listener serves HTTPS/WSS only (SIGHUP reloads)",
    ),
    ("TSUNAGI_TLS_KEY", "", "PEM private key of TSUNAGI_TLS_CERT"),
    (
        "TSUNAGI_ADVERTISE_URL",
        "",
        "this instance's URL as the other instances reach it (polling forwarded to a session's owner); empty = the listen address, which must then not be a wildcard when Redis is set",
    ),
    (
        "TSUNAGI_ENCRYPTION_KEYS",
        "",
        "KID:BASE64 keys (32 bytes), the first current: message content and state values encrypted at rest",
    ),
    (
        "TSUNAGI_MAX_METADATA_BYTES",
        "4096",
        "largest user or room metadata object, as JSON bytes",
    ),
    (
        "TSUNAGI_ARGON2_MEMORY_KIB",
        "19456",
        "argon2id memory cost of password hashes",
    ),
    (
        "TSUNAGI_PASSWORD_QUEUE",
        "32",
        "password hashes (register, login) waiting for a core; past it 429 with Retry-After",
    ),
    (
        "TSUNAGI_ARGON2_ITERATIONS",
        "2",
        "argon2id time cost of password hashes",
    ),
    (
        "TSUNAGI_MAX_STATE_BYTES",
        "65536",
        "largest room state value, in bytes of JSON",
    ),
    (
        "TSUNAGI_SENSOR_BATCH",
        "5000",
        "sensor readings waiting that start a write (may exceed the buffer: then only the interval)",
    ),
    (
        "TSUNAGI_SENSOR_FLUSH_MS",
        "1000",
        "longest a sensor reading waits in memory before it is written",
    ),
    (
        "TSUNAGI_SENSOR_BUFFER",
        "100000",
        "sensor readings waiting in memory at most; past it writes get 503 / unavailable",
    ),
    (
        "TSUNAGI_SENSOR_LIVE_RATE",
        "20",
        "live `reading` events per second per socket and sensor (the newest of each interval)",
    ),
    (
        "TSUNAGI_SENSOR_RETENTION_DAYS",
        "30",
        "readings older than this are removed (PostgreSQL: whole day partitions); 0 = keep",
    ),
    (
        "TSUNAGI_SENSOR_MAINTENANCE_S",
        "3600",
        "how often partitions are made ahead and retention runs (also once at start)",
    ),
    (
        "TSUNAGI_ARCHIVE_AFTER",
        "30d",
        "messages older than this move to cold storage (`30d`, `12h`, `90m`); 0 = never",
    ),
    (
        "TSUNAGI_ARCHIVE_BATCH",
        "1000",
        "messages moved per step of the archiver (one short hot transaction each)",
    ),
    (
        "TSUNAGI_ARCHIVE_URL",
        "",
        "cold storage: sqlite:// or postgres://; empty = `<data dir>/archive.db` (SQLite) or a month-partitioned table in the primary (PostgreSQL)",
    ),
    (
        "TSUNAGI_JOB_LEASE_S",
        "60",
        "a running job whose instance stopped renewing it is taken up again after this",
    ),
    (
        "TSUNAGI_JOB_KEEP_DAYS",
        "7",
        "completed jobs are kept this long",
    ),
    (
        "TSUNAGI_WEBHOOK_TIMEOUT_MS",
        "5000",
        "a delivery not answered 2xx within this is retried",
    ),
    (
        "TSUNAGI_WEBHOOK_MAX_ATTEMPTS",
        "8",
        "delivery attempts before the job is dead",
    ),
    (
        "TSUNAGI_WEBHOOK_ALLOW_PRIVATE",
        "false",
        "allow webhooks to loopback, private and link-local addresses",
    ),
    (
        "TSUNAGI_ARCHIVE_INTERVAL_S",
        "300",
        "how often the background archiver looks for old messages (the first time 30 s after start)",
    ),
];

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub replica_urls: Vec<String>,
    pub redis_url: Option<String>,
    pub jwt_secret: Option<String>,
    pub log: String,
    pub log_json: bool,
    pub max_message_bytes: usize,
    pub send_rate: f64,
    pub send_burst: u32,
    pub typing_rate: f64,
    pub read_rate_kib: f64,
    pub db_pool_size: u32,
    pub db_read_pool_size: u32,
    pub db_min_idle: u32,
    pub db_acquire_timeout: Duration,
    pub db_test_before_acquire: bool,
    pub db_statement_timeout: Duration,
    pub db_application_name: String,
    pub db_pool_warn_share: f64,
    pub replica_max_lag: Duration,
    pub replica_check_interval: Duration,
    pub db_busy_timeout: Duration,
    pub db_idle_timeout: Duration,
    pub db_max_lifetime: Duration,
    pub sqlite_synchronous: String,
    /// The WAL is rewound when a checkpoint leaves more than this (bytes); also its size limit.
    pub sqlite_wal_max_bytes: u64,
    pub slow_query_ms: u64,
    pub group_commit_max: usize,
    pub socket_buffer: usize,
    pub shutdown_timeout: Duration,
    pub max_connections: usize,
    pub commit_queue: usize,
    pub event_rate: f64,
    pub socket_buffer_bytes: u64,
    pub socket_stall: Duration,
    pub write_rate: f64,
    pub http_header_timeout: Duration,
    pub http_max_header_bytes: usize,
    pub redis_prefix: String,
    pub redis_timeout: Duration,
    pub bus_ack_timeout: Duration,
    /// Shard channels of the Redis bus (`TSUNAGI_BUS_SHARDS`).
    pub bus_shards: u32,
    pub cache_l1_capacity: u64,
    /// Hot window: newest messages kept per room, and bytes in all (`0`: off).
    pub hot_window_messages: usize,
    pub hot_window_bytes: usize,
    pub state_cache_bytes: usize,
    pub cache_l1_ttl: Duration,
    pub cache_l2_ttl: Duration,
    pub cache_negative_ttl: Duration,
    pub token_ttl_secs: u64,
    pub login_rate_per_min: f64,
    pub max_metadata_bytes: usize,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub password_queue: usize,
    pub max_state_bytes: usize,
    pub sensor_batch: usize,
    pub sensor_flush: Duration,
    pub sensor_buffer: usize,
    pub sensor_live_rate: f64,
    pub sensor_retention_days: u32,
    pub sensor_maintenance: Duration,
    /// None: never archive.
    pub archive_after: Option<Duration>,
    pub archive_batch: u32,
    pub archive_url: Option<String>,
    pub archive_interval: Duration,
    pub job_lease: Duration,
    pub job_keep: Duration,
    pub webhook_timeout: Duration,
    pub webhook_max_attempts: u32,
    pub webhook_allow_private: bool,
    /// `TSUNAGI_*` variables of the environment that are no setting (a misspelling): warned
    /// about by name at start, not refused (an old deployment's leftover must not stop it).
    pub unknown_env: Vec<String>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Failed logins per minute per client address; 0 = off.
    pub login_failures_per_address: u32,
    /// Registrations per minute per client address; 0 = off.
    pub register_rate_per_address: u32,
    /// Concurrent Socket.IO connections per client address; 0 = off.
    pub connections_per_address: u32,
    pub handshakes_pending: usize,
    pub history_reads: usize,
    pub history_wait: Duration,
    pub tls: Option<TlsFiles>,
    /// `TSUNAGI_ADVERTISE_URL`: where the other instances forward this instance's polling
    /// sessions' requests; `None`: derived from the bound listener (`session_routing`).
    pub advertise_url: Option<url::Url>,
    /// Empty: nothing is encrypted at rest. The first is current.
    pub encryption_keys: Vec<EncryptionKey>,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {name}: {problem}")]
pub struct ConfigError {
    pub name: String,
    pub problem: String,
}

/// Every setting read, and every problem met (`Config::evaluate`).
pub struct Evaluation {
    /// With a stand-in for each value that has a problem: use it only when `problems` is empty.
    pub config: Config,
    pub problems: Vec<ConfigError>,
    /// Each setting of [`SETTINGS`], in its order, as given (or its default).
    pub settings: Vec<Effective>,
}

/// One setting's effective value (unparsed, as given: mask secrets before showing it).
pub struct Effective {
    pub name: &'static str,
    pub value: String,
    pub source: Source,
}

/// `TSUNAGI_ADVERTISE_URL`: an http(s) origin with a host (no path, query or credentials).
fn advertise_url(raw: &str) -> Result<Option<url::Url>, ConfigError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    const NAME: &str = "TSUNAGI_ADVERTISE_URL";
    let url = url::Url::parse(raw).map_err(|e| err(NAME, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(err(NAME, "must be http://host:port or https://host:port"));
    }
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err(err(NAME, "must be an origin only (no path, query or user)"));
    }
    Ok(Some(url))
}

pub(crate) fn err(name: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        name: name.to_owned(),
        problem: problem.into(),
    }
}

/// Where a setting's effective value came from (shown by `tsunagi check-config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    Environment,
    /// The config file (`TSUNAGI_CONFIG` or `./tsunagi.toml`), at this path.
    File(PathBuf),
    /// Read from the file named by this `…_FILE` variable.
    SecretFile(String),
}

struct Raw {
    values: HashMap<String, String>,
    sources: HashMap<String, Source>,
}

impl Raw {
    fn get(&self, name: &str) -> String {
        if let Some(v) = self.values.get(name) {
            return v.clone();
        }
        SETTINGS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, d, _)| d.to_string())
            .unwrap_or_default()
    }

    fn num<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
        &self,
        name: &str,
        min: T,
        max: T,
    ) -> Result<T, ConfigError> {
        let v = self.get(name);
        let n: T = v
            .trim()
            .parse()
            .map_err(|_| err(name, format!("`{v}` is not a number")))?;
        // NaN compares false with both bounds: only `min <= n && n <= max` refuses it
        if !(n >= min && n <= max) {
            return Err(err(name, format!("{n} is outside {min}..={max}")));
        }
        Ok(n)
    }
}

/// Reads `tsunagi.toml` (if any) under the environment. Keys in the file are the variable
/// names without `TSUNAGI_`, in lower case (`listen = "0.0.0.0:8080"`).
fn gather(env: &HashMap<String, String>, problems: &Problems) -> Raw {
    let mut raw = HashMap::new();
    let mut sources = HashMap::new();
    let (path, required) = match env.get("TSUNAGI_CONFIG") {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from("tsunagi.toml"), false),
    };
    let table = (path.exists() || required)
        .then(|| read_config_file(&path))
        .and_then(|r| problems.get(r));
    for (k, v) in table.unwrap_or_default() {
        let name = format!("TSUNAGI_{}", k.to_uppercase());
        if !SETTINGS.iter().any(|(n, _, _)| *n == name) && !secrets::is_secret_file_var(&name) {
            problems.push(err(
                &name,
                format!("unknown setting `{k}` in {}", path.display()),
            ));
            continue;
        }
        let s = match v {
            toml::Value::String(s) => s,
            toml::Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        sources.insert(name.clone(), Source::File(path.clone()));
        raw.insert(name, s);
    }
    for (k, v) in env {
        if k.starts_with("TSUNAGI_") {
            sources.insert(k.clone(), Source::Environment);
            raw.insert(k.clone(), v.clone());
        }
    }
    for (name, file_var) in secrets::read_secret_files(&mut raw, problems) {
        sources.insert(name.to_owned(), Source::SecretFile(file_var));
    }
    Raw {
        values: raw,
        sources,
    }
}

fn read_config_file(path: &std::path::Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err("TSUNAGI_CONFIG", format!("{}: {e}", path.display())))?;
    text.parse()
        .map_err(|e| err("TSUNAGI_CONFIG", format!("{}: {e}", path.display())))
}

/// Every problem found while reading the settings, in the order met: `serve` stops at the
/// first, `check-config` lists them all. Each setting's rules stay in one place either way.
#[derive(Default)]
pub(crate) struct Problems(std::cell::RefCell<Vec<ConfigError>>);

impl Problems {
    pub(crate) fn push(&self, e: ConfigError) {
        self.0.borrow_mut().push(e);
    }

    /// The value, or `None` once its problem is recorded.
    pub(crate) fn get<T>(&self, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    /// The value, or a stand-in once its problem is recorded (no Config is made then).
    fn ok<T: Default>(&self, r: Result<T, ConfigError>) -> T {
        self.get(r).unwrap_or_default()
    }

    fn into_vec(self) -> Vec<ConfigError> {
        self.0.into_inner()
    }
}

/// Variables named `TSUNAGI_*` that tsunagi reads outside the settings: the config file's path,
/// and the test suites' own (`TSUNAGI_TEST_*`, `TSUNAGI_BIN`), which servers they start inherit.
fn is_known_env(name: &str) -> bool {
    name == "TSUNAGI_CONFIG"
        || name == "TSUNAGI_BIN"
        || name.starts_with("TSUNAGI_TEST_")
        || SETTINGS.iter().any(|(n, _, _)| *n == name)
        || secrets::is_secret_file_var(name)
}

/// The setting an unknown variable most likely meant (`TSUNAGI_SEND_RATEE` → `TSUNAGI_SEND_RATE`).
pub fn closest_setting(name: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .map(|(n, _, _)| (strsim::levenshtein(name, n), *n))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, n)| n)
}

/// The address of `TSUNAGI_LISTEN`: `ip:port`, or `host:port` resolved now (`localhost:8080`;
/// the first address the resolver gives).
fn listen_address(s: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let (host, port) = s
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        .ok_or_else(|| err("TSUNAGI_LISTEN", format!("`{s}` is not host:port")))?;
    (host, port.parse::<u16>().unwrap_or_default())
        .to_socket_addrs()
        .map_err(|e| err("TSUNAGI_LISTEN", format!("`{host}` does not resolve: {e}")))?
        .next()
        .ok_or_else(|| err("TSUNAGI_LISTEN", format!("`{host}` has no address")))
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut evaluation = Self::evaluate(env);
        if evaluation.problems.is_empty() {
            Ok(evaluation.config)
        } else {
            Err(evaluation.problems.remove(0))
        }
    }

    /// Reads every setting and records every problem, not only the first.
    pub fn evaluate(env: &HashMap<String, String>) -> Evaluation {
        let problems = Problems::default();
        let raw = gather(env, &problems);
        let config = Self::read(env, &raw, &problems);
        let settings = SETTINGS
            .iter()
            .map(|(name, _, _)| Effective {
                name,
                value: raw.get(name),
                source: raw.sources.get(*name).cloned().unwrap_or(Source::Default),
            })
            .collect();
        Evaluation {
            config,
            problems: problems.into_vec(),
            settings,
        }
    }

    /// The settings' rules: each problem goes to `problems`, and reading goes on with a
    /// stand-in value so the later ones are checked too.
    fn read(env: &HashMap<String, String>, raw: &Raw, problems: &Problems) -> Self {
        let p = problems;
        let listen = p
            .get(listen_address(raw.get("TSUNAGI_LISTEN").trim()))
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut unknown_env: Vec<String> = env
            .keys()
            .filter(|k| k.starts_with("TSUNAGI_") && !is_known_env(k))
            .cloned()
            .collect();
        unknown_env.sort();
        let database_url = raw.get("TSUNAGI_DATABASE_URL");
        if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres")) {
            p.push(err(
                "TSUNAGI_DATABASE_URL",
                "must start with sqlite:// or postgres://",
            ));
        }
        let postgres = database_url.starts_with("postgres");
        let replica_urls: Vec<String> = raw
            .get("TSUNAGI_REPLICA_URLS")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if !replica_urls.is_empty() && !postgres {
            p.push(err(
                "TSUNAGI_REPLICA_URLS",
                "replicas need a PostgreSQL primary",
            ));
        }
        if let Some(i) = replica_urls.iter().position(|u| !u.starts_with("postgres")) {
            // the URL itself is not repeated: it may carry a password
            p.push(err(
                "TSUNAGI_REPLICA_URLS",
                format!("entry {} is not a postgres:// URL", i + 1),
            ));
        }
        let redis_url = Some(raw.get("TSUNAGI_REDIS_URL")).filter(|s| !s.trim().is_empty());
        if let Some(urls) = &redis_url {
            // one URL, or several comma-separated seed nodes of a Redis Cluster (PROTOCOL §7)
            for (i, url) in urls.split(',').map(str::trim).enumerate() {
                let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
                if !scheme_ok || redis::Client::open(url).is_err() {
                    // the URL itself is not repeated: it may carry a password
                    p.push(err(
                        "TSUNAGI_REDIS_URL",
                        format!("entry {} must be a redis:// or rediss:// URL", i + 1),
                    ));
                }
            }
        }
        let jwt_secret = Some(raw.get("TSUNAGI_JWT_SECRET")).filter(|s| !s.is_empty());
        if let Some(s) = &jwt_secret
            && s.len() < 16
        {
            p.push(err("TSUNAGI_JWT_SECRET", "must be at least 16 bytes"));
        }
        if postgres && jwt_secret.is_none() {
            p.push(err("TSUNAGI_JWT_SECRET", "is required with PostgreSQL"));
        }
        let flag = |name: &str| -> Result<bool, ConfigError> {
            match raw.get(name).to_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                other => Err(err(name, format!("`{other}`: use true or false"))),
            }
        };
        let db_test_before_acquire = p.ok(flag("TSUNAGI_DB_TEST_BEFORE_ACQUIRE"));
        let db_application_name = raw.get("TSUNAGI_DB_APPLICATION_NAME");
        if db_application_name.is_empty() || db_application_name.len() > 40 {
            p.push(err("TSUNAGI_DB_APPLICATION_NAME", "must be 1 to 40 bytes"));
        }
        let log_format = raw.get("TSUNAGI_LOG_FORMAT");
        let log_json = match log_format.as_str() {
            "json" => true,
            "text" | "" => false,
            other => {
                p.push(err(
                    "TSUNAGI_LOG_FORMAT",
                    format!("`{other}`: use text or json"),
                ));
                false
            }
        };
        let log = raw.get("TSUNAGI_LOG");
        p.get(
            tracing_subscriber::EnvFilter::try_new(&log)
                .map_err(|e| err("TSUNAGI_LOG", e.to_string())),
        );
        let sync = raw.get("TSUNAGI_SQLITE_SYNCHRONOUS").to_lowercase();
        if !matches!(sync.as_str(), "full" | "normal" | "extra") {
            p.push(err(
                "TSUNAGI_SQLITE_SYNCHRONOUS",
                format!("`{sync}`: use full or normal"),
            ));
        }
        let redis_prefix = raw.get("TSUNAGI_REDIS_PREFIX");
        // no braces: a brace in the prefix would become every key's Redis Cluster hash tag
        // (all keys in one slot) and hide the tags tsunagi puts after it
        let prefix_ok = !redis_prefix.is_empty()
            && redis_prefix.len() <= 64
            && !redis_prefix
                .contains(|c: char| c.is_whitespace() || c.is_control() || c == '{' || c == '}');
        if !prefix_ok {
            p.push(err(
                "TSUNAGI_REDIS_PREFIX",
                "must be 1 to 64 bytes without spaces or braces",
            ));
        }
        let ms = |name: &str, min: u64, max: u64| -> Result<Duration, ConfigError> {
            raw.num(name, min, max).map(Duration::from_millis)
        };
        let redis_timeout = p.ok(ms("TSUNAGI_REDIS_TIMEOUT_MS", 10, 60_000));
        let bus_ack_timeout = p.ok(ms("TSUNAGI_BUS_ACK_TIMEOUT_MS", 1, 600_000));
        let bus_shards = p.ok(raw.num("TSUNAGI_BUS_SHARDS", 1u32, 65_536));
        // A peer cut off from Redis must notice (heartbeat + one Redis timeout) and stop reading
        // its L1 before a writer stops waiting for that peer's ack. (Zero: a stand-in for a
        // value already reported.)
        let detection = BUS_HEARTBEAT + redis_timeout * 2;
        if !redis_timeout.is_zero() && !bus_ack_timeout.is_zero() && bus_ack_timeout < detection {
            p.push(err(
                "TSUNAGI_BUS_ACK_TIMEOUT_MS",
                format!(
                    "must be at least {} ms (250 + 2 x TSUNAGI_REDIS_TIMEOUT_MS)",
                    detection.as_millis()
                ),
            ));
        }
        let secs = |name: &str, min: u64, max: u64| -> Result<Duration, ConfigError> {
            raw.num(name, min, max).map(Duration::from_secs)
        };
        let archive_after = p.ok(
            crate::domain::parse_duration(&raw.get("TSUNAGI_ARCHIVE_AFTER"))
                .map_err(|e| err("TSUNAGI_ARCHIVE_AFTER", e.to_string())),
        );
        let archive_url = Some(raw.get("TSUNAGI_ARCHIVE_URL")).filter(|s| !s.trim().is_empty());
        if let Some(url) = &archive_url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres"))
        {
            p.push(err(
                "TSUNAGI_ARCHIVE_URL",
                "must start with sqlite:// or postgres://",
            ));
        }
        Config {
            listen,
            database_url,
            replica_urls,
            redis_url,
            jwt_secret,
            log,
            log_json,
            max_message_bytes: p.ok(raw.num("TSUNAGI_MAX_MESSAGE_BYTES", 1, 16 * 1024 * 1024)),
            send_rate: p.ok(raw.num("TSUNAGI_SEND_RATE", 0.0, 1_000_000.0)),
            send_burst: p.ok(raw.num("TSUNAGI_SEND_BURST", 1, 1_000_000)),
            typing_rate: p.ok(raw.num("TSUNAGI_TYPING_RATE", 0.0, 1_000_000.0)),
            read_rate_kib: p.ok(raw.num("TSUNAGI_READ_RATE_KIB", 0.0, 100_000_000.0)),
            db_pool_size: p.ok(raw.num("TSUNAGI_DB_POOL_SIZE", 1, 1000)),
            db_read_pool_size: p.ok(raw.num("TSUNAGI_DB_READ_POOL_SIZE", 1, 1000)),
            db_min_idle: p.ok(raw.num("TSUNAGI_DB_MIN_IDLE", 0, 1000)),
            db_acquire_timeout: p.ok(ms("TSUNAGI_DB_ACQUIRE_TIMEOUT_MS", 10, 600_000)),
            db_test_before_acquire,
            db_statement_timeout: p.ok(ms("TSUNAGI_DB_STATEMENT_TIMEOUT_MS", 0, 86_400_000)),
            db_application_name,
            db_pool_warn_share: p.ok(raw.num("TSUNAGI_DB_POOL_WARN_SHARE", 0.0, 1.0)),
            replica_max_lag: p.ok(ms("TSUNAGI_REPLICA_MAX_LAG_MS", 1, 3_600_000)),
            replica_check_interval: p.ok(ms("TSUNAGI_REPLICA_CHECK_MS", 50, 600_000)),
            db_busy_timeout: p.ok(ms("TSUNAGI_DB_BUSY_TIMEOUT_MS", 0, 600_000)),
            db_idle_timeout: p.ok(secs("TSUNAGI_DB_IDLE_TIMEOUT_S", 1, 86_400)),
            db_max_lifetime: p.ok(secs("TSUNAGI_DB_MAX_LIFETIME_S", 1, 604_800)),
            sqlite_synchronous: sync,
            sqlite_wal_max_bytes: p.ok(raw.num("TSUNAGI_SQLITE_WAL_MAX_MB", 1u64, 1 << 20)) << 20,
            slow_query_ms: p.ok(raw.num("TSUNAGI_SLOW_QUERY_MS", 0, 600_000)),
            group_commit_max: p.ok(raw.num("TSUNAGI_GROUP_COMMIT_MAX", 1, 100_000)),
            socket_buffer: p.ok(raw.num("TSUNAGI_SOCKET_BUFFER", 16, 1_000_000)),
            shutdown_timeout: p.ok(secs("TSUNAGI_SHUTDOWN_TIMEOUT_S", 1, 3600)),
            max_connections: p.ok(raw.num("TSUNAGI_MAX_CONNECTIONS", 1, 10_000_000)),
            commit_queue: p.ok(raw.num("TSUNAGI_COMMIT_QUEUE", 1, 10_000_000)),
            event_rate: p.ok(raw.num("TSUNAGI_EVENT_RATE", 0.0, 1_000_000.0)),
            socket_buffer_bytes: p.ok(raw.num("TSUNAGI_SOCKET_BUFFER_BYTES", 65_536, 1 << 40)),
            socket_stall: p.ok(ms("TSUNAGI_SOCKET_STALL_MS", 1000, 3_600_000)),
            write_rate: p.ok(raw.num("TSUNAGI_WRITE_RATE", 0.0, 1_000_000.0)),
            http_header_timeout: p.ok(ms("TSUNAGI_HTTP_HEADER_TIMEOUT_MS", 100, 3_600_000)),
            http_max_header_bytes: p.ok(raw.num("TSUNAGI_HTTP_MAX_HEADER_BYTES", 8192, 16 << 20)),
            redis_prefix,
            redis_timeout,
            bus_ack_timeout,
            bus_shards,
            cache_l1_capacity: p.ok(raw.num("TSUNAGI_CACHE_L1_CAPACITY", 0, 100_000_000)),
            hot_window_messages: p.ok(raw.num("TSUNAGI_HOT_WINDOW_MESSAGES", 0, 10_000)),
            hot_window_bytes: p.ok(raw.num("TSUNAGI_HOT_WINDOW_BYTES", 0, 1 << 40)),
            state_cache_bytes: p.ok(raw.num("TSUNAGI_STATE_CACHE_BYTES", 0, 1 << 40)),
            cache_l1_ttl: p.ok(secs("TSUNAGI_CACHE_L1_TTL_S", 1, 86_400)),
            cache_l2_ttl: p.ok(secs("TSUNAGI_CACHE_L2_TTL_S", 1, 604_800)),
            cache_negative_ttl: p.ok(ms("TSUNAGI_CACHE_NEGATIVE_TTL_MS", 1, 3_600_000)),
            token_ttl_secs: p.ok(raw.num("TSUNAGI_TOKEN_TTL_S", 60, 31_536_000)),
            login_rate_per_min: p.ok(raw.num("TSUNAGI_LOGIN_RATE", 0.0, 1_000_000.0)),
            max_metadata_bytes: p.ok(raw.num("TSUNAGI_MAX_METADATA_BYTES", 2, 1024 * 1024)),
            argon2_memory_kib: p.ok(raw.num("TSUNAGI_ARGON2_MEMORY_KIB", 64, 4 * 1024 * 1024)),
            argon2_iterations: p.ok(raw.num("TSUNAGI_ARGON2_ITERATIONS", 1, 100)),
            password_queue: p.ok(raw.num("TSUNAGI_PASSWORD_QUEUE", 1, 100_000)),
            max_state_bytes: p.ok(raw.num("TSUNAGI_MAX_STATE_BYTES", 2, 16 * 1024 * 1024)),
            sensor_batch: p.ok(raw.num("TSUNAGI_SENSOR_BATCH", 1, 100_000_000)),
            sensor_flush: p.ok(ms("TSUNAGI_SENSOR_FLUSH_MS", 1, 3_600_000)),
            sensor_buffer: p.ok(raw.num("TSUNAGI_SENSOR_BUFFER", 1, 100_000_000)),
            sensor_live_rate: p.ok(raw.num("TSUNAGI_SENSOR_LIVE_RATE", 0.01, 100_000.0)),
            sensor_retention_days: p.ok(raw.num("TSUNAGI_SENSOR_RETENTION_DAYS", 0, 36_500)),
            sensor_maintenance: p.ok(secs("TSUNAGI_SENSOR_MAINTENANCE_S", 1, 604_800)),
            archive_after: (!archive_after.is_zero()).then_some(archive_after),
            archive_batch: p.ok(raw.num("TSUNAGI_ARCHIVE_BATCH", 1, 100_000)),
            archive_url,
            archive_interval: p.ok(secs("TSUNAGI_ARCHIVE_INTERVAL_S", 1, 604_800)),
            job_lease: p.ok(secs("TSUNAGI_JOB_LEASE_S", 3, 86_400)),
            webhook_timeout: p.ok(ms("TSUNAGI_WEBHOOK_TIMEOUT_MS", 100, 600_000)),
            webhook_max_attempts: p.ok(raw.num("TSUNAGI_WEBHOOK_MAX_ATTEMPTS", 1, 100)),
            webhook_allow_private: p.ok(flag("TSUNAGI_WEBHOOK_ALLOW_PRIVATE")),
            job_keep: Duration::from_secs(86_400)
                * p.ok(raw.num::<u32>("TSUNAGI_JOB_KEEP_DAYS", 0, 36_500)),
            unknown_env,
            trusted_proxies: p.ok(secrets::parse_trusted_proxies(
                &raw.get("TSUNAGI_TRUSTED_PROXIES"),
            )),
            login_failures_per_address: p.ok(raw.num(
                "TSUNAGI_LOGIN_FAILURES_PER_ADDRESS",
                0,
                1_000_000,
            )),
            register_rate_per_address: p.ok(raw.num(
                "TSUNAGI_REGISTER_RATE_PER_ADDRESS",
                0,
                1_000_000,
            )),
            connections_per_address: p.ok(raw.num(
                "TSUNAGI_CONNECTIONS_PER_ADDRESS",
                0,
                100_000_000,
            )),
            handshakes_pending: p.ok(raw.num("TSUNAGI_HANDSHAKES_PENDING", 0, 10_000_000)),
            history_reads: p.ok(raw.num("TSUNAGI_HISTORY_READS", 0, 10_000)),
            history_wait: p.ok(ms("TSUNAGI_HISTORY_WAIT_MS", 10, 600_000)),
            tls: p.ok(secrets::tls_files(
                &raw.get("TSUNAGI_TLS_CERT"),
                &raw.get("TSUNAGI_TLS_KEY"),
            )),
            advertise_url: p.ok(advertise_url(&raw.get("TSUNAGI_ADVERTISE_URL"))),
            encryption_keys: p.ok(secrets::parse_encryption_keys(
                &raw.get("TSUNAGI_ENCRYPTION_KEYS"),
            )),
        }
    }

    /// The SQLite file of a `sqlite://` URL (`sqlite://./data/x.db`, `sqlite:///abs/x.db`).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.database_url
            .starts_with("sqlite:")
            .then(|| sqlite_file(&self.database_url))
    }

    /// Where cold storage is: `TSUNAGI_ARCHIVE_URL`, else `archive.db` in the data dir
    /// (SQLite), else the primary itself (PostgreSQL).
    pub fn cold_location(&self) -> crate::store::archive::ColdLocation {
        use crate::store::archive::ColdLocation;
        match &self.archive_url {
            Some(url) if url.starts_with("postgres") => ColdLocation::Postgres {
                in_primary: *url == self.database_url,
                url: url.clone(),
            },
            Some(url) => ColdLocation::Sqlite(sqlite_file(url)),
            None => match self.data_dir() {
                Some(dir) => ColdLocation::Sqlite(dir.join("archive.db")),
                None => ColdLocation::Postgres {
                    url: self.database_url.clone(),
                    in_primary: true,
                },
            },
        }
    }

    /// The primary database for a person to read: the SQLite file, or the PostgreSQL URL
    /// without its password and parameters.
    pub fn describe_database(&self) -> String {
        match self.sqlite_path() {
            Some(path) => format!("sqlite {}", path.display()),
            None => redact_url(&self.database_url),
        }
    }

    pub fn describe_cold_storage(&self) -> String {
        use crate::store::archive::ColdLocation;
        match self.cold_location() {
            ColdLocation::Sqlite(path) => format!("sqlite {}", path.display()),
            ColdLocation::Postgres {
                in_primary: true, ..
            } => "table messages_archive in the primary".into(),
            ColdLocation::Postgres { url, .. } => redact_url(&url),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }

    /// Where generated state (the JWT secret) is kept: the SQLite file's directory.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.sqlite_path().map(|p| {
            p.parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
        })
    }
}

/// A URL fit for a log: no password, no query parameters (`postgres://u@host:5432/db`).
pub fn redact_url(url: &str) -> String {
    let url = url.split('?').next().unwrap_or(url);
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The file of a `sqlite://` URL (`sqlite://./data/x.db`, `sqlite:///abs/x.db`).
fn sqlite_file(url: &str) -> PathBuf {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    PathBuf::from(rest.split('?').next().unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_map(&map)
    }

    #[test]
    fn defaults_are_valid() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.max_message_bytes, 16384);
        assert_eq!(c.sqlite_path().unwrap(), PathBuf::from("./data/tsunagi.db"));
    }

    #[test]
    fn urls_in_logs_carry_no_password_or_parameters() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/tsunagi?sslmode=require&password=x"),
            "postgres://app@db:5432/tsunagi"
        );
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1:6379"),
            "redis://@127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn listen_takes_host_names_and_misspelled_variables_are_named() {
        let c = cfg(&[
            ("TSUNAGI_LISTEN", "localhost:8080"),
            ("TSUNAGI_SEND_RATEE", "5"),
            ("TSUNAGI_TEST_PG", "x"),
        ])
        .unwrap();
        assert!(c.listen.ip().is_loopback(), "{}", c.listen);
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.unknown_env, vec!["TSUNAGI_SEND_RATEE".to_owned()]);
        assert_eq!(
            closest_setting("TSUNAGI_SEND_RATEE"),
            Some("TSUNAGI_SEND_RATE")
        );
        assert_eq!(closest_setting("TSUNAGI_WHATEVER_ELSE"), None);
        assert_eq!(
            cfg(&[("TSUNAGI_LISTEN", "localhost")]).unwrap_err().name,
            "TSUNAGI_LISTEN"
        );
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = cfg(&[("TSUNAGI_SEND_RATE", "fast")]).unwrap_err();
        assert_eq!(e.name, "TSUNAGI_SEND_RATE");
        let e = cfg(&[("TSUNAGI_LISTEN", "nowhere")]).unwrap_err();
        assert_eq!(e.name, "TSUNAGI_LISTEN");
        let e = cfg(&[("TSUNAGI_MAX_MESSAGE_BYTES", "0")]).unwrap_err();
        assert_eq!(e.name, "TSUNAGI_MAX_MESSAGE_BYTES");
        assert!(e.to_string().contains("TSUNAGI_MAX_MESSAGE_BYTES"));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/config_values.rs): `NaN` parses as an f64 and
    /// compares false with both bounds, so it was taken as a rate.
    #[test]
    fn a_rate_that_is_not_a_number_is_refused() {
        for nan in ["NaN", "nan", "-NaN", "inf", "-infinity"] {
            for name in [
                "TSUNAGI_LOGIN_RATE",
                "TSUNAGI_SEND_RATE",
                "TSUNAGI_DB_POOL_WARN_SHARE",
            ] {
                assert_eq!(cfg(&[(name, nan)]).unwrap_err().name, name, "{name}={nan}");
            }
        }
    }

    #[test]
    fn postgres_needs_a_secret_and_replicas_need_postgres() {
        let pg = "postgres://u@h/db";
        let e = cfg(&[("TSUNAGI_DATABASE_URL", pg)]).unwrap_err();
        assert_eq!(e.name, "TSUNAGI_JWT_SECRET");
        let secret = ("TSUNAGI_JWT_SECRET", "0123456789abcdef0123");
        let c = cfg(&[
            ("TSUNAGI_DATABASE_URL", pg),
            secret,
            ("TSUNAGI_REPLICA_URLS", "postgres://r1/db, postgres://r2/db"),
        ])
        .unwrap();
        assert_eq!(c.replica_urls, vec!["postgres://r1/db", "postgres://r2/db"]);
        let e = cfg(&[("TSUNAGI_REPLICA_URLS", "postgres://r1/db")]).unwrap_err();
        assert_eq!(e.name, "TSUNAGI_REPLICA_URLS");
        let e = cfg(&[
            ("TSUNAGI_DATABASE_URL", pg),
            secret,
            ("TSUNAGI_REPLICA_URLS", "mysql://x"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "TSUNAGI_REPLICA_URLS");
        let e = cfg(&[("TSUNAGI_DB_TEST_BEFORE_ACQUIRE", "maybe")]).unwrap_err();
        assert_eq!(e.name, "TSUNAGI_DB_TEST_BEFORE_ACQUIRE");
    }

    #[test]
    fn toml_file_under_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9999\"\nsend_rate = 5\n").unwrap();
        let p = path.to_str().unwrap();
        let c = cfg(&[("TSUNAGI_CONFIG", p), ("TSUNAGI_SEND_RATE", "7")]).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.send_rate, 7.0);
        std::fs::write(&path, "nonsense = 1\n").unwrap();
        assert_eq!(
            cfg(&[("TSUNAGI_CONFIG", p)]).unwrap_err().name,
            "TSUNAGI_NONSENSE"
        );
    }
}
