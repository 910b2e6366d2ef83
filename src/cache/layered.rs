//! The two-layer read-through cache (see the module docs of `cache` for its consistency rules).

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use moka::Expiry;
use moka::future::Cache;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CacheSettings, Invalidate, RemoteCache, Versioned};
use crate::bus::{Bus, BusEvent};
use crate::store::StoreError;
use crate::telemetry::Telemetry;

/// `None` is a remembered "no such row".
type Value<V> = Option<Arc<V>>;

/// An L1 entry: the value and the write generation of its key's stripe when the fill that read
/// it began. An entry whose generation is no longer current may predate a write: it is never
/// served. (Checking on read closes every race between a fill and an invalidation, whichever
/// order they land in.)
type Slot<V> = (u64, Value<V>);

/// Stripes of write generations; a write to another key of the same stripe only costs one
/// extra load of this one.
const STRIPES: usize = 1024;

/// Keys remembered for repair after a Redis outage; past it, this cache's L2 is cleared instead.
const DIRTY_MAX: usize = 10_000;

#[derive(Default)]
struct Counters {
    l1_hits: AtomicU64,
    l1_misses: AtomicU64,
    l2_hits: AtomicU64,
    l2_misses: AtomicU64,
    l2_errors: AtomicU64,
    loads: AtomicU64,
}

struct SlotExpiry {
    positive: Duration,
    negative: Duration,
}

impl<V> Expiry<String, Slot<V>> for SlotExpiry {
    fn expire_after_create(&self, _: &String, v: &Slot<V>, _: Instant) -> Option<Duration> {
        let ttl = if v.1.is_some() {
            self.positive
        } else {
            self.negative
        };
        Some(jittered(ttl))
    }
}

/// 80–100 % of `ttl`: entries filled together (after a restart, say) do not all expire in the
/// same instant and send one wave of loads to the database.
fn jittered(ttl: Duration) -> Duration {
    ttl.mul_f64(0.8 + 0.2 * rand::random::<f64>())
}

pub struct LayeredCache<V> {
    name: &'static str,
    l1: Cache<String, Slot<V>>,
    l2: Option<Arc<dyn RemoteCache>>,
    bus: Arc<dyn Bus>,
    settings: CacheSettings,
    generations: Vec<AtomicU64>,
    /// The newest version announced per key (for as long as L2 keeps entries): an L2 value below
    /// it is stale, left behind by a write-through that failed while the invalidation got out.
    floors: moka::sync::Cache<String, i64>,
    /// Keys written while L2 or the bus could not be told, and whether more were dropped.
    dirty: parking_lot::Mutex<(HashSet<String>, bool)>,
    hasher: std::collections::hash_map::RandomState,
    counters: Counters,
}

fn count(t: &Telemetry, name: &'static str, layer: &'static str, result: &'static str) {
    t.record(|| {
        metrics::counter!("tsunagi_cache_requests_total", "cache" => name, "layer" => layer, "result" => result)
            .increment(1)
    });
}

impl<V> LayeredCache<V> {
    /// L2, unless the link to Redis is known to be down (then the store answers at once).
    fn l2_usable(&self) -> Option<&Arc<dyn RemoteCache>> {
        self.l2.as_ref().filter(|_| self.bus.healthy())
    }

    fn floor(&self, key: &str) -> i64 {
        self.floors.get(key).unwrap_or(0)
    }

    fn raise_floor(&self, key: &str, version: i64) {
        use moka::ops::compute::Op;
        if self.l2.is_none() || version <= 0 {
            return;
        }
        // atomic per key: two concurrent raises keep the higher
        self.floors
            .entry_by_ref(key)
            .and_compute_with(|cur| match cur {
                Some(e) if *e.value() >= version => Op::Nop,
                _ => Op::Put(version),
            });
    }

    fn generation(&self, key: &str) -> &AtomicU64 {
        &self.generations[self.hasher.hash_one(key) as usize % STRIPES]
    }
}

