//! `tsunagi check-config` (PROTOCOL.md §7): the effective configuration with secrets masked and
//! every problem found, exiting non-zero if there is one.

use std::collections::HashMap;
use std::process::Command;

use base64::Engine;
use serde_json::Value;

/// Runs `tsunagi check-config [--json]` with only `env` (and `dir` as its working directory, so
/// no stray `tsunagi.toml` is read); its exit code and standard output.
fn check_config(dir: &std::path::Path, env: &[(&str, &str)], json: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tsunagi"));
    cmd.arg("check-config")
        .env_clear()
        .current_dir(dir)
        .envs(env.iter().copied());
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("the tsunagi binary runs");
    let stdout = String::from_utf8(out.stdout).unwrap();
    (out.status.code().expect("exited"), stdout)
}

fn report(dir: &std::path::Path, env: &[(&str, &str)]) -> (i32, Value) {
    let (code, out) = check_config(dir, env, true);
    (
        code,
        serde_json::from_str(&out).expect("--json prints JSON"),
    )
}

fn by_name(report: &Value) -> HashMap<String, (String, String)> {
    report["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let field = |k: &str| s[k].as_str().unwrap().to_owned();
            (field("name"), (field("value"), field("source")))
        })
        .collect()
}

#[test]
fn a_clean_configuration_exits_0_with_every_setting_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("t.toml");
    std::fs::write(&toml, "send_rate = 7\n").unwrap();
    let jwt = dir.path().join("jwt");
    std::fs::write(&jwt, "a-jwt-secret-from-a-file-0123456789\n").unwrap();
    let env = [
        ("TSUNAGI_CONFIG", toml.to_str().unwrap()),
        ("TSUNAGI_JWT_SECRET_FILE", jwt.to_str().unwrap()),
        ("TSUNAGI_LISTEN", "127.0.0.1:9999"),
    ];
    let (code, text) = check_config(dir.path(), &env, false);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no problems found"), "{text}");
    assert!(!text.contains("a-jwt-secret-from-a-file"), "{text}");
    let (code, json) = report(dir.path(), &env);
    assert_eq!(code, 0);
    assert_eq!(json["problems"], serde_json::json!([]));
    let settings = by_name(&json);
    assert_eq!(settings.len(), tsunagi::config::SETTINGS.len());
    let (listen, source) = &settings["TSUNAGI_LISTEN"];
    assert_eq!(
        (listen.as_str(), source.as_str()),
        ("127.0.0.1:9999", "environment")
    );
    assert_eq!(settings["TSUNAGI_SEND_RATE"].0, "7");
    assert_eq!(
        settings["TSUNAGI_SEND_RATE"].1,
        format!("file {}", toml.display())
    );
    assert_eq!(
        settings["TSUNAGI_SEND_BURST"],
        ("40".into(), "default".into())
    );
    assert_eq!(
        settings["TSUNAGI_JWT_SECRET"],
        (
            "*** (35 bytes)".into(),
            "file named by TSUNAGI_JWT_SECRET_FILE".into()
        )
    );
}

#[test]
fn secrets_never_appear_in_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let keys = format!("k2:{key},k1:{key}");
    let env = [
        ("TSUNAGI_JWT_SECRET", "jwt-secret-never-shown-0123456789"),
        ("TSUNAGI_ENCRYPTION_KEYS", keys.as_str()),
        (
            "TSUNAGI_DATABASE_URL",
            "postgres://app:pg-pass-never-shown@127.0.0.1:1/db?sslmode=disable&password=qp-never-shown",
        ),
        (
            "TSUNAGI_REPLICA_URLS",
            "postgres://ro:replica-pass-never-shown@127.0.0.1:2/db",
        ),
        (
            "TSUNAGI_REDIS_URL",
            "redis://:redis-pass-never-shown@127.0.0.1:6379",
        ),
        (
            "TSUNAGI_ARCHIVE_URL",
            "postgres://arc:archive-pass-never-shown@127.0.0.1:3/cold",
        ),
    ];
    for json in [false, true] {
        let (code, out) = check_config(dir.path(), &env, json);
        assert_eq!(code, 0, "{out}");
        for secret in [
            "jwt-secret-never-shown",
            key.as_str(),
            "pg-pass-never-shown",
            "qp-never-shown",
            "sslmode",
            "replica-pass-never-shown",
            "redis-pass-never-shown",
            "archive-pass-never-shown",
        ] {
            assert!(!out.contains(secret), "{secret} printed:\n{out}");
        }
    }
    let (_, json) = report(dir.path(), &env);
    let settings = by_name(&json);
    assert_eq!(settings["TSUNAGI_ENCRYPTION_KEYS"].0, "k2:***,k1:***");
    assert_eq!(
        settings["TSUNAGI_DATABASE_URL"].0,
        "postgres://app:***@127.0.0.1:1/db?***"
    );
    assert_eq!(
        settings["TSUNAGI_REDIS_URL"].0,
        "redis://:***@127.0.0.1:6379"
    );
}

