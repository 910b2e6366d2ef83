//! `tsunagi check-config` (PROTOCOL.md §7): every setting's effective value and where it came
//! from, secrets masked, and every problem found: what `serve` would refuse (errors), and what it
//! would accept but is most likely a mistake (warnings). Both count as problems. With
//! `--connect`, also whether the databases and Redis it names answer.

use std::collections::HashMap;

use serde::Serialize;

use super::{Config, ConfigError, Source, closest_setting, err, is_known_env, secrets};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// `serve` refuses to start.
    Error,
    /// `serve` starts, but the setting is most likely not what was meant.
    Warning,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub setting: String,
    pub message: String,
}

/// One setting as shown: its value with secrets masked, and where it came from.
#[derive(Debug, Serialize)]
pub struct ShownSetting {
    pub name: &'static str,
    pub value: String,
    pub source: String,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub settings: Vec<ShownSetting>,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// For a person: one line per setting, then the problems.
    pub fn render(&self) -> String {
        let width = self
            .settings
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0);
        let mut out = String::from("effective configuration (secrets masked):\n");
        for s in &self.settings {
            let value = if s.value.is_empty() {
                "(empty)"
            } else {
                &s.value
            };
            out += &format!("  {:width$}  {value}  [{}]\n", s.name, s.source);
        }
        match self.problems.len() {
            0 => out += "\nno problems found\n",
            n => {
                out += &format!("\n{n} problem{}:\n", if n == 1 { "" } else { "s" });
                for p in &self.problems {
                    let severity = match p.severity {
                        Severity::Error => "error  ",
                        Severity::Warning => "warning",
                    };
                    out += &format!("  {severity}  {}: {}\n", p.setting, p.message);
                }
            }
        }
        out
    }
}

/// Checks the configuration `env` (and the config file it names) gives.
pub fn check(env: &HashMap<String, String>) -> CheckReport {
    let evaluation = Config::evaluate(env);
    let mut problems: Vec<Problem> = evaluation
        .problems
        .into_iter()
        .map(|e| problem(Severity::Error, e))
        .collect();
    let failed: Vec<String> = problems.iter().map(|p| p.setting.clone()).collect();
    let valid = |names: &[&str]| names.iter().all(|n| !failed.iter().any(|f| f == n));
    let raw: HashMap<&str, &str> = evaluation
        .settings
        .iter()
        .map(|s| (s.name, s.value.as_str()))
        .collect();
    // the files exist (checked while reading): do they hold a usable pair?
    if valid(&["TSUNAGI_TLS_CERT", "TSUNAGI_TLS_KEY"])
        && let Ok(Some(files)) = secrets::tls_files(raw["TSUNAGI_TLS_CERT"], raw["TSUNAGI_TLS_KEY"])
        && let Err(e) = crate::tls::Tls::load(&files)
    {
        let setting = match e {
            crate::tls::TlsError::Key { .. } => "TSUNAGI_TLS_KEY",
            _ => "TSUNAGI_TLS_CERT",
        };
        // the error names the setting and the file, never the file's content
        problems.push(problem(Severity::Error, err(setting, e.to_string())));
    }
    let mut unknown: Vec<&String> = env
        .keys()
        .filter(|k| k.starts_with("TSUNAGI_") && !is_known_env(k))
        .collect();
    unknown.sort();
    for name in unknown {
        // the value is never shown: it may be a secret under a misspelt name
        let message = match closest_setting(name) {
            Some(meant) => format!("unknown variable, ignored (did you mean {meant}?)"),
            None => "unknown variable, ignored".to_owned(),
        };
        problems.push(problem(Severity::Warning, err(name, message)));
    }
    for (names, warning) in risks(&evaluation.config) {
        if valid(names) {
            problems.push(problem(Severity::Warning, warning));
        }
    }
    let settings = evaluation
        .settings
        .iter()
        .map(|s| ShownSetting {
            name: s.name,
            value: masked(s.name, &s.value),
            source: match &s.source {
                Source::Default => "default".to_owned(),
                Source::Environment => "environment".to_owned(),
                Source::File(path) => format!("file {}", path.display()),
                Source::SecretFile(var) => format!("file named by {var}"),
            },
        })
        .collect();
    CheckReport { settings, problems }
}

