//! Presence shared by every instance through Redis.
//!
//! Per room, `<prefix>:presence:{<room>}` is a sorted set of the users online, and
//! `<prefix>:presence:{<room>}:<user>` one of that user's connections, each scored by when it
//! expires (Redis's clock). The `{<room>}` hash tag puts a room's keys in one cluster slot, as
//! the scripts that touch both need (room ids hold no braces: `domain::ids::RoomId`). Every instance refreshes its own connections every
//! `HEARTBEAT`; a crashed instance's connections expire after `TTL`. Join and leave are scripts,
//! so "first connection" and "last connection" are decided atomically across instances.
//!
//! This instance's own connections are also kept in process (`LocalPresence`): they are what
//! the heartbeat refreshes, and what answers while Redis is unreachable.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::Presence;
use super::local::LocalPresence;
use crate::redis_conn::{RedisConn, RedisError};

const TTL: Duration = Duration::from_secs(30);
const HEARTBEAT: Duration = Duration::from_secs(10);

/// KEYS: room set, user set. ARGV: user, conn, ttl ms. Returns 1 if the user was not online.
const JOIN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = now + tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local first = redis.call('ZCARD', KEYS[2]) == 0
redis.call('ZADD', KEYS[2], expires, ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], expires, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if first then return 1 else return 0 end
";

/// KEYS: room set, user set. ARGV: user, conn. Returns 1 if that was the user's last connection.
const LEAVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local removed = redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  if removed == 1 then return 1 end
end
return 0
";

/// KEYS: room set. Drops the expired, returns the users online.
const ONLINE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

pub struct RedisPresence {
    conn: Arc<RedisConn>,
    local: LocalPresence,
    join: redis::Script,
    leave: redis::Script,
    online: redis::Script,
}

impl RedisPresence {
    /// Starts the heartbeat that keeps this instance's connections alive in Redis.
    pub fn start(conn: Arc<RedisConn>) -> Arc<Self> {
        let presence = Arc::new(RedisPresence {
            conn,
            local: LocalPresence::default(),
            join: redis::Script::new(JOIN),
            leave: redis::Script::new(LEAVE),
            online: redis::Script::new(ONLINE),
        });
        let weak = Arc::downgrade(&presence);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                let Some(p) = weak.upgrade() else { return };
                for (room, user, conn) in p.local.entries() {
                    p.join_remote(&room, &user, &conn).await.ok();
                }
            }
        });
        presence
    }

    /// The room's set of users.
    fn room_key(&self, room: &str) -> String {
        self.conn.key(&format!("presence:{{{room}}}"))
    }

    /// (room's set of users, user's set of connections in the room): one hash slot.
    fn keys(&self, room: &str, user: &str) -> (String, String) {
        let room_key = self.room_key(room);
        let user_key = format!("{room_key}:{user}");
        (room_key, user_key)
    }

    /// Runs a join or leave script for (room, user, conn); `extra` args follow. True on 1.
    async fn run(
        &self,
        script: &redis::Script,
        room: &str,
        user: &str,
        conn: &str,
        extra: &[u64],
    ) -> Result<bool, RedisError> {
        let (room_key, user_key) = self.keys(room, user);
        self.conn
            .run(|mut c| async move {
                let mut call = script.key(room_key);
                call.key(user_key).arg(user).arg(conn);
                for a in extra {
                    call.arg(*a);
                }
                call.invoke_async::<i64>(&mut c).await
            })
            .await
            .map(|answer| answer == 1)
    }

    async fn join_remote(&self, room: &str, user: &str, conn: &str) -> Result<bool, RedisError> {
        let ttl = TTL.as_millis() as u64;
        self.run(&self.join, room, user, conn, &[ttl]).await
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn join(&self, room: &str, user: &str, conn: &str) -> bool {
        let first_here = self.local.join(room, user, conn).await;
        self.join_remote(room, user, conn)
            .await
            .unwrap_or(first_here)
    }

    async fn leave(&self, room: &str, user: &str, conn: &str) -> bool {
        let last_here = self.local.leave(room, user, conn).await;
        self.run(&self.leave, room, user, conn, &[])
            .await
            .unwrap_or(last_here)
    }

    async fn online(&self, room: &str) -> Vec<String> {
        let key = self.room_key(room);
        let script = &self.online;
        let users = self
            .conn
            .run(|mut c| async move { script.key(key).invoke_async::<Vec<String>>(&mut c).await })
            .await;
        match users {
            Ok(mut users) => {
                users.sort();
                users
            }
            Err(_) => self.local.online(room).await,
        }
    }
}
