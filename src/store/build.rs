//! How the configuration selects and opens the store (SQLite file or PostgreSQL primary with
//! replicas), and the store's health check.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::Store;
use super::archive::ColdSettings;
use super::postgres::{self, PgSettings, PgStore};
use super::sqlite::{self, SqliteSettings, SqliteStore};
use crate::at_rest::{Sealer, check_keys_in_use};
use crate::config::Config;
use crate::health::HealthCheck;
use crate::telemetry::Telemetry;

pub fn sqlite_settings(config: &Config) -> anyhow::Result<SqliteSettings> {
    let path = config
        .sqlite_path()
        .ok_or_else(|| anyhow::anyhow!("TSUNAGI_DATABASE_URL is not a sqlite:// URL"))?;
    Ok(SqliteSettings {
        path,
        synchronous: config.sqlite_synchronous.clone(),
        wal_max_bytes: config.sqlite_wal_max_bytes,
        read_pool_size: config.db_read_pool_size,
        acquire_timeout: config.db_acquire_timeout,
        busy_timeout: config.db_busy_timeout,
        idle_timeout: config.db_idle_timeout,
        max_lifetime: config.db_max_lifetime,
        pool_warn_share: config.db_pool_warn_share,
        telemetry: Telemetry::new(config.slow_query_ms),
        cold: cold_settings(config),
        sealer: sealer(config),
    })
}

/// The configured encryption keys (none: values stored as given).
pub fn sealer(config: &Config) -> Arc<Sealer> {
    Arc::new(Sealer::new(&config.encryption_keys))
}

pub fn cold_settings(config: &Config) -> ColdSettings {
    ColdSettings {
        location: config.cold_location(),
        synchronous: config.sqlite_synchronous.clone(),
        acquire_timeout: config.db_acquire_timeout,
        busy_timeout: config.db_busy_timeout,
        statement_timeout: config.db_statement_timeout,
        application_name: config.db_application_name.clone(),
        sealer: sealer(config),
    }
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
        telemetry: Telemetry::new(config.slow_query_ms),
        cold: cold_settings(config),
        sealer: sealer(config),
    }
}

/// Applies the embedded migrations to the configured database.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    if config.is_postgres() {
        postgres::migrate(&pg_settings(config)).await
    } else {
        sqlite::migrate(&sqlite_settings(config)?).await
    }
}

/// Migrates, then opens the store the configuration selects, with its health check (`database`).
/// Refuses (the start check of encryption at rest) when the database holds values under a key
/// id the configuration does not list.
/// (Boxed as `Send` explicitly: sqlx's migrator futures otherwise trip the compiler's
/// higher-ranked `Send` inference.)
pub fn build<'a>(
    config: &'a Config,
    telemetry: &'a Telemetry,
) -> BoxFuture<'a, anyhow::Result<(Arc<dyn Store>, HealthCheck)>> {
    Box::pin(async move {
        let store: Arc<dyn Store> = if config.is_postgres() {
            let settings = PgSettings {
                telemetry: telemetry.clone(),
                ..pg_settings(config)
            };
            postgres::migrate(&settings).await?;
            Arc::new(PgStore::open(&settings).await?)
        } else {
            let settings = SqliteSettings {
                telemetry: telemetry.clone(),
                ..sqlite_settings(config)?
            };
            sqlite::migrate(&settings).await?;
            Arc::new(SqliteStore::open(&settings).await?)
        };
        let in_use = store.keys_in_use().await?;
        if let Err(e) = check_keys_in_use(&sealer(config), &in_use) {
            store.close().await;
            return Err(e);
        }
        let probe = store.clone();
        let check = HealthCheck::new("database", move || {
            let store = probe.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        });
        Ok((store, check))
    })
}
