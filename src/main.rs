//! The `tsunagi` command: `serve`, `migrate`, `token`, `archive`, `rekey`, `make-admin`,
//! `check-config`.

use clap::{Parser, Subcommand};
use tsunagi::config::Config;

#[derive(Parser)]
#[command(
    name = "tsunagi",
    version,
    about = "Realtime and data backend in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (migrates the database first).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Move old messages to cold storage now, in the foreground, with a progress bar (the
    /// server may be running meanwhile).
    Archive {
        /// Move messages older than this (30d, 12h, 0s = every message); default
        /// TSUNAGI_ARCHIVE_AFTER.
        #[arg(long)]
        older_than: Option<String>,
        /// Print how many messages would move, and move none.
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-encrypt every stored message content, state value and job payload that is not under
    /// the current key (the first of TSUNAGI_ENCRYPTION_KEYS; plaintext ones too), in batches,
    /// with a progress bar (servers may be running meanwhile); then unregister the old key ids
    /// no value is left under.
    Rekey {
        /// Rows per batch (one short transaction each).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch: u32,
    },
    /// Print a token signed with the configured (or generated) secret.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// `user` or `admin`.
        #[arg(long, default_value = "user")]
        role: String,
        /// Display name (`name` claim).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime: 30s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Give an account the admin role (audited, actor `cli`): how the first admin of a fresh
    /// install is made, who can then open /admin and promote others.
    MakeAdmin {
        /// The account's username or email.
        login: String,
    },
    /// Print the effective configuration (secrets masked, each value's source) and every
    /// problem found; exit 1 if there is one. Connects to nothing unless asked.
    CheckConfig {
        /// Also connect to each PostgreSQL database and Redis node named (5 s each, at once).
        #[arg(long)]
        connect: bool,
        /// One JSON object instead of text: `{ settings: [{ name, value, source }], problems:
        /// [{ severity, setting, message }] }`.
        #[arg(long)]
        json: bool,
    },
}

/// Libraries whose lower levels print what crosses the wire (the handshake's token, request
/// headers): never below `info`, whatever `TSUNAGI_LOG` asks, so no token reaches a log.
const WIRE_LOGGERS: &[&str] = &[
    "engineioxide",
    "hyper",
    "hyper_util",
    "tungstenite",
    "tokio_tungstenite",
    "h2",
];

fn init_logging(config: &Config) {
    let mut filter = tracing_subscriber::EnvFilter::new(&config.log);
    for target in WIRE_LOGGERS {
        if let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    // colours only for a person at a terminal: a log file or journal gets plain text
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if config.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The progress bar of a long command (`archive`, `rekey`) over `total` items.
fn progress_bar(total: i64, unit: &str) -> anyhow::Result<indicatif::ProgressBar> {
    let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(0));
    bar.set_style(indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
    ))?);
    Ok(bar)
}

