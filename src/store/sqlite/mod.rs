//! The embedded store: one SQLite file in WAL mode, one writer connection (SQLite allows one
//! writer at a time; queuing in our pool is cheaper than `SQLITE_BUSY` retries) and a separate
//! read pool, so history reads never wait behind a group commit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, Sqlite, SqliteConnection};

use super::archive::{ColdKey, ColdSettings, ColdStore, merge_history, open_cold};
use super::pool::InstrumentedPool;
use super::room_columns;
use super::users::AuditRow;
use super::webhooks::{OutboxEvent, message_events};
use super::{
    Appended, HistoryPage, HistoryQuery, IdempotencyKey, NewMessage, NewRoom, ReadFrom, Store,
    StoreError, WritePos, assign_seqs, stored_key,
};
use crate::at_rest::{Sealer, StoredMessage};
use crate::domain::{Message, RoomId, RoomInfo, now_rfc3339};

/// Settings of the embedded store (README, "Configuration").
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    pub path: PathBuf,
    /// `FULL` (default): a commit survives power loss. `NORMAL`: survives a process crash only.
    pub synchronous: String,
    /// Under steady writes the WAL is rewound when a checkpoint leaves more than this, and a
    /// rewound WAL file is cut back to it (`journal_size_limit`). `TSUNAGI_SQLITE_WAL_MAX_MB`.
    pub wal_max_bytes: u64,
    pub read_pool_size: u32,
    pub acquire_timeout: Duration,
    pub busy_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub pool_warn_share: f64,
    /// The app's metrics and slow-query threshold.
    pub telemetry: crate::telemetry::Telemetry,
    /// Where archived messages are.
    pub cold: ColdSettings,
    /// Seals message content, state values and job payloads (encryption at rest).
    pub sealer: Arc<Sealer>,
}

mod archive;
pub mod cold;
mod jobs;
mod sealed;
mod sensors;
mod state;
mod users;
mod webhooks;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    telemetry: crate::telemetry::Telemetry,
    writer: InstrumentedPool<Sqlite>,
    reader: InstrumentedPool<Sqlite>,
    checkpointer: tokio::task::JoinHandle<()>,
    cold: Arc<dyn ColdStore>,
    sealer: Arc<Sealer>,
    /// The current key is in `encryption_keys_in_use` (set after the first write's commit).
    key_registered: AtomicBool,
}

/// What the background checkpointer and the writer share: whether the WAL is due for a rewind,
/// and a lock that keeps their checkpoints apart (SQLite lets one run at a time and answers a
/// second with busy: a writer's pass lost that way left the WAL growing).
#[derive(Default)]
struct WalRewind {
    due: AtomicBool,
    passes: tokio::sync::Mutex<()>,
    /// The writer has taken its turn.
    taken: tokio::sync::Notify,
}

/// Between two background checkpoints: usually, and while the WAL fills (a quarter of
/// `wal_max_bytes` or more), so that steady writes overrun the limit by about one pass's writes.
const CHECKPOINT_IDLE: Duration = Duration::from_millis(250);
const CHECKPOINT_BUSY: Duration = Duration::from_millis(20);

