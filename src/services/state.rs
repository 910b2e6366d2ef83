//! Shared room state (PROTOCOL.md §6.2): versioned JSON documents per room and key, written
//! under optimistic concurrency by whoever may write the room, durable before the answer, and
//! announced on the bus with the room's `state_seq` (the gateway orders them per socket).
//! Reads are answered by the state cache where it holds the room (one instance), otherwise by
//! one indexed statement on the primary.

use std::sync::Arc;

use serde_json::Value;

use super::error::{ServiceError, ServiceResult};
use super::rooms::RoomsService;
use crate::auth::Identity;
use crate::bus::{Bus, BusEvent};
use crate::domain::{RoomId, State, StateKey, check_state_value};
use crate::shared_state::RateLimiter;
use crate::state_cache::{StateCache, Write};
use crate::store::Store;
use crate::store::state::StateWrite;

pub struct StateService {
    rooms: Arc<RoomsService>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    /// The send limit: state writes count against it (§6.2).
    send_limiter: Arc<dyn RateLimiter>,
    max_bytes: usize,
    cache: Arc<StateCache>,
}

impl StateService {
    pub fn new(
        rooms: Arc<RoomsService>,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        send_limiter: Arc<dyn RateLimiter>,
        max_bytes: usize,
        cache: Arc<StateCache>,
    ) -> Self {
        StateService {
            rooms,
            store,
            bus,
            send_limiter,
            max_bytes,
            cache,
        }
    }

    pub fn cache(&self) -> &Arc<StateCache> {
        &self.cache
    }

    /// `state_set` / `PUT`: the value's rules, the room, the right to write it, the rate, then
    /// the conditional write (in the contract's order of errors).
    pub async fn set(
        &self,
        who: &Identity,
        room: &RoomId,
        key: &StateKey,
        value: Option<&Value>,
        version: Option<i64>,
    ) -> ServiceResult<State> {
        let value = check_state_value(value, self.max_bytes)?;
        self.may_write(who, room).await?;
        self.write(who, room, key, Some(value), version).await
    }

    /// `DELETE`: like a write; deleting a key that does not exist is `not_found`.
    pub async fn delete(
        &self,
        who: &Identity,
        room: &RoomId,
        key: &StateKey,
        version: Option<i64>,
    ) -> ServiceResult<()> {
        self.may_write(who, room).await?;
        self.write(who, room, key, None, version).await.map(|_| ())
    }

    /// The conditional write, run to its end in a task of its own even if the caller goes
    /// away (an HTTP client disconnecting): a write that commits is always settled in the cache
    /// and announced on the bus. (A store timeout still loses its outcome: `state_cache`.)
    async fn write(
        &self,
        who: &Identity,
        room: &RoomId,
        key: &StateKey,
        value: Option<Value>,
        version: Option<i64>,
    ) -> ServiceResult<State> {
        let (store, bus, cache) = (self.store.clone(), self.bus.clone(), self.cache.clone());
        let (room, key, user) = (room.clone(), key.clone(), who.user_id.clone());
        tokio::spawn(async move {
            let cached = cache.begin_write(room.as_str());
            let written = store
                .write_state(&room, &key, value.as_ref(), version, &user)
                .await?;
            settle(&*bus, key.as_str(), written, cached)
        })
        .await
        .map_err(|e| ServiceError::unavailable(format!("the state write did not finish: {e}")))?
    }

    async fn may_write(&self, who: &Identity, room: &RoomId) -> ServiceResult<()> {
        self.rooms.check_access(who, room).await?;
        self.send_limiter
            .check(&who.user_id)
            .await
            .map_err(ServiceError::RateLimited)
    }

    /// Every key of the room (by key), or the one asked for (`not_found` if it does not exist).
    pub async fn get(
        &self,
        who: &Identity,
        room: &RoomId,
        key: Option<&StateKey>,
    ) -> ServiceResult<Vec<State>> {
        self.rooms.check_access(who, room).await?;
        let (mut states, _) = self.snapshot(room).await?;
        if let Some(key) = key {
            states.retain(|s| s.key == key.as_str());
        }
        Ok(states)
    }

    /// Every key of the room and the `state_seq` they are current at (access checked before).
    pub async fn snapshot(&self, room: &RoomId) -> ServiceResult<(Vec<State>, i64)> {
        if let Some(found) = self.cache.snapshot(room.as_str()) {
            return Ok(found);
        }
        let fill = self.cache.begin_fill(room.as_str());
        let (states, seq) = self
            .store
            .room_state(room)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("room {room} does not exist")))?;
        if let Some(fill) = fill {
            self.cache.fill(fill, &states, seq);
        }
        Ok((states, seq))
    }
}

/// A write's outcome: into the cache (before anyone is answered), then on the bus.
fn settle(
    bus: &dyn Bus,
    key: &str,
    written: StateWrite,
    cached: Write<'_>,
) -> ServiceResult<State> {
    match written {
        StateWrite::Done { state, seq } => {
            cached.done(&state, seq);
            bus.publish(BusEvent::State {
                seq,
                state: Arc::new(state.clone()),
            });
            Ok(state)
        }
        StateWrite::Conflict(current) => {
            cached.unchanged(key, current.as_ref());
            let current = serde_json::to_value(current).unwrap_or(Value::Null);
            Err(ServiceError::VersionConflict(Box::new(current)))
        }
        StateWrite::Missing => {
            cached.unchanged(key, None);
            Err(ServiceError::not_found("no such key in this room"))
        }
    }
}