#[test]
fn every_problem_is_reported_at_once_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("jwt");
    std::fs::write(&jwt, "another-secret-0123456789-0123456789").unwrap();
    let garbage = dir.path().join("not-a-cert.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let short_key = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
    let keys = format!("k1:{short_key}");
    let env = [
        ("TSUNAGI_SEND_RATE", "fast"),
        ("TSUNAGI_LISTEN", "nowhere"),
        ("TSUNAGI_SEND_RATEE", "5"),
        ("TSUNAGI_JWT_SECRET", "jwt-secret-never-shown-0123456789"),
        ("TSUNAGI_JWT_SECRET_FILE", jwt.to_str().unwrap()),
        ("TSUNAGI_REDIS_PREFIX_FILE", "/nonexistent"),
        ("TSUNAGI_ARCHIVE_URL_FILE", "/nonexistent/archive-url"),
        ("TSUNAGI_ENCRYPTION_KEYS", keys.as_str()),
        ("TSUNAGI_TLS_CERT", garbage.to_str().unwrap()),
        ("TSUNAGI_TLS_KEY", garbage.to_str().unwrap()),
        (
            "TSUNAGI_REDIS_URL",
            "redis://127.0.0.1:7100,rediss://127.0.0.1:7101",
        ),
        ("TSUNAGI_DB_MIN_IDLE", "20"),
    ];
    let (code, json) = report(dir.path(), &env);
    assert_eq!(code, 1, "{json}");
    let problems: Vec<(String, String, String)> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let f = |k: &str| p[k].as_str().unwrap().to_owned();
            (f("severity"), f("setting"), f("message"))
        })
        .collect();
    let has = |severity: &str, setting: &str, says: &str| {
        problems
            .iter()
            .any(|(s, n, m)| s == severity && n == setting && m.contains(says))
    };
    assert!(
        has("error", "TSUNAGI_SEND_RATE", "not a number"),
        "{problems:?}"
    );
    assert!(has("error", "TSUNAGI_LISTEN", "host:port"), "{problems:?}");
    assert!(
        has("error", "TSUNAGI_JWT_SECRET_FILE", "give one of the two"),
        "{problems:?}"
    );
    assert!(
        has(
            "error",
            "TSUNAGI_ARCHIVE_URL_FILE",
            "/nonexistent/archive-url"
        ),
        "{problems:?}"
    );
    assert!(
        has("error", "TSUNAGI_ENCRYPTION_KEYS", "16 bytes"),
        "{problems:?}"
    );
    assert!(
        has("error", "TSUNAGI_TLS_CERT", "not-a-cert.pem"),
        "{problems:?}"
    );
    assert!(
        has(
            "warning",
            "TSUNAGI_SEND_RATEE",
            "did you mean TSUNAGI_SEND_RATE"
        ),
        "{problems:?}"
    );
    // not a secret setting: `_FILE` is no way to give it, so the variable is unknown
    assert!(
        has("warning", "TSUNAGI_REDIS_PREFIX_FILE", "unknown"),
        "{problems:?}"
    );
    assert!(
        has("warning", "TSUNAGI_REDIS_URL", "mix redis://"),
        "{problems:?}"
    );
    assert!(
        has("warning", "TSUNAGI_DB_MIN_IDLE", "read pool"),
        "{problems:?}"
    );
    let (code, text) = check_config(dir.path(), &env, false);
    assert_eq!(code, 1);
    assert!(
        text.contains(&format!("{} problems:", problems.len())),
        "{text}"
    );
    assert!(
        !text.contains("jwt-secret-never-shown") && !text.contains(&short_key),
        "{text}"
    );
}

#[test]
fn connect_reports_each_database_and_redis_node_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let redis =
        std::env::var("TSUNAGI_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let reachable = [("TSUNAGI_REDIS_URL", redis.as_str())];
    let run = |env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
            .args(["check-config", "--connect", "--json"])
            .env_clear()
            .current_dir(dir.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code().unwrap(), report)
    };
    let (code, report) = run(&reachable);
    assert_eq!(code, 0, "SQLite and a live Redis: {report}");
    let unreachable = [
        (
            "TSUNAGI_DATABASE_URL",
            "postgres://app:pg-pass-never-shown@127.0.0.1:1/db",
        ),
        ("TSUNAGI_JWT_SECRET", "jwt-secret-never-shown-0123456789"),
        (
            "TSUNAGI_REDIS_URL",
            &format!("{redis},redis://:redis-pass@127.0.0.1:1"),
        ),
    ];
    let (code, report) = run(&unreachable);
    assert_eq!(code, 1, "{report}");
    let problems = report["problems"].as_array().unwrap();
    let failed: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| {
            (
                p["setting"].as_str().unwrap(),
                p["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed
            .iter()
            .any(|(s, m)| *s == "TSUNAGI_DATABASE_URL" && m.contains("entry 1: cannot connect"))
    );
    assert!(
        failed
            .iter()
            .any(|(s, m)| *s == "TSUNAGI_REDIS_URL" && m.contains("entry 2: cannot connect"))
    );
    let text = report.to_string();
    assert!(
        !text.contains("pg-pass-never-shown") && !text.contains("redis-pass@"),
        "{text}"
    );
}