/// Copies the WAL back into the database file from a connection of its own, four times a second
/// (more often while it fills). SQLite's automatic checkpoint would run inside a commit on the
/// writer and add the copy and an fsync of the database file to that commit's latency; PASSIVE
/// never waits for readers or the writer.
///
/// But SQLite rewinds the WAL only when a write begins with every frame copied back, and under
/// steady writes a commit lands while each background checkpoint runs: the WAL grew by every page
/// written (2 GB in 18 s of the group-commit bench, docs/performance.md). So when a checkpoint
/// leaves more than `wal_max_bytes` ([`SqliteSettings`]), it sets [`WalRewind`]'s `due`, and the
/// writer runs a passive checkpoint of its own before its next transaction (`before_acquire` in
/// [`SqliteStore::open`]): no commit can land during it, so it copies the few frames written
/// since this one, and the write after it starts the WAL from its beginning, overwriting the
/// file's blocks in place. (A RESTART checkpoint from here would have to catch the writer's lock
/// between two batches of a busy committer, which polling rarely does: 60 ms a try, measured.)
async fn checkpoint_loop(
    opts: SqliteConnectOptions,
    rewind_frames: i64,
    rewind: Arc<WalRewind>,
    telemetry: crate::telemetry::Telemetry,
) {
    use sqlx::ConnectOptions;
    let mut conn = None;
    let mut next = CHECKPOINT_IDLE;
    loop {
        tokio::time::sleep(next).await;
        next = CHECKPOINT_IDLE;
        if conn.is_none() {
            conn = opts.connect().await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        // The writer takes its turn before its next transaction: wait for it rather than pass
        // beside it. When none comes (no writes), a pass of our own copies the tail as well, and
        // the next write starts the WAL over.
        if rewind.due.load(Ordering::Relaxed)
            && tokio::time::timeout(CHECKPOINT_IDLE, rewind.taken.notified())
                .await
                .is_ok()
        {
            next = CHECKPOINT_BUSY;
            continue;
        }
        let _pass = rewind.passes.lock().await;
        match checkpoint(c, rewind_frames, &rewind, &telemetry).await {
            Ok(frames) if frames.saturating_mul(4) >= rewind_frames => next = CHECKPOINT_BUSY,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed");
                conn = None;
            }
        }
    }
}

/// One background pass; when the WAL is long, a second one right after it (it copies only what
/// was committed during the first), so that the writer's own pass has a short tail to copy.
/// Returns the frames the WAL held.
async fn checkpoint(
    c: &mut SqliteConnection,
    rewind_frames: i64,
    rewind: &WalRewind,
    telemetry: &crate::telemetry::Telemetry,
) -> Result<i64, sqlx::Error> {
    // (busy, frames in the WAL, frames copied back)
    let passive = || sqlx::query("PRAGMA wal_checkpoint(PASSIVE)");
    // fetch_all, not fetch_one: the statement runs to its end and is reset, holding nothing
    let first = telemetry
        .timed("wal_checkpoint", passive().fetch_all(&mut *c))
        .await?;
    let frames: i64 = first.first().map_or(0, |r| r.get(1));
    if frames >= rewind_frames {
        telemetry
            .timed("wal_checkpoint", passive().execute(&mut *c))
            .await?;
        rewind.due.store(true, Ordering::Relaxed);
    }
    Ok(frames)
}

fn options(s: &SqliteSettings) -> Result<SqliteConnectOptions, StoreError> {
    let sync = SqliteSynchronous::from_str(&s.synchronous)
        .map_err(|e| StoreError::Unavailable(format!("synchronous: {e}")))?;
    Ok(SqliteConnectOptions::new()
        .filename(&s.path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sync)
        .busy_timeout(s.busy_timeout)
        .foreign_keys(true)
        // Statement journals (each multi-row write of a batch keeps one, to undo itself alone)
        // and temporary B-trees in memory: on disk, a batch of 50 messages in 50 rooms wrote
        // ~100 journal pages to a temp file besides its WAL frames (docs/performance.md).
        .pragma("temp_store", "memory"))
}

/// Runs the embedded migrations; refuses a database that a newer tsunagi has migrated.
pub fn migrate(s: &SqliteSettings) -> futures::future::BoxFuture<'_, anyhow::Result<()>> {
    // Boxed as `Send` here, where lifetimes are concrete: sqlx's migrator future otherwise trips
    // the compiler's higher-ranked `Send` inference in callers.
    Box::pin(async move {
        if let Some(dir) = s.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options(s)?)
            .await?;
        let result = MIGRATOR.run(&pool).await;
        pool.close().await;
        match result {
            Ok(()) => Ok(()),
            Err(sqlx::migrate::MigrateError::VersionMissing(v)) => anyhow::bail!(
                "the database {} was migrated by a newer tsunagi (migration {v} is unknown to this \
                 binary); run the newer binary or restore a matching backup",
                s.path.display()
            ),
            Err(e) => Err(e.into()),
        }
    })
}