impl<V> LayeredCache<V>
where
    V: Versioned + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    pub fn new(
        name: &'static str,
        settings: CacheSettings,
        l2: Option<Arc<dyn RemoteCache>>,
        bus: Arc<dyn Bus>,
    ) -> Self {
        let l2_ttl = settings.l2_ttl;
        let l1 = Cache::builder()
            .max_capacity(settings.l1_capacity)
            .expire_after(SlotExpiry {
                positive: settings.l1_ttl,
                negative: settings.negative_ttl.min(settings.l1_ttl),
            })
            .build();
        LayeredCache {
            name,
            l1,
            l2,
            bus,
            settings,
            generations: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            dirty: Default::default(),
            floors: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(l2_ttl)
                .build(),
            hasher: Default::default(),
            counters: Counters::default(),
        }
    }

    /// The value under `key`: from L1, else L2, else `load` (the store). Concurrent misses of
    /// one key on this instance share one fill.
    pub async fn get<F, Fut>(&self, key: &str, load: F) -> Result<Option<Arc<V>>, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<V>, StoreError>>,
    {
        if !self.bus.healthy() {
            // Invalidations may be missed right now: L1 could be stale, so skip it.
            return self.fill(key, &load).await;
        }
        for _ in 0..3 {
            let stripe = self.generation(key);
            let fill = async {
                let generation = stripe.load(Ordering::Acquire);
                Ok::<_, StoreError>((generation, self.fill(key, &load).await?))
            };
            let entry = self
                .l1
                .entry_by_ref(key)
                .or_try_insert_with(fill)
                .await
                .map_err(|e| (*e).clone())?;
            let fresh = entry.is_fresh();
            let (generation, value) = entry.into_value();
            if generation == stripe.load(Ordering::Acquire) {
                let (counter, result) = if fresh {
                    (&self.counters.l1_misses, "miss")
                } else {
                    (&self.counters.l1_hits, "hit")
                };
                counter.fetch_add(1, Ordering::Relaxed);
                count(&self.settings.telemetry, self.name, "l1", result);
                return Ok(value);
            }
            // Read before a write to this key (or its stripe) landed: drop it and read again.
            self.l1.invalidate(key).await;
        }
        self.fill(key, &load).await
    }

    /// L2, else the store (then written to L2).
    async fn fill<F, Fut>(&self, key: &str, load: &F) -> Result<Value<V>, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<V>, StoreError>>,
    {
        if let Some(l2) = self.l2_usable() {
            match l2.get(self.name, key).await {
                Ok(Some((version, _))) if version < self.floor(key) => {
                    // older than a write announced on the bus: the write-through to L2 failed
                    self.counters.l2_misses.fetch_add(1, Ordering::Relaxed);
                    count(&self.settings.telemetry, self.name, "l2", "miss");
                }
                Ok(Some((_, text))) => match serde_json::from_str::<Option<V>>(&text) {
                    Ok(v) => {
                        self.counters.l2_hits.fetch_add(1, Ordering::Relaxed);
                        count(&self.settings.telemetry, self.name, "l2", "hit");
                        return Ok(v.map(Arc::new));
                    }
                    Err(e) => {
                        // e.g. written by another release: drop it, or no refill could replace it
                        tracing::warn!(cache = self.name, error = %e, "undecodable L2 entry");
                        if let Err(e) = l2.delete(self.name, key).await {
                            self.l2_failed(&e);
                        }
                    }
                },
                Ok(None) => {
                    self.counters.l2_misses.fetch_add(1, Ordering::Relaxed);
                    count(&self.settings.telemetry, self.name, "l2", "miss");
                }
                Err(e) => self.l2_failed(&e),
            }
        }
        self.counters.loads.fetch_add(1, Ordering::Relaxed);
        self.settings.telemetry.record(|| {
            metrics::counter!("tsunagi_cache_loads_total", "cache" => self.name).increment(1)
        });
        let value = load().await?;
        self.put_l2(key, value.as_ref()).await;
        Ok(value.map(Arc::new))
    }

    fn l2_failed(&self, e: &super::CacheError) {
        self.counters.l2_errors.fetch_add(1, Ordering::Relaxed);
        self.settings.telemetry.record(|| {
            metrics::counter!("tsunagi_cache_errors_total", "cache" => self.name, "layer" => "l2")
                .increment(1)
        });
        tracing::debug!(cache = self.name, error = %e, "L2 unavailable; using the store");
    }

    /// False when L2 exists but did not take the value (down, or the link is known down).
    async fn put_l2(&self, key: &str, value: Option<&V>) -> bool {
        if self.l2.is_none() {
            return true;
        }
        let Some(l2) = self.l2_usable() else {
            return false;
        };
        let (version, ttl) = match value {
            Some(v) => (v.version(), jittered(self.settings.l2_ttl)),
            None => (0, jittered(self.settings.negative_ttl)),
        };
        let Ok(text) = serde_json::to_string(&value) else {
            return false;
        };
        match l2.put(self.name, key, version, &text, ttl).await {
            Ok(()) => true,
            Err(e) => {
                self.l2_failed(&e);
                false
            }
        }
    }

    /// `key` was written while Redis could not be told: repaired when the link returns.
    fn mark_dirty(&self, key: &str) {
        if self.l2.is_none() {
            return;
        }
        let mut dirty = self.dirty.lock();
        if dirty.0.len() < DIRTY_MAX {
            dirty.0.insert(key.to_owned());
        } else {
            dirty.1 = true;
        }
    }

    /// Runs `write`, a store mutation of `key`, to its end even if the caller goes away (a
    /// commit must never skip its invalidation), then updates the caches: `value` of the result
    /// on success; on a failure that leaves the outcome unknown (the connection broke, maybe
    /// after COMMIT) the key is dropped everywhere.
    pub async fn write<T, W>(
        self: &Arc<Self>,
        key: String,
        write: W,
        value: fn(&T) -> V,
    ) -> Result<T, StoreError>
    where
        W: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let cache = self.clone();
        tokio::spawn(async move {
            let result = write.await;
            match &result {
                Ok(done) => cache.written(&key, Some(&value(done))).await,
                Err(e) if e.is_connection() => cache.forget(&key).await,
                Err(_) => {}
            }
            result
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("write task: {e}"))))
    }

    /// Drops `key` from every layer on every instance (its current value is unknown).
    pub async fn forget(&self, key: &str) {
        self.generation(key).fetch_add(1, Ordering::AcqRel);
        self.l1.invalidate(key).await;
        if !self.drop_everywhere(key).await {
            self.mark_dirty(key);
        }
    }

    /// Deletes `key` from L2 and has every instance drop it from L1; true if both happened.
    async fn drop_everywhere(&self, key: &str) -> bool {
        let deleted = match self.l2_usable() {
            Some(l2) => l2.delete(self.name, key).await.is_ok(),
            None => self.l2.is_none(),
        };
        let event = BusEvent::Invalidate {
            cache: self.name.to_owned(),
            key: key.to_owned(),
            version: self.floor(key),
        };
        self.bus.publish_confirmed(event).await && deleted
    }

    /// After a write to `key` committed: the new value to L2, the key out of every instance's
    /// L1. Returns once the other instances have dropped it (or that could not be confirmed).
    pub async fn written(&self, key: &str, value: Option<&V>) {
        let version = value.map_or(0, Versioned::version);
        self.raise_floor(key, version);
        self.generation(key).fetch_add(1, Ordering::AcqRel);
        self.l1.invalidate(key).await;
        let stored = self.put_l2(key, value).await;
        let event = BusEvent::Invalidate {
            cache: self.name.to_owned(),
            key: key.to_owned(),
            version,
        };
        let confirmed = self.bus.publish_confirmed(event).await;
        if !stored || !confirmed {
            self.mark_dirty(key);
        }
        if !confirmed {
            self.settings.telemetry.record(|| {
                metrics::counter!("tsunagi_cache_invalidation_failures_total", "cache" => self.name)
                    .increment(1)
            });
            tracing::warn!(
                cache = self.name,
                "invalidation not confirmed by the bus; other instances drop the key when their \
                 link returns or by their L1 TTL"
            );
        }
    }
}

