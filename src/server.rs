//! Wiring: config selects and builds each part, then serves HTTP and Socket.IO on one listener
//! until the shutdown future resolves, and drains in order.

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::serve::ListenerExt;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::auth::{Tokens, load_or_create_secret};
use crate::bus::Bus;
use crate::bus::local::LocalBus;
use crate::bus::redis::RedisBus;
use crate::cache::layered::LayeredCache;
use crate::cache::redis::RedisCache;
use crate::cache::{CacheSettings, Invalidate, RemoteCache};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::gateway::hub::Hub;
use crate::password::Passwords;
use crate::redis_conn::RedisConn;
use crate::services::commit::Committer;
use crate::services::messages::MessagesService;
use crate::services::rooms::RoomsService;
use crate::services::ryw::ReadYourWrites;
use crate::services::users::UsersService;
use crate::shared_state::local::{LocalPresence, LocalRateLimiter};
use crate::shared_state::redis::RedisRateLimiter;
use crate::shared_state::redis_presence::RedisPresence;
use crate::shared_state::{Presence, RateLimiter};
use crate::store::Store;
use crate::store::postgres::{PgSettings, PgStore};
use crate::store::sqlite::{SqliteSettings, SqliteStore};

/// Everything a request or an event handler may need; one per process.
pub struct AppState {
    pub config: Config,
    pub tokens: Tokens,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub presence: Arc<dyn Presence>,
    pub typing_limiter: Arc<dyn RateLimiter>,
    pub rooms: Arc<RoomsService>,
    pub users: Arc<UsersService>,
    /// Every cache, for the bus listener and the admin stats.
    pub caches: Vec<Arc<dyn Invalidate>>,
    pub redis: Option<Arc<RedisConn>>,
    pub messages: Arc<MessagesService>,
    pub committer: Committer,
    pub hub: Arc<Hub>,
    pub metrics: PrometheusHandle,
    closing: AtomicBool,
}

impl AppState {
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}

/// The process-wide Prometheus recorder (installed once, shared by every server in a process).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ];
            PrometheusBuilder::new()
                .set_buckets(&latency)
                .expect("non-empty buckets")
                .install_recorder()
                .expect("the metrics recorder is installed once")
        })
        .clone()
}

pub fn sqlite_settings(config: &Config) -> anyhow::Result<SqliteSettings> {
    let path = config
        .sqlite_path()
        .ok_or_else(|| anyhow::anyhow!("TSUNAGI_DATABASE_URL is not a sqlite:// URL"))?;
    Ok(SqliteSettings {
        path,
        synchronous: config.sqlite_synchronous.clone(),
        read_pool_size: config.db_read_pool_size,
        acquire_timeout: config.db_acquire_timeout,
        busy_timeout: config.db_busy_timeout,
        idle_timeout: config.db_idle_timeout,
        max_lifetime: config.db_max_lifetime,
        pool_warn_share: config.db_pool_warn_share,
    })
}

pub fn pg_settings(config: &Config) -> PgSettings {
    PgSettings {
        primary_url: config.database_url.clone(),
        replica_urls: config.replica_urls.clone(),
        application_name: config.db_application_name.clone(),
        pool_size: config.db_pool_size,
        replica_pool_size: config.db_read_pool_size,
        min_idle: config.db_min_idle,
        acquire_timeout: config.db_acquire_timeout,
        idle_timeout: config.db_idle_timeout,
        max_lifetime: config.db_max_lifetime,
        test_before_acquire: config.db_test_before_acquire,
        statement_timeout: config.db_statement_timeout,
        pool_warn_share: config.db_pool_warn_share,
        replica_max_lag: config.replica_max_lag,
        replica_check_interval: config.replica_check_interval,
    }
}

/// Migrates, then opens the store the configuration selects. (Boxed as `Send` explicitly:
/// sqlx's migrator futures otherwise trip the compiler's higher-ranked `Send` inference.)
fn open_store(config: &Config) -> BoxFuture<'_, anyhow::Result<Arc<dyn Store>>> {
    Box::pin(async move {
        let store: Arc<dyn Store> = if config.is_postgres() {
            let settings = pg_settings(config);
            crate::store::postgres::migrate(&settings).await?;
            Arc::new(PgStore::open(&settings).await?)
        } else {
            let settings = sqlite_settings(config)?;
            crate::store::sqlite::migrate(&settings).await?;
            Arc::new(SqliteStore::open(&settings).await?)
        };
        Ok(store)
    })
}

/// The token secret: configured, or (SQLite) generated once in the data directory.
pub fn jwt_secret(config: &Config) -> anyhow::Result<String> {
    if let Some(s) = &config.jwt_secret {
        return Ok(s.clone());
    }
    match config.data_dir() {
        Some(dir) => load_or_create_secret(&dir),
        None => anyhow::bail!("TSUNAGI_JWT_SECRET is required with PostgreSQL"),
    }
}

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    if config.is_postgres() {
        crate::store::postgres::migrate(&pg_settings(config)).await
    } else {
        crate::store::sqlite::migrate(&sqlite_settings(config)?).await
    }
}