impl SqliteStore {
    /// Opens the pools. Run [`migrate`] first.
    pub async fn open(s: &SqliteSettings) -> anyhow::Result<Self> {
        let opts = options(s)?;
        let rewind = Arc::new(WalRewind::default());
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(s.acquire_timeout)
            .max_lifetime(s.max_lifetime)
            .idle_timeout(None)
            .before_acquire({
                let (rewind, telemetry) = (rewind.clone(), s.telemetry.clone());
                move |conn, _| {
                    let (rewind, telemetry) = (rewind.clone(), telemetry.clone());
                    Box::pin(async move {
                        // see checkpoint_loop: the WAL's tail, copied with no commit in between;
                        // a failed checkpoint fails no write (the next tick asks again)
                        if rewind.due.load(Ordering::Relaxed) {
                            let _pass = rewind.passes.lock().await;
                            rewind.due.store(false, Ordering::Relaxed);
                            let done = telemetry.timed(
                                "wal_checkpoint_writer",
                                sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_all(conn),
                            );
                            if let Err(e) = done.await {
                                tracing::warn!(error = %e, "WAL checkpoint on the writer failed");
                            }
                            rewind.taken.notify_one();
                        }
                        Ok(true)
                    })
                }
            })
            .connect_with(
                opts.clone()
                    .pragma("wal_autocheckpoint", "0")
                    // a rewound WAL keeps its file; past a burst, give the excess back
                    .pragma("journal_size_limit", s.wal_max_bytes.to_string()),
            )
            .await?;
        // 4 KiB pages (SQLite's default, which tsunagi keeps), each a frame of the WAL
        let rewind_frames = i64::try_from(s.wal_max_bytes / 4096).unwrap_or(i64::MAX);
        let checkpointer = tokio::spawn(checkpoint_loop(
            opts.clone(),
            rewind_frames,
            rewind,
            s.telemetry.clone(),
        ));
        let reader = SqlitePoolOptions::new()
            .max_connections(s.read_pool_size)
            .min_connections(1)
            .acquire_timeout(s.acquire_timeout)
            .idle_timeout(s.idle_timeout)
            .max_lifetime(s.max_lifetime)
            .test_before_acquire(true)
            .connect_with(opts.read_only(true))
            .await?;
        let t = &s.telemetry;
        let cold = open_cold(&s.cold, t.clone()).await?;
        Ok(SqliteStore {
            cold,
            telemetry: t.clone(),
            writer: InstrumentedPool::new("sqlite_writer", writer, s.pool_warn_share, t.clone()),
            reader: InstrumentedPool::new("sqlite_reader", reader, s.pool_warn_share, t.clone()),
            checkpointer,
            sealer: s.sealer.clone(),
            key_registered: AtomicBool::new(false),
        })
    }
}

// Macros, not consts: sqlx takes only literal SQL, and `concat!` keeps these literal.

fn room_from_row(r: &sqlx::sqlite::SqliteRow) -> RoomInfo {
    RoomInfo {
        id: r.get("id"),
        name: r.get("name"),
        private: r.get("private"),
        owner_id: r.get("owner_id"),
        epoch: r.get("epoch"),
        last_seq: r.get("last_seq"),
        metadata: r
            .get::<Option<String>, _>("metadata")
            .and_then(|m| serde_json::from_str(&m).ok()),
        created_at: r.get("created_at"),
    }
}

/// A message row as stored (content still sealed, if it is); hot and cold rows alike.
pub(super) fn stored_message_from_row(r: &sqlx::sqlite::SqliteRow) -> StoredMessage {
    StoredMessage {
        message: Message {
            id: r.get("id"),
            room: r.get("room_id"),
            seq: r.get("seq"),
            user_id: r.get("user_id"),
            content: r.get("content"),
            client_id: r.get("client_id"),
            created_at: r.get("created_at"),
        },
        content_key: r.get("content_key"),
    }
}

/// Message rows, opened.
pub(super) fn open_messages(
    sealer: &Sealer,
    rows: &[sqlx::sqlite::SqliteRow],
) -> Result<Vec<Message>, StoreError> {
    rows.iter()
        .map(|r| Ok(sealer.open_message(stored_message_from_row(r))?))
        .collect()
}

