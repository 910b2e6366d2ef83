//! The [`RemoteCache`] contract (`src/cache/mod.rs`) on its one engine, the Redis L2: versions
//! only move forward, deletes and clears are seen by every instance, and a clear reaches every
//! entry (on a Redis Cluster the entries spread over every primary, so a clear that scanned one
//! node would leave some behind and fail here).
//!
//! Two `RedisCache` on two connections under one prefix stand for two tsunagi instances: what
//! one writes, the other must read.

use std::sync::Arc;
use std::time::Duration;

use tsunagi::cache::RemoteCache;
use tsunagi::cache::redis::RedisCache;

use crate::helpers;

const TTL: Duration = Duration::from_secs(60);

/// Two instances on one L2.
async fn instances() -> [Arc<dyn RemoteCache>; 2] {
    let prefix = helpers::unique("tsunagi-contract-cache");
    let a = RedisCache::new(helpers::redis_conn(&prefix).await);
    let b = RedisCache::new(helpers::redis_conn(&prefix).await);
    [Arc::new(a), Arc::new(b)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_version_replaces_a_lower_or_equal_one_does_not() {
    let [a, b] = instances().await;
    assert_eq!(
        b.get("users", "alice").await.unwrap(),
        None,
        "empty at first"
    );
    a.put("users", "alice", 2, r#"{"v":2}"#, TTL).await.unwrap();
    assert_eq!(
        b.get("users", "alice").await.unwrap(),
        Some((2, r#"{"v":2}"#.to_owned())),
        "the other instance reads what one wrote"
    );
    b.put("users", "alice", 1, r#"{"v":1}"#, TTL).await.unwrap();
    b.put("users", "alice", 2, r#"{"v":"same"}"#, TTL)
        .await
        .unwrap();
    assert_eq!(
        a.get("users", "alice").await.unwrap(),
        Some((2, r#"{"v":2}"#.to_owned())),
        "a lower or equal version is not stored"
    );
    b.put("users", "alice", 3, "multi\nline", TTL)
        .await
        .unwrap();
    assert_eq!(
        a.get("users", "alice").await.unwrap(),
        Some((3, "multi\nline".to_owned())),
        "a higher version replaces, whatever the value holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_is_seen_by_every_instance() {
    let [a, b] = instances().await;
    a.put("users", "bob", 1, "{}", TTL).await.unwrap();
    a.put("users", "carol", 1, "{}", TTL).await.unwrap();
    b.delete("users", "bob").await.unwrap();
    assert_eq!(a.get("users", "bob").await.unwrap(), None);
    assert_eq!(
        a.get("users", "carol").await.unwrap(),
        Some((1, "{}".to_owned())),
        "only that key"
    );
    b.delete("users", "nobody").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_reaches_every_entry_of_that_cache_only() {
    let [a, b] = instances().await;
    // enough keys that, on a cluster, every primary holds some (odds of missing one: ~1e-10)
    let keys: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    for k in &keys {
        a.put("users", k, 1, "{}", TTL).await.unwrap();
    }
    a.put("rooms", "general", 1, "{}", TTL).await.unwrap();
    assert_eq!(b.clear("users").await.unwrap(), keys.len() as u64);
    for k in &keys {
        assert_eq!(a.get("users", k).await.unwrap(), None, "{k} was cleared");
    }
    assert_eq!(
        a.get("rooms", "general").await.unwrap(),
        Some((1, "{}".to_owned())),
        "another cache is left alone"
    );
    assert_eq!(b.clear("users").await.unwrap(), 0, "nothing left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_expires_after_its_ttl() {
    let [a, b] = instances().await;
    a.put("users", "dave", 1, "{}", Duration::from_millis(50))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while b.get("users", "dave").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still cached 5 s after a 50 ms TTL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
