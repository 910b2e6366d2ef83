//! Read-through caches of users and room facts: L1 in process (moka), L2 in Redis when
//! configured, invalidated on every instance through the bus.
//!
//! Layout: the interfaces here ([`RemoteCache`] for L2, [`Versioned`] for cached values,
//! [`Invalidate`] for the bus listener); the two-layer cache in `layered.rs`; the Redis L2 in
//! `redis.rs`.
//!
//! Consistency, in short (README "Caching" has the long form):
//! - a write commits to the store first, then writes the new value through to L2 (kept only if
//!   its version is higher than what L2 holds, so a slow fill of an older value cannot win),
//!   drops the key from its own L1, and publishes an invalidation that every other instance
//!   applies and acknowledges before the write answers (`bus::redis`);
//! - an L1 entry carries the write generation its fill began at and is not served once stale, so
//!   a fill that raced with an invalidation never wins;
//! - while an instance's link to the bus is down, it does not read its L1 at all, and clears it
//!   when the link returns.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::bus::{BusEvent, InvalidationHandler};

pub mod layered;
pub mod redis;

/// The shared layer did not answer (the caller then reads the store).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache: {0}")]
    Redis(#[from] crate::redis_conn::RedisError),
}

/// The shared layer (L2). Values carry a version; a lower or equal version never replaces a
/// stored one, so concurrent fills and write-throughs settle on the newest value.
#[async_trait]
pub trait RemoteCache: Send + Sync + 'static {
    /// `(version, value)` or nothing.
    async fn get(&self, cache: &str, key: &str) -> Result<Option<(i64, String)>, CacheError>;
    async fn delete(&self, cache: &str, key: &str) -> Result<(), CacheError>;
    /// Deletes every entry of `cache` (SCAN, never KEYS); how many.
    async fn clear(&self, cache: &str) -> Result<u64, CacheError>;
    /// Stores `value` under `version` unless the same or a higher version is stored.
    async fn put(
        &self,
        cache: &str,
        key: &str,
        version: i64,
        value: &str,
        ttl: Duration,
    ) -> Result<(), CacheError>;
}

/// A cached value's version: it grows with every change of the underlying row.
pub trait Versioned {
    fn version(&self) -> i64;
}

/// What the bus listener needs of a cache, whatever it holds.
pub trait Invalidate: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Drops `key` from L1; the row is now at `version` or later.
    fn invalidate(&self, key: &str, version: i64) -> BoxFuture<'_, ()>;
    fn invalidate_all(&self);
    /// After the link to Redis returns: makes L2 and the other instances forget the keys this
    /// instance wrote while they could not be told.
    fn repair(self: Arc<Self>) -> BoxFuture<'static, ()>;
    fn stats(&self) -> serde_json::Value;
}

/// Applies one invalidation event to `caches` (other events are ignored).
pub async fn apply(caches: &[Arc<dyn Invalidate>], event: BusEvent) {
    match event {
        BusEvent::Invalidate {
            cache,
            key,
            version,
        } => {
            if let Some(c) = caches.iter().find(|c| c.name() == cache) {
                c.invalidate(&key, version).await;
            }
        }
        BusEvent::InvalidateAll => caches.iter().for_each(|c| c.invalidate_all()),
        _ => {}
    }
}

/// The bus's handler for invalidations from other instances, and for `InvalidateAll` when its
/// link returns (then each cache also repairs what it wrote meanwhile, in the background).
pub fn handler(caches: Vec<Arc<dyn Invalidate>>) -> InvalidationHandler {
    let caches = Arc::new(caches);
    Arc::new(move |event| {
        let caches = caches.clone();
        Box::pin(async move {
            let reconnected = matches!(event, BusEvent::InvalidateAll);
            apply(&caches, event).await;
            if reconnected {
                for c in caches.iter() {
                    tokio::spawn(c.clone().repair());
                }
            }
        })
    })
}

/// Per-layer settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub l1_capacity: u64,
    pub l1_ttl: Duration,
    pub l2_ttl: Duration,
    /// How long "there is no such row" is remembered (both layers).
    pub negative_ttl: Duration,
    /// The app's metrics.
    pub telemetry: crate::telemetry::Telemetry,
}

/// The L2 the backplane offers: Redis, or none.
pub fn remote(backplane: &crate::backplane::Backplane) -> Option<Arc<dyn RemoteCache>> {
    match backplane {
        crate::backplane::Backplane::Local => None,
        crate::backplane::Backplane::Redis(conn) => {
            Some(Arc::new(redis::RedisCache::new(conn.clone())))
        }
    }
}
