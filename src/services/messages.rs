//! Sending and reading messages: the same rules for Socket.IO and HTTP.

use std::sync::Arc;

use super::commit::Committer;
use super::rooms::{RoomMeta, RoomsService};
use super::ryw::ReadYourWrites;
use crate::auth::Identity;
use crate::domain::{RoomId, check_client_id, check_content};
use crate::error::{ApiError, ApiResult};
use crate::shared_state::RateLimiter;
use crate::store::{Appended, HistoryPage, HistoryQuery, NewMessage, ReadFrom, Store};

pub struct MessagesService {
    rooms: Arc<RoomsService>,
    ryw: Arc<ReadYourWrites>,
    store: Arc<dyn Store>,
    committer: Committer,
    send_limiter: Arc<dyn RateLimiter>,
    max_message_bytes: usize,
}

/// What `sync` answers.
pub struct SyncPage {
    pub epoch: String,
    pub page: HistoryPage,
}

impl MessagesService {
    pub fn new(
        rooms: Arc<RoomsService>,
        ryw: Arc<ReadYourWrites>,
        store: Arc<dyn Store>,
        committer: Committer,
        send_limiter: Arc<dyn RateLimiter>,
        max_message_bytes: usize,
    ) -> Self {
        MessagesService {
            rooms,
            ryw,
            store,
            committer,
            send_limiter,
            max_message_bytes,
        }
    }

    /// Checks a send in the contract's order (bad_request, too_large, not_found, forbidden,
    /// rate_limited), then queues it for commit and returns the wait for the commit. The queueing
    /// happens before this returns, so callers that await it in order keep their order.
    pub async fn start_send(
        &self,
        who: &Identity,
        room: &str,
        content: String,
        client_id: Option<String>,
    ) -> ApiResult<impl Future<Output = ApiResult<Appended>> + Send + 'static> {
        let room = RoomId::parse(room)?;
        if let Some(cid) = &client_id {
            check_client_id(cid)?;
        }
        check_content(&content, self.max_message_bytes)?;
        self.rooms.check_access(who, &room).await?;
        self.send_limiter
            .check(&who.user_id)
            .await
            .map_err(|retry_after_ms| ApiError::RateLimited { retry_after_ms })?;
        Ok(self.committer.enqueue(NewMessage {
            room,
            user_id: who.user_id.clone(),
            content,
            client_id,
        }))
    }

    pub async fn send(
        &self,
        who: &Identity,
        room: &str,
        content: String,
        client_id: Option<String>,
    ) -> ApiResult<Appended> {
        self.start_send(who, room, content, client_id).await?.await
    }

    /// A slice of history, for a reader with access.
    pub async fn history(
        &self,
        who: &Identity,
        room: &RoomId,
        q: HistoryQuery,
    ) -> ApiResult<HistoryPage> {
        self.rooms.check_access(who, room).await?;
        let from = self.ryw.read_for(&who.user_id);
        Ok(self.store.history(room, q, from).await?)
    }

    /// The newest messages, for a join; the caller has checked access.
    pub async fn newest(&self, meta: &RoomMeta, limit: u32) -> ApiResult<HistoryPage> {
        let q = HistoryQuery {
            after_seq: None,
            before_seq: None,
            limit,
        };
        // From the primary: the join's delivery cursor starts at the end of this page, so a
        // stale page would skip messages already delivered to the room.
        Ok(self.store.history(&meta.id, q, ReadFrom::Primary).await?)
    }

    /// Everything after `since_seq`, or `reset` when the client's position cannot be in this
    /// room's history (another epoch, or past its last seq).
    pub async fn sync(
        &self,
        who: &Identity,
        room: &RoomId,
        since_seq: i64,
        epoch: Option<&str>,
        limit: u32,
    ) -> ApiResult<SyncPage> {
        self.rooms.check_access(who, room).await?;
        let info = self.rooms.info(room).await?;
        if epoch.is_some_and(|e| e != info.epoch) || since_seq > info.last_seq {
            return Err(ApiError::Reset);
        }
        let q = HistoryQuery {
            after_seq: Some(since_seq),
            before_seq: None,
            limit,
        };
        // From the primary: `reset` and "nothing missed" must be judged against the truth.
        let page = self.store.history(room, q, ReadFrom::Primary).await?;
        Ok(SyncPage {
            epoch: info.epoch,
            page,
        })
    }
}
