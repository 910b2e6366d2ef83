//! The scale-out store: a PostgreSQL primary for every write and for reads that must not be
//! stale, and streaming read replicas for the rest (`replicas.rs`).
//!
//! Every connection sets `application_name` (per pool: `<name>-primary`, `<name>-replica-N`),
//! `statement_timeout` and `TimeZone=UTC` at connect. Seq is assigned under the room row's lock
//! (`SELECT … FOR UPDATE`), so any number of processes can append to one room without a gap.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Postgres, Row};

use super::archive::{ColdKey, ColdSettings, ColdStore, merge_history, open_cold};
use super::pool::InstrumentedPool;
use super::users::AuditRow;
use super::webhooks::{OutboxEvent, message_events};
use super::{
    Appended, HistoryPage, HistoryQuery, IdempotencyKey, NewMessage, NewRoom, ReadFrom, Store,
    StoreError, WritePos, assign_seqs, stored_key,
};
use super::{message_columns, room_columns};
use crate::at_rest::{Sealer, Stored, StoredMessage};
use crate::domain::{Message, RoomId, RoomInfo};
use crate::telemetry::Telemetry;

mod append;
mod archive;
pub mod cold;
mod jobs;
mod replicas;
mod sealed;
pub mod sensors;
mod state;
pub mod users;
mod webhooks;

pub use archive::{HISTORY_BACKWARD, HISTORY_FORWARD};
use replicas::{Replica, Replicas};

/// Pool and routing settings (README, "PostgreSQL").
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub primary_url: String,
    pub replica_urls: Vec<String>,
    pub application_name: String,
    pub pool_size: u32,
    pub replica_pool_size: u32,
    pub min_idle: u32,
    pub acquire_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub test_before_acquire: bool,
    pub statement_timeout: Duration,
    pub pool_warn_share: f64,
    pub replica_max_lag: Duration,
    pub replica_check_interval: Duration,
    /// The app's metrics and slow-query threshold.
    pub telemetry: Telemetry,
    /// Where archived messages are.
    pub cold: ColdSettings,
    /// Seals message content, state values and job payloads (encryption at rest).
    pub sealer: Arc<Sealer>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// `X/Y` (PostgreSQL's text form of an LSN) as one number.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

fn connect_options(url: &str, s: &PgSettings, pool: &str) -> Result<PgConnectOptions, StoreError> {
    let timeout_ms = s.statement_timeout.as_millis().to_string();
    Ok(PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Unavailable(format!("database URL: {e}")))?
        .application_name(&format!("{}-{pool}", s.application_name))
        .options([
            ("statement_timeout", timeout_ms.as_str()),
            ("TimeZone", "UTC"),
        ]))
}

/// A replica that does not hand out a connection quickly is skipped for the primary, which can
/// serve the read; waiting the full acquire timeout on a stopped replica would stall every read.
const REPLICA_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(300);

fn pool(
    url: &str,
    s: &PgSettings,
    name: &str,
    size: u32,
    acquire_timeout: Duration,
) -> Result<InstrumentedPool<Postgres>, StoreError> {
    let inner = PgPoolOptions::new()
        .max_connections(size)
        .min_connections(s.min_idle.min(size))
        .acquire_timeout(acquire_timeout)
        .idle_timeout(s.idle_timeout)
        .max_lifetime(s.max_lifetime)
        .test_before_acquire(s.test_before_acquire)
        // Connect lazily: a replica (or the primary) that is down at start must not stop tsunagi.
        .connect_lazy_with(connect_options(url, s, name)?);
    Ok(InstrumentedPool::new(
        name,
        inner,
        s.pool_warn_share,
        s.telemetry.clone(),
    ))
}

/// Runs the embedded migrations on the primary (sqlx holds an advisory lock meanwhile, so
/// several processes starting together migrate once); refuses a database a newer tsunagi migrated.
pub fn migrate(s: &PgSettings) -> futures::future::BoxFuture<'_, anyhow::Result<()>> {
    // Boxed as `Send` here, where lifetimes are concrete: sqlx's migrator future otherwise trips
    // the compiler's higher-ranked `Send` inference in callers.
    Box::pin(async move {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(s.acquire_timeout)
            .connect_with(connect_options(&s.primary_url, s, "migrate")?)
            .await?;
        let result = MIGRATOR.run(&pool).await;
        pool.close().await;
        match result {
            Ok(()) => Ok(()),
            Err(sqlx::migrate::MigrateError::VersionMissing(v)) => anyhow::bail!(
                "the database was migrated by a newer tsunagi (migration {v} is unknown to this \
                 binary); run the newer binary or restore a matching backup"
            ),
            Err(e) => Err(e.into()),
        }
    })
}

