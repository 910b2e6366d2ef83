//! Long-polling without sticky sessions (PROTOCOL §7): any instance serves any Engine.IO
//! session's requests. The instance that answers a polling handshake (the owner) records
//! `<prefix>:eio:<sid>` -> its advertise URL in Redis before the client learns the sid; a
//! request carrying a sid this instance does not hold is forwarded to the owner found there
//! (`forward.rs`), WebSocket upgrades included. One key per sid (cluster-safe), refreshed
//! while the session lives, deleted when it closes.
//!
//! Engine.IO sids are random (engineioxide offers no way to choose them), so the owner cannot
//! be encoded in the sid: hence the lookup, cached here (a sid never changes owner).
//!
//! The client address: the owner keeps the one its handshake request came from (engineioxide
//! keeps that request's head for the session's life), so a forwarded request carries none and
//! nothing a client sends can change it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engineioxide::handler::EngineIoHandler;
use engineioxide::{DisconnectReason, Socket, Str};
use futures::StreamExt;
use parking_lot::Mutex;

use crate::redis_conn::RedisConn;
use crate::telemetry::Telemetry;

mod forward;

pub use forward::route;

/// How long an owner record outlives its instance (a killed instance cannot delete its keys).
const OWNER_TTL: Duration = Duration::from_secs(60);
/// How often the live sessions' records are refreshed (well inside the TTL).
const REFRESH_EVERY: Duration = Duration::from_secs(20);
/// Sids whose owner is remembered without asking Redis (cheap: about 100 bytes each).
const OWNER_CACHE: u64 = 100_000;

/// This instance's Engine.IO sessions and where everybody else's live.
pub struct SessionRoutes {
    redis: Arc<RedisConn>,
    /// This instance's origin as the others reach it (`TSUNAGI_ADVERTISE_URL`), no trailing `/`.
    own: String,
    local: Mutex<HashSet<String>>,
    owners: moka::sync::Cache<String, Arc<str>>,
    client: reqwest::Client,
    metrics: forward::ForwardMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error(
        "TSUNAGI_ADVERTISE_URL is required with TSUNAGI_REDIS_URL when TSUNAGI_LISTEN is a \
         wildcard address ({0}): the other instances must know where to forward this one's \
         polling sessions"
    )]
    NoAdvertiseUrl(std::net::SocketAddr),
    #[error("the HTTP client for forwarding: {0}")]
    Client(#[from] reqwest::Error),
}

impl SessionRoutes {
    /// `advertise`: the configured URL, else `http(s)://<listen address>` when it is a
    /// concrete address (`tls` picks the scheme: instances talk to each other as clients do).
    pub fn new(
        redis: Arc<RedisConn>,
        advertise: Option<&url::Url>,
        listening: std::net::SocketAddr,
        tls: bool,
        telemetry: &Telemetry,
    ) -> Result<Arc<Self>, RoutesError> {
        let own = match advertise {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None if listening.ip().is_unspecified() => {
                return Err(RoutesError::NoAdvertiseUrl(listening));
            }
            None => format!("{}://{listening}", if tls { "https" } else { "http" }),
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let routes = Arc::new(SessionRoutes {
            redis,
            own,
            local: Mutex::new(HashSet::new()),
            owners: moka::sync::Cache::builder()
                .max_capacity(OWNER_CACHE)
                .time_to_live(OWNER_TTL)
                .build(),
            client,
            metrics: forward::ForwardMetrics::new(telemetry),
        });
        tokio::spawn(refresh(Arc::downgrade(&routes)));
        Ok(routes)
    }

    fn key(&self, sid: &str) -> String {
        self.redis.key(&format!("eio:{sid}"))
    }

    fn is_local(&self, sid: &str) -> bool {
        self.local.lock().contains(sid)
    }

    /// A session opened here: recorded before its handshake is answered, so the client's next
    /// request finds its owner wherever it lands.
    async fn opened(&self, sid: &str) {
        self.local.lock().insert(sid.to_owned());
        self.record(sid).await;
    }

    async fn record(&self, sid: &str) {
        let (key, own, ttl) = (self.key(sid), self.own.clone(), OWNER_TTL.as_secs());
        let set = self
            .redis
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(own)
                    .arg("EX")
                    .arg(ttl)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        if let Err(e) = set {
            // the session still works for requests that land here; others answer "unknown sid"
            tracing::warn!(error = %e, "could not record a polling session's owner");
        }
    }

    fn closed(self: &Arc<Self>, sid: &str) {
        if !self.local.lock().remove(sid) {
            return;
        }
        let (me, key) = (self.clone(), self.key(sid));
        tokio::spawn(async move {
            let _ =
                me.redis
                    .run(|mut c| async move {
                        redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await
                    })
                    .await;
        });
    }

    /// The owner's origin of a sid held elsewhere; `None`: unknown (closed, expired, or ours).
    async fn owner(&self, sid: &str) -> Option<Arc<str>> {
        if let Some(o) = self.owners.get(sid) {
            return Some(o);
        }
        let key = self.key(sid);
        let found = self
            .redis
            .run(|mut c| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await
            .ok()
            .flatten()?;
        if found == self.own {
            return None;
        }
        let owner: Arc<str> = found.into();
        self.owners.insert(sid.to_owned(), owner.clone());
        Some(owner)
    }

    /// The owner did not answer: forget it, so a later request asks Redis again.
    fn forget(&self, sid: &str) {
        self.owners.invalidate(sid);
    }
}

/// Keeps the live sessions' records from expiring; ends with the routes.
async fn refresh(routes: std::sync::Weak<SessionRoutes>) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(routes) = routes.upgrade() else {
            return;
        };
        let sids: Vec<String> = routes.local.lock().iter().cloned().collect();
        // one key per command (keys of a cluster live on different nodes), a few at a time
        futures::stream::iter(sids)
            .for_each_concurrent(32, |sid| {
                let routes = routes.clone();
                async move { routes.record(&sid).await }
            })
            .await;
    }
}

/// The engine's handler with the sessions' records kept: the gateway sees every call as before.
pub struct Recording<H> {
    pub inner: Arc<H>,
    pub routes: Option<Arc<SessionRoutes>>,
}

impl<H> std::fmt::Debug for Recording<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recording")
    }
}

impl<H> Clone for Recording<H> {
    fn clone(&self) -> Self {
        Recording {
            inner: self.inner.clone(),
            routes: self.routes.clone(),
        }
    }
}

impl<H: EngineIoHandler> EngineIoHandler for Recording<H> {
    type Data = H::Data;

    fn on_connect(self: Arc<Self>, socket: Arc<Socket<H::Data>>) {
        self.inner.clone().on_connect(socket);
    }

    fn on_disconnect(&self, socket: Arc<Socket<H::Data>>, reason: DisconnectReason) {
        if let Some(routes) = &self.routes {
            routes.closed(&socket.id.to_string());
        }
        self.inner.on_disconnect(socket, reason);
    }

    fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<Socket<H::Data>>) {
        self.inner.on_message(msg, socket);
    }

    fn on_binary(self: &Arc<Self>, data: Bytes, socket: Arc<Socket<H::Data>>) {
        self.inner.on_binary(data, socket);
    }
}
