//! The application: its parts, and how the configuration builds them.
//!
//! Each engine module builds its own part from the config and hands back its health check
//! (`store::build`, `bus::build`, `Backplane::build`; presence, limiters and the L2 cache from
//! the backplane, which decides "Redis or in process" once). The edges (`http`, `gateway`) are
//! built on an [`App`]; `server` serves them and drains. Nothing here knows HTTP or Socket.IO.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::{Tokens, load_or_create_secret};
use crate::backplane::Backplane;
use crate::bus::Bus;
use crate::bus::ordered::{RoomFeed, StoreHistory};
use crate::cache::layered::LayeredCache;
use crate::cache::{CacheSettings, Invalidate};
use crate::config::Config;
use crate::health::HealthCheck;
use crate::hot_window::{HotWindow, Source as HotSource};
use crate::password::Passwords;
use crate::services::admin::AdminService;
use crate::services::archive::{ARCHIVE_JOB, ArchiveJob, Archiver};
use crate::services::commit::{CommitSettings, Committer};
use crate::services::dashboard::Dashboard;
use crate::services::jobs::Jobs;
use crate::services::messages::MessagesService;
use crate::services::presence::PresenceService;
use crate::services::rooms::RoomsService;
use crate::services::ryw::ReadYourWrites;
use crate::services::sensors::buffer::BufferSettings;
use crate::services::sensors::{SensorSettings, SensorsService};
use crate::services::state::StateService;
use crate::services::users::{AccountLimits, UsersService};
use crate::services::webhooks::WebhooksService;
use crate::services::webhooks::deliver::Deliveries;
use crate::shared_state::Limiters;
use crate::state_cache::StateCache;
use crate::store::Store;
use crate::store::webhooks::DELIVERY_JOB;
use crate::telemetry::Telemetry;

