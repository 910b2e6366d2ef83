//! What every contract suite needs: the servers the scale-out engines run on, found from the
//! environment, and names no other test uses.
//!
//! PostgreSQL is used only when `TSUNAGI_TEST_PG` is set (as in every other suite: `scripts/test`
//! runs once without and once with it); when it is set and cannot be reached, the test fails.
//! Redis is always required (`TSUNAGI_TEST_REDIS`, default `redis://127.0.0.1:6379`): a Redis
//! engine that cannot reach it falls back to in-process state, which would pass for it, so every
//! connection is pinged first and the test fails loudly when Redis does not answer.
//! `TSUNAGI_TEST_REDIS_CLUSTER` (comma-separated seed URLs, as `scripts/redis-cluster up` prints)
//! runs the Redis engines on a Redis Cluster instead; its ping asks every primary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tsunagi::config::Config;
use tsunagi::redis_conn::RedisConn;

/// The JWT secret a PostgreSQL config requires (never used to sign anything here).
const SECRET: &str = "contract-test-secret-0123456789";

/// A name no other test (or run) uses: `<what>_<uuid>`.
pub fn unique(what: &str) -> String {
    format!("{what}_{}", uuid::Uuid::new_v4().simple())
}

/// The config tsunagi would build for `database_url`, everything else default; with
/// `TSUNAGI_TEST_ENCRYPTION_KEYS` set, encryption at rest on (every contract holds with it).
pub fn config(database_url: &str) -> Config {
    let mut env = HashMap::from([
        ("TSUNAGI_DATABASE_URL".to_owned(), database_url.to_owned()),
        ("TSUNAGI_JWT_SECRET".to_owned(), SECRET.to_owned()),
    ]);
    if let Ok(keys) = std::env::var("TSUNAGI_TEST_ENCRYPTION_KEYS") {
        env.insert("TSUNAGI_ENCRYPTION_KEYS".to_owned(), keys);
    }
    Config::from_map(&env).expect("the test config is valid")
}

/// `TSUNAGI_TEST_PG` (`postgres://user@host:port`, no database), when set and not empty.
pub fn test_pg() -> Option<String> {
    std::env::var("TSUNAGI_TEST_PG")
        .ok()
        .filter(|s| !s.is_empty())
}

async fn pg_admin(base: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .unwrap_or_else(|e| panic!("TSUNAGI_TEST_PG={base} is set but unreachable: {e}"))
}

/// Creates an empty database on the test server, named `tsunagi_t_<uuid>` (the pattern
/// `scripts/test` drops); returns its name.
pub async fn create_pg_database(base: &str) -> String {
    let name = format!("tsunagi_t_{}", uuid::Uuid::new_v4().simple());
    let sql = format!("CREATE DATABASE {name}");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut pg_admin(base).await)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    name
}

/// Drops a database made by [`create_pg_database`] (one left by a failed test is dropped by
/// `scripts/test`).
pub async fn drop_pg_database(base: &str, name: &str) {
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut pg_admin(base).await)
        .await
        .unwrap_or_else(|e| panic!("DROP DATABASE {name}: {e}"));
}

/// The seed nodes of the Redis Cluster to test on, when `TSUNAGI_TEST_REDIS_CLUSTER` is set.
pub fn redis_cluster() -> Option<String> {
    std::env::var("TSUNAGI_TEST_REDIS_CLUSTER")
        .ok()
        .filter(|s| !s.is_empty())
}

pub fn redis_url() -> String {
    redis_cluster().unwrap_or_else(|| {
        std::env::var("TSUNAGI_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    })
}

/// A connection under `prefix`, as an instance of tsunagi opens it; panics unless Redis answers.
pub async fn redis_conn(prefix: &str) -> Arc<RedisConn> {
    let url = redis_url();
    let conn = RedisConn::open(&url, prefix, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("Redis URL {url}: {e}"));
    assert_eq!(
        conn.is_cluster(),
        redis_cluster().is_some(),
        "TSUNAGI_TEST_REDIS_CLUSTER must list several seed nodes"
    );
    if let Err(e) = conn.ping().await {
        panic!(
            "Redis at {url} (TSUNAGI_TEST_REDIS) is required by the Redis engines and did not \
             answer: {e}"
        );
    }
    Arc::new(conn)
}

/// `on_engines!([local: Local, redis: Redis] [suite_a, suite_b])` declares, for each engine, a
/// module of that name with one test per suite calling `super::suite(&super::Factory)`.
macro_rules! on_engines {
    ([$($engine:ident: $factory:ident),+ $(,)?] $suites:tt) => {
        $( on_engines!(@engine $engine $factory $suites); )+
    };
    (@engine $engine:ident $factory:ident [$($suite:ident),+ $(,)?]) => {
        mod $engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $suite() {
                    super::$suite(&super::$factory).await;
                }
            )+
        }
    };
}