pub struct PgStore {
    /// The app's metrics and slow-query threshold.
    telemetry: Telemetry,
    call_timeout: Duration,
    primary: Arc<InstrumentedPool<Postgres>>,
    replicas: Arc<Replicas>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// Days whose readings partition is known to exist (see `sensors.rs`).
    known_days: parking_lot::Mutex<std::collections::HashSet<i64>>,
    cold: Arc<dyn ColdStore>,
    /// Cold storage is a table of the primary: a send looks archived client_ids up in its own
    /// transaction.
    cold_in_primary: bool,
    sealer: Arc<Sealer>,
    /// The current key is in `encryption_keys_in_use` (set after the first write's commit).
    key_registered: AtomicBool,
    /// When the one-statement append last declined because webhooks exist: for a while after,
    /// appends go straight to the transactional path (which enqueues their deliveries).
    webhooks_seen: parking_lot::Mutex<Option<std::time::Instant>>,
}

/// How long appends skip the one-statement path after it found webhooks.
const WEBHOOKS_RECHECK: Duration = Duration::from_secs(10);

// The hot statements, public so a test can `EXPLAIN` exactly what runs.

/// The idempotency lookup of a batch: (room, user, client_id) triples.
pub const MESSAGES_BY_CLIENT_IDS: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages JOIN UNNEST($1::text[], $2::text[], $3::text[]) \
     AS k(room_id, user_id, client_id) USING (room_id, user_id, client_id)"
);
/// Rooms a user may see, keyset-paginated by id.
pub const ROOMS_LIST: &str = concat!(
    "SELECT ",
    room_columns!(),
    " FROM rooms r WHERE r.id > $1 AND ($2 OR NOT r.private OR r.owner_id = $3 \
     OR EXISTS (SELECT 1 FROM room_members m WHERE m.room_id = r.id AND m.user_id = $3)) \
     ORDER BY r.id LIMIT $4"
);

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn room_from_row(r: &PgRow) -> RoomInfo {
    RoomInfo {
        id: r.get("id"),
        name: r.get("name"),
        private: r.get("private"),
        owner_id: r.get("owner_id"),
        epoch: r.get("epoch"),
        last_seq: r.get("last_seq"),
        metadata: r
            .get::<Option<sqlx::types::Json<serde_json::Value>>, _>("metadata")
            .map(|m| m.0),
        created_at: rfc3339(r.get("created_at")),
    }
}

/// A message row as stored (content still sealed, if it is); hot and cold rows alike.
fn stored_message_from_row(r: &PgRow) -> StoredMessage {
    StoredMessage {
        message: Message {
            id: r.get("id"),
            room: r.get("room_id"),
            seq: r.get("seq"),
            user_id: r.get("user_id"),
            content: r.get("content"),
            client_id: r.get("client_id"),
            created_at: rfc3339(r.get("created_at")),
        },
        content_key: r.get("content_key"),
    }
}

/// Message rows, opened.
fn open_messages<'r>(
    sealer: &Sealer,
    rows: impl IntoIterator<Item = &'r PgRow>,
) -> Result<Vec<Message>, StoreError> {
    rows.into_iter()
        .map(|r| Ok(sealer.open_message(stored_message_from_row(r))?))
        .collect()
}

/// A stored value as a `jsonb` column holds it (state values, job payloads): sealed, the JSON
/// string of its text; plaintext, the JSON itself.
fn to_jsonb(stored: &Stored) -> sqlx::types::Json<serde_json::Value> {
    sqlx::types::Json(match stored.key_id {
        Some(_) => serde_json::Value::String(stored.text.clone()),
        None => serde_json::from_str(&stored.text).unwrap_or_default(),
    })
}

/// The stored text of a `jsonb` column under `key_id` (see [`to_jsonb`]).
fn from_jsonb(value: serde_json::Value, key_id: Option<&str>) -> String {
    match (key_id, value) {
        (Some(_), serde_json::Value::String(text)) => text,
        (_, value) => value.to_string(),
    }
}