/// One running tsunagi: the services the edges call, and what operations look at.
pub struct App {
    pub config: Config,
    pub tokens: Tokens,
    pub rooms: Arc<RoomsService>,
    pub messages: Arc<MessagesService>,
    pub users: Arc<UsersService>,
    pub presence: Arc<PresenceService>,
    pub sensors: Arc<SensorsService>,
    pub state: Arc<StateService>,
    pub archiver: Arc<Archiver>,
    pub jobs: Arc<Jobs>,
    pub webhooks: WebhooksService,
    pub admin: AdminService,
    /// The sampled figures of the operations dashboard (`/admin`).
    pub dashboard: Arc<Dashboard>,
    /// Cancelled once when the process is asked to stop: edges refuse new work from then on.
    pub shutdown: CancellationToken,
    /// Every part's check, for `/readyz`.
    health: Vec<HealthCheck>,
    /// This app's metrics (every part records into it) and slow-query threshold.
    telemetry: Telemetry,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    committer: Committer,
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

impl App {
    /// Opens (and migrates) the store, connects the backplane and starts every background part.
    pub async fn build(config: Config) -> anyhow::Result<Arc<App>> {
        let telemetry = Telemetry::new(config.slow_query_ms);
        let tokens = Tokens::new(jwt_secret(&config)?.as_bytes());
        let (store, store_check) = crate::store::build(&config, &telemetry).await?;
        let (backplane, backplane_check) = Backplane::build(&config, &telemetry)?;
        let (bus, bus_check) = crate::bus::build(&backplane, &config);
        let health: Vec<HealthCheck> = [Some(store_check), backplane_check, Some(bus_check)]
            .into_iter()
            .flatten()
            .collect();

        let l2 = crate::cache::remote(&backplane);
        let settings = CacheSettings {
            l1_capacity: config.cache_l1_capacity,
            l1_ttl: config.cache_l1_ttl,
            l2_ttl: config.cache_l2_ttl,
            negative_ttl: config.cache_negative_ttl,
            telemetry: telemetry.clone(),
        };
        let user_cache = Arc::new(LayeredCache::new(
            "users",
            settings.clone(),
            l2.clone(),
            bus.clone(),
        ));
        let room_cache = Arc::new(LayeredCache::new(
            "rooms",
            settings.clone(),
            l2.clone(),
            bus.clone(),
        ));
        let member_cache = Arc::new(LayeredCache::new("members", settings, l2, bus.clone()));
        let caches: Vec<Arc<dyn Invalidate>> =
            vec![user_cache.clone(), room_cache.clone(), member_cache.clone()];
        bus.on_invalidation(crate::cache::handler(caches.clone()));

        let limiters = Limiters::new(&backplane, &telemetry);
        let ryw = Arc::new(ReadYourWrites::new(
            config.replica_max_lag,
            config.replica_check_interval,
        ));
        let shutdown = CancellationToken::new();
        // one attempt lasts at most a statement timeout (PostgreSQL) or a busy wait (SQLite)
        let attempt = if config.is_postgres() && !config.db_statement_timeout.is_zero() {
            config.db_statement_timeout
        } else if config.is_postgres() {
            Duration::from_secs(60)
        } else {
            config.db_busy_timeout
        };
        // one instance: the committer sees every commit; with Redis, the room feeds do
        let hot_source = if backplane.is_remote() {
            HotSource::Feed
        } else {
            HotSource::Committer
        };
        let hot = Arc::new(HotWindow::new(
            hot_source,
            config.hot_window_messages,
            config.hot_window_bytes,
            telemetry.clone(),
        ));
        let committer = Committer::start(
            store.clone(),
            bus.clone(),
            ryw.clone(),
            hot.clone(),
            CommitSettings {
                max_batch: config.group_commit_max,
                queue: config.commit_queue,
                deadline: config.db_acquire_timeout + attempt,
                attempt,
            },
            shutdown.clone(),
            telemetry.clone(),
        );
        let rooms = Arc::new(RoomsService::new(
            store.clone(),
            ryw.clone(),
            room_cache,
            member_cache,
            limiters.limiter(
                "write",
                config.write_rate,
                (config.write_rate * 10.0).ceil().max(1.0) as u32,
            ),
        ));
        let per_minute = |n: u32| (f64::from(n) / 60.0, n.max(1));
        let (failures_rate, failures_burst) = per_minute(config.login_failures_per_address);
        let (register_rate, register_burst) = per_minute(config.register_rate_per_address);
        let account_limits = AccountLimits {
            login: limiters.limiter(
                "login",
                config.login_rate_per_min / 60.0,
                config.login_rate_per_min.ceil().max(1.0) as u32,
            ),
            login_failures: limiters.limiter(
                "login_failures_per_address",
                failures_rate,
                failures_burst,
            ),
            register: limiters.limiter("register_per_address", register_rate, register_burst),
        };
        let users = Arc::new(UsersService::new(
            store.clone(),
            ryw.clone(),
            user_cache,
            Passwords::new(
                config.argon2_memory_kib,
                config.argon2_iterations,
                config.password_queue,
            )?,
            account_limits,
            config.max_metadata_bytes,
        ));
        // one limiter for sends and state writes: they share the user's send rate (§6.2)
        let send_limiter = limiters.limiter("send", config.send_rate, config.send_burst);
        let state = Arc::new(StateService::new(
            rooms.clone(),
            store.clone(),
            bus.clone(),
            send_limiter.clone(),
            config.max_state_bytes,
            // one instance: this process makes every state write; with Redis, others do too
            Arc::new(StateCache::new(
                !backplane.is_remote(),
                config.state_cache_bytes,
                telemetry.clone(),
            )),
        ));
        let messages = Arc::new(MessagesService::new(
            rooms.clone(),
            ryw,
            store.clone(),
            hot,
            committer.clone(),
            send_limiter,
            limiters.limiter(
                "read",
                config.read_rate_kib,
                // at least two maximal pages at once, so a page is never refused forever
                (config.read_rate_kib * 4.0).clamp(2048.0, f64::from(u32::MAX)) as u32,
            ),
            config.max_message_bytes,
            crate::services::history_gate::HistoryGate::new(
                config.history_reads,
                config.history_wait,
                &telemetry,
            ),
        ));
        let presence = Arc::new(PresenceService::new(
            rooms.clone(),
            crate::shared_state::presence(&backplane),
            bus.clone(),
            limiters.limiter(
                "typing",
                config.typing_rate,
                config.typing_rate.ceil() as u32,
            ),
        ));
        let sensors = SensorsService::start(
            store.clone(),
            bus.clone(),
            limiters.limiter(
                "sensor_write",
                config.write_rate,
                (config.write_rate * 10.0).ceil().max(1.0) as u32,
            ),
            SensorSettings {
                buffer: BufferSettings {
                    batch: config.sensor_batch,
                    flush: config.sensor_flush,
                    capacity: config.sensor_buffer,
                },
                sends_waiting: {
                    let committer = committer.clone();
                    Arc::new(move || committer.busy())
                },
                // a flush behind another, each waiting for a connection and one statement
                durable_wait: config.sensor_flush + (config.db_acquire_timeout + attempt) * 2,
                retention_days: config.sensor_retention_days,
                maintenance_every: config.sensor_maintenance,
            },
            shutdown.clone(),
            &telemetry,
        );
        let archiver = Arc::new(Archiver::new(
            store.clone(),
            config.archive_batch,
            {
                let committer = committer.clone();
                Arc::new(move || committer.busy())
            },
            &telemetry,
        ));
        if let Some(older_than) = config.archive_after {
            archiver.clone().run_in_background(
                older_than,
                config.archive_interval,
                shutdown.clone(),
            );
        }
        archiver.clone().publish_stats(shutdown.clone());
        let mut jobs = Jobs::new(store.clone(), config.job_lease, config.job_keep, &telemetry);
        jobs.handle(ARCHIVE_JOB, Arc::new(ArchiveJob(archiver.clone())));
        jobs.handle(
            DELIVERY_JOB,
            Arc::new(Deliveries::new(
                store.clone(),
                config.webhook_timeout,
                config.webhook_max_attempts,
                config.webhook_allow_private,
                &telemetry,
            )?),
        );
        let jobs = Arc::new(jobs);
        jobs.clone().start(shutdown.clone());
        jobs.clone().publish_depth(shutdown.clone());
        let webhooks =
            WebhooksService::new(store.clone(), rooms.clone(), config.webhook_allow_private);
        let admin = AdminService::new(store.clone(), bus.clone(), caches, backplane.is_remote());

        let app = Arc::new(App {
            config,
            tokens,
            rooms,
            messages,
            users,
            presence,
            sensors,
            state,
            archiver,
            jobs,
            webhooks,
            admin,
            dashboard: Arc::new(Dashboard::default()),
            shutdown,
            health,
            telemetry,
            store,
            bus,
            committer,
        });
        app.clone().report_pools_until_stopped();
        app.start_dashboard();
        Ok(app)
    }