/// Serves on `listener` until `shutdown` resolves, then: stops accepting, refuses new sends,
/// finishes queued commits, closes every socket, closes the database.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    crate::store::timing::set_slow_query_threshold_ms(config.slow_query_ms);
    let metrics = metrics_handle();
    let tokens = Tokens::new(jwt_secret(&config)?.as_bytes());
    let store = open_store(&config).await?;
    let redis = match &config.redis_url {
        Some(url) => Some(Arc::new(RedisConn::open(
            url,
            &config.redis_prefix,
            config.redis_timeout,
        )?)),
        None => None,
    };
    let bus: Arc<dyn Bus> = match &redis {
        Some(conn) => RedisBus::start(conn.clone(), config.bus_ack_timeout),
        None => Arc::new(LocalBus::default()),
    };
    let l2: Option<Arc<dyn RemoteCache>> = redis
        .as_ref()
        .map(|c| Arc::new(RedisCache::new(c.clone())) as Arc<dyn RemoteCache>);
    let cache_settings = CacheSettings {
        l1_capacity: config.cache_l1_capacity,
        l1_ttl: config.cache_l1_ttl,
        l2_ttl: config.cache_l2_ttl,
        negative_ttl: config.cache_negative_ttl,
    };
    let user_cache = Arc::new(LayeredCache::new(
        "users",
        cache_settings.clone(),
        l2.clone(),
        bus.clone(),
    ));
    let room_cache = Arc::new(LayeredCache::new(
        "rooms",
        cache_settings.clone(),
        l2.clone(),
        bus.clone(),
    ));
    let member_cache = Arc::new(LayeredCache::new(
        "members",
        cache_settings,
        l2,
        bus.clone(),
    ));
    let caches: Vec<Arc<dyn Invalidate>> =
        vec![user_cache.clone(), room_cache.clone(), member_cache.clone()];
    bus.on_invalidation(crate::cache::handler(caches.clone()));
    let presence: Arc<dyn Presence> = match &redis {
        Some(conn) => RedisPresence::start(conn.clone()),
        None => Arc::new(LocalPresence::default()),
    };
    // With Redis, every limit is shared by all instances (PROTOCOL §3 "Across instances").
    let limiter = |name: &'static str, per_second: f64, burst: u32| -> Arc<dyn RateLimiter> {
        match &redis {
            Some(conn) => Arc::new(RedisRateLimiter::new(conn.clone(), name, per_second, burst)),
            None => Arc::new(LocalRateLimiter::new(per_second, burst)),
        }
    };
    let send_limiter = limiter("send", config.send_rate, config.send_burst);
    let typing_limiter = limiter(
        "typing",
        config.typing_rate,
        config.typing_rate.ceil() as u32,
    );

    let ryw = Arc::new(ReadYourWrites::new(
        config.replica_max_lag,
        config.replica_check_interval,
    ));
    let committer = Committer::start(
        store.clone(),
        bus.clone(),
        ryw.clone(),
        config.group_commit_max,
    );
    let rooms = Arc::new(RoomsService::new(
        store.clone(),
        ryw.clone(),
        room_cache,
        member_cache,
    ));
    let login_limiter = limiter(
        "login",
        config.login_rate_per_min / 60.0,
        config.login_rate_per_min.ceil().max(1.0) as u32,
    );
    let users = Arc::new(UsersService::new(
        store.clone(),
        ryw.clone(),
        user_cache,
        Passwords::new(config.argon2_memory_kib, config.argon2_iterations)?,
        login_limiter,
        config.max_metadata_bytes,
    ));
    let messages = Arc::new(MessagesService::new(
        rooms.clone(),
        ryw,
        store.clone(),
        committer.clone(),
        send_limiter,
        limiter(
            "read",
            config.read_rate_kib,
            // at least two maximal pages at once, so a page is never refused forever
            (config.read_rate_kib * 4.0).clamp(2048.0, f64::from(u32::MAX)) as u32,
        ),
        config.max_message_bytes,
    ));
    let hub = Hub::new(store.clone());
    tokio::spawn(hub.clone().run(bus.subscribe()));

    let gateway = Gateway::new();
    let engine_config = Gateway::engine_config(config.max_message_bytes, config.socket_buffer);
    let shutdown_timeout = config.shutdown_timeout;
    let state = Arc::new(AppState {
        config,
        tokens,
        store: store.clone(),
        bus,
        presence,
        typing_limiter,
        rooms,
        users,
        caches,
        redis,
        messages,
        committer: committer.clone(),
        hub,
        metrics,
        closing: AtomicBool::new(false),
    });
    gateway.bind(state.clone());

    let pool_metrics = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                store.report_pool_metrics();
            }
        })
    };

    let app = crate::http::router(state.clone()).layer(
        engineioxide::layer::EngineIoLayer::from_config(gateway.clone(), engine_config),
    );

    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let drain = {
        let state = state.clone();
        let gateway = gateway.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: draining sends and closing sockets");
            state.closing.store(true, Ordering::Release);
            if tokio::time::timeout(shutdown_timeout, state.committer.drain())
                .await
                .is_err()
            {
                tracing::warn!("queued sends did not commit within the shutdown timeout");
            }
            // Let the acks of the last commits reach the sockets' buffers and the wire.
            tokio::time::sleep(Duration::from_millis(200)).await;
            gateway.close_all();
            stopped_tx.send(()).ok();
        }
    };
    // Small frames (acks, messages) must not wait for the peer's delayed ACK (Nagle).
    let listener = listener.tap_io(|tcp| {
        tcp.set_nodelay(true).ok();
    });
    let serve = axum::serve(listener, app.into_make_service()).with_graceful_shutdown(async move {
        stopped_rx.await.ok();
    });
    let mut drain_task = tokio::spawn(drain);
    let serve = serve.into_future();
    tokio::pin!(serve);
    // Open long-polls and WebSockets end when their sessions close; don't wait forever.
    let served = tokio::select! {
        r = &mut serve => r.map_err(anyhow::Error::from),
        _ = async {
            (&mut drain_task).await.ok();
            tokio::time::sleep(shutdown_timeout).await;
        } => {
            tracing::warn!("connections still open after the shutdown timeout");
            Ok(())
        }
    };
    pool_metrics.abort();
    store.close().await;
    tracing::info!("stopped");
    served
}