impl SqliteStore {
    /// Inside a write transaction: registers the current key as in use, the first time this
    /// process writes (a value is never committed under an unregistered key). Call
    /// [`Self::key_registered`] after the commit.
    pub(super) async fn register_current_key(
        &self,
        conn: &mut SqliteConnection,
    ) -> Result<(), StoreError> {
        let Some(current) = self.sealer.current() else {
            return Ok(());
        };
        if self.key_registered.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.telemetry
            .timed(
                "encryption_key_register",
                sqlx::query(
                    "INSERT INTO encryption_keys_in_use (key_id, registered_at) VALUES (?, ?) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(current)
                .bind(now_rfc3339())
                .execute(&mut *conn),
            )
            .await?;
        Ok(())
    }

    /// After a commit that ran [`Self::register_current_key`].
    pub(super) fn key_registered(&self) {
        if self.sealer.current().is_some() {
            self.key_registered.store(true, Ordering::Relaxed);
        }
    }
}

impl SqliteStore {
    /// One audit row, inside the caller's transaction.
    async fn audit(&self, conn: &mut SqliteConnection, row: &AuditRow) -> Result<(), StoreError> {
        self.telemetry
            .timed(
                "audit_insert",
                sqlx::query(
                    "INSERT INTO audit_log (at, actor_id, action, target, old_value, new_value) \
             VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(now_rfc3339())
                .bind(&row.actor)
                .bind(row.action)
                .bind(&row.target)
                .bind(row.old.as_ref().map(|v| v.to_string()))
                .bind(row.new.to_string())
                .execute(&mut *conn),
            )
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_room(&self, room: NewRoom) -> Result<(RoomInfo, WritePos), StoreError> {
        let info = RoomInfo {
            id: room.id.as_str().to_owned(),
            name: room.name,
            private: room.private,
            owner_id: room.owner_id,
            epoch: uuid::Uuid::new_v4().simple().to_string(),
            last_seq: 0,
            metadata: room.metadata,
            created_at: now_rfc3339(),
        };
        let mut conn = self.writer.acquire().await?;
        // IMMEDIATE: take the write lock up front, so another process writing the same file
        // makes us wait (busy_timeout) instead of failing a read-then-write upgrade.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let inserted = self
            .telemetry
            .timed(
                "room_insert",
                sqlx::query(
                    "INSERT INTO rooms (id, name, private, owner_id, epoch, last_seq, created_at, \
                 metadata) VALUES (?, ?, ?, ?, ?, 0, ?, ?) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&info.id)
                .bind(&info.name)
                .bind(info.private)
                .bind(&info.owner_id)
                .bind(&info.epoch)
                .bind(&info.created_at)
                .bind(info.metadata.as_ref().map(|m| m.to_string()))
                .execute(&mut *tx),
            )
            .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("room {}", info.id)));
        }
        self.audit(&mut tx, &AuditRow::room_created(&info)).await?;
        let event = OutboxEvent {
            event: "room.created",
            room: &info.id,
            data: &info,
        };
        let sealed = self.enqueue_deliveries(&mut tx, &[event]).await?;
        tx.commit().await?;
        if sealed {
            self.key_registered();
        }
        Ok((info, WritePos::default()))
    }

