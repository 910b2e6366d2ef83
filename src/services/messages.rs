//! Sending and reading messages: the same rules for Socket.IO and HTTP.

use std::sync::Arc;

use super::commit::Committer;
use super::error::{ServiceError, ServiceResult};
use super::history_gate::HistoryGate;
use super::rooms::{RoomMeta, RoomsService};
use super::ryw::ReadYourWrites;
use crate::auth::Identity;
use crate::domain::{ClientId, Content, RoomId};
use crate::hot_window::HotWindow;
use crate::shared_state::RateLimiter;
use crate::store::{Appended, NewMessage, ReadFrom, Store};
pub use crate::store::{HistoryPage, HistoryQuery};

pub struct MessagesService {
    rooms: Arc<RoomsService>,
    ryw: Arc<ReadYourWrites>,
    store: Arc<dyn Store>,
    /// The newest messages of recently read rooms: join and sync read there first.
    hot: Arc<HotWindow>,
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
        hot: Arc<HotWindow>,
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
            hot,
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

    pub fn hot_window(&self) -> &Arc<HotWindow> {
        &self.hot
    }

    /// The newest messages, for a join; the caller has checked access and runs this through
    /// [`Self::history_gate`] (with the join's other read: one turn in the queue per join).
    pub async fn newest(
        &self,
        who: &Identity,
        meta: &RoomMeta,
        limit: u32,
    ) -> ServiceResult<HistoryPage> {
        let mut page = match self.newest_hot(&meta.id, limit).await? {
            Some(page) => page,
            None => {
                let q = HistoryQuery {
                    after_seq: None,
                    before_seq: None,
                    limit,
                };
                let fill = self.hot.begin_fill(meta.id.as_str());
                // From the primary: the join's delivery cursor starts at the end of this page,
                // so a stale page would skip messages already delivered to the room.
                let page = self.store.history(&meta.id, q, ReadFrom::Primary).await?;
                if let Some(fill) = fill {
                    // the newest page ends where the room ended when it was read
                    let end = page.items.last().map_or(0, |m| m.seq);
                    self.hot.fill(fill, &page.items, Some(end));
                }
                page
            }
        };
        let bytes = cap_page(&mut page, true);
        self.charge_read(who, bytes).await?;
        Ok(page)
    }

    /// The newest page from the hot window, if it holds it. Fed by the room feed, the window
    /// may trail the primary: it answers only if it reaches the room's last seq there (asked
    /// only when the window has something to offer).
    async fn newest_hot(&self, room: &RoomId, limit: u32) -> ServiceResult<Option<HistoryPage>> {
        let last_seq = match self.hot.needs_last_seq() {
            false => None,
            true if self.hot.holds(room.as_str()) => Some(self.rooms.info(room).await?.last_seq),
            // nothing held: no seq is reached (the read counts as a miss)
            true => Some(i64::MAX),
        };
        Ok(self
            .hot
            .newest(room.as_str(), limit, last_seq)
            .map(|(items, more)| HistoryPage { items, more }))
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
        let meta = self.rooms.check_access(who, room).await?;
        // One instance: the window ends at the room's last acknowledged seq, and a room's epoch
        // never changes while it exists, so a window that reaches back to `since_seq` answers
        // without the room row (and without a turn at the history gate); everything else (a
        // `reset` included) is judged below.
        if !self.hot.needs_last_seq()
            && epoch.is_none_or(|e| e == meta.epoch)
            && let Some((items, more)) = self.hot.after(room.as_str(), since_seq, limit, None)
        {
            return self
                .sync_page(who, meta.epoch.clone(), HistoryPage { items, more })
                .await;
        }
        let read = async {
            let info = self.rooms.info(room).await?;
            if epoch.is_some_and(|e| e != info.epoch) || since_seq > info.last_seq {
                return Err(ServiceError::Reset);
            }
            if self.hot.needs_last_seq() {
                let hot = self
                    .hot
                    .after(room.as_str(), since_seq, limit, Some(info.last_seq));
                if let Some((items, more)) = hot {
                    return Ok((info.epoch, HistoryPage { items, more }));
                }
            }
            let q = HistoryQuery {
                after_seq: Some(since_seq),
                before_seq: None,
                limit,
            };
            let fill = self.hot.begin_fill(room.as_str());
            // From the primary: `reset` and "nothing missed" must be judged against the truth.
            let page = self.store.history(room, q, ReadFrom::Primary).await?;
            if let Some(fill) = fill {
                // a page with nothing after it ends where the room ended when it was read; one
                // with more after it can only widen a window
                let end = (!page.more).then(|| page.items.last().map_or(since_seq, |m| m.seq));
                self.hot.fill(fill, &page.items, end);
            }
            Ok((info.epoch, page))
        };
        let (epoch, page) = self.history_gate.run(read).await?;
        self.sync_page(who, epoch, page).await
    }

    async fn sync_page(
        &self,
        who: &Identity,
        epoch: String,
        mut page: HistoryPage,
    ) -> ServiceResult<SyncPage> {
        let bytes = cap_page(&mut page, false);
        self.charge_read(who, bytes).await?;
        Ok(SyncPage { epoch, page })
    }
}
