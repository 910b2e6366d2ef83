//! The bus across instances through Redis pub/sub on `<prefix>:bus`.
//!
//! Every event is delivered to this instance's subscribers at once (never waiting on Redis);
//! events that cross instances (`BusEvent::crosses_instances`) are also published, and events
//! from other instances are delivered here as they arrive. Pub/sub is at most once: a subscriber
//! that was disconnected may have missed events, so the bus reports itself unhealthy meanwhile
//! and delivers `InvalidateAll` when it is subscribed again.
//!
//! Confirmed publishes (cache invalidations): each receiving instance applies the event through
//! its invalidation handler *in the subscriber task*, then acknowledges on
//! `<prefix>:ack:<origin>`; the publisher waits for as many acks as Redis reported receivers
//! (its own subscription acks locally), up to a bound. So when a write answers, every live instance has dropped the
//! old value.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::local::LocalBus;
use super::{Bus, BusEvent, InvalidationHandler};
use crate::redis_conn::{RedisConn, RedisError};

#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The publishing instance: it has delivered the event locally already.
    origin: String,
    /// Set when the origin waits for acknowledgements of this event.
    ack: Option<u64>,
    event: BusEvent,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_errors: AtomicU64,
    received: AtomicU64,
    reconnects: AtomicU64,
    ack_timeouts: AtomicU64,
}

/// A confirmed publish waiting for its acks.
struct Pending {
    acked: usize,
    /// Known once PUBLISH has answered (acks can arrive before that).
    expected: Option<usize>,
    done: Option<oneshot::Sender<()>>,
}

impl Pending {
    fn settle(&mut self) {
        if self.expected.is_some_and(|e| self.acked >= e)
            && let Some(done) = self.done.take()
        {
            done.send(()).ok();
        }
    }
}

/// Live-reading events waiting for Redis, at most (past it they are dropped and counted).
const READINGS_LANE: usize = 1024;
/// Live-reading events sent in one pipeline, at most.
const READINGS_PIPELINE: usize = 64;

/// How often the subscription is pinged (a setting's bound depends on it, so config owns it).
pub const HEARTBEAT: Duration = crate::config::BUS_HEARTBEAT;

struct PendingGuard<'a> {
    bus: &'a RedisBus,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.bus.pending.lock().remove(&self.id);
    }
}

enum Outgoing {
    Event(BusEvent),
    Ack { origin: String, id: u64 },
}

pub struct RedisBus {
    local: LocalBus,
    conn: Arc<RedisConn>,
    channel: String,
    instance: String,
    ack_channel: String,
    healthy: AtomicBool,
    counters: Counters,
    /// Fire-and-forget publishes and acks, sent in order by one task.
    outbox: mpsc::UnboundedSender<Outgoing>,
    /// Live sensor readings: a lane of their own, bounded and lossy (they are best effort), so a
    /// flood of readings never queues ahead of messages nor grows memory while Redis is slow.
    readings_out: mpsc::Sender<BusEvent>,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    handler: OnceLock<InvalidationHandler>,
    ack_wait: Duration,
}

impl RedisBus {
    /// Starts the subscriber task; the bus is unhealthy until it has subscribed. A confirmed
    /// publish waits at most `ack_wait` for the other instances' acknowledgements.
    pub fn start(conn: Arc<RedisConn>, ack_wait: Duration) -> Arc<Self> {
        let (outbox, mut outbox_rx) = mpsc::unbounded_channel();
        let (readings_out, readings_rx) = mpsc::channel(READINGS_LANE);
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let bus = Arc::new(RedisBus {
            local: LocalBus::default(),
            channel: conn.key("bus"),
            ack_channel: conn.key(&format!("ack:{instance}")),
            conn,
            instance,
            healthy: AtomicBool::new(false),
            counters: Counters::default(),
            outbox,
            readings_out,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            handler: OnceLock::new(),
            ack_wait,
        });
        tokio::spawn(bus.clone().subscriber());
        tokio::spawn(bus.clone().publish_readings(readings_rx));
        let publisher = bus.clone();
        tokio::spawn(async move {
            while let Some(out) = outbox_rx.recv().await {
                match out {
                    Outgoing::Event(event) => {
                        publisher.publish_remote(&event, None).await;
                    }
                    Outgoing::Ack { origin, id } => {
                        let channel = publisher.conn.key(&format!("ack:{origin}"));
                        publisher.publish_raw(channel, id.to_string()).await.ok();
                    }
                }
            }
        });
        bus
    }

