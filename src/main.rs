//! The `tsunagi` command: `serve`, `migrate`, `token`.

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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tsunagi: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(&config);
    let result = match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => tsunagi::server::migrate(&config).await,
        Command::Token {
            sub,
            role,
            name,
            ttl,
        } => token(&config, &sub, &role, name, &ttl),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tsunagi: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tsunagi::http_server::bind(config.listen)
        .map_err(|e| anyhow::anyhow!("TSUNAGI_LISTEN {}: {e}", config.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "tsunagi serving");
    tsunagi::server::run(config, listener, shutdown_signal()).await
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