    async fn room(&self, id: &RoomId, _from: ReadFrom) -> Result<Option<RoomInfo>, StoreError> {
        let row = self
            .telemetry
            .timed(
                "room_by_id",
                sqlx::query(concat!(
                    "SELECT ",
                    room_columns!(),
                    " FROM rooms WHERE id = ?"
                ))
                .bind(id.as_str())
                .fetch_optional(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(row.as_ref().map(room_from_row))
    }

    async fn list_rooms(
        &self,
        viewer: &str,
        admin: bool,
        cursor: Option<&str>,
        limit: u32,
        _from: ReadFrom,
    ) -> Result<Vec<RoomInfo>, StoreError> {
        let rows = self
            .telemetry
            .timed(
                "rooms_list",
                sqlx::query(concat!(
                    "SELECT ",
                    room_columns!(),
                    " FROM rooms r WHERE r.id > ? AND (? OR r.private = 0 OR r.owner_id = ? OR \
                 EXISTS (SELECT 1 FROM room_members m WHERE m.room_id = r.id AND m.user_id = ?)) \
                 ORDER BY r.id LIMIT ?"
                ))
                .bind(cursor.unwrap_or(""))
                .bind(admin)
                .bind(viewer)
                .bind(viewer)
                .bind(limit as i64)
                .fetch_all(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(rows.iter().map(room_from_row).collect())
    }

    async fn add_member(
        &self,
        room: &RoomId,
        user_id: &str,
        by: &str,
    ) -> Result<WritePos, StoreError> {
        let mut conn = self.writer.acquire().await?;
        // IMMEDIATE: take the write lock up front, so another process writing the same file
        // makes us wait (busy_timeout) instead of failing a read-then-write upgrade.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let done = self
            .telemetry
            .timed(
                "member_insert",
                sqlx::query(
                    "INSERT INTO room_members (room_id, user_id, added_by, added_at) \
                 VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(room.as_str())
                .bind(user_id)
                .bind(by)
                .bind(now_rfc3339())
                .execute(&mut *tx),
            )
            .await?;
        if done.rows_affected() > 0 {
            self.audit(&mut tx, &AuditRow::member_added(room, user_id, by))
                .await?;
        }
        tx.commit().await?;
        Ok(WritePos::default())
    }

    async fn is_member(&self, room: &RoomId, user_id: &str) -> Result<bool, StoreError> {
        let row = self
            .telemetry
            .timed(
                "member_exists",
                sqlx::query("SELECT 1 FROM room_members WHERE room_id = ? AND user_id = ?")
                    .bind(room.as_str())
                    .bind(user_id)
                    .fetch_optional(&mut *self.reader.acquire().await?),
            )
            .await?;
        Ok(row.is_some())
    }

    async fn append(&self, batch: &[NewMessage]) -> Result<(Vec<Appended>, WritePos), StoreError> {
        let mut conn = self.writer.acquire().await?;
        // IMMEDIATE: take the write lock up front, so another process writing the same file
        // makes us wait (busy_timeout) instead of failing a read-then-write upgrade.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        // Set statements over JSON arrays (json_each), a handful per batch whatever its size:
        // each statement is a hop to sqlx's SQLite thread, and one per message made preparing
        // a batch of a hundred cost several times its fsync.
        let rooms: Vec<&str> = batch
            .iter()
            .map(|m| m.room.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let keys: std::collections::BTreeSet<IdempotencyKey> =
            batch.iter().filter_map(NewMessage::key).collect();
        // One statement reads what the batch needs before it writes: the rooms' seqs and the
        // client_ids already stored, two kinds of rows told apart by `kind` (a UNION ALL takes its
        // column names from its first SELECT, so a room's last_seq comes back as `seq`). Each
        // statement is a hop to sqlx's SQLite thread and back (~0.15 ms on a busy 2-core machine,
        // docs/performance.md), and a batch of fifty spends ~5 ms in all. Whether any webhook
        // exists rides along: with none (the usual case) the batch skips the webhooks statement.
        // Exact: the write lock taken at BEGIN keeps every other writer out until COMMIT.
        let rows = self
            .telemetry
            .timed(
                "rooms_and_client_ids",
                // qualified: json_each has an `id` column too
                sqlx::query(
                    "SELECT m.id, m.room_id, m.seq, m.user_id, m.content, m.client_id, \
                     m.created_at, m.content_key, 'message' AS kind, NULL AS archived_seq, \
                     NULL AS epoch, NULL AS any_webhook FROM json_each(?) k JOIN messages m \
                     ON m.room_id = k.value ->> 0 AND m.user_id = k.value ->> 1 \
                     AND m.client_id = k.value ->> 2 AND m.client_id IS NOT NULL \
                     UNION ALL \
                     SELECT id, NULL, last_seq, NULL, NULL, NULL, NULL, NULL, 'room', \
                     archived_seq, epoch, EXISTS (SELECT 1 FROM webhooks) \
                     FROM rooms WHERE id IN (SELECT value FROM json_each(?))",
                )
                .bind(serde_json::to_string(&keys).unwrap_or_default())
                .bind(serde_json::to_string(&rooms).unwrap_or_default())
                .fetch_all(&mut *tx),
            )
            .await?;
        let (room_rows, message_rows): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|r| r.get::<&str, _>("kind") == "room");
        let mut last_seq: HashMap<String, i64> = HashMap::new();
        // rooms with archived messages, and their epochs: where a client_id may be cold
        let mut archived: HashMap<String, String> = HashMap::new();
        for r in &room_rows {
            let id: String = r.get("id");
            if r.get::<i64, _>("archived_seq") > 0 {
                archived.insert(id.clone(), r.get("epoch"));
            }
            last_seq.insert(id, r.get("seq"));
        }
        if let Some(missing) = rooms.iter().find(|r| !last_seq.contains_key(**r)) {
            return Err(StoreError::NotFound(format!("room {missing}")));
        }
        let mut known = HashMap::new();
        for m in open_messages(&self.sealer, &message_rows)? {
            known.insert(stored_key(&m), m);
        }
        let cold_keys: Vec<ColdKey> = keys
            .into_iter()
            .filter(|k| !known.contains_key(k))
            .filter_map(|k| {
                let epoch = archived.get(&k.0)?.clone();
                Some((k.0, epoch, k.1, k.2))
            })
            .collect();
        // Under the write lock the marker cannot move: what is not hot is cold, committed.
        if !cold_keys.is_empty() {
            for first in self.cold.by_client_ids(&cold_keys).await? {
                known.entry(stored_key(&first)).or_insert(first);
            }
        }
        let (out, new_rows) = assign_seqs(batch, known, &mut last_seq, &now_rfc3339())?;
        self.register_current_key(&mut tx).await?;
        if !new_rows.is_empty() {
            let rows: Vec<serde_json::Value> = new_rows
                .iter()
                .map(|m| {
                    let content = self.sealer.seal_message(m);
                    serde_json::json!([
                        m.room,
                        m.seq,
                        m.id,
                        m.user_id,
                        content.text,
                        m.client_id,
                        m.created_at,
                        content.key_id
                    ])
                })
                .collect();
            self.telemetry
                .timed(
                    "messages_insert",
                    sqlx::query(
                        "INSERT INTO messages (room_id, seq, id, user_id, content, client_id, \
                         created_at, content_key) SELECT value ->> 0, value ->> 1, value ->> 2, \
                         value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7 \
                         FROM json_each(?)",
                    )
                    .bind(serde_json::Value::Array(rows).to_string())
                    .execute(&mut *tx),
                )
                .await?;
        }
        let any_webhook = room_rows
            .first()
            .is_some_and(|r| r.get::<bool, _>("any_webhook"));
        if any_webhook {
            self.enqueue_deliveries(&mut tx, &message_events(&new_rows))
                .await?;
        }
        if !new_rows.is_empty() {
            let seqs: Vec<(&String, &i64)> = last_seq.iter().collect();
            self.telemetry
                .timed(
                    "rooms_advance_seq",
                    sqlx::query(
                        "UPDATE rooms SET last_seq = k.value ->> 1 FROM json_each(?) k \
                         WHERE rooms.id = k.value ->> 0",
                    )
                    .bind(serde_json::to_string(&seqs).unwrap_or_default())
                    .execute(&mut *tx),
                )
                .await?;
        }
        self.telemetry.timed("commit", tx.commit()).await?;
        self.key_registered();
        Ok((out, WritePos::default()))
    }

    async fn history(
        &self,
        room: &RoomId,
        q: HistoryQuery,
        _from: ReadFrom,
    ) -> Result<HistoryPage, StoreError> {
        let (mark, hot) = self.hot_history(room.as_str(), &q).await?;
        merge_history(q, hot, room.as_str(), &mark, &*self.cold).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.telemetry
            .timed(
                "ping",
                sqlx::query("SELECT 1").execute(&mut *self.reader.acquire().await?),
            )
            .await?;
        self.cold.ping().await
    }

    fn report_pool_metrics(&self) {
        self.writer.report();
        self.reader.report();
    }

    fn pool_stats(&self) -> serde_json::Value {
        let mut pools = vec![self.writer.stats(), self.reader.stats()];
        if let serde_json::Value::Array(cold) = self.cold.pool_stats() {
            pools.extend(cold);
        }
        serde_json::Value::Array(pools)
    }

    async fn close(&self) {
        self.checkpointer.abort();
        self.writer.inner.close().await;
        self.reader.inner.close().await;
        self.cold.close().await;
    }
}
