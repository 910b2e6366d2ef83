//! The Redis connection shared by the L2 cache, the bus, presence and rate limits: one
//! multiplexed, self-reconnecting connection for commands, every call bounded by a timeout so a
//! Redis outage costs a request milliseconds, never a hang.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Why a Redis call did not answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// A call failed a moment ago: not tried again until the breaker closes.
    #[error("Redis is unavailable (recent failure)")]
    Breaker,
    #[error("Redis did not answer in time")]
    Timeout,
    /// The subscription connection closed or stopped answering its pings.
    #[error("Redis subscription lost")]
    Lost,
    #[error("Redis: {0}")]
    Command(#[from] redis::RedisError),
}

pub struct RedisConn {
    client: redis::Client,
    /// The URLs `TSUNAGI_REDIS_URL` lists: one Redis, or several seed nodes of a Redis Cluster.
    nodes: Vec<String>,
    /// The app's metrics, for everything built on this connection.
    telemetry: crate::telemetry::Telemetry,
    manager: ConnectionManager,
    prefix: String,
    timeout: Duration,
    /// A circuit breaker: after a failed call, calls fail at once until this instant (ms since
    /// `epoch`), so an outage costs each request nothing instead of a timeout per Redis call.
    open_until_ms: AtomicU64,
    epoch: Instant,
}

/// How long the breaker stays open after a failure; `/readyz` and the bus's own connection
/// notice the recovery meanwhile.
const BREAKER_OPEN: Duration = Duration::from_millis(1000);

impl RedisConn {
    /// Connects lazily: tsunagi starts (and serves from the store) while Redis is down.
    pub fn open(url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        let nodes: Vec<String> = url
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        let client = redis::Client::open(nodes.first().map(String::as_str).unwrap_or(url))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(RedisConn {
            client,
            nodes,
            telemetry: crate::telemetry::Telemetry::detached(),
            manager,
            prefix: prefix.to_owned(),
            timeout,
            open_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Records what is built on this connection into `telemetry` (an app's).
    pub fn with_telemetry(mut self, telemetry: crate::telemetry::Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    pub fn telemetry(&self) -> &crate::telemetry::Telemetry {
        &self.telemetry
    }

    /// The configured node URLs (several: the seed nodes of a Redis Cluster).
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Several URLs were given: Redis Cluster mode (PROTOCOL §7).
    pub fn is_cluster(&self) -> bool {
        self.nodes.len() > 1
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `<prefix>:<rest>`: several deployments (or test runs) can share one Redis.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Runs `f` on the shared connection, giving up after the configured timeout; fails at once
    /// while the breaker is open.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.now_ms() < self.open_until_ms.load(Ordering::Relaxed) {
            return Err(RedisError::Breaker);
        }
        self.call(f).await
    }

    /// Like `run`, past the breaker: for what must be tried every time (the bus's publishes of
    /// invalidations, whose loss would leave other instances stale).
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let result = match tokio::time::timeout(self.timeout, f(self.manager.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RedisError::Command(e)),
            Err(_) => Err(RedisError::Timeout),
        };
        if result.is_err() {
            let until = self.now_ms() + BREAKER_OPEN.as_millis() as u64;
            self.open_until_ms.store(until, Ordering::Relaxed);
        } else {
            self.open_until_ms.store(0, Ordering::Relaxed);
        }
        result
    }

    /// Redis answered on another connection (the bus subscribed again): close the breaker.
    pub fn reachable(&self) {
        self.open_until_ms.store(0, Ordering::Relaxed);
    }

    /// For `/readyz`: always asks Redis (past the breaker), and closes the breaker on success.
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.call(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(|_| ())
    }
}
