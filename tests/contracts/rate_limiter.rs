//! The [`RateLimiter`] contract (`src/shared_state/mod.rs`), on the in-process GCRA and on the
//! one shared through Redis.
//!
//! A factory hands out two handles on one limit: for the Redis engine two limiters on two
//! connections under one prefix (two tsunagi instances), for the local one the same limiter
//! twice. The suites alternate between them, so a Redis engine that silently fell back to its
//! in-process limiter (what it does when Redis fails) would let too much through and fail here.
//!
//! The suites run on real time (Redis keeps its own clock); the local limiter reads Tokio's clock,
//! so its long-run behaviour is also checked under paused time (`local_paused`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tsunagi::shared_state::RateLimiter;
use tsunagi::shared_state::local::LocalRateLimiter;
use tsunagi::shared_state::redis::RedisRateLimiter;

use crate::helpers;

/// Two handles on one limit of `per_second` units a second, `burst` at once.
pub trait LimiterFactory: Sync {
    fn limit(&self, per_second: f64, burst: u32) -> BoxFuture<'_, [Arc<dyn RateLimiter>; 2]>;
}

pub struct Local;

impl LimiterFactory for Local {
    fn limit(&self, per_second: f64, burst: u32) -> BoxFuture<'_, [Arc<dyn RateLimiter>; 2]> {
        let one: Arc<dyn RateLimiter> = Arc::new(LocalRateLimiter::new(per_second, burst));
        Box::pin(async move { [one.clone(), one] })
    }
}

pub struct Redis;

impl LimiterFactory for Redis {
    fn limit(&self, per_second: f64, burst: u32) -> BoxFuture<'_, [Arc<dyn RateLimiter>; 2]> {
        Box::pin(async move {
            let prefix = helpers::unique("tsunagi-contract-rate");
            let mut two = Vec::new();
            for _ in 0..2 {
                let conn = helpers::redis_conn(&prefix).await;
                let limiter = RedisRateLimiter::new(conn, "contract", per_second, burst);
                two.push(Arc::new(limiter) as Arc<dyn RateLimiter>);
            }
            [two[0].clone(), two[1].clone()]
        })
    }
}

on_engines!([local: Local, redis: Redis] [
    a_burst_is_allowed_then_refused,
    keys_are_limited_apart,
    check_n_counts_n_units,
    waiting_retry_after_is_enough,
    a_zero_rate_is_no_limit,
    peek_answers_without_counting,
]);

/// The wait a refusal must announce when the units it waits for were taken at `since` or
/// later: what is left of `full_ms` after `since` (our clock and Redis's run together; a
/// millisecond of rounding in each of the two numbers).
fn assert_wait(wait: u64, full_ms: u64, since: Instant) {
    let elapsed = since.elapsed().as_millis() as u64;
    assert!(wait > 0, "a refusal says to wait");
    assert!(
        wait <= full_ms && wait + elapsed + 2 >= full_ms,
        "wait {wait} ms: expected {full_ms} ms less the {elapsed} ms since the first unit"
    );
}

async fn a_burst_is_allowed_then_refused(engine: &impl LimiterFactory) {
    let [a, b] = engine.limit(1.0, 3).await;
    let start = Instant::now();
    for l in [&a, &b, &a] {
        l.check("k").await.expect("within the burst");
    }
    let wait = b.check("k").await.expect_err("past the burst");
    assert_wait(wait, 1000, start);
    let again = a.check("k").await.expect_err("still past the burst");
    assert_wait(again, 1000, start);
}

async fn keys_are_limited_apart(engine: &impl LimiterFactory) {
    let [a, b] = engine.limit(1.0, 2).await;
    a.check("k1").await.unwrap();
    b.check("k1").await.unwrap();
    assert!(a.check("k1").await.is_err());
    a.check("k2")
        .await
        .expect("another key has a bucket of its own");
    b.check("k2").await.unwrap();
    assert!(b.check("k2").await.is_err());
    assert!(b.check("k1").await.is_err(), "k2 gave k1 nothing");
}

async fn check_n_counts_n_units(engine: &impl LimiterFactory) {
    let [a, b] = engine.limit(1.0, 10).await;
    let start = Instant::now();
    a.check_n("k", 6).await.unwrap();
    b.check_n("k", 4).await.unwrap();
    let wait = a.check_n("k", 3).await.expect_err("the burst is spent");
    assert_wait(wait, 3000, start);
    // The refused 3 were not counted: one unit is a second away, not four.
    let wait = b.check("k").await.expect_err("the burst is spent");
    assert_wait(wait, 1000, start);
    // More than the burst at once is refused even from a full bucket.
    let start = Instant::now();
    let wait = a
        .check_n("fresh", 11)
        .await
        .expect_err("11 > the burst of 10");
    assert_wait(wait, 1000, start);
    b.check_n("fresh", 10)
        .await
        .expect("the refusal took nothing");
}

async fn waiting_retry_after_is_enough(engine: &impl LimiterFactory) {
    let [a, b] = engine.limit(2.0, 2).await;
    let start = Instant::now();
    a.check("k").await.unwrap();
    b.check("k").await.unwrap();
    let wait = a.check("k").await.expect_err("past the burst");
    assert_wait(wait, 500, start);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    b.check("k")
        .await
        .expect("one unit came back after retry_after_ms");
    let wait = a.check("k").await.expect_err("and only one");
    assert!(
        (1..=500).contains(&wait),
        "wait {wait} ms for the next unit"
    );
}

async fn a_zero_rate_is_no_limit(engine: &impl LimiterFactory) {
    let [a, b] = engine.limit(0.0, 1).await;
    for _ in 0..50 {
        a.check("k").await.unwrap();
        b.check("k").await.unwrap();
    }
    a.check_n("k", u32::MAX).await.unwrap();
}

/// `peek` (failed logins: checked before, charged after) says what `check` would, takes nothing.
async fn peek_answers_without_counting(engine: &impl LimiterFactory) {
    let [a, b] = engine.limit(1.0, 2).await;
    for _ in 0..10 {
        a.peek("k").await.expect("a full bucket lets one through");
    }
    let start = Instant::now();
    b.check("k").await.expect("the peeks took nothing");
    a.check("k").await.unwrap();
    let wait = b
        .peek("k")
        .await
        .expect_err("spent: peek refuses as check would");
    assert_wait(wait, 1000, start);
    let again = a
        .check("k")
        .await
        .expect_err("the refused peek gave nothing back either");
    assert_wait(again, 1000, start);
    a.peek("other").await.expect("keys apart");
    let [off, _] = engine.limit(0.0, 1).await;
    off.peek("k").await.expect("a zero rate is no limit");
}

/// The in-process limiter over minutes of paused Tokio time: the sustained rate holds exactly,
/// an idle key refills to the burst and no further, and the announced wait is always enough.
mod local_paused {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_sustained_rate_and_the_burst_hold_over_time() {
        let limiter = LocalRateLimiter::new(5.0, 5);
        for _ in 0..5 {
            limiter.check("k").await.unwrap();
        }
        let mut allowed = 0;
        let start = tokio::time::Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            match limiter.check("k").await {
                Ok(()) => allowed += 1,
                Err(wait) => tokio::time::advance(Duration::from_millis(wait)).await,
            }
        }
        assert!((299..=301).contains(&allowed), "{allowed} in 60 s at 5/s");
        tokio::time::advance(Duration::from_secs(600)).await;
        for _ in 0..5 {
            limiter.check("k").await.expect("refilled to the burst");
        }
        limiter.check("k").await.expect_err("and no further");
    }
}
