//! Rate limits shared by every instance: the same GCRA as `local.rs`, one Redis script per check
//! (atomic, Redis's clock), one key per limited thing with a TTL of its own.
//!
//! With Redis unreachable the check falls back to this instance's in-process limiter: requests
//! keep flowing, limited per instance, rather than failing because a limiter is down.

use std::sync::Arc;

use async_trait::async_trait;

use super::RateLimiter;
use super::local::LocalRateLimiter;
use crate::redis_conn::RedisConn;

const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local consume = ARGV[4] == '1'
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * n
if new_tat > now + tolerance then
  return math.max(1, math.ceil((new_tat - now - tolerance) / 1000))
end
if not consume then return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
";

pub struct RedisRateLimiter {
    conn: Arc<RedisConn>,
    name: &'static str,
    /// Microseconds between two units at the sustained rate; `None`: no limit.
    interval_us: Option<f64>,
    tolerance_us: f64,
    script: redis::Script,
    fallback: LocalRateLimiter,
}

impl RedisRateLimiter {
    /// `name` keeps limiters apart in Redis (`<prefix>:rate:<name>:<key>`).
    pub fn new(conn: Arc<RedisConn>, name: &'static str, per_second: f64, burst: u32) -> Self {
        let interval_us = (per_second > 0.0).then(|| 1_000_000.0 / per_second);
        RedisRateLimiter {
            conn,
            name,
            interval_us,
            tolerance_us: interval_us.unwrap_or_default() * f64::from(burst.max(1)),
            script: redis::Script::new(GCRA),
            fallback: LocalRateLimiter::new(per_second, burst),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check_n(&self, key: &str, n: u32) -> Result<(), u64> {
        self.run(key, n, true).await
    }

    async fn peek(&self, key: &str) -> Result<(), u64> {
        self.run(key, 1, false).await
    }
}

impl RedisRateLimiter {
    /// One script run; `consume: false` only answers whether `n` units would pass.
    async fn run(&self, key: &str, n: u32, consume: bool) -> Result<(), u64> {
        let Some(interval) = self.interval_us else {
            return Ok(());
        };
        let k = self.conn.key(&format!("rate:{}:{key}", self.name));
        let (script, tolerance) = (&self.script, self.tolerance_us);
        let verdict = self
            .conn
            .run(|mut c| async move {
                script
                    .key(k)
                    .arg(interval)
                    .arg(tolerance)
                    .arg(n)
                    .arg(u8::from(consume))
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        match verdict {
            Ok(0) => Ok(()),
            Ok(wait_ms) => Err(wait_ms.max(1) as u64),
            Err(e) => {
                self.conn.telemetry().record(|| {
                    metrics::counter!("tsunagi_rate_limit_fallbacks_total", "limiter" => self.name)
                        .increment(1)
                });
                tracing::debug!(limiter = self.name, error = %e, "rate limit checked in process");
                if consume {
                    self.fallback.check_n(key, n).await
                } else {
                    self.fallback.peek(key).await
                }
            }
        }
    }
}
