//! The bus across instances through Redis pub/sub on `<prefix>:bus`.
//!
//! Every event is delivered to this instance's subscribers at once (never waiting on Redis);
//! events that cross instances (`BusEvent::crosses_instances`) are also published, and
//! events from other instances are delivered here as they arrive. Pub/sub is at most once: a
//! subscriber that was disconnected may have missed events, so the bus reports itself unhealthy
//! meanwhile and delivers `InvalidateAll` when it is subscribed again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::local::LocalBus;
use super::{Bus, BusEvent};
use crate::redis_conn::RedisConn;

#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The publishing instance: it has delivered the event locally already.
    origin: String,
    event: BusEvent,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_errors: AtomicU64,
    received: AtomicU64,
    reconnects: AtomicU64,
}

pub struct RedisBus {
    local: LocalBus,
    conn: Arc<RedisConn>,
    channel: String,
    instance: String,
    healthy: AtomicBool,
    counters: Counters,
    /// Fire-and-forget publishes, sent in order by one task.
    outbox: mpsc::UnboundedSender<BusEvent>,
}

impl RedisBus {
    /// Starts the subscriber task; the bus is unhealthy until it has subscribed.
    pub fn start(conn: Arc<RedisConn>) -> Arc<Self> {
        let (outbox, mut outbox_rx) = mpsc::unbounded_channel();
        let bus = Arc::new(RedisBus {
            local: LocalBus::default(),
            channel: conn.key("bus"),
            conn,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            healthy: AtomicBool::new(false),
            counters: Counters::default(),
            outbox,
        });
        tokio::spawn(bus.clone().subscriber());
        let publisher = bus.clone();
        tokio::spawn(async move {
            while let Some(event) = outbox_rx.recv().await {
                publisher.publish_remote(&event).await;
            }
        });
        bus
    }

    async fn publish_remote(&self, event: &BusEvent) -> bool {
        let payload = serde_json::to_string(&Envelope {
            origin: self.instance.clone(),
            event: event.clone(),
        })
        .expect("bus events serialize");
        let channel = self.channel.clone();
        let sent = self
            .conn
            .run(|mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
        match sent {
            Ok(_) => {
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tsunagi_bus_published_total").increment(1);
                true
            }
            Err(e) => {
                self.counters.publish_errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tsunagi_bus_publish_errors_total").increment(1);
                tracing::warn!(error = %e, "bus: publish to Redis failed");
                false
            }
        }
    }

    fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::Release);
        metrics::gauge!("tsunagi_bus_connected").set(if up { 1.0 } else { 0.0 });
    }

    /// Subscribes, delivers what arrives, and on any failure marks the bus unhealthy and
    /// subscribes again (with a capped backoff).
    async fn subscriber(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.subscribe_once().await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => tracing::warn!(error = %e, "bus: Redis subscription lost"),
            }
            self.set_healthy(false);
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn subscribe_once(&self) -> Result<(), String> {
        let limit = self.conn.timeout().max(Duration::from_secs(1));
        let pubsub = tokio::time::timeout(limit, self.conn.client().get_async_pubsub())
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let (mut sink, mut stream) = pubsub.split();
        tokio::time::timeout(limit, sink.subscribe(&self.channel))
            .await
            .map_err(|_| "subscribe timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        // Anything published while we were away is lost: start from empty in-process caches.
        self.local.publish(BusEvent::InvalidateAll);
        self.set_healthy(true);
        tracing::info!("bus: subscribed to Redis");
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { return Err("connection closed".into()) };
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    match serde_json::from_str::<Envelope>(&payload) {
                        Ok(env) if env.origin != self.instance => {
                            self.counters.received.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("tsunagi_bus_received_total").increment(1);
                            self.local.publish(env.event);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "bus: undecodable event"),
                    }
                }
                _ = heartbeat.tick() => {
                    // A half-open TCP connection delivers nothing and reports nothing: ping it.
                    // (In subscribed mode the reply is an array, not "PONG".)
                    match tokio::time::timeout(limit, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        _ => return Err("ping unanswered".into()),
                    }
                }
            }
        }
    }
}

impl Bus for RedisBus {
    fn publish(&self, event: BusEvent) {
        self.local.publish(event.clone());
        if event.crosses_instances() {
            self.outbox.send(event).ok();
        }
    }

    fn subscribe(&self) -> mpsc::UnboundedReceiver<BusEvent> {
        self.local.subscribe()
    }

    fn publish_confirmed(&self, event: BusEvent) -> BoxFuture<'_, bool> {
        self.local.publish(event.clone());
        Box::pin(async move { !event.crosses_instances() || self.publish_remote(&event).await })
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn stats(&self) -> serde_json::Value {
        let c = &self.counters;
        serde_json::json!({
            "kind": "redis",
            "connected": self.healthy(),
            "published": c.published.load(Ordering::Relaxed),
            "publish_errors": c.publish_errors.load(Ordering::Relaxed),
            "received": c.received.load(Ordering::Relaxed),
            "reconnects": c.reconnects.load(Ordering::Relaxed),
        })
    }
}
