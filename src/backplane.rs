//! Where the state that instances share lives: in this process (one instance), or in Redis.
//! Decided once from the configuration; the bus, presence, rate limits and the L2 cache each
//! build their engine from it.

use std::sync::Arc;

use crate::config::Config;
use crate::health::HealthCheck;
use crate::redis_conn::RedisConn;
use crate::telemetry::Telemetry;

#[derive(Clone)]
pub enum Backplane {
    /// A single instance: everything in process.
    Local,
    /// Shared by every instance through this Redis.
    Redis(Arc<RedisConn>),
}

impl Backplane {
    /// The backplane the configuration names, with a health check when it is a remote one.
    pub fn build(
        config: &Config,
        telemetry: &Telemetry,
    ) -> anyhow::Result<(Self, Option<HealthCheck>)> {
        let Some(url) = &config.redis_url else {
            return Ok((Backplane::Local, None));
        };
        let conn = RedisConn::open(url, &config.redis_prefix, config.redis_timeout)?
            .with_telemetry(telemetry.clone());
        let conn = Arc::new(conn);
        let probe = conn.clone();
        let check = HealthCheck::new("redis", move || {
            let conn = probe.clone();
            async move { conn.ping().await.map_err(|e| e.to_string()) }
        });
        Ok((Backplane::Redis(conn), Some(check)))
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Backplane::Redis(_))
    }
}
