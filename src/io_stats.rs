//! What each TCP connection has written, shared between the HTTP server (which counts) and the
//! gateway (which compares it with what a WebSocket session queued), so a socket's backlog —
//! bytes queued in this process and not yet handed to the kernel — can be bounded in bytes.
//! (The engine's own queue is bounded in packets only and offers no way to see its bytes.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Instant;

use parking_lot::Mutex;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// Counters of one TCP connection.
#[derive(Debug)]
pub struct IoCounters {
    written: AtomicU64,
    last_write_ms: AtomicU64,
}

impl Default for IoCounters {
    fn default() -> Self {
        IoCounters {
            written: AtomicU64::new(0),
            last_write_ms: AtomicU64::new(now_ms()),
        }
    }
}

impl IoCounters {
    pub fn wrote(&self, n: usize) {
        if n > 0 {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
            self.last_write_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Milliseconds since the connection last wrote anything.
    pub fn idle_ms(&self) -> u64 {
        now_ms().saturating_sub(self.last_write_ms.load(Ordering::Relaxed))
    }
}

/// The connection each WebSocket upgrade of an engine session (`sid`) arrived on.
#[derive(Default)]
pub struct Upgrades {
    by_sid: Mutex<HashMap<String, Weak<IoCounters>>>,
}

impl Upgrades {
    pub fn upgraded(&self, sid: &str, conn: &Arc<IoCounters>) {
        let mut map = self.by_sid.lock();
        if map.len() > 1024 {
            map.retain(|_, c| c.strong_count() > 0); // closed connections
        }
        map.insert(sid.to_owned(), Arc::downgrade(conn));
    }

    /// The connection of `sid`'s upgrade, taken out of the map (a session asks once).
    pub fn take(&self, sid: &str) -> Option<Arc<IoCounters>> {
        self.by_sid.lock().remove(sid)?.upgrade()
    }
}
