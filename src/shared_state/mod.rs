//! State that must be shared by every tsunagi instance: rate limits and presence.
//!
//! Layout: one trait per concern here, the in-process implementations in `local.rs`, the rate
//! limiter shared through Redis in `redis.rs`, presence shared through Redis in `redis_presence.rs`;
//! [`presence`] and [`Limiters`] build the engine the backplane calls for.

use std::sync::Arc;

use async_trait::async_trait;

use crate::backplane::Backplane;
use crate::telemetry::Telemetry;

pub mod local;
pub mod redis;
pub mod redis_presence;

/// Per-key rate limiting (GCRA). `check` consumes one unit or says how long to wait.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// `Ok(())` if allowed (and counted), else `Err(retry_after_ms)`.
    async fn check(&self, key: &str) -> Result<(), u64> {
        self.check_n(key, 1).await
    }
    /// The same for `n` units at once (bytes read, say).
    async fn check_n(&self, key: &str, n: u32) -> Result<(), u64>;
    /// Whether one unit would be allowed now, without counting it: for budgets charged only
    /// when something fails (failed logins), checked before the work is done.
    async fn peek(&self, key: &str) -> Result<(), u64>;
}

/// Who is online in which room. A user is online in a room while any of their connections
/// is joined to it.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Records `conn` of `user` in `room`; true if the user was not online there before.
    async fn join(&self, room: &str, user: &str, conn: &str) -> bool;
    /// Removes `conn`; true if it was the user's last connection in the room.
    async fn leave(&self, room: &str, user: &str, conn: &str) -> bool;
    /// The users online in `room`, sorted.
    async fn online(&self, room: &str) -> Vec<String>;
}

/// Presence where the backplane keeps it.
pub fn presence(backplane: &Backplane) -> Arc<dyn Presence> {
    match backplane {
        Backplane::Local => Arc::new(local::LocalPresence::default()),
        Backplane::Redis(conn) => redis_presence::RedisPresence::start(conn.clone()),
    }
}

/// Makes the rate limiters: with Redis every limit is shared by all instances (PROTOCOL §3
/// "Across instances"), else each lives in this process.
pub struct Limiters(Backplane, Telemetry);

impl Limiters {
    pub fn new(backplane: &Backplane, telemetry: &Telemetry) -> Self {
        Limiters(backplane.clone(), telemetry.clone())
    }

    /// A limiter named `name` (its Redis keys) allowing `per_second` with bursts of `burst`.
    pub fn limiter(&self, name: &'static str, per_second: f64, burst: u32) -> Arc<dyn RateLimiter> {
        let inner: Arc<dyn RateLimiter> = match &self.0 {
            Backplane::Local => Arc::new(local::LocalRateLimiter::new(per_second, burst)),
            Backplane::Redis(conn) => Arc::new(redis::RedisRateLimiter::new(
                conn.clone(),
                name,
                per_second,
                burst,
            )),
        };
        let refused = self
            .1
            .record(|| metrics::counter!("tsunagi_rate_limited_total", "limiter" => name));
        Arc::new(Counted { inner, refused })
    }
}

/// A limiter that counts its refusals (`tsunagi_rate_limited_total{limiter}`), so operators
/// see how often clients are told to slow down, whichever engine decides.
struct Counted {
    inner: Arc<dyn RateLimiter>,
    refused: metrics::Counter,
}

#[async_trait]
impl RateLimiter for Counted {
    async fn check_n(&self, key: &str, n: u32) -> Result<(), u64> {
        let r = self.inner.check_n(key, n).await;
        if r.is_err() {
            self.refused.increment(1);
        }
        r
    }

    async fn peek(&self, key: &str) -> Result<(), u64> {
        let r = self.inner.peek(key).await;
        if r.is_err() {
            self.refused.increment(1);
        }
        r
    }
}