    async fn publish_raw(&self, channel: String, payload: String) -> Result<usize, RedisError> {
        self.conn
            .call(|mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|n| n.max(0) as usize)
    }

    /// Publishes the readings lane, pipelining what has queued up (one round trip for many).
    async fn publish_readings(self: Arc<Self>, mut lane: mpsc::Receiver<BusEvent>) {
        while let Some(first) = lane.recv().await {
            let mut payloads = vec![self.envelope(&first, None)];
            while payloads.len() < READINGS_PIPELINE {
                match lane.try_recv() {
                    Ok(ev) => payloads.push(self.envelope(&ev, None)),
                    Err(_) => break,
                }
            }
            let (channel, n) = (self.channel.clone(), payloads.len() as u64);
            let sent = self
                .conn
                .call(|mut c| async move {
                    let mut pipe = redis::pipe();
                    for p in payloads {
                        pipe.cmd("PUBLISH").arg(&channel).arg(p).ignore();
                    }
                    pipe.query_async::<()>(&mut c).await
                })
                .await;
            match sent {
                Ok(()) => {
                    self.counters.published.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counters.publish_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "bus: publishing live readings failed");
                }
            }
        }
    }

    fn envelope(&self, event: &BusEvent, ack: Option<u64>) -> String {
        serde_json::to_string(&Envelope {
            origin: self.instance.clone(),
            ack,
            event: event.clone(),
        })
        .expect("bus events serialize")
    }

    /// PUBLISH on the bus channel; the number of instances that received it.
    async fn publish_remote(&self, event: &BusEvent, ack: Option<u64>) -> Option<usize> {
        let payload = self.envelope(event, ack);
        match self.publish_raw(self.channel.clone(), payload).await {
            Ok(receivers) => {
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                self.conn
                    .telemetry()
                    .record(|| metrics::counter!("tsunagi_bus_published_total").increment(1));
                Some(receivers)
            }
            Err(e) => {
                self.counters.publish_errors.fetch_add(1, Ordering::Relaxed);
                self.conn
                    .telemetry()
                    .record(|| metrics::counter!("tsunagi_bus_publish_errors_total").increment(1));
                tracing::warn!(error = %e, "bus: publish to Redis failed");
                None
            }
        }
    }

    /// Publishes `event` and waits until every other subscribed instance has applied it.
    async fn publish_and_wait(&self, event: &BusEvent) -> bool {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, all_acked) = oneshot::channel();
        self.pending.lock().insert(
            id,
            Pending {
                acked: 0,
                expected: None,
                done: Some(done),
            },
        );
        // removes the entry however this future ends, cancelled included
        let _forget = PendingGuard { bus: self, id };
        let Some(receivers) = self.publish_remote(event, Some(id)).await else {
            return false;
        };
        if let Some(p) = self.pending.lock().get_mut(&id) {
            // every receiver acks, our own subscription included (when it is live)
            p.expected = Some(receivers);
            p.settle();
        }
        let acked = tokio::time::timeout(self.ack_wait, all_acked).await.is_ok();
        if !acked {
            self.counters.ack_timeouts.fetch_add(1, Ordering::Relaxed);
            self.conn
                .telemetry()
                .record(|| metrics::counter!("tsunagi_bus_ack_timeouts_total").increment(1));
        }
        acked
    }

    fn acknowledged(&self, id: u64) {
        if let Some(p) = self.pending.lock().get_mut(&id) {
            p.acked += 1;
            p.settle();
        }
    }

    fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::Release);
        self.conn
            .telemetry()
            .record(|| metrics::gauge!("tsunagi_bus_connected").set(if up { 1.0 } else { 0.0 }));
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

    async fn subscribe_once(&self) -> Result<(), RedisError> {
        let limit = self.conn.timeout().max(Duration::from_secs(1));
        let pubsub = tokio::time::timeout(limit, self.conn.client().get_async_pubsub())
            .await
            .map_err(|_| RedisError::Timeout)??;
        let (mut sink, mut stream) = pubsub.split();
        let channels = [self.channel.as_str(), self.ack_channel.as_str()];
        tokio::time::timeout(limit, sink.subscribe(&channels[..]))
            .await
            .map_err(|_| RedisError::Timeout)??;
        // Anything published while we were away is lost: start from empty in-process caches,
        // applied before the bus reports healthy (and L1 is read again).
        if let Some(apply) = self.handler.get() {
            apply(BusEvent::InvalidateAll).await;
        }
        self.conn.reachable();
        self.set_healthy(true);
        tracing::info!("bus: subscribed to Redis");
        // Detects a dead link within HEARTBEAT + the Redis timeout, which config keeps below
        // the ack timeout: an instance cut off from Redis stops reading its L1 before a writer
        // stops waiting for its ack.
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { return Err(RedisError::Lost) };
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    if msg.get_channel_name() == self.ack_channel {
                        if let Ok(id) = payload.parse() {
                            self.acknowledged(id);
                        }
                        continue;
                    }
                    match serde_json::from_str::<Envelope>(&payload) {
                        Ok(env) if env.origin != self.instance => self.received(env).await,
                        // Our own event came back: we count as one of its receivers (Redis
                        // counts us only while our subscription is live).
                        Ok(Envelope { ack: Some(id), .. }) => self.acknowledged(id),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "bus: undecodable event"),
                    }
                }
                _ = heartbeat.tick() => {
                    // A half-open TCP connection delivers nothing and reports nothing: ping it.
                    // (In subscribed mode the reply is an array, not "PONG".)
                    match tokio::time::timeout(self.conn.timeout(), sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        _ => return Err(RedisError::Lost),
                    }
                }
            }
        }
    }

    /// An event from another instance: invalidations are applied here, before the ack, so the
    /// publisher's wait means "applied"; the rest goes to the local subscribers.
    async fn received(&self, env: Envelope) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        self.conn
            .telemetry()
            .record(|| metrics::counter!("tsunagi_bus_received_total").increment(1));
        match (self.handler.get(), &env.event) {
            (Some(apply), BusEvent::Invalidate { .. } | BusEvent::InvalidateAll) => {
                apply(env.event).await;
            }
            _ => self.local.publish(env.event),
        }
        if let Some(id) = env.ack {
            self.outbox
                .send(Outgoing::Ack {
                    origin: env.origin,
                    id,
                })
                .ok();
        }
    }
}

impl Bus for RedisBus {
    fn publish(&self, event: BusEvent) {
        self.local.publish(event.clone());
        if matches!(event, BusEvent::Readings { .. }) {
            if self.readings_out.try_send(event).is_err() {
                self.conn.telemetry().record(|| {
                    metrics::counter!("tsunagi_bus_dropped_total", "kind" => "readings")
                        .increment(1)
                });
            }
        } else if event.crosses_instances() {
            self.outbox.send(Outgoing::Event(event)).ok();
        }
    }

    fn subscribe(&self) -> mpsc::UnboundedReceiver<BusEvent> {
        self.local.subscribe()
    }

    fn publish_confirmed(&self, event: BusEvent) -> BoxFuture<'_, bool> {
        Box::pin(async move { !event.crosses_instances() || self.publish_and_wait(&event).await })
    }

    fn on_invalidation(&self, handler: InvalidationHandler) {
        self.handler.set(handler).ok();
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
            "ack_timeouts": c.ack_timeouts.load(Ordering::Relaxed),
        })
    }
}
