//! The Redis connection shared by the L2 cache and the bus (and, later, presence and rate
//! limits): one multiplexed, self-reconnecting connection for commands, every call bounded by a
//! timeout so a Redis outage costs a request milliseconds, never a hang.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub struct RedisConn {
    client: redis::Client,
    manager: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl RedisConn {
    /// Connects lazily: tsunagi starts (and serves from the store) while Redis is down.
    pub fn open(url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(RedisConn {
            client,
            manager,
            prefix: prefix.to_owned(),
            timeout,
        })
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

    /// Runs `f` on the shared connection, giving up after the configured timeout.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, f(self.manager.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("Redis did not answer in time".into()),
        }
    }

    /// For `/readyz`.
    pub async fn ping(&self) -> Result<(), String> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(|_| ())
    }
}
