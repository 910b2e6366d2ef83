//! A socket's byte budget: what this process holds for it, queued and not yet written to the
//! kernel. The engine bounds its queue in packets only, so a client that never reads but answers
//! heartbeats could make the server hold hundreds of MB of large packets. For WebSocket sessions
//! the gateway counts the bytes it queues and the HTTP server counts the bytes the connection
//! wrote (`io_stats`); past the budget, or when nothing has been written for the stall bound
//! while bytes wait, the socket is disconnected as a slow consumer (it reconnects and `sync`s).
//! Long-polling sessions are bounded by the engine's heartbeat timeout instead (a client that
//! does not poll is closed within it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use engineioxide::TransportType;

use super::session::EngineSocket;
use crate::io_stats::{IoCounters, Upgrades};

/// Backlogs below this are never a stall: a quiet socket with an ack in flight is normal.
const STALL_MIN_BYTES: u64 = 64 * 1024;

#[derive(Clone, Copy)]
pub struct BudgetSettings {
    pub max_bytes: u64,
    pub stall_ms: u64,
}

pub struct Backlog {
    settings: BudgetSettings,
    upgrades: Arc<Upgrades>,
    /// Bytes queued since the session was bound to its connection.
    queued: AtomicU64,
    /// The WebSocket connection and what it had written when bound.
    link: OnceLock<(Arc<IoCounters>, u64)>,
}

impl Backlog {
    pub fn new(settings: BudgetSettings, upgrades: Arc<Upgrades>) -> Self {
        Backlog {
            settings,
            upgrades,
            queued: AtomicU64::new(0),
            link: OnceLock::new(),
        }
    }

    /// `len` bytes were queued for `socket`; true when the socket is over its budget or stalled.
    pub fn queued(&self, len: u64, socket: &EngineSocket) -> bool {
        let Some((conn, written_at_bind)) = self.link(socket) else {
            return false;
        };
        let queued = self.queued.fetch_add(len, Ordering::Relaxed) + len;
        let written = conn.written().saturating_sub(*written_at_bind);
        let backlog = queued.saturating_sub(written);
        backlog > self.settings.max_bytes
            || (backlog > STALL_MIN_BYTES && conn.idle_ms() > self.settings.stall_ms)
    }

    /// Bytes queued and not yet written; `None` while the session is not on a WebSocket.
    pub fn unwritten(&self, socket: &EngineSocket) -> Option<u64> {
        let (conn, written_at_bind) = self.link(socket)?;
        let written = conn.written().saturating_sub(*written_at_bind);
        Some(self.queued.load(Ordering::Relaxed).saturating_sub(written))
    }

    /// The connection once the session is on WebSocket: the upgrade's (polling first), or the
    /// handshake's own (WebSocket first).
    fn link(&self, socket: &EngineSocket) -> Option<&(Arc<IoCounters>, u64)> {
        if let Some(link) = self.link.get() {
            return Some(link);
        }
        if socket.transport_type() != TransportType::Websocket {
            return None;
        }
        let conn = self.upgrades.take(&socket.id.to_string()).or_else(|| {
            socket
                .req_parts
                .extensions
                .get::<Arc<IoCounters>>()
                .cloned()
        })?;
        let written = conn.written();
        Some(self.link.get_or_init(|| (conn, written)))
    }
}