/// `check-config --connect`: each PostgreSQL database and Redis node the configuration names
/// answers within `timeout` (an SQLite file is not opened: `serve` creates it). Errors name the
/// setting and the entry, never the URL (it may hold a password).
pub async fn connections(c: &Config, timeout: std::time::Duration) -> Vec<Problem> {
    let mut targets: Vec<(&str, usize, &str)> = Vec::new();
    if c.is_postgres() {
        targets.push(("TSUNAGI_DATABASE_URL", 1, &c.database_url));
    }
    for (i, url) in c.replica_urls.iter().enumerate() {
        targets.push(("TSUNAGI_REPLICA_URLS", i + 1, url));
    }
    if let Some(url) = c
        .archive_url
        .as_deref()
        .filter(|u| u.starts_with("postgres"))
    {
        targets.push(("TSUNAGI_ARCHIVE_URL", 1, url));
    }
    for (i, url) in c.redis_url.iter().flat_map(|u| u.split(',')).enumerate() {
        targets.push(("TSUNAGI_REDIS_URL", i + 1, url.trim()));
    }
    let attempts = targets.into_iter().map(|(setting, entry, url)| async move {
        let answered = if setting == "TSUNAGI_REDIS_URL" {
            tokio::time::timeout(timeout, ping_redis(url)).await
        } else {
            tokio::time::timeout(timeout, ping_postgres(url)).await
        };
        let why = match answered {
            Ok(Ok(())) => return None,
            Ok(Err(why)) => why,
            Err(_) => format!("no answer within {} ms", timeout.as_millis()),
        };
        let message = format!("entry {entry}: cannot connect: {why}");
        Some(problem(Severity::Error, err(setting, message)))
    });
    futures::future::join_all(attempts)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn ping_postgres(url: &str) -> Result<(), String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    conn.ping().await.map_err(|e| e.to_string())
}

async fn ping_redis(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

fn problem(severity: Severity, e: ConfigError) -> Problem {
    Problem {
        severity,
        setting: e.name,
        message: e.problem,
    }
}

/// Accepted combinations that are most likely mistakes, each with the settings it involves
/// (a warning is left out while one of them has an error: its value is a stand-in).
fn risks(c: &Config) -> Vec<(&'static [&'static str], ConfigError)> {
    let mut found = Vec::new();
    let mut warn = |names: &'static [&'static str], problem: String| {
        found.push((names, err(names[0], problem)));
    };
    if c.is_postgres() && c.db_min_idle > c.db_pool_size {
        warn(
            &["TSUNAGI_DB_MIN_IDLE", "TSUNAGI_DB_POOL_SIZE"],
            format!(
                "{} idle connections kept, but the pool holds at most {} (TSUNAGI_DB_POOL_SIZE)",
                c.db_min_idle, c.db_pool_size
            ),
        );
    }
    if c.db_min_idle > c.db_read_pool_size {
        warn(
            &["TSUNAGI_DB_MIN_IDLE", "TSUNAGI_DB_READ_POOL_SIZE"],
            format!(
                "{} idle connections kept, but the read pool holds at most {} \
                 (TSUNAGI_DB_READ_POOL_SIZE)",
                c.db_min_idle, c.db_read_pool_size
            ),
        );
    }
    if let Some(secret) = &c.jwt_secret
        && secret.len() < 32
    {
        warn(
            &["TSUNAGI_JWT_SECRET"],
            format!(
                "{} bytes: an HS256 key should have at least 32 (RFC 7518 §3.2)",
                secret.len()
            ),
        );
    }
    if c.replica_urls.contains(&c.database_url) {
        warn(
            &["TSUNAGI_REPLICA_URLS", "TSUNAGI_DATABASE_URL"],
            "the primary is listed as a replica".to_owned(),
        );
    }
    if c.webhook_allow_private {
        warn(
            &["TSUNAGI_WEBHOOK_ALLOW_PRIVATE"],
            "webhooks may reach loopback and private addresses (internal services): for \
             development only"
                .to_owned(),
        );
    }
    if let Some(urls) = &c.redis_url {
        for problem in seed_list_problems(urls) {
            warn(&["TSUNAGI_REDIS_URL"], problem);
        }
    }
    found
}

