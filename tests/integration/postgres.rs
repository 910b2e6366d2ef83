//! PostgreSQL at scale, against real servers: the machine's primary and a streaming replica made
//! by `scripts/pg-replica`. These tests stop and start both, so `scripts/test` runs them alone,
//! one at a time (`--ignored --test-threads=1`) after every other suite; they need
//! `TSUNAGI_TEST_PG` and `TSUNAGI_TEST_REPLICA` and fail (never skip) without them.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use reqwest::Method;
use serde_json::json;
use sqlx::{Connection, PgConnection, Row};

const NEEDS: &str = "needs PostgreSQL and its replica: run by scripts/test";

fn primary_base() -> String {
    test_pg().expect("TSUNAGI_TEST_PG must name the PostgreSQL server for these tests")
}

fn replica_base() -> String {
    std::env::var("TSUNAGI_TEST_REPLICA").expect("TSUNAGI_TEST_REPLICA must name the replica")
}

fn pg_replica(cmd: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-replica");
    let out = Command::new("bash")
        .arg(script)
        .arg(cmd)
        .output()
        .expect("runs scripts/pg-replica");
    assert!(
        out.status.success(),
        "scripts/pg-replica {cmd} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn connect_until(url: &str, within: Duration) -> PgConnection {
    let deadline = Instant::now() + within;
    loop {
        match PgConnection::connect(url).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("{url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Starts again (at the end of a test, even a failed one) what the test stopped.
struct Restore(&'static str);

impl Drop for Restore {
    fn drop(&mut self) {
        pg_replica(self.0);
    }
}

/// Whether each connection `application_name` has open to the database at `url` uses TLS.
async fn tls_of_connections(url: &str, application_name: &str) -> Vec<bool> {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = current_database() AND a.application_name = $1",
    )
    .bind(application_name)
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A tsunagi on a fresh database of the primary, reading from the replica.
async fn spawn_replicated(extra: &[(&str, &str)]) -> (TestApp, String) {
    pg_replica("up"); // a no-op when it runs; brings it back after an earlier failure
    let db = fresh_pg_database(&primary_base()).await;
    // the new database reaches the replica through the WAL
    connect_until(&format!("{}/{db}", replica_base()), Duration::from_secs(30)).await;
    let primary = format!("{}/{db}", primary_base());
    let replica = format!("{}/{db}", replica_base());
    let mut env = vec![
        ("TSUNAGI_DATABASE_URL", primary.as_str()),
        ("TSUNAGI_REPLICA_URLS", replica.as_str()),
        ("TSUNAGI_REPLICA_CHECK_MS", "100"),
        ("TSUNAGI_SEND_RATE", "0"),
    ];
    env.extend_from_slice(extra);
    (spawn_app(&env).await, db)
}

async fn metric(app: &TestApp, name_and_labels: &str) -> f64 {
    app.metrics_text()
        .await
        .lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Waits for the replica health gauge. It is process-wide (one metrics recorder per process), so
/// right after another test's app it may still show that app's view: tests that need this app's
/// replica reads check `tsunagi_db_reads_total` deltas too.
async fn wait_replica_healthy(app: &TestApp, healthy: bool) {
    let want = if healthy { 1.0 } else { 0.0 };
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(app, "tsunagi_db_replica_healthy{pool=\"replica-0\"}").await != want {
        assert!(
            Instant::now() < deadline,
            "replica never became healthy={healthy}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post_message(
    app: &TestApp,
    token: &str,
    room: &str,
    content: &str,
) -> (u16, serde_json::Value) {
    let path = format!("/api/v1/rooms/{room}/messages");
    app.request(
        Method::POST,
        &path,
        Some(token),
        Some(json!({ "content": content })),
    )
    .await
}

/// A connection holding `rooms` in ACCESS EXCLUSIVE mode (an open transaction): every statement
/// on rooms waits until it rolls back or is dropped.
async fn lock_rooms(url: &str) -> PgConnection {
    let mut locker = PgConnection::connect(url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    locker
}

#[tokio::test]
#[ignore = "needs PostgreSQL and its replica: run by scripts/test"]
async fn reads_land_on_the_replica_and_users_read_their_own_writes() {
    let _ = NEEDS;
    let (app, db) = spawn_replicated(&[]).await;
    let writer = app.token("writer");
    let reader = app.token("reader");
    app.create_room(&writer, "ryw", false).await;
    wait_replica_healthy(&app, true).await;

    // write-then-read: the writer always sees what it just wrote
    for i in 0..100 {
        let (status, m) = post_message(&app, &writer, "ryw", &format!("m{i}")).await;
        assert_eq!(status, 201);
        let (status, page) = app
            .request(
                Method::GET,
                "/api/v1/rooms/ryw/messages?limit=1",
                Some(&writer),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            page["items"][0]["id"], m["id"],
            "read-your-writes broken at {i}"
        );
        let (_, rooms) = app
            .request(Method::GET, "/api/v1/rooms", Some(&writer), None)
            .await;
        assert_eq!(rooms["items"][0]["id"], "ryw");
    }

    // a user with no recent writes reads from the replica
    let before = metric(&app, "tsunagi_db_reads_total{pool=\"replica-0\"}").await;
    for _ in 0..20 {
        let (status, _) = app
            .request(
                Method::GET,
                "/api/v1/rooms/ryw/messages",
                Some(&reader),
                None,
            )
            .await;
        assert_eq!(status, 200);
    }
    let after = metric(&app, "tsunagi_db_reads_total{pool=\"replica-0\"}").await;
    // most reads, not all: a busy machine may take the replica out for a moment
    assert!(after >= before + 15.0, "replica reads {before} → {after}");

    // and the replica sees tsunagi's connections by application name
    let mut replica = PgConnection::connect(&format!("{}/{db}", replica_base()))
        .await
        .unwrap();
    let names: Vec<String> = sqlx::query(
        "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = current_database()",
    )
    .fetch_all(&mut replica)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert!(names.iter().any(|n| n == "tsunagi-replica-0"), "{names:?}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL and its replica: run by scripts/test"]
async fn replica_down_moves_reads_to_the_primary_without_a_failed_request() {
    let (app, _) = spawn_replicated(&[]).await;
    let t = app.token("reader");
    app.create_room(&t, "stay", false).await;
    post_message(&app, &app.token("w"), "stay", "hello").await;
    wait_replica_healthy(&app, true).await;

    let app = Arc::new(app);
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = {
        let (app, failures, done, t) = (app.clone(), failures.clone(), done.clone(), t.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let (status, page) = app
                    .request(Method::GET, "/api/v1/rooms/stay/messages", Some(&t), None)
                    .await;
                if status != 200 || page["items"].as_array().map(Vec::len) != Some(1) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restore = Restore("start");
    pg_replica("stop");
    let primary_before = metric(&app, "tsunagi_db_reads_total{pool=\"primary\"}").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(metric(&app, "tsunagi_db_reads_total{pool=\"primary\"}").await > primary_before + 10.0);
    wait_replica_healthy(&app, false).await;
    drop(restore); // starts the replica
    wait_replica_healthy(&app, true).await;
    let replica_before = metric(&app, "tsunagi_db_reads_total{pool=\"replica-0\"}").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        metric(&app, "tsunagi_db_reads_total{pool=\"replica-0\"}").await > replica_before + 10.0
    );
    done.store(true, Ordering::Relaxed);
    let n = reads.await.unwrap();
    assert!(n > 50, "only {n} reads ran");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed reads out of {n}"
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL and its replica: run by scripts/test"]
async fn primary_down_is_unavailable_and_recovers_without_a_restart() {
    let (app, _) = spawn_replicated(&[("TSUNAGI_DB_ACQUIRE_TIMEOUT_MS", "1000")]).await;
    let t = app.token("alice");
    app.create_room(&t, "outage", false).await;
    let c = app.connect("alice").await;
    assert_eq!(
        c.call("send", json!({"room":"outage","content":"before"}), WAIT)
            .await
            .unwrap()["ok"],
        true
    );

    let restore = Restore("primary-start");
    pg_replica("primary-stop");
    let result = async {
        let started = Instant::now();
        let (status, body) = app.request(Method::GET, "/readyz", None, None).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("database")
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "readyz took {:?}",
            started.elapsed()
        );
        let ack = c
            .call("send", json!({"room":"outage","content":"during"}), WAIT)
            .await
            .unwrap();
        assert_eq!(ack["error"]["code"], "unavailable", "{ack}");
        let (status, body) = post_message(&app, &t, "outage", "during").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("unavailable"))
        );
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), result).await;
    drop(restore); // starts the primary
    outcome.expect("answers during the outage came in time");

    let deadline = Instant::now() + Duration::from_secs(30);
    while app.request(Method::GET, "/readyz", None, None).await.0 != 200 {
        assert!(Instant::now() < deadline, "/readyz never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ack = c
        .call("send", json!({"room":"outage","content":"after"}), WAIT)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["message"]["seq"], 2, "no gap from the failed sends");
}

#[tokio::test]
#[ignore = "needs PostgreSQL and its replica: run by scripts/test"]
async fn exhausted_pool_answers_503_within_the_acquire_timeout() {
    let db = fresh_pg_database(&primary_base()).await;
    let url = format!("{}/{db}", primary_base());
    let app = spawn_app(&[
        ("TSUNAGI_DATABASE_URL", &url),
        ("TSUNAGI_DB_POOL_SIZE", "2"),
        ("TSUNAGI_DB_ACQUIRE_TIMEOUT_MS", "500"),
        ("TSUNAGI_DB_STATEMENT_TIMEOUT_MS", "30000"),
    ])
    .await;
    let t = app.token("alice");
    app.create_room(&t, "busy", false).await;
    // Hold every pooled connection: two room listings wait behind a table lock.
    let mut locker = lock_rooms(&url).await;
    let app = Arc::new(app);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (app, t) = (app.clone(), t.clone());
            tokio::spawn(async move {
                app.request(Method::GET, "/api/v1/rooms", Some(&t), None)
                    .await
                    .0
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (status, body) = app
        .request(Method::GET, "/api/v1/rooms", Some(&t), None)
        .await;
    let took = started.elapsed();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert!(metric(&app, "tsunagi_db_acquire_timeouts_total{pool=\"primary\"}").await >= 1.0);
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    for h in held {
        assert_eq!(
            h.await.unwrap(),
            200,
            "the held requests finish once the lock goes"
        );
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL and its replica: run by scripts/test"]
async fn statement_timeout_bounds_a_blocked_query() {
    let db = fresh_pg_database(&primary_base()).await;
    let url = format!("{}/{db}", primary_base());
    let app = spawn_app(&[
        ("TSUNAGI_DATABASE_URL", &url),
        ("TSUNAGI_DB_STATEMENT_TIMEOUT_MS", "300"),
    ])
    .await;
    let t = app.token("alice");
    app.create_room(&t, "slow", false).await;
    let mut locker = lock_rooms(&url).await;
    let started = Instant::now();
    let (status, _) = app
        .request(Method::GET, "/api/v1/rooms", Some(&t), None)
        .await;
    assert_eq!(status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
}

/// A real `tsunagi serve` process on a free port; killed when dropped.
struct Process {
    child: std::process::Child,
    url: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

async fn spawn_process(env: &[(&str, &str)]) -> Process {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .arg("serve")
        .env("TSUNAGI_LISTEN", format!("127.0.0.1:{port}"))
        .env("TSUNAGI_JWT_SECRET", SECRET)
        .env("TSUNAGI_LOG", "warn")
        .envs(env.iter().copied())
        .spawn()
        .unwrap();
    let p = Process {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{}/healthz", p.url))
        .await
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "tsunagi process did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p
}

#[tokio::test]
#[ignore = "needs PostgreSQL and its replica: run by scripts/test"]
async fn two_processes_writing_one_room_keep_seq_gap_free() {
    let db = fresh_pg_database(&primary_base()).await;
    let url = format!("{}/{db}", primary_base());
    let env = [
        ("TSUNAGI_DATABASE_URL", url.as_str()),
        ("TSUNAGI_SEND_RATE", "0"),
    ];
    let (a, b) = (spawn_process(&env).await, spawn_process(&env).await);
    let tokens = tsunagi::auth::Tokens::new(SECRET.as_bytes());
    let owner = tokens.mint("o", false, None, 600);
    let created = reqwest::Client::new()
        .post(format!("{}/api/v1/rooms", a.url))
        .bearer_auth(&owner)
        .json(&json!({ "id": "shared" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let mut clients = Vec::new();
    let mut waits = Vec::new();
    for i in 0..6 {
        let base = if i % 2 == 0 { &a.url } else { &b.url };
        let token = tokens.mint(&format!("u{i}"), false, None, 600);
        let c = tsunagi::client::SioClient::connect(base, Some(&token))
            .await
            .unwrap();
        for j in 0..50 {
            let body = json!({ "room": "shared", "content": format!("{i}-{j}"), "client_id": format!("{i}-{j}") });
            waits.push(c.emit_with_ack("send", &body));
        }
        clients.push(c);
    }
    for w in futures::future::join_all(waits).await {
        assert_eq!(w.unwrap()["ok"], true);
    }
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let seqs: Vec<i64> =
        sqlx::query("SELECT seq FROM messages WHERE room_id = 'shared' ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
    let last: i64 = sqlx::query("SELECT last_seq FROM rooms WHERE id = 'shared'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, 300);
}

#[tokio::test]
#[ignore = "needs PostgreSQL and its replica: run by scripts/test"]
async fn hot_queries_use_indexes_on_a_large_table() {
    use tsunagi::store::postgres::{
        HISTORY_BACKWARD, HISTORY_FORWARD, MESSAGES_BY_CLIENT_IDS, ROOMS_LIST,
    };
    let db = fresh_pg_database(&primary_base()).await;
    let url = format!("{}/{db}", primary_base());
    let mut app = spawn_app(&[("TSUNAGI_DATABASE_URL", &url)]).await; // migrates
    app.stop().await.unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    for sql in [
        "INSERT INTO rooms (id, name, private, owner_id, epoch, last_seq, created_at) \
         SELECT 'r' || g, 'r' || g, g % 3 = 0, 'u' || (g % 50), 'e', 10000, now() FROM generate_series(1, 200) g",
        "INSERT INTO room_members (room_id, user_id, added_by, added_at) \
         SELECT 'r' || (g % 200 + 1), 'm' || g, 'x', now() FROM generate_series(1, 100000) g",
        "INSERT INTO messages (room_id, seq, id, user_id, content, client_id, created_at) \
         SELECT 'r' || (g % 200 + 1), g / 200 + 1, 'id' || g, 'u' || (g % 50), 'hello', 'c' || g, now() \
         FROM generate_series(0, 399999) g",
        "INSERT INTO users (id, username, email, password_hash, display_name, created_at, updated_at) \
         SELECT 'user-' || lpad(g::text, 6, '0'), 'Name' || g, 'n' || g || '@x.io', 'h', 'N', now(), now() \
         FROM generate_series(1, 100000) g",
        "INSERT INTO audit_log (at, actor_id, action, target, new_value) \
         SELECT now(), 'u' || (g % 500), 'room.member_add', 'room:r' || (g % 200 + 1), '{}' \
         FROM generate_series(1, 100000) g",
        "ANALYZE",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let explain = |sql: &'static str| format!("EXPLAIN (FORMAT TEXT) {sql}");
    let plans = [
        (
            "history_backward",
            sqlx::query(sqlx::AssertSqlSafe(explain(HISTORY_BACKWARD)))
                .bind("r7")
                .bind(0i64)
                .bind(i64::MAX)
                .bind(51i64),
        ),
        (
            "history_forward",
            sqlx::query(sqlx::AssertSqlSafe(explain(HISTORY_FORWARD)))
                .bind("r7")
                .bind(1500i64)
                .bind(i64::MAX)
                .bind(101i64),
        ),
    ];
    let mut checked = Vec::new();
    for (name, q) in plans {
        checked.push((name, q.fetch_all(&mut conn).await.unwrap()));
    }
    let idem = sqlx::query(sqlx::AssertSqlSafe(explain(MESSAGES_BY_CLIENT_IDS)))
        .bind(vec!["r7", "r8"])
        .bind(vec!["u6", "u7"])
        .bind(vec!["c1206", "c1407"])
        .fetch_all(&mut conn)
        .await
        .unwrap();
    checked.push(("idempotency", idem));
    let rooms = sqlx::query(sqlx::AssertSqlSafe(explain(ROOMS_LIST)))
        .bind("r1")
        .bind(false)
        .bind("u7")
        .bind(51i64)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    checked.push(("rooms_list", rooms));
    use tsunagi::store::postgres::users::{
        AUDIT_BY_ACTOR, AUDIT_BY_TARGET, MEMBERS_WITH_USERS, USER_BY_USERNAME, USERS_BEFORE,
    };
    let members = sqlx::query(sqlx::AssertSqlSafe(explain(MEMBERS_WITH_USERS)))
        .bind("r7")
        .bind("m1000")
        .bind(51i64)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    checked.push(("members_with_users", members));
    let users = sqlx::query(sqlx::AssertSqlSafe(explain(USERS_BEFORE)))
        .bind(51i64)
        .bind("user-050000")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    checked.push(("users_before", users));
    let login = sqlx::query(sqlx::AssertSqlSafe(explain(USER_BY_USERNAME)))
        .bind("Name77")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    checked.push(("user_by_username", login));
    for (name, sql, arg) in [
        ("audit_by_target", AUDIT_BY_TARGET, "room:r7"),
        ("audit_by_actor", AUDIT_BY_ACTOR, "u7"),
    ] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(explain(sql)))
            .bind(i64::MAX)
            .bind(51i64)
            .bind(arg)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        checked.push((name, rows));
    }
    for (name, rows) in checked {
        let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Seq Scan on messages"),
            "{name} scans messages:\n{plan}"
        );
        assert!(
            !plan.contains("Seq Scan on room_members"),
            "{name} scans members:\n{plan}"
        );
        for table in ["users", "audit_log"] {
            assert!(
                !plan.contains(&format!("Seq Scan on {table}")),
                "{name} scans {table}:\n{plan}"
            );
        }
        assert!(plan.contains("Index"), "{name} uses no index:\n{plan}");
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL and its replica: run by scripts/test"]
async fn tls_to_the_database_with_sslmode_require() {
    let db = fresh_pg_database(&primary_base()).await;
    let url = format!("{}/{db}?sslmode=require", primary_base());
    let app = spawn_app(&[("TSUNAGI_DATABASE_URL", &url)]).await;
    app.create_room(&app.token("a"), "tls", false).await;
    let ssl = tls_of_connections(&format!("{}/{db}", primary_base()), "tsunagi-primary").await;
    assert!(!ssl.is_empty() && ssl.iter().all(|s| *s), "{ssl:?}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL and its replica: run by scripts/test"]
async fn replica_over_tls_with_sslmode_verify_full() {
    pg_replica("up");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-replica");
    let out = Command::new("bash")
        .arg(script)
        .arg("tls-ca")
        .output()
        .unwrap();
    let ca = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(std::path::Path::new(&ca).exists(), "no CA at {ca}");
    let db = fresh_pg_database(&primary_base()).await;
    connect_until(&format!("{}/{db}", replica_base()), Duration::from_secs(30)).await;
    let primary = format!("{}/{db}", primary_base());
    let replica = format!(
        "{}/{db}?sslmode=verify-full&sslrootcert={ca}",
        replica_base()
    );
    let app = spawn_app(&[
        ("TSUNAGI_DATABASE_URL", &primary),
        ("TSUNAGI_REPLICA_URLS", &replica),
        ("TSUNAGI_REPLICA_CHECK_MS", "100"),
    ])
    .await;
    app.create_room(&app.token("w"), "tls", false).await;
    wait_replica_healthy(&app, true).await;
    let reader = app.token("reader");
    let before = metric(&app, "tsunagi_db_reads_total{pool=\"replica-0\"}").await;
    // (the health gauge is process-wide, so an earlier test's app may have set it: read until this
    // app's reads reach the replica, which needs its TLS connection to work)
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = app
            .request(Method::GET, "/api/v1/rooms", Some(&reader), None)
            .await;
        assert_eq!(status, 200);
        let after = metric(&app, "tsunagi_db_reads_total{pool=\"replica-0\"}").await;
        if after >= before + 10.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica reads {before} → {after}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ssl = tls_of_connections(&format!("{}/{db}", replica_base()), "tsunagi-replica-0").await;
    assert!(!ssl.is_empty() && ssl.iter().all(|s| *s), "{ssl:?}");
}
