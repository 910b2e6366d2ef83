//! Who is online in a room, and typing: the realtime side of rooms, the same on every instance.

use std::sync::Arc;

use super::error::{ServiceError, ServiceResult};
use super::rooms::RoomsService;
use crate::auth::Identity;
use crate::bus::{Bus, BusEvent};
use crate::domain::RoomId;
use crate::shared_state::{Presence, RateLimiter};

pub struct PresenceService {
    rooms: Arc<RoomsService>,
    presence: Arc<dyn Presence>,
    bus: Arc<dyn Bus>,
    typing_limiter: Arc<dyn RateLimiter>,
}

impl PresenceService {
    pub fn new(
        rooms: Arc<RoomsService>,
        presence: Arc<dyn Presence>,
        bus: Arc<dyn Bus>,
        typing_limiter: Arc<dyn RateLimiter>,
    ) -> Self {
        PresenceService {
            rooms,
            presence,
            bus,
            typing_limiter,
        }
    }

    /// Connection `conn` of `user` joined `room`: `online` goes to the room's other sockets when
    /// it is the user's first there (across instances).
    pub async fn arrived(&self, room: &str, user: &str, conn: &str) {
        if self.presence.join(room, user, conn).await {
            self.announce(room, user, conn, true);
        }
    }

    /// Connection `conn` left `room` (leave or disconnect): `offline` when it was the user's last.
    pub async fn departed(&self, room: &str, user: &str, conn: &str) {
        if self.presence.leave(room, user, conn).await {
            self.announce(room, user, conn, false);
        }
    }

    fn announce(&self, room: &str, user: &str, conn: &str, online: bool) {
        self.bus.publish(BusEvent::Presence {
            room: room.to_owned(),
            user_id: user.to_owned(),
            online,
            origin: conn.to_owned(),
        });
    }

    /// `typing`: to the room's sockets of other users, within the typing rate.
    pub async fn typing(&self, who: &Identity, room: &RoomId) -> ServiceResult<()> {
        self.rooms.check_access(who, room).await?;
        self.typing_limiter
            .check(&who.user_id)
            .await
            .map_err(ServiceError::RateLimited)?;
        self.bus.publish(BusEvent::Typing {
            room: room.as_str().to_owned(),
            user_id: who.user_id.clone(),
        });
        Ok(())
    }

    /// `presence`: the users online in `room`, for a reader with access.
    pub async fn online(&self, who: &Identity, room: &RoomId) -> ServiceResult<Vec<String>> {
        self.rooms.check_access(who, room).await?;
        Ok(self.presence.online(room.as_str()).await)
    }
}
