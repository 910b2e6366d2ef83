//! The L2 cache in Redis: `<prefix>:cache:<cache>:<key>` holds `<version>\n<json>` with a TTL.
//! Writes go through a script that keeps the higher version, so an old value read by a slow
//! fill cannot overwrite a newer one written through after a commit.
//!
//! Every command touches one key, so the entries of a cache spread over a cluster's slots;
//! `clear` scans every primary (`RedisConn::scan_page`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{CacheError, RemoteCache};
use crate::redis_conn::{KeyScan, RedisConn};

const PUT_IF_NEWER: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, '^(%-?%d+)\n'))
  if v and v >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '\n' .. ARGV[2], 'PX', ARGV[3])
return 1
";

pub struct RedisCache {
    conn: Arc<RedisConn>,
    put_if_newer: redis::Script,
}

impl RedisCache {
    pub fn new(conn: Arc<RedisConn>) -> Self {
        RedisCache {
            conn,
            put_if_newer: redis::Script::new(PUT_IF_NEWER),
        }
    }

    fn key(&self, cache: &str, key: &str) -> String {
        self.conn.key(&format!("cache:{cache}:{key}"))
    }
}

#[async_trait]
impl RemoteCache for RedisCache {
    async fn get(&self, cache: &str, key: &str) -> Result<Option<(i64, String)>, CacheError> {
        let k = self.key(cache, key);
        let raw: Option<String> = self
            .conn
            .run(|mut c| async move { redis::cmd("GET").arg(k).query_async(&mut c).await })
            .await
            .map_err(CacheError::from)?;
        Ok(raw.and_then(|r| {
            let (version, value) = r.split_once('\n')?;
            Some((version.parse().ok()?, value.to_owned()))
        }))
    }

    async fn delete(&self, cache: &str, key: &str) -> Result<(), CacheError> {
        let k = self.key(cache, key);
        self.conn
            .run(|mut c| async move { redis::cmd("DEL").arg(k).query_async::<i64>(&mut c).await })
            .await
            .map(|_| ())
            .map_err(CacheError::from)
    }

    async fn clear(&self, cache: &str) -> Result<u64, CacheError> {
        let mut scan = KeyScan::new(self.key(cache, "*"));
        let mut deleted = 0;
        while let Some(keys) = self.conn.scan_page(&mut scan).await? {
            if keys.is_empty() {
                continue;
            }
            // UNLINK of keys in several slots: the cluster client splits it per slot
            deleted += self
                .conn
                .run(|mut c| async move {
                    redis::cmd("UNLINK")
                        .arg(keys)
                        .query_async::<u64>(&mut c)
                        .await
                })
                .await?;
        }
        Ok(deleted)
    }

    async fn put(
        &self,
        cache: &str,
        key: &str,
        version: i64,
        value: &str,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let k = self.key(cache, key);
        let script = &self.put_if_newer;
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.conn
            .run(|mut c| async move {
                script
                    .key(k)
                    .arg(version)
                    .arg(value)
                    .arg(ttl_ms)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
            .map_err(CacheError::from)
    }
}
