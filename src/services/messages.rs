//! Sending and reading messages: the same rules for Socket.IO and HTTP.

use std::sync::Arc;

use super::commit::Committer;
use super::error::{ServiceError, ServiceResult};
use super::history_gate::HistoryGate;
use super::rooms::{RoomMeta, RoomsService};
use super::ryw::ReadYourWrites;
use crate::auth::Identity;
use crate::domain::{ClientId, Content, RoomId};
use crate::shared_state::RateLimiter;
use crate::store::{Appended, NewMessage, ReadFrom, Store};
pub use crate::store::{HistoryPage, HistoryQuery};

pub struct MessagesService {
    rooms: Arc<RoomsService>,
    ryw: Arc<ReadYourWrites>,
    store: Arc<dyn Store>,
    committer: Committer,
    send_limiter: Arc<dyn RateLimiter>,
    /// KiB of history per user and second sent over sockets (join and sync acks), which wait in
    /// the socket's queue until read: bounds what one client can make the server hold.
    read_limiter: Arc<dyn RateLimiter>,
    max_message_bytes: usize,
    /// Paces the history reads of join and sync (a reconnect storm's crowd queues here).
    history_gate: HistoryGate,
}

/// The most message JSON one page may carry. Acks wait in a socket's outgoing queue until the
/// client reads them; a page of 500 maximal messages could be ~50 MB. A cut page says `more`.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// Bytes of `m` as JSON.
fn json_len(m: &crate::domain::Message) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    serde_json::to_writer(&mut c, m).ok();
    c.0
}

/// Cuts `page` to [`MAX_PAGE_BYTES`] (always keeping one message), from the end away from its
/// paging direction: `keep_newest` pages (newest N, before_seq) drop their oldest items.
/// Returns the bytes kept.
pub fn cap_page(page: &mut HistoryPage, keep_newest: bool) -> usize {
    let mut total = 0;
    let mut kept = 0;
    let sizes: Vec<usize> = page.items.iter().map(json_len).collect();
    let order: Box<dyn Iterator<Item = &usize>> = if keep_newest {
        Box::new(sizes.iter().rev())
    } else {
        Box::new(sizes.iter())
    };
    for size in order {
        if kept > 0 && total + size > MAX_PAGE_BYTES {
            break;
        }
        total += size;
        kept += 1;
    }
    if kept < page.items.len() {
        page.more = true;
        if keep_newest {
            page.items.drain(..page.items.len() - kept);
        } else {
            page.items.truncate(kept);
        }
    }
    total
}

/// What `sync` answers.
pub struct SyncPage {
    pub epoch: String,
    pub page: HistoryPage,
}

impl MessagesService {
    // every part is built by App::build and handed in; a struct of them would only rename this
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rooms: Arc<RoomsService>,
        ryw: Arc<ReadYourWrites>,
        store: Arc<dyn Store>,
        committer: Committer,
        send_limiter: Arc<dyn RateLimiter>,
        read_limiter: Arc<dyn RateLimiter>,
        max_message_bytes: usize,
        history_gate: HistoryGate,
    ) -> Self {
        MessagesService {
            rooms,
            ryw,
            store,
            committer,
            send_limiter,
            read_limiter,
            max_message_bytes,
            history_gate,
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
    ) -> ServiceResult<impl Future<Output = ServiceResult<Appended>> + Send + 'static> {
        let room = RoomId::parse(room)?;
        if let Some(cid) = &client_id {
            ClientId::parse(cid)?;
        }
        let content = Content::parse(content, self.max_message_bytes)?.into_string();
        self.rooms.check_access(who, &room).await?;
        self.send_limiter
            .check(&who.user_id)
            .await
            .map_err(ServiceError::RateLimited)?;
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
    ) -> ServiceResult<Appended> {
        self.start_send(who, room, content, client_id).await?.await
    }

    /// The pacing of join/sync reads: a join runs its reads (history and state) in one turn.
    pub fn history_gate(&self) -> &HistoryGate {
        &self.history_gate
    }

    /// A slice of history, for a reader with access.
    pub async fn history(
        &self,
        who: &Identity,
        room: &RoomId,
        q: HistoryQuery,
    ) -> ServiceResult<HistoryPage> {
        self.rooms.check_access(who, room).await?;
        let from = self.ryw.read_for(&who.user_id);
        let mut page = self.store.history(room, q, from).await?;
        cap_page(&mut page, q.after_seq.is_none());
        Ok(page)
    }

    /// The newest messages, for a join; the caller has checked access and runs this through
    /// [`Self::history_gate`] (with the join's other read: one turn in the queue per join).
    pub async fn newest(
        &self,
        who: &Identity,
        meta: &RoomMeta,
        limit: u32,
    ) -> ServiceResult<HistoryPage> {
        let q = HistoryQuery {
            after_seq: None,
            before_seq: None,
            limit,
        };
        // From the primary: the join's delivery cursor starts at the end of this page, so a
        // stale page would skip messages already delivered to the room.
        let mut page = self.store.history(&meta.id, q, ReadFrom::Primary).await?;
        let bytes = cap_page(&mut page, true);
        self.charge_read(who, bytes).await?;
        Ok(page)
    }

    async fn charge_read(&self, who: &Identity, bytes: usize) -> ServiceResult<()> {
        let kib = u32::try_from(bytes / 1024 + 1).unwrap_or(u32::MAX);
        self.read_limiter
            .check_n(&who.user_id, kib)
            .await
            .map_err(ServiceError::RateLimited)
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
    ) -> ServiceResult<SyncPage> {
        self.rooms.check_access(who, room).await?;
        let read = async {
            let info = self.rooms.info(room).await?;
            if epoch.is_some_and(|e| e != info.epoch) || since_seq > info.last_seq {
                return Err(ServiceError::Reset);
            }
            let q = HistoryQuery {
                after_seq: Some(since_seq),
                before_seq: None,
                limit,
            };
            // From the primary: `reset` and "nothing missed" must be judged against the truth.
            Ok((info, self.store.history(room, q, ReadFrom::Primary).await?))
        };
        let (info, mut page) = self.history_gate.run(read).await?;
        let bytes = cap_page(&mut page, false);
        self.charge_read(who, bytes).await?;
        Ok(SyncPage {
            epoch: info.epoch,
            page,
        })
    }
}