/// Several comma-separated seeds are one Redis Cluster: one scheme for all, no seed twice, and
/// database 0 only (a cluster has no other). The URLs are never repeated.
fn seed_list_problems(urls: &str) -> Vec<String> {
    let seeds: Vec<&str> = urls.split(',').map(str::trim).collect();
    if seeds.len() < 2 {
        return Vec::new();
    }
    let mut found = Vec::new();
    if seeds.iter().any(|s| s.starts_with("rediss://"))
        && seeds.iter().any(|s| s.starts_with("redis://"))
    {
        found.push("cluster seeds mix redis:// and rediss://: use one for all".to_owned());
    }
    for (i, seed) in seeds.iter().enumerate() {
        if seeds[..i].contains(seed) {
            found.push(format!("cluster seed {} repeats an earlier one", i + 1));
        }
        let db = url::Url::parse(seed)
            .ok()
            .map(|u| u.path().trim_matches('/').to_owned())
            .unwrap_or_default();
        if !db.is_empty() && db != "0" {
            found.push(format!(
                "cluster seed {} names database {db}: a Redis Cluster has only database 0",
                i + 1
            ));
        }
    }
    found
}

/// A setting's value fit to print: secrets masked (URLs keep all but their password and
/// parameters; encryption keys their ids).
pub fn masked(name: &str, value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    match name {
        "TSUNAGI_JWT_SECRET" => format!("*** ({} bytes)", value.len()),
        "TSUNAGI_ENCRYPTION_KEYS" => each(value, |entry| match entry.split_once(':') {
            Some((id, _)) if !id.is_empty() => format!("{id}:***"),
            _ => "***".to_owned(),
        }),
        "TSUNAGI_DATABASE_URL"
        | "TSUNAGI_REPLICA_URLS"
        | "TSUNAGI_REDIS_URL"
        | "TSUNAGI_ARCHIVE_URL" => each(value, mask_url),
        _ if secrets::SECRET_SETTINGS.contains(&name) => "***".to_owned(),
        _ => value.to_owned(),
    }
}

fn each(list: &str, mask: impl Fn(&str) -> String) -> String {
    list.split(',')
        .map(|e| mask(e.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

/// `scheme://user:***@host/path?***`: the password and every parameter masked. Something that
/// is not a URL is masked whole (it may be a password put in the wrong place).
fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "***".to_owned();
    };
    let after_scheme = scheme_end + 3;
    // the host starts after the last `@`: a password may hold `?`, `/` or `@`
    let (userinfo, rest) = match url.rfind('@').filter(|at| *at >= after_scheme) {
        Some(at) => {
            let info = &url[after_scheme..at];
            let shown = match info.split_once(':') {
                Some((user, _)) => format!("{user}:***@"),
                None => format!("{info}@"),
            };
            (shown, &url[at + 1..])
        }
        None => (String::new(), &url[after_scheme..]),
    };
    let rest = match rest.find(['?', '#']) {
        Some(i) => format!("{}?***", &rest[..i]),
        None => rest.to_owned(),
    };
    format!("{}{userinfo}{rest}", &url[..after_scheme])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_everything_but_passwords_and_parameters() {
        assert_eq!(
            mask_url("postgres://app:s3cr?t@x@db:5432/t?sslmode=require&password=p"),
            "postgres://app:***@db:5432/t?***"
        );
        assert_eq!(
            mask_url("redis://:pw@127.0.0.1:6379"),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(
            mask_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(mask_url("sqlite://./data/t.db"), "sqlite://./data/t.db");
        assert_eq!(mask_url("postgres//app:pw@db"), "***");
        assert_eq!(
            masked("TSUNAGI_ENCRYPTION_KEYS", "k2:AAAA, k1:BBBB,broken"),
            "k2:***,k1:***,***"
        );
        assert_eq!(
            masked("TSUNAGI_JWT_SECRET", "0123456789abcdef"),
            "*** (16 bytes)"
        );
        assert_eq!(masked("TSUNAGI_LISTEN", "0.0.0.0:80"), "0.0.0.0:80");
    }

    #[test]
    fn cluster_seed_lists_are_one_cluster() {
        assert!(seed_list_problems("redis://a:1,redis://b:2").is_empty());
        assert!(seed_list_problems("redis://a:1/3").is_empty());
        let found = seed_list_problems("redis://a:1,rediss://b:2,redis://a:1,redis://c:3/2");
        assert_eq!(found.len(), 3, "{found:?}");
    }
}