impl PgStore {
    /// Inside a write transaction: registers the current key as in use, the first time this
    /// process writes (a value is never committed under an unregistered key). Call
    /// [`Self::key_registered`] after the commit.
    async fn register_current_key(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
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
                    "INSERT INTO encryption_keys_in_use (key_id) VALUES ($1) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(current)
                .execute(&mut *conn),
            )
            .await?;
        Ok(())
    }

    /// After a commit that ran [`Self::register_current_key`].
    fn key_registered(&self) {
        if self.sealer.current().is_some() {
            self.key_registered.store(true, Ordering::Relaxed);
        }
    }
}

impl PgStore {
    pub async fn open(s: &PgSettings) -> anyhow::Result<Self> {
        let primary = Arc::new(pool(
            &s.primary_url,
            s,
            "primary",
            s.pool_size,
            s.acquire_timeout,
        )?);
        let replicas = s
            .replica_urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let timeout = s.acquire_timeout.min(REPLICA_ACQUIRE_TIMEOUT);
                pool(
                    url,
                    s,
                    &format!("replica-{i}"),
                    s.replica_pool_size,
                    timeout,
                )
                .map(|p| Arc::new(Replica::new(p)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let replicas = Arc::new(Replicas::new(replicas));
        let watcher = (!replicas.all.is_empty()).then(|| {
            tokio::spawn(replicas.clone().watch(
                primary.clone(),
                s.replica_check_interval,
                s.replica_max_lag,
            ))
        });
        // statement_timeout 0 means none on the server; the client side still gives up
        let statement = if s.statement_timeout.is_zero() {
            Duration::from_secs(60)
        } else {
            s.statement_timeout
        };
        Ok(PgStore {
            telemetry: s.telemetry.clone(),
            call_timeout: s.acquire_timeout + statement + Duration::from_secs(2),
            primary,
            replicas,
            watcher,
            known_days: Default::default(),
            cold: open_cold(&s.cold, s.telemetry.clone()).await?,
            cold_in_primary: matches!(
                s.cold.location,
                super::archive::ColdLocation::Postgres {
                    in_primary: true,
                    ..
                }
            ),
            sealer: s.sealer.clone(),
            key_registered: AtomicBool::new(false),
            webhooks_seen: Default::default(),
        })
    }

    /// The primary's WAL position after a commit. If it cannot be read (the commit did happen),
    /// the position is "beyond everything": that writer's next reads go to the primary.
    async fn commit_position(&self, conn: &mut PgConnection) -> WritePos {
        // Without replicas every read is on the primary: no position is needed, and the round
        // trip is saved.
        if self.replicas.all.is_empty() {
            return WritePos::default();
        }
        let row = self
            .telemetry
            .timed(
                "wal_position",
                sqlx::query("SELECT pg_current_wal_lsn()::text").fetch_one(&mut *conn),
            )
            .await;
        row.ok()
            .and_then(|r| parse_lsn(&r.get::<String, _>(0)))
            .map(WritePos)
            .unwrap_or(WritePos(u64::MAX))
    }

    /// No database call may hang past this, whatever the network does (a partition would
    /// otherwise hold a task until TCP gives up): the acquire wait, the statement, a margin.
    fn bounded<'a, T: 'a>(
        &'a self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'a {
        let limit = self.call_timeout;
        async move {
            tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the database did not answer in time".into(),
                ))
            })
        }
    }

    /// Runs a read on a replica chosen for `from`, falling back to the primary when none is
    /// fit or the replica fails (it is then taken out of rotation until a check finds it well).
    async fn read<T, F>(&self, from: ReadFrom, run: F) -> Result<T, StoreError>
    where
        F: for<'c> Fn(
                &'c mut PgConnection,
                &'c Telemetry,
            ) -> futures::future::BoxFuture<'c, Result<T, StoreError>>
            + Sync,
        T: Send,
    {
        if let ReadFrom::Replica(after) = from
            && let Some(replica) = self.replicas.pick(after)
        {
            self.telemetry.record(|| {
                metrics::counter!("tsunagi_db_reads_total", "pool" => replica.pool.name.clone())
                    .increment(1)
            });
            let attempt = self.bounded(async {
                let mut conn = replica.pool.acquire().await?;
                run(&mut conn, &self.telemetry).await
            });
            match attempt.await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_connection() => replica.mark_down(),
                // e.g. a query cancelled by a conflict with recovery: the primary can answer
                Err(e) => {
                    tracing::debug!(pool = %replica.pool.name, error = %e, "replica read failed")
                }
            }
        }
        self.telemetry.record(|| {
            metrics::counter!("tsunagi_db_reads_total", "pool" => "primary").increment(1)
        });
        self.bounded(async {
            let mut conn = self.primary.acquire().await?;
            run(&mut conn, &self.telemetry).await
        })
        .await
    }
}