/// Cancelled at SIGTERM/SIGINT: a long command stops between batches.
fn stop_on_signal() -> tokio_util::sync::CancellationToken {
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    stop
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::CheckConfig { json, connect } = cli.command {
        return check_config(json, connect).await;
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tsunagi: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(&config);
    for name in &config.unknown_env {
        match tsunagi::config::closest_setting(name) {
            Some(meant) => {
                tracing::warn!(variable = %name, did_you_mean = meant, "unknown setting in the environment: ignored")
            }
            None => tracing::warn!(variable = %name, "unknown setting in the environment: ignored"),
        }
    }
    let result = match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => tsunagi::server::migrate(&config).await,
        Command::Archive {
            older_than,
            dry_run,
        } => archive(&config, older_than.as_deref(), dry_run).await,
        Command::Token {
            sub,
            role,
            name,
            ttl,
        } => token(&config, &sub, &role, name, &ttl),
        Command::MakeAdmin { login } => make_admin(&config, &login).await,
        Command::Rekey { batch } => rekey(&config, batch).await,
        Command::CheckConfig { .. } => unreachable!("answered before the configuration is read"),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tsunagi: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Reads the configuration as `serve` would, without stopping at its first problem.
async fn check_config(json: bool, connect: bool) -> std::process::ExitCode {
    let env = std::env::vars().collect();
    let mut report = tsunagi::config::check(&env);
    // only a configuration without errors names what to connect to
    if connect && let Ok(config) = Config::from_map(&env) {
        let timeout = std::time::Duration::from_secs(5);
        let failed = tsunagi::config::connections(&config, timeout).await;
        report.problems.extend(failed);
    }
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("tsunagi: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.render());
    }
    if report.problems.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tsunagi::http_server::bind(config.listen)
        .map_err(|e| anyhow::anyhow!("TSUNAGI_LISTEN {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        listen = %addr,
        url = %format!("{scheme}://{addr}/"),
        database = %config.describe_database(),
        cold_storage = %config.describe_cold_storage(),
        redis = %config.redis_url.as_deref().map(tsunagi::config::redact_url).unwrap_or_else(|| "none (one instance: bus, cache and limits in process)".into()),
        "tsunagi starting: migrating, then serving the chat page at /, the dashboard at /admin, Socket.IO and /api/v1"
    );
    tsunagi::server::run(config, listener, shutdown_signal()).await
}

async fn archive(config: &Config, older_than: Option<&str>, dry_run: bool) -> anyhow::Result<()> {
    use std::sync::Arc;
    use tsunagi::services::archive::{Archiver, cutoff};
    let older_than = match older_than {
        Some(s) => {
            tsunagi::domain::parse_duration(s).map_err(|e| anyhow::anyhow!("--older-than: {e}"))?
        }
        None => config.archive_after.ok_or_else(|| {
            anyhow::anyhow!("archiving is off (TSUNAGI_ARCHIVE_AFTER=0): give --older-than")
        })?,
    };
    let telemetry = tsunagi::telemetry::Telemetry::new(config.slow_query_ms);
    let (store, _) = tsunagi::store::build(config, &telemetry).await?;
    let archiver = Archiver::new(
        store.clone(),
        config.archive_batch,
        Arc::new(|| false),
        &telemetry,
    );
    let total = archiver.count(older_than).await?;
    if dry_run {
        println!(
            "would move {total} messages (created before {})",
            cutoff(older_than)
        );
        store.close().await;
        return Ok(());
    }
    let bar = progress_bar(total, "messages")?;
    let stop = stop_on_signal();
    let report = archiver
        .pass(older_than, &stop, &|moved| bar.set_position(moved))
        .await;
    bar.finish_and_clear();
    store.close().await;
    let report = report?;
    let how = if stop.is_cancelled() {
        "stopped after moving"
    } else {
        "moved"
    };
    println!(
        "{how} {} messages from {} rooms to cold storage in {} batches (created before {})",
        report.moved, report.rooms, report.batches, report.cutoff
    );
    Ok(())
}

async fn rekey(config: &Config, batch: u32) -> anyhow::Result<()> {
    use tsunagi::at_rest::rekey;
    let sealer = tsunagi::store::sealer(config);
    let Some(current) = sealer.current().map(str::to_owned) else {
        anyhow::bail!(rekey::RekeyError::NoCurrentKey);
    };
    let telemetry = tsunagi::telemetry::Telemetry::new(config.slow_query_ms);
    // build checks that every key id in use is configured (else nothing could be opened)
    let (store, _) = tsunagi::store::build(config, &telemetry).await?;
    let total = rekey::count(&*store, &current).await?;
    let bar = progress_bar(total, "values")?;
    let stop = stop_on_signal();
    let report = rekey::run(&*store, &sealer, batch, &stop, &|done| {
        bar.set_position(done)
    })
    .await;
    bar.finish_and_clear();
    store.close().await;
    let report = report?;
    for t in &report.tables {
        println!(
            "{}: {} re-encrypted under {current}, {} changed meanwhile (left as they are)",
            t.table, t.resealed, t.skipped
        );
    }
    if stop.is_cancelled() {
        println!(
            "stopped after {} batches: run tsunagi rekey again to finish",
            report.batches
        );
    } else if report.remaining > 0 {
        println!(
            "{} values are still under another key (written meanwhile by an instance whose \
             current key is older?): restart every instance with {current} first, then run \
             tsunagi rekey again",
            report.remaining
        );
    } else if report.unregistered.is_empty() {
        println!("every value is under {current}");
    } else {
        println!(
            "every value is under {current}; key ids no longer in use: {} (they may now be \
             removed from TSUNAGI_ENCRYPTION_KEYS)",
            report.unregistered.join(", ")
        );
    }
    Ok(())
}

/// Sets the role in the store directly, as a PATCH by an admin would (same statement, same audit
/// row, actor `cli`): the command needs no server. Running servers apply the new role to the
/// user's existing tokens once their cached row is gone (`forget_cached_user`). The migrations run first, so it works on a fresh data directory too.
async fn make_admin(config: &Config, login: &str) -> anyhow::Result<()> {
    use tsunagi::store::users::UserPatch;
    tsunagi::server::migrate(config).await?;
    let telemetry = tsunagi::telemetry::Telemetry::new(config.slow_query_ms);
    let (store, _) = tsunagi::store::build(config, &telemetry).await?;
    let result = async {
        let Some(user) = store.user_by_login(login).await? else {
            anyhow::bail!("make-admin: no account with the username or email {login:?}");
        };
        if user.role == "admin" {
            println!("{} ({}) is already an admin", user.username, user.id);
            return Ok(());
        }
        let patch = UserPatch {
            role: Some("admin".to_owned()),
            ..UserPatch::default()
        };
        store.update_user(&user.id, &patch, "cli").await?;
        println!("{} ({}) is now an admin", user.username, user.id);
        if config.redis_url.is_some() {
            forget_cached_user(config, &telemetry, &user.id).await?;
        }
        Ok(())
    }
    .await;
    store.close().await;
    result
}

/// Tells running servers (through Redis) that a user's row changed: its entry leaves L2 and
/// every instance's L1, so the new role counts on their next request. Without Redis there is
/// no way to reach them; their L1 entry expires within `TSUNAGI_CACHE_L1_TTL_S`.
async fn forget_cached_user(
    config: &Config,
    telemetry: &tsunagi::telemetry::Telemetry,
    id: &str,
) -> anyhow::Result<()> {
    use tsunagi::cache::layered::LayeredCache;
    use tsunagi::services::users::UserRecord;
    let (backplane, _) = tsunagi::backplane::Backplane::build(config, telemetry)?;
    let (bus, _) = tsunagi::bus::build(&backplane, config);
    // the L2 delete is skipped while the bus is not up yet: give it a moment to subscribe
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !bus.healthy() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let settings = tsunagi::cache::CacheSettings {
        l1_capacity: config.cache_l1_capacity,
        l1_ttl: config.cache_l1_ttl,
        l2_ttl: config.cache_l2_ttl,
        negative_ttl: config.cache_negative_ttl,
        telemetry: telemetry.clone(),
    };
    let cache: LayeredCache<UserRecord> = LayeredCache::new(
        "users",
        settings,
        tsunagi::cache::remote(&backplane),
        bus.clone(),
    );
    cache.forget(id).await;
    if !bus.healthy() {
        println!(
            "warning: Redis did not answer; running servers see the new role within their cache TTL"
        );
    }
    Ok(())
}

fn token(
    config: &Config,
    sub: &str,
    role: &str,
    name: Option<String>,
    ttl: &str,
) -> anyhow::Result<()> {
    let admin = match role {
        "user" => false,
        "admin" => true,
        other => anyhow::bail!("--role {other}: use user or admin"),
    };
    tsunagi::domain::UserId::parse(sub).map_err(|e| anyhow::anyhow!("--sub: {e}"))?;
    let ttl = tsunagi::auth::parse_ttl(ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    let tokens = tsunagi::auth::Tokens::new(tsunagi::server::jwt_secret(config)?.as_bytes());
    println!("{}", tokens.mint(sub, admin, name.as_deref(), ttl));
    Ok(())
}
