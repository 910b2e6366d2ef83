//! Rooms and who may read and write them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::{ServiceError, ServiceResult};
use super::ryw::ReadYourWrites;
use crate::auth::Identity;
use crate::cache::Versioned;
use crate::cache::layered::LayeredCache;
use crate::domain::{RoomId, RoomInfo, UserId};
use crate::shared_state::RateLimiter;
use crate::store::users::MemberRow;
use crate::store::{NewRoom, ReadFrom, Store};

/// What access checks need of a room; fixed once the room exists, so it caches well.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomMeta {
    pub id: RoomId,
    pub private: bool,
    pub owner_id: String,
    pub epoch: String,
}

impl Versioned for RoomMeta {
    fn version(&self) -> i64 {
        1 // never changes; a missing room is version 0
    }
}

/// "This user is a member of this room"; its absence is cached as the negative entry. (A field,
/// not a unit struct: a unit serializes as `null`, which reads back as the negative entry.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Membership {
    pub member: bool,
}

impl Versioned for Membership {
    fn version(&self) -> i64 {
        1
    }
}

pub struct RoomsService {
    store: Arc<dyn Store>,
    ryw: Arc<ReadYourWrites>,
    pub meta_cache: Arc<LayeredCache<RoomMeta>>,
    pub member_cache: Arc<LayeredCache<Membership>>,
    /// Room creations and member adds per user.
    write_limiter: Arc<dyn RateLimiter>,
}

/// A room's name: at most 200 characters (empty or absent: the id).
pub fn check_room_name(name: Option<&str>) -> ServiceResult<()> {
    match name {
        Some(n) if n.chars().count() > 200 => Err(ServiceError::bad_request(
            "name must be at most 200 characters",
        )),
        _ => Ok(()),
    }
}

/// Room ids hold no `:`, so this key is unambiguous.
fn member_key(room: &RoomId, user_id: &str) -> String {
    format!("{room}:{user_id}")
}

impl RoomsService {
    pub fn new(
        store: Arc<dyn Store>,
        ryw: Arc<ReadYourWrites>,
        meta_cache: Arc<LayeredCache<RoomMeta>>,
        member_cache: Arc<LayeredCache<Membership>>,
        write_limiter: Arc<dyn RateLimiter>,
    ) -> Self {
        RoomsService {
            store,
            ryw,
            meta_cache,
            member_cache,
            write_limiter,
        }
    }

    /// `POST /rooms`, with the body already checked (`check_room_name`, metadata size) by the
    /// caller, which owns the order of the contract's errors.
    pub async fn create(
        &self,
        who: &Identity,
        id: RoomId,
        name: Option<String>,
        private: bool,
        metadata: Option<serde_json::Value>,
    ) -> ServiceResult<RoomInfo> {
        self.write_limiter
            .check(&who.user_id)
            .await
            .map_err(ServiceError::RateLimited)?;
        let name = name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| id.as_str().to_owned());
        let store = self.store.clone();
        let room = NewRoom {
            id: id.clone(),
            name,
            private,
            owner_id: who.user_id.clone(),
            metadata,
        };
        // a "no such room" remembered anywhere must go
        let (info, pos) = self
            .meta_cache
            .write(
                id.as_str().to_owned(),
                async move { store.create_room(room).await },
                |(info, _)| RoomMeta {
                    id: RoomId::parse(&info.id).expect("a stored room id is valid"),
                    private: info.private,
                    owner_id: info.owner_id.clone(),
                    epoch: info.epoch.clone(),
                },
            )
            .await?;
        self.ryw.wrote(&who.user_id, pos);
        Ok(info)
    }

    pub async fn list(
        &self,
        who: &Identity,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<Vec<RoomInfo>> {
        let from = self.ryw.read_for(&who.user_id);
        Ok(self
            .store
            .list_rooms(&who.user_id, who.admin, cursor, limit, from)
            .await?)
    }

    /// The room, or `not_found`.
    pub async fn meta(&self, room: &RoomId) -> ServiceResult<Arc<RoomMeta>> {
        let load = || async {
            let info = self.store.room(room, ReadFrom::Primary).await?;
            Ok(info.map(|info| RoomMeta {
                id: room.clone(),
                private: info.private,
                owner_id: info.owner_id,
                epoch: info.epoch,
            }))
        };
        self.meta_cache
            .get(room.as_str(), load)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("room {room} does not exist")))
    }

    /// Fresh room info (last_seq moves), or `not_found`.
    pub async fn info(&self, room: &RoomId) -> ServiceResult<RoomInfo> {
        self.store
            .room(room, ReadFrom::Primary)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("room {room} does not exist")))
    }

    /// Read access (and write: the contract gives both to the same people): public rooms to
    /// everyone; private rooms to the owner, members and admins.
    pub async fn check_access(
        &self,
        who: &Identity,
        room: &RoomId,
    ) -> ServiceResult<Arc<RoomMeta>> {
        let meta = self.meta(room).await?;
        if !meta.private || who.admin || meta.owner_id == who.user_id {
            return Ok(meta);
        }
        let load = || async {
            let member = self.store.is_member(room, &who.user_id).await?;
            Ok(member.then_some(Membership { member: true }))
        };
        let key = member_key(room, &who.user_id);
        if self.member_cache.get(&key, load).await?.is_some() {
            Ok(meta)
        } else {
            Err(ServiceError::forbidden(format!("room {room} is private")))
        }
    }

    /// `POST /rooms/{id}/members`: by the owner or an admin.
    pub async fn add_member(&self, who: &Identity, room: &str, user_id: &str) -> ServiceResult<()> {
        let room = RoomId::parse(room)?;
        UserId::parse(user_id)?;
        let meta = self.meta(&room).await?;
        if !(who.admin || meta.owner_id == who.user_id) {
            return Err(ServiceError::forbidden(
                "only the room's owner or an admin adds members",
            ));
        }
        self.write_limiter
            .check(&who.user_id)
            .await
            .map_err(ServiceError::RateLimited)?;
        let (store, by, member) = (self.store.clone(), who.user_id.clone(), user_id.to_owned());
        let write = {
            let room = room.clone();
            async move { store.add_member(&room, &member, &by).await }
        };
        let pos = self
            .member_cache
            .write(member_key(&room, user_id), write, |_| Membership {
                member: true,
            })
            .await?;
        self.ryw.wrote(&who.user_id, pos);
        Ok(())
    }

    /// `GET /rooms/{id}/members`: whoever may read the room; accounts joined in one query.
    pub async fn members(
        &self,
        who: &Identity,
        room: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> ServiceResult<Vec<MemberRow>> {
        let room = RoomId::parse(room)?;
        self.check_access(who, &room).await?;
        let from = self.ryw.read_for(&who.user_id);
        Ok(self.store.list_members(&room, cursor, limit, from).await?)
    }
}
