//! The bus across instances through Redis 7 sharded pub/sub (works on one Redis and on a
//! Redis Cluster, where shard channels spread over the masters by slot).
//!
//! Channels:
//! - `<prefix>:bus:<n>`, n in `0..TSUNAGI_BUS_SHARDS`: the room-scoped events (messages,
//!   typing, presence, state) of the rooms that hash to shard n (`shards::shard_of`). An
//!   instance subscribes only to the shards of the rooms its sockets are in (`shards.rs`), so
//!   fan-out follows rooms: an instance with no socket in a room's shard receives none of it.
//! - `<prefix>:bus:all`: what every instance needs: cache invalidations (confirmed) and live
//!   sensor readings. Readings go everywhere because every instance remembers each sensor's
//!   newest readings for `subscribe`'s `last`, and they only flow at all while some socket
//!   somewhere watches the sensor (shared presence), through a bounded, lossy lane.
//! - `<prefix>:ack:<instance>`: acknowledgements of this instance's confirmed publishes.
//!
//! Every event is delivered to this instance's subscribers at once (never waiting on Redis);
//! one publisher task drains what has queued and sends it as one pipeline per channel, all at
//! once (one round trip per batch, each channel in publish order). Pub/sub is at most once: a
//! link that dropped may have missed events, so the bus reports itself unhealthy meanwhile,
//! subscribes again to everything it wants, and delivers `InvalidateAll` before it is healthy.
//!
//! Confirmed publishes (cache invalidations): each receiving instance applies the event through
//! its invalidation handler *in the subscriber task*, then acknowledges on the origin's ack
//! channel; the publisher waits for as many acks as SPUBLISH reported receivers on the `all`
//! channel (its own subscription acks locally), up to a bound.

mod link;
pub mod shards;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use redis::{PushInfo, PushKind};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use self::link::Link;
use self::shards::{Change, Interest};
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
    /// Known once SPUBLISH has answered (acks can arrive before that).
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
/// Events sent in one batch, at most (a bound on one round trip's size).
const BATCH: usize = 512;

/// How often the link is pinged (a setting's bound depends on it, so config owns it).
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
    /// A confirmed publish: `receivers` gets SPUBLISH's count (`None`: not sent).
    Confirmed {
        event: BusEvent,
        id: u64,
        receivers: oneshot::Sender<Option<usize>>,
    },
    Ack {
        origin: String,
        id: u64,
    },
}

pub struct RedisBus {
    local: LocalBus,
    conn: Arc<RedisConn>,
    /// `<prefix>:bus:` (shard channels are this plus the shard number or `all`).
    channel_base: String,
    all_channel: String,
    instance: String,
    ack_channel: String,
    interest: Arc<Interest>,
    /// The live link, used by the publishers too (`None` while down).
    link: Mutex<Option<Link>>,
    healthy: AtomicBool,
    counters: Counters,
    /// Fire-and-forget publishes, confirmed ones and acks, sent in order by one task.
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
    /// Starts the link and publisher tasks; the bus is unhealthy until it has subscribed. A
    /// confirmed publish waits at most `ack_wait` for the other instances' acknowledgements.
    pub fn start(conn: Arc<RedisConn>, ack_wait: Duration, shards: u32) -> Arc<Self> {
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let (readings_out, readings_rx) = mpsc::channel(READINGS_LANE);
        let (interest, changes) = Interest::new(shards);
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let channel_base = conn.key("bus:");
        let bus = Arc::new(RedisBus {
            local: LocalBus::default(),
            all_channel: format!("{channel_base}all"),
            channel_base,
            ack_channel: conn.key(&format!("ack:{instance}")),
            conn,
            instance,
            interest,
            link: Mutex::new(None),
            healthy: AtomicBool::new(false),
            counters: Counters::default(),
            outbox,
            readings_out,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            handler: OnceLock::new(),
            ack_wait,
        });
        tokio::spawn(bus.clone().subscriber(changes));
        tokio::spawn(bus.clone().publisher(outbox_rx));
        tokio::spawn(bus.clone().publish_readings(readings_rx));
        bus
    }

    fn shard_channel(&self, shard: u32) -> String {
        format!("{}{shard}", self.channel_base)
    }