    /// The ordered, gap-filled feed of this instance's watched rooms (for the gateway).
    pub fn room_feed(&self) -> Arc<RoomFeed> {
        RoomFeed::new(
            self.bus.clone(),
            Arc::new(StoreHistory(self.store.clone())),
            self.telemetry.clone(),
        )
    }

    /// Runs every health check at once; `(name, Err(why))` for those that failed.
    pub async fn check_health(&self) -> Vec<(&'static str, Result<(), String>)> {
        let limit = self.config.db_acquire_timeout + Duration::from_millis(500);
        let runs = self
            .health
            .iter()
            .map(|c| async move { (c.name, c.run(limit).await) });
        futures::future::join_all(runs).await
    }

    /// The Prometheus text, with fresh pool gauges.
    pub fn render_metrics(&self) -> String {
        self.store.report_pool_metrics();
        self.messages.hot_window().report();
        self.state.cache().report();
        self.telemetry.render()
    }

    /// Where every part of this app records its metrics.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Refuses new sends and waits until everything already queued is committed and answered.
    pub async fn drain_sends(&self) {
        self.committer.drain().await;
    }

    pub async fn close(&self) {
        self.store.close().await;
    }

    /// Samples the dashboard's figures from the start (so `/admin` opens on history) until
    /// shutdown. The source holds the app weakly: the app owns the dashboard.
    fn start_dashboard(self: &Arc<Self>) {
        let app = Arc::downgrade(self);
        self.dashboard.clone().start(
            Box::new(move || {
                let app = app.upgrade()?;
                Some((app.render_metrics(), app.admin.backplane()))
            }),
            self.shutdown.clone(),
        );
    }

    /// Publishes the pool gauges (and folds histogram samples) every 5 s until shutdown.
    fn report_pools_until_stopped(self: Arc<Self>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        self.store.report_pool_metrics();
                        self.telemetry.upkeep();
                    }
                }
            }
        });
    }
}
