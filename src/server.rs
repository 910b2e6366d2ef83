//! Serving: the app's two edges (HTTP and Socket.IO) on one listener until the shutdown future
//! resolves, then draining in order. What the parts are and how they are built is `app`'s.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::App;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::http_server::{self, Limits};
use crate::tls::Tls;

pub use crate::app::jwt_secret;

/// Applies the embedded migrations to the configured database.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    crate::store::migrate(config).await
}

/// Serves on `listener` (HTTPS when `config.tls` is set; SIGHUP then reloads the pair) until
/// `shutdown` resolves, then: refuses new connections and sends,
/// finishes queued commits and their answers, closes every socket, closes the database.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown_timeout = config.shutdown_timeout;
    let fd_limit = http_server::raise_fd_limit(http_server::fds_wanted(config.max_connections));
    let limits = Limits {
        max_connections: http_server::effective_cap(config.max_connections, fd_limit),
        header_timeout: config.http_header_timeout,
        max_header_bytes: config.http_max_header_bytes,
    };
    // a bad certificate or key stops the start before the database is touched
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(Tls::load(files)?)),
        None => None,
    };
    let app = App::build(config).await?;
    if let Some(tls) = &tls {
        crate::tls::reload_on_sighup(tls.clone(), app.telemetry().clone(), app.shutdown.clone())
            .map_err(|e| anyhow::anyhow!("SIGHUP handler: {e}"))?;
    }
    if let Ok(addr) = listener.local_addr() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(url = %format!("{scheme}://{addr}/"), "tsunagi ready");
    }
    let upgrades = Arc::new(crate::io_stats::Upgrades::default());
    let gateway = Gateway::new(app.clone(), upgrades.clone());
    let session_routes = session_routes(&app.config, &listener, tls.is_some(), app.telemetry())?;
    let recording = crate::session_routing::Recording {
        inner: gateway.clone(),
        routes: session_routes.clone(),
    };
    let engine = engineioxide::layer::EngineIoLayer::from_config(
        Arc::new(recording),
        Gateway::engine_config(
            app.config.max_message_bytes.max(app.config.max_state_bytes),
            app.config.socket_buffer,
        ),
    );
    let mut routes = crate::http::router(app.clone(), gateway.clone())
        .layer(engine)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::gateway::refuse_new_sessions,
        ))
        .layer(axum::middleware::from_fn_with_state(
            gateway.admission(),
            crate::gateway::admit_handshakes,
        ));
    if let Some(sessions) = session_routes {
        routes = routes.layer(axum::middleware::from_fn_with_state(
            sessions,
            crate::session_routing::route,
        ));
    }

    // Cancelling the app's token is the one shutdown signal; the drain then runs in order and
    // stops the HTTP server once every socket is closed.
    let drained = tokio_util::sync::CancellationToken::new();
    let readings_lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drain = {
        let (app, gateway, drained) = (app.clone(), gateway.clone(), drained.clone());
        let readings_lost = readings_lost.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: draining sends and closing sockets");
            app.shutdown.cancel();
            if tokio::time::timeout(shutdown_timeout, app.drain_sends())
                .await
                .is_err()
            {
                tracing::warn!("queued sends did not commit within the shutdown timeout");
            }
            if !app.sensors.drain(shutdown_timeout).await {
                tracing::error!(
                    "accepted sensor readings could not be written: the database kept failing"
                );
                readings_lost.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            gateway.close_all(shutdown_timeout).await;
            drained.cancel();
        }
    };
    tokio::spawn(drain);
    http_server::serve(
        listener,
        routes,
        limits,
        tls,
        app.telemetry().clone(),
        upgrades,
        // refuse newcomers from the first moment of the drain: the load balancer sends them
        // to the other instances instead of to one that is about to close them
        http_server::Stop {
            accepting: app.shutdown.clone(),
            serving: drained,
        },
        shutdown_timeout,
    )
    .await;
    app.close().await;
    if readings_lost.load(std::sync::atomic::Ordering::SeqCst) {
        anyhow::bail!(
            "stopped with accepted sensor readings unwritten (the database kept failing)"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// With Redis (several instances), any instance serves any polling session: the routes of
/// `session_routing`. Without, nothing is recorded or forwarded.
fn session_routes(
    config: &Config,
    listener: &TcpListener,
    tls: bool,
    telemetry: &crate::telemetry::Telemetry,
) -> anyhow::Result<Option<Arc<crate::session_routing::SessionRoutes>>> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let redis =
        crate::redis_conn::RedisConn::open(url, &config.redis_prefix, config.redis_timeout)?
            .with_telemetry(telemetry.clone());
    let routes = crate::session_routing::SessionRoutes::new(
        Arc::new(redis),
        config.advertise_url.as_ref(),
        listener.local_addr()?,
        tls,
        telemetry,
    )?;
    Ok(Some(routes))
}