    /// Room-scoped events on their room's shard; the rest on the channel all instances hear.
    fn channel_of(&self, event: &BusEvent) -> String {
        match event.room() {
            Some(room) => self.shard_channel(self.interest.shard(room)),
            None => self.all_channel.clone(),
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

    /// Sends one batch; the receivers of each entry (`None`: not sent), counted.
    async fn send(&self, batch: &[(String, String)]) -> Vec<Option<usize>> {
        let link = self.link.lock().clone();
        let sent = match link {
            Some(link) => {
                match tokio::time::timeout(self.conn.timeout(), link.spublish(batch)).await {
                    Ok(sent) => sent,
                    Err(_) => vec![None; batch.len()],
                }
            }
            None => vec![None; batch.len()],
        };
        let ok = sent.iter().filter(|s| s.is_some()).count() as u64;
        let failed = batch.len() as u64 - ok;
        self.counters.published.fetch_add(ok, Ordering::Relaxed);
        self.counters
            .publish_errors
            .fetch_add(failed, Ordering::Relaxed);
        self.conn.telemetry().record(|| {
            metrics::counter!("tsunagi_bus_published_total").increment(ok);
            metrics::counter!("tsunagi_bus_publish_errors_total").increment(failed);
        });
        if failed > 0 {
            tracing::warn!(failed, "bus: publishing to Redis failed");
        }
        sent
    }

    /// Drains everything queued and sends it as one batch: no per-message round trip.
    async fn publisher(self: Arc<Self>, mut outbox: mpsc::UnboundedReceiver<Outgoing>) {
        let mut queued = Vec::with_capacity(BATCH);
        while outbox.recv_many(&mut queued, BATCH).await > 0 {
            let mut batch = Vec::with_capacity(queued.len());
            let mut waiters = Vec::with_capacity(queued.len());
            for out in queued.drain(..) {
                let (channel, payload, waiter) = match out {
                    Outgoing::Event(event) => {
                        (self.channel_of(&event), self.envelope(&event, None), None)
                    }
                    Outgoing::Confirmed {
                        event,
                        id,
                        receivers,
                    } => (
                        self.channel_of(&event),
                        self.envelope(&event, Some(id)),
                        Some(receivers),
                    ),
                    Outgoing::Ack { origin, id } => (
                        self.conn.key(&format!("ack:{origin}")),
                        id.to_string(),
                        None,
                    ),
                };
                batch.push((channel, payload));
                waiters.push(waiter);
            }
            let sent = self.send(&batch).await;
            for (waiter, receivers) in waiters.into_iter().zip(sent) {
                if let Some(w) = waiter {
                    w.send(receivers).ok();
                }
            }
        }
    }

    /// Publishes the readings lane in batches of what has queued up.
    async fn publish_readings(self: Arc<Self>, mut lane: mpsc::Receiver<BusEvent>) {
        let mut queued = Vec::with_capacity(BATCH);
        while lane.recv_many(&mut queued, BATCH).await > 0 {
            let batch: Vec<_> = queued
                .drain(..)
                .map(|ev| (self.all_channel.clone(), self.envelope(&ev, None)))
                .collect();
            self.send(&batch).await;
        }
    }

    /// Publishes `event` and waits until every other subscribed instance has applied it.
    async fn publish_and_wait(&self, event: BusEvent) -> bool {
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
        let confirmed = async {
            let (receivers, counted) = oneshot::channel();
            self.outbox
                .send(Outgoing::Confirmed {
                    event,
                    id,
                    receivers,
                })
                .ok()?;
            let receivers = counted.await.ok()??;
            if let Some(p) = self.pending.lock().get_mut(&id) {
                // every receiver acks, our own subscription included (when it is live)
                p.expected = Some(receivers);
                p.settle();
            }
            all_acked.await.ok()
        };
        match tokio::time::timeout(self.ack_wait, confirmed).await {
            Ok(Some(())) => true,
            Ok(None) => false, // not sent
            Err(_) => {
                self.counters.ack_timeouts.fetch_add(1, Ordering::Relaxed);
                self.conn
                    .telemetry()
                    .record(|| metrics::counter!("tsunagi_bus_ack_timeouts_total").increment(1));
                false
            }
        }
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

    fn report_shards(&self) {
        let n = self.interest.active_count() as f64;
        self.conn
            .telemetry()
            .record(|| metrics::gauge!("tsunagi_bus_shards_subscribed").set(n));
    }

    /// Keeps the link up: on any failure marks the bus unhealthy, forgets the link, and
    /// connects and subscribes again (with a capped backoff).
    async fn subscriber(self: Arc<Self>, mut changes: mpsc::UnboundedReceiver<Change>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session(&mut changes).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => tracing::warn!(error = %e, "bus: Redis subscription lost"),
            }
            self.set_healthy(false);
            *self.link.lock() = None;
            self.interest.all_inactive();
            self.report_shards();
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// `Err` when the link is lost (the caller starts over).
    async fn session(
        &self,
        changes: &mut mpsc::UnboundedReceiver<Change>,
    ) -> Result<(), RedisError> {
        let limit = self.conn.timeout().max(Duration::from_secs(1));
        let (push_tx, mut pushes) = mpsc::unbounded_channel();
        let mut link = within(limit, Link::open(self.conn.nodes(), push_tx)).await?;
        for channel in [self.all_channel.clone(), self.ack_channel.clone()] {
            within(limit, link.ssubscribe(&channel)).await?;
        }
        for shard in self.interest.wanted() {
            within(limit, link.ssubscribe(&self.shard_channel(shard))).await?;
            self.interest.set_active(shard, true);
        }
        *self.link.lock() = Some(link.clone());
        self.report_shards();
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
                push = pushes.recv() => {
                    let Some(push) = push else { return Err(RedisError::Lost) };
                    match push.kind {
                        PushKind::Disconnection => return Err(RedisError::Lost),
                        PushKind::SMessage | PushKind::Message => self.on_push(push).await,
                        _ => {}
                    }
                }
                change = changes.recv() => {
                    let Some(change) = change else { return Ok(()) };
                    match change {
                        Change::Subscribe(shard) => {
                            within(limit, link.ssubscribe(&self.shard_channel(shard))).await?;
                            self.interest.set_active(shard, true);
                        }
                        Change::Unsubscribe(shard) => {
                            within(limit, link.sunsubscribe(&self.shard_channel(shard))).await?;
                        }
                    }
                    self.report_shards();
                }
                _ = heartbeat.tick() => {
                    // A half-open TCP connection delivers nothing and reports nothing: ping it.
                    if within(self.conn.timeout(), link.ping()).await.is_err() {
                        return Err(RedisError::Lost);
                    }
                }
            }
        }
    }

    async fn on_push(&self, push: PushInfo) {
        let mut data = push.data.into_iter();
        let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
            return;
        };
        let (Ok(channel), Ok(payload)) = (
            redis::from_redis_value::<String>(channel),
            redis::from_redis_value::<String>(payload),
        ) else {
            return;
        };
        if channel == self.ack_channel {
            if let Ok(id) = payload.parse() {
                self.acknowledged(id);
            }
            return;
        }
        match serde_json::from_str::<Envelope>(&payload) {
            Ok(env) if env.origin != self.instance => self.received(env).await,
            // Our own event came back: we count as one of its receivers (Redis counts us only
            // while our subscription is live).
            Ok(Envelope { ack: Some(id), .. }) => self.acknowledged(id),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "bus: undecodable event"),
        }
    }

    /// An event from another instance: invalidations are applied here, before the ack, so the
    /// publisher's wait means "applied"; the rest goes to the local subscribers.
    async fn received(&self, env: Envelope) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let kind = env.event.kind();
        self.conn.telemetry().record(|| {
            metrics::counter!("tsunagi_bus_received_total").increment(1);
            metrics::counter!("tsunagi_bus_received_events_total", "kind" => kind).increment(1);
        });
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