impl<V> Invalidate for LayeredCache<V>
where
    V: Versioned + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn invalidate(&self, key: &str, version: i64) -> BoxFuture<'_, ()> {
        self.raise_floor(key, version);
        self.generation(key).fetch_add(1, Ordering::AcqRel);
        let key = key.to_owned();
        Box::pin(async move { self.l1.invalidate(&key).await })
    }

    fn repair(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let (keys, overflowed) = {
                let mut dirty = self.dirty.lock();
                (std::mem::take(&mut dirty.0), std::mem::take(&mut dirty.1))
            };
            let Some(l2) = self.l2.clone() else { return };
            if keys.is_empty() && !overflowed {
                return;
            }
            // called as the link returns: give the bus a moment to report healthy
            for _ in 0..100 {
                if self.bus.healthy() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if overflowed {
                match l2.clear(self.name).await {
                    Ok(n) => {
                        tracing::info!(cache = self.name, entries = n, "L2 cleared after an outage")
                    }
                    Err(e) => {
                        self.l2_failed(&e);
                        self.dirty.lock().1 = true;
                    }
                }
            }
            for key in keys {
                if !self.drop_everywhere(&key).await {
                    self.mark_dirty(&key);
                }
            }
        })
    }

    fn invalidate_all(&self) {
        for g in &self.generations {
            g.fetch_add(1, Ordering::AcqRel);
        }
        self.l1.invalidate_all();
    }

    fn stats(&self) -> serde_json::Value {
        let c = &self.counters;
        let ratio = |hits: &AtomicU64, misses: &AtomicU64| {
            let (h, m) = (hits.load(Ordering::Relaxed), misses.load(Ordering::Relaxed));
            serde_json::json!({
                "hits": h,
                "misses": m,
                "hit_ratio": if h + m == 0 { 0.0 } else { h as f64 / (h + m) as f64 },
            })
        };
        let mut l2 = ratio(&c.l2_hits, &c.l2_misses);
        l2["errors"] = c.l2_errors.load(Ordering::Relaxed).into();
        l2["enabled"] = self.l2.is_some().into();
        let mut l1 = ratio(&c.l1_hits, &c.l1_misses);
        l1["entries"] = self.l1.entry_count().into();
        l2["awaiting_repair"] = self.dirty.lock().0.len().into();
        serde_json::json!({
            "l1": l1,
            "l2": l2,
            "loads": c.loads.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use serde::Deserialize;
    use tokio::sync::Notify;

    use super::*;
    use crate::bus::local::LocalBus;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row(i64);

    impl Versioned for Row {
        fn version(&self) -> i64 {
            self.0
        }
    }

    fn cache() -> Arc<LayeredCache<Row>> {
        let settings = CacheSettings {
            l1_capacity: 100,
            l1_ttl: Duration::from_secs(60),
            l2_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            telemetry: crate::telemetry::Telemetry::detached(),
        };
        Arc::new(LayeredCache::new(
            "test",
            settings,
            None,
            Arc::new(LocalBus::default()),
        ))
    }

    #[tokio::test]
    async fn a_fill_that_raced_with_an_invalidation_is_never_served() {
        let cache = cache();
        let stored = Arc::new(AtomicU64::new(1));
        let loads = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let loader = {
            let (stored, loads, release) = (stored.clone(), loads.clone(), release.clone());
            move || {
                let (stored, loads, release) = (stored.clone(), loads.clone(), release.clone());
                async move {
                    let seen = stored.load(Ordering::SeqCst) as i64; // read the "row" first
                    if loads.fetch_add(1, Ordering::SeqCst) == 0 {
                        release.notified().await; // the first fill is slow
                    }
                    Ok(Some(Row(seen)))
                }
            }
        };
        let slow = {
            let (cache, loader) = (cache.clone(), loader.clone());
            tokio::spawn(async move { cache.get("k", loader).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await; // the slow fill has read version 1
        stored.store(2, Ordering::SeqCst); // a write commits…
        cache.invalidate("k", 2).await; // …and its invalidation arrives before the fill ends
        release.notify_one();
        // The slow caller notices its value predates the write and reads again.
        let first = slow.await.unwrap().unwrap().unwrap();
        assert_eq!(*first, Row(2));
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        let next = cache.get("k", loader).await.unwrap().unwrap();
        assert_eq!(*next, Row(2), "the raced fill was served from L1");
        assert_eq!(
            loads.load(Ordering::SeqCst),
            2,
            "a current entry is served from L1"
        );
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load_and_not_found_is_remembered() {
        let cache = cache();
        let loads = Arc::new(AtomicUsize::new(0));
        let loader = || {
            let loads = loads.clone();
            async move {
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok::<Option<Row>, StoreError>(None)
            }
        };
        let gets = (0..50).map(|_| cache.get("missing", loader));
        for got in futures::future::join_all(gets).await {
            assert!(got.unwrap().is_none());
        }
        assert!(cache.get("missing", loader).await.unwrap().is_none());
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }
}