async fn audit(t: &Telemetry, conn: &mut PgConnection, row: &AuditRow) -> Result<(), StoreError> {
    t.timed(
        "audit_insert",
        sqlx::query(
            "INSERT INTO audit_log (at, actor_id, action, target, old_value, new_value) \
             VALUES (now(), $1, $2, $3, $4, $5)",
        )
        .bind(&row.actor)
        .bind(row.action)
        .bind(&row.target)
        .bind(row.old.as_ref().map(sqlx::types::Json))
        .bind(sqlx::types::Json(&row.new))
        .execute(&mut *conn),
    )
    .await?;
    Ok(())
}

impl PgStore {
    async fn create_room_inner(&self, room: NewRoom) -> Result<(RoomInfo, WritePos), StoreError> {
        let now = Utc::now();
        let info = RoomInfo {
            id: room.id.as_str().to_owned(),
            name: room.name,
            private: room.private,
            owner_id: room.owner_id,
            epoch: uuid::Uuid::new_v4().simple().to_string(),
            last_seq: 0,
            metadata: room.metadata,
            created_at: rfc3339(now),
        };
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        let inserted = self
            .telemetry
            .timed(
                "room_insert",
                sqlx::query(
                    "INSERT INTO rooms (id, name, private, owner_id, epoch, last_seq, created_at, \
                 metadata) VALUES ($1, $2, $3, $4, $5, 0, $6, $7) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&info.id)
                .bind(&info.name)
                .bind(info.private)
                .bind(&info.owner_id)
                .bind(&info.epoch)
                .bind(now)
                .bind(info.metadata.clone().map(sqlx::types::Json))
                .execute(&mut *tx),
            )
            .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("room {}", info.id)));
        }
        audit(&self.telemetry, &mut tx, &AuditRow::room_created(&info)).await?;
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
        Ok((info, self.commit_position(&mut conn).await))
    }
    async fn add_member_inner(
        &self,
        room: &RoomId,
        user_id: &str,
        by: &str,
    ) -> Result<WritePos, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        let done = self
            .telemetry
            .timed(
                "member_insert",
                sqlx::query(
                    "INSERT INTO room_members (room_id, user_id, added_by, added_at) \
                 VALUES ($1, $2, $3, now()) ON CONFLICT DO NOTHING",
                )
                .bind(room.as_str())
                .bind(user_id)
                .bind(by)
                .execute(&mut *tx),
            )
            .await?;
        if done.rows_affected() > 0 {
            audit(
                &self.telemetry,
                &mut tx,
                &AuditRow::member_added(room, user_id, by),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(self.commit_position(&mut conn).await)
    }
    async fn is_member_inner(&self, room: &RoomId, user_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let row = self
            .telemetry
            .timed(
                "member_exists",
                sqlx::query("SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2")
                    .bind(room.as_str())
                    .bind(user_id)
                    .fetch_optional(&mut *conn),
            )
            .await?;
        Ok(row.is_some())
    }
    async fn append_inner(
        &self,
        batch: &[NewMessage],
    ) -> Result<(Vec<Appended>, WritePos), StoreError> {
        let recent_webhooks = self
            .webhooks_seen
            .lock()
            .is_some_and(|t| t.elapsed() < WEBHOOKS_RECHECK);
        if !recent_webhooks {
            match self.append_one_statement(batch).await? {
                Ok(done) => return Ok(done),
                Err(append::Declined::Webhooks) => {
                    *self.webhooks_seen.lock() = Some(std::time::Instant::now())
                }
                Err(append::Declined::Other) => {}
            }
        }
        self.append_transaction(batch).await
    }

    /// The transactional append: every case (webhooks, cold client_ids, the first write under
    /// a key), in several round trips.
    async fn append_transaction(
        &self,
        batch: &[NewMessage],
    ) -> Result<(Vec<Appended>, WritePos), StoreError> {
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        // Lock the batch's rooms in id order (no deadlock between processes); from here until
        // commit nobody else appends to them, and every earlier append is visible.
        let rooms: Vec<String> = batch
            .iter()
            .map(|m| m.room.as_str().to_owned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let locked = self
            .telemetry
            .timed(
                "rooms_lock",
                sqlx::query(
                    "SELECT id, last_seq, archived_seq, epoch FROM rooms WHERE id = ANY($1) \
                     ORDER BY id FOR UPDATE",
                )
                .bind(&rooms)
                .fetch_all(&mut *tx),
            )
            .await?;
        let mut last_seq: HashMap<String, i64> = locked
            .iter()
            .map(|r| (r.get("id"), r.get("last_seq")))
            .collect();

        // Every known (room, user, client_id) of the batch, in one query.
        let keyed: Vec<&NewMessage> = batch.iter().filter(|m| m.client_id.is_some()).collect();
        let mut known: HashMap<IdempotencyKey, Message> = HashMap::new();
        if !keyed.is_empty() {
            let rows = self
                .telemetry
                .timed(
                    "messages_by_client_ids",
                    sqlx::query(MESSAGES_BY_CLIENT_IDS)
                        .bind(keyed.iter().map(|m| m.room.as_str()).collect::<Vec<_>>())
                        .bind(keyed.iter().map(|m| m.user_id.as_str()).collect::<Vec<_>>())
                        .bind(
                            keyed
                                .iter()
                                .map(|m| m.client_id.as_deref().unwrap_or(""))
                                .collect::<Vec<_>>(),
                        )
                        .fetch_all(&mut *tx),
                )
                .await?;
            for m in open_messages(&self.sealer, &rows)? {
                known.insert(stored_key(&m), m);
            }
            // Keys not hot may be archived (only in rooms with archived messages). Under the
            // rooms' locks their markers cannot move: what is not hot is cold, committed.
            let cold_keys: Vec<ColdKey> = keyed
                .iter()
                .filter_map(|m| {
                    let key = m.key()?;
                    let room = locked.iter().find(|r| r.get::<&str, _>("id") == key.0)?;
                    (!known.contains_key(&key) && room.get::<i64, _>("archived_seq") > 0)
                        .then(|| (key.0, room.get("epoch"), key.1, key.2))
                })
                .collect();
            if !cold_keys.is_empty() {
                let found = if self.cold_in_primary {
                    cold::by_client_ids(&mut tx, &self.telemetry, &self.sealer, &cold_keys).await?
                } else {
                    self.cold.by_client_ids(&cold_keys).await?
                };
                for first in found {
                    known.entry(stored_key(&first)).or_insert(first);
                }
            }
        }

        let now = Utc::now();
        let (out, new_rows) = assign_seqs(batch, known, &mut last_seq, &rfc3339(now))?;

        if !new_rows.is_empty() {
            self.register_current_key(&mut tx).await?;
            let (contents, keys): (Vec<String>, Vec<Option<String>>) = new_rows
                .iter()
                .map(|m| {
                    let s = self.sealer.seal_message(m);
                    (s.text, s.key_id)
                })
                .unzip();
            self.telemetry.timed(
                "messages_insert",
                sqlx::query(
                    "INSERT INTO messages (room_id, seq, id, user_id, content, client_id, created_at, \
                     content_key) SELECT r, s, i, u, c, k, $7, ck FROM UNNEST($1::text[], \
                     $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $8::text[]) \
                     AS t(r, s, i, u, c, k, ck)",
                )
                .bind(new_rows.iter().map(|m| m.room.as_str()).collect::<Vec<_>>())
                .bind(new_rows.iter().map(|m| m.seq).collect::<Vec<_>>())
                .bind(new_rows.iter().map(|m| m.id.as_str()).collect::<Vec<_>>())
                .bind(new_rows.iter().map(|m| m.user_id.as_str()).collect::<Vec<_>>())
                .bind(contents)
                .bind(new_rows.iter().map(|m| m.client_id.as_deref()).collect::<Vec<_>>())
                .bind(now)
                .bind(keys)
                .execute(&mut *tx),
            )
            .await?;
            self.enqueue_deliveries(&mut tx, &message_events(&new_rows))
                .await?;
            let (ids, seqs): (Vec<String>, Vec<i64>) = last_seq.into_iter().unzip();
            self.telemetry.timed(
                "rooms_advance_seq",
                sqlx::query(
                    "UPDATE rooms SET last_seq = v.s FROM UNNEST($1::text[], $2::int8[]) AS v(id, s) \
                     WHERE rooms.id = v.id AND rooms.last_seq < v.s",
                )
                .bind(ids)
                .bind(seqs)
                .execute(&mut *tx),
            )
            .await?;
        }
        self.telemetry.timed("commit", tx.commit()).await?;
        if !new_rows.is_empty() {
            self.key_registered();
        }
        Ok((out, self.commit_position(&mut conn).await))
    }
    async fn ping_inner(&self) -> Result<(), StoreError> {
        let mut conn = self.primary.acquire().await?;
        self.telemetry
            .timed("ping", sqlx::query("SELECT 1").execute(&mut *conn))
            .await?;
        self.cold.ping().await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_room(&self, room: NewRoom) -> Result<(RoomInfo, WritePos), StoreError> {
        self.bounded(self.create_room_inner(room)).await
    }

    async fn room(&self, id: &RoomId, from: ReadFrom) -> Result<Option<RoomInfo>, StoreError> {
        let id = id.as_str().to_owned();
        self.read(from, move |conn, t| {
            let id = id.clone();
            Box::pin(async move {
                let row = t
                    .timed(
                        "room_by_id",
                        sqlx::query(concat!(
                            "SELECT ",
                            room_columns!(),
                            " FROM rooms WHERE id = $1"
                        ))
                        .bind(id)
                        .fetch_optional(conn),
                    )
                    .await?;
                Ok(row.as_ref().map(room_from_row))
            })
        })
        .await
    }

    async fn list_rooms(
        &self,
        viewer: &str,
        admin: bool,
        cursor: Option<&str>,
        limit: u32,
        from: ReadFrom,
    ) -> Result<Vec<RoomInfo>, StoreError> {
        let viewer = viewer.to_owned();
        let cursor = cursor.unwrap_or("").to_owned();
        self.read(from, move |conn, t| {
            let (viewer, cursor) = (viewer.clone(), cursor.clone());
            Box::pin(async move {
                let rows = t
                    .timed(
                        "rooms_list",
                        sqlx::query(ROOMS_LIST)
                            .bind(cursor)
                            .bind(admin)
                            .bind(viewer)
                            .bind(limit as i64)
                            .fetch_all(conn),
                    )
                    .await?;
                Ok(rows.iter().map(room_from_row).collect())
            })
        })
        .await
    }

    async fn add_member(
        &self,
        room: &RoomId,
        user_id: &str,
        by: &str,
    ) -> Result<WritePos, StoreError> {
        self.bounded(self.add_member_inner(room, user_id, by)).await
    }

    async fn is_member(&self, room: &RoomId, user_id: &str) -> Result<bool, StoreError> {
        self.bounded(self.is_member_inner(room, user_id)).await
    }

    async fn append(&self, batch: &[NewMessage]) -> Result<(Vec<Appended>, WritePos), StoreError> {
        self.bounded(self.append_inner(batch)).await
    }

    async fn history(
        &self,
        room: &RoomId,
        q: HistoryQuery,
        from: ReadFrom,
    ) -> Result<HistoryPage, StoreError> {
        let (mark, hot) = self.hot_history(room.as_str(), &q, from).await?;
        merge_history(q, hot, room.as_str(), &mark, &*self.cold).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(self.ping_inner()).await
    }

    fn report_pool_metrics(&self) {
        self.primary.report();
        for r in &self.replicas.all {
            r.pool.report();
        }
    }

    fn pool_stats(&self) -> serde_json::Value {
        let mut pools = vec![self.primary.stats()];
        pools.extend(self.replicas.all.iter().map(|r| r.pool.stats()));
        if let serde_json::Value::Array(cold) = self.cold.pool_stats() {
            pools.extend(cold);
        }
        serde_json::Value::Array(pools)
    }

    async fn close(&self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
        self.primary.inner.close().await;
        for r in &self.replicas.all {
            r.pool.inner.close().await;
        }
        self.cold.close().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lsn_text() {
        assert_eq!(super::parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(super::parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(super::parse_lsn("nope"), None);
    }
}