/// `f`, given up on after `limit`.
async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(RedisError::Timeout),
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
        Box::pin(async move { !event.crosses_instances() || self.publish_and_wait(event).await })
    }

    fn on_invalidation(&self, handler: InvalidationHandler) {
        self.handler.set(handler).ok();
    }

    fn watch_room(&self, room: &str) {
        self.interest.watch(room);
    }

    fn unwatch_room(&self, room: &str) {
        self.interest.unwatch(room);
    }

    /// Waits for the SSUBSCRIBE confirmation of `room`'s shard, at most the Redis timeout (past
    /// it the link is down: the bus is unhealthy and the feed's gap filling is what is left).
    fn room_subscribed(&self, room: &str) -> BoxFuture<'static, ()> {
        let active = self.interest.subscribed(room);
        let limit = self.conn.timeout().max(Duration::from_secs(1));
        Box::pin(async move {
            if let Some(mut active) = active {
                tokio::time::timeout(limit, active.wait_for(|a| *a))
                    .await
                    .ok();
            }
        })
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn stats(&self) -> serde_json::Value {
        let c = &self.counters;
        serde_json::json!({
            "kind": "redis",
            "connected": self.healthy(),
            "shards_subscribed": self.interest.active_count(),
            "published": c.published.load(Ordering::Relaxed),
            "publish_errors": c.publish_errors.load(Ordering::Relaxed),
            "received": c.received.load(Ordering::Relaxed),
            "reconnects": c.reconnects.load(Ordering::Relaxed),
            "ack_timeouts": c.ack_timeouts.load(Ordering::Relaxed),
        })
    }
}
