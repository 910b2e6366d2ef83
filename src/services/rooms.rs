//! Rooms and who may read and write them.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use super::ryw::ReadYourWrites;
use crate::auth::Identity;
use crate::domain::{RoomId, RoomInfo, check_user_id};
use crate::error::{ApiError, ApiResult};
use crate::store::{NewRoom, ReadFrom, Store};

/// What access checks need of a room; fixed once the room exists, so it is cached.
#[derive(Debug, Clone)]
pub struct RoomMeta {
    pub id: RoomId,
    pub private: bool,
    pub owner_id: String,
    pub epoch: String,
}

pub struct RoomsService {
    store: Arc<dyn Store>,
    ryw: Arc<ReadYourWrites>,
    // Only rooms that exist are cached: a room created on another instance must not stay
    // "missing" here.
    meta: Cache<RoomId, Arc<RoomMeta>>,
    // Membership only grows (no removal endpoint), so a stale `false` only delays access by the
    // TTL at most, and this instance's own additions invalidate it at once.
    members: Cache<(RoomId, String), bool>,
}

impl RoomsService {
    pub fn new(store: Arc<dyn Store>, ryw: Arc<ReadYourWrites>) -> Self {
        RoomsService {
            store,
            ryw,
            meta: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            members: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
        }
    }

    pub async fn create(
        &self,
        who: &Identity,
        id: &str,
        name: Option<String>,
        private: bool,
    ) -> ApiResult<RoomInfo> {
        let id = RoomId::parse(id)?;
        let name = match name {
            Some(n) if n.chars().count() > 200 => {
                return Err(ApiError::bad_request("name must be at most 200 characters"));
            }
            Some(n) if !n.is_empty() => n,
            _ => id.as_str().to_owned(),
        };
        let (info, pos) = self
            .store
            .create_room(NewRoom {
                id: id.clone(),
                name,
                private,
                owner_id: who.user_id.clone(),
            })
            .await?;
        self.ryw.wrote(&who.user_id, pos);
        self.meta.invalidate(&id).await;
        Ok(info)
    }

    pub async fn list(
        &self,
        who: &Identity,
        cursor: Option<&str>,
        limit: u32,
    ) -> ApiResult<Vec<RoomInfo>> {
        let from = self.ryw.read_for(&who.user_id);
        Ok(self
            .store
            .list_rooms(&who.user_id, who.admin, cursor, limit, from)
            .await?)
    }

    /// The room, or `not_found`.
    pub async fn meta(&self, room: &RoomId) -> ApiResult<Arc<RoomMeta>> {
        if let Some(m) = self.meta.get(room).await {
            return Ok(m);
        }
        let info = self
            .store
            .room(room, ReadFrom::Primary)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("room {room} does not exist")))?;
        let meta = Arc::new(RoomMeta {
            id: room.clone(),
            private: info.private,
            owner_id: info.owner_id,
            epoch: info.epoch,
        });
        self.meta.insert(room.clone(), meta.clone()).await;
        Ok(meta)
    }

    /// Fresh room info (last_seq moves), or `not_found`.
    pub async fn info(&self, room: &RoomId) -> ApiResult<RoomInfo> {
        self.store
            .room(room, ReadFrom::Primary)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("room {room} does not exist")))
    }

    /// Read access (and write: the contract gives both to the same people): public rooms to
    /// everyone; private rooms to the owner, members and admins.
    pub async fn check_access(&self, who: &Identity, room: &RoomId) -> ApiResult<Arc<RoomMeta>> {
        let meta = self.meta(room).await?;
        if !meta.private || who.admin || meta.owner_id == who.user_id {
            return Ok(meta);
        }
        let key = (room.clone(), who.user_id.clone());
        let member = match self.members.get(&key).await {
            Some(m) => m,
            None => {
                let m = self.store.is_member(room, &who.user_id).await?;
                self.members.insert(key, m).await;
                m
            }
        };
        if member {
            Ok(meta)
        } else {
            Err(ApiError::forbidden(format!("room {room} is private")))
        }
    }

    /// `POST /rooms/{id}/members`: by the owner or an admin.
    pub async fn add_member(&self, who: &Identity, room: &str, user_id: &str) -> ApiResult<()> {
        let room = RoomId::parse(room)?;
        check_user_id(user_id)?;
        let meta = self.meta(&room).await?;
        if !(who.admin || meta.owner_id == who.user_id) {
            return Err(ApiError::forbidden(
                "only the room's owner or an admin adds members",
            ));
        }
        let pos = self.store.add_member(&room, user_id, &who.user_id).await?;
        self.ryw.wrote(&who.user_id, pos);
        self.members.invalidate(&(room, user_id.to_owned())).await;
        Ok(())
    }
}
