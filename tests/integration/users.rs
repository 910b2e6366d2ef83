//! The users service and its caches, on the store of the run (SQLite, or PostgreSQL with
//! `TSUNAGI_TEST_PG`), each test with and without Redis (`TSUNAGI_TEST_REDIS`, default the
//! local one; unreachable = failure, never a skip).
//!
//! "No database query" is read from the per-statement metrics, which are process-wide: the
//! tests of this file take one lock so no other test queries meanwhile.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{TestApp, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

fn redis_url() -> String {
    std::env::var("TSUNAGI_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis prefix of its own, so runs and tests never see each other's keys.
fn fresh_prefix() -> String {
    format!("tsunagi-test-{}", uuid::Uuid::new_v4().simple())
}

/// Cheap hashes: these tests are about caching, not about argon2's cost.
const FAST_HASH: [(&str, &str); 2] = [
    ("TSUNAGI_ARGON2_MEMORY_KIB", "256"),
    ("TSUNAGI_ARGON2_ITERATIONS", "1"),
];

/// An app on `db` (None: a fresh one), with Redis at `redis` under `prefix` when given.
async fn app(db: Option<&str>, redis: Option<(&str, &str)>, extra: &[(&str, &str)]) -> TestApp {
    let mut env: Vec<(&str, &str)> = FAST_HASH.to_vec();
    env.extend_from_slice(extra);
    if let Some(db) = db {
        env.push(("TSUNAGI_DATABASE_URL", db));
    }
    if let Some((url, prefix)) = redis {
        env.push(("TSUNAGI_REDIS_URL", url));
        env.push(("TSUNAGI_REDIS_PREFIX", prefix));
    }
    let app = spawn_app(&env).await;
    if redis.is_some() {
        wait_bus_connected(&app, true).await;
    }
    app
}

/// The database URL two apps can share (SQLite: the first app's file).
fn shared_db(first: &TestApp) -> String {
    first.db.clone()
}

async fn register(app: &TestApp, name: &str) -> (String, String) {
    let body = json!({
        "username": name,
        "email": format!("{name}@example.org"),
        "password": "a long enough passphrase",
    });
    let (status, res) = app
        .request(Method::POST, "/api/v1/auth/register", None, Some(body))
        .await;
    assert_eq!(status, 201, "{res}");
    (
        res["user"]["id"].as_str().unwrap().to_owned(),
        res["token"].as_str().unwrap().to_owned(),
    )
}

async fn patch_user(app: &TestApp, token: &str, id: &str, body: Value) -> (u16, Value) {
    let path = format!("/api/v1/users/{id}");
    app.request(Method::PATCH, &path, Some(token), Some(body))
        .await
}

async fn get_user(app: &TestApp, token: &str, id: &str) -> (u16, Value) {
    app.request(
        Method::GET,
        &format!("/api/v1/users/{id}"),
        Some(token),
        None,
    )
    .await
}

/// How many times the statement `name` ran in this process (from `/metrics`).
async fn statement_runs(app: &TestApp, name: &str) -> u64 {
    let needle = format!("tsunagi_db_query_seconds_count{{statement=\"{name}\"}} ");
    app.metrics_text()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(|n| n.parse().unwrap()))
        .unwrap_or(0)
}

async fn stats(app: &TestApp) -> Value {
    let admin = app.admin_token("root");
    let (status, s) = app
        .request(Method::GET, "/api/v1/admin/stats", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{s}");
    s
}

async fn wait_bus_connected(app: &TestApp, connected: bool) {
    for _ in 0..200 {
        if stats(app).await["bus"]["connected"] == connected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the bus never became connected={connected}");
}

fn modes() -> Vec<Option<String>> {
    vec![None, Some(redis_url())]
}

#[tokio::test]
async fn a_cached_read_issues_no_database_query() {
    let _serial = SERIAL.lock().await;
    for redis in modes() {
        let prefix = fresh_prefix();
        let r = redis.as_deref().map(|u| (u, prefix.as_str()));
        let a = app(None, r, &[]).await;
        let (id, token) = register(&a, "cached").await;
        let (status, first) = get_user(&a, &token, &id).await;
        assert_eq!(status, 200, "{first}");
        let before = statement_runs(&a, "user_by_id").await;
        for _ in 0..20 {
            let (status, again) = get_user(&a, &token, &id).await;
            assert_eq!((status, &again), (200, &first));
        }
        assert_eq!(
            statement_runs(&a, "user_by_id").await,
            before,
            "redis={redis:?}"
        );
        let s = stats(&a).await;
        assert!(
            s["caches"]["users"]["l1"]["hits"].as_u64().unwrap() >= 20,
            "{s}"
        );

        if redis.is_some() {
            // A second instance has a cold L1 but finds the user in L2: still no query.
            let b = app(Some(&shared_db(&a)), r, &[]).await;
            let (status, from_b) = get_user(&b, &token, &id).await;
            assert_eq!((status, &from_b), (200, &first));
            assert_eq!(statement_runs(&a, "user_by_id").await, before);
            let s = stats(&b).await;
            // the user, and the stats caller: every request reads its caller's row through the
            // cache (role changes, docs/security.md), and A remembered in L2 that this admin
            // token's sub is not registered here
            assert_eq!(s["caches"]["users"]["l2"]["hits"], 2, "{s}");
        }
    }
}

#[tokio::test]
async fn concurrent_misses_of_a_cold_key_load_it_once() {
    let _serial = SERIAL.lock().await;
    for redis in modes() {
        let a = app(None, None, &[]).await;
        let (id, token) = register(&a, "coldkey").await;
        // B shares the database but nothing cached: L1 is its own, L2 a fresh prefix.
        let prefix = fresh_prefix();
        let r = redis.as_deref().map(|u| (u, prefix.as_str()));
        let b = app(Some(&shared_db(&a)), r, &[]).await;
        let before = statement_runs(&b, "user_by_id").await;
        let gets = (0..100).map(|_| get_user(&b, &token, &id));
        for (status, user) in futures::future::join_all(gets).await {
            assert_eq!(status, 200);
            assert_eq!(user["id"], id.as_str());
        }
        assert_eq!(
            statement_runs(&b, "user_by_id").await - before,
            1,
            "redis={redis:?}"
        );

        // A missing user is remembered too (negative cache): one load for many 404s.
        let before = statement_runs(&b, "user_by_id").await;
        let gets = (0..50).map(|_| get_user(&b, &token, "no-such-user"));
        for (status, body) in futures::future::join_all(gets).await {
            assert_eq!(status, 404, "{body}");
        }
        let (status, _) = get_user(&b, &token, "no-such-user").await;
        assert_eq!(status, 404);
        assert_eq!(statement_runs(&b, "user_by_id").await - before, 1);
    }
}

#[tokio::test]
async fn a_write_on_one_instance_is_seen_at_once_on_another() {
    let _serial = SERIAL.lock().await;
    let url = redis_url();
    let prefix = fresh_prefix();
    let r = Some((url.as_str(), prefix.as_str()));
    // a generous ack bound: the assertion below is about correctness, not a loaded machine's speed
    let slow_ok = [("TSUNAGI_BUS_ACK_TIMEOUT_MS", "5000")];
    let a = app(None, r, &slow_ok).await;
    let b = app(Some(&shared_db(&a)), r, &slow_ok).await;
    let (id, token) = register(&a, "roamer").await;
    for i in 0..20 {
        let (status, _) = get_user(&b, &token, &id).await; // B caches the current value
        assert_eq!(status, 200);
        let bio = format!("bio number {i}");
        let (status, patched) = patch_user(&a, &token, &id, json!({ "bio": bio })).await;
        assert_eq!(status, 200, "{patched}");
        let (status, seen) = get_user(&b, &token, &id).await;
        assert_eq!(status, 200);
        assert_eq!(seen["bio"], bio.as_str(), "round {i}");
    }

    // Every invalidation was confirmed by B before A answered.
    let bus = &stats(&a).await["bus"];
    assert_eq!(bus["ack_timeouts"], 0, "{bus}");
    assert!(bus["published"].as_u64().unwrap() >= 20, "{bus}");

    // A write-through to L2 that failed (simulated: the previous version put back by hand) must
    // not be served by an instance that heard of the newer version on the bus.
    let (_, old) = get_user(&b, &token, &id).await;
    let (status, _) = patch_user(&a, &token, &id, json!({ "bio": "the newest" })).await;
    assert_eq!(status, 200);
    let mut redis = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut stale = old.clone();
    stale["version"] = 21.into();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:cache:users:{id}"))
        .arg(format!("21\n{stale}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let (_, seen) = get_user(&b, &token, &id).await;
    assert_eq!(seen["bio"], "the newest");

    // Membership: B remembers a refusal, A adds the member, B admits them at once.
    let owner = a.token("owner");
    a.create_room(&owner, "club", true).await;
    let path = "/api/v1/rooms/club/messages";
    let (status, _) = b.request(Method::GET, path, Some(&token), None).await;
    assert_eq!(status, 403);
    let (status, _) = a
        .request(
            Method::POST,
            "/api/v1/rooms/club/members",
            Some(&owner),
            Some(json!({ "user_id": id })),
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = b.request(Method::GET, path, Some(&token), None).await;
    assert_eq!(status, 200, "{body}");

    // A room created on A right after B was told it does not exist.
    let (status, _) = b
        .request(
            Method::GET,
            "/api/v1/rooms/late/messages",
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, 404);
    a.create_room(&owner, "late", false).await;
    let (status, body) = b
        .request(
            Method::GET,
            "/api/v1/rooms/late/messages",
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_audit_row_is_absent_when_the_change_rolls_back() {
    let _serial = SERIAL.lock().await;
    let a = app(None, None, &[]).await;
    let (id, token) = register(&a, "auditee").await;
    register(&a, "other").await;
    let admin = a.admin_token("auditor");
    let audit = |target: String| {
        let a = &a;
        let admin = admin.clone();
        async move {
            let path = format!("/api/v1/admin/audit?target={target}");
            let (status, body) = a.request(Method::GET, &path, Some(&admin), None).await;
            assert_eq!(status, 200, "{body}");
            body["items"].as_array().unwrap().clone()
        }
    };
    let target = format!("user:{id}");
    assert_eq!(audit(target.clone()).await.len(), 1); // user.register

    // The email is taken: the update fails after its audit row was written; both roll back.
    let (status, body) = patch_user(
        &a,
        &token,
        &id,
        json!({ "email": "other@example.org", "bio": "never" }),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let rows = audit(target.clone()).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["action"], "user.register");
    let (_, user) = get_user(&a, &token, &id).await;
    assert_eq!(user["bio"], "");

    let (status, _) = patch_user(&a, &token, &id, json!({ "bio": "kept" })).await;
    assert_eq!(status, 200);
    let rows = audit(target).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["action"], "user.update");
    assert_eq!(rows[0]["actor"], id.as_str());
    assert_eq!(rows[0]["old"]["bio"], "");
    assert_eq!(rows[0]["new"]["bio"], "kept");
    assert!(!rows[0].to_string().contains("argon2"));
}

/// A Redis server of this test's own, to stop and start.
struct OwnRedis {
    port: u16,
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(port: u16, dir: tempfile::TempDir) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            // keeps its data across a restart, like a real Redis after a network outage
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test checks)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis {
            port,
            dir: Some(dir),
            child: Some(child),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(mut self) -> (u16, tempfile::TempDir) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
        (self.port, self.dir.take().expect("still there"))
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

#[tokio::test]
async fn with_redis_down_reads_fall_through_to_the_store() {
    let _serial = SERIAL.lock().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = OwnRedis::start(port, tempfile::tempdir().unwrap());
    let url = redis.url();
    let r = Some((url.as_str(), "down-test"));
    let a = app(None, r, &[]).await;
    let b = app(Some(&shared_db(&a)), r, &[]).await;
    let (id, token) = register(&a, "survivor").await;
    let (status, _) = get_user(&b, &token, &id).await; // cached on B
    assert_eq!(status, 200);

    let (port, dir) = redis.stop();
    wait_bus_connected(&b, false).await;
    let (status, ready) = b.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["redis"], "failed");
    assert_eq!(ready["checks"]["database"], "ok");

    // A's invalidation cannot be published, and B no longer trusts its L1: correct, slower.
    let patch = |bio: &'static str| {
        let (a, token, id) = (&a, token.clone(), id.clone());
        async move {
            let (status, body) = patch_user(a, &token, &id, json!({ "bio": bio })).await;
            assert_eq!(status, 200, "{body}");
        }
    };
    patch("while down").await;
    let before = statement_runs(&b, "user_by_id").await;
    for _ in 0..3 {
        let (status, user) = get_user(&b, &token, &id).await;
        assert_eq!((status, user["bio"].as_str()), (200, Some("while down")));
    }
    assert!(statement_runs(&b, "user_by_id").await - before >= 3);
    let (_, fresh) = register(&b, "newcomer").await;
    assert!(!fresh.is_empty());

    // Redis returns with its data (the user's old version still in L2). A makes L2 and B forget
    // what it wrote meanwhile; B starts from an empty L1 and follows A's writes again.
    let _redis = OwnRedis::start(port, dir);
    wait_bus_connected(&b, true).await;
    wait_bus_connected(&a, true).await;
    for _ in 0..200 {
        if stats(&a).await["caches"]["users"]["l2"]["awaiting_repair"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, user) = get_user(&b, &token, &id).await;
    assert_eq!((status, user["bio"].as_str()), (200, Some("while down")));
    patch("after").await;
    let (_, user) = get_user(&b, &token, &id).await;
    assert_eq!(user["bio"], "after");
    let (status, _) = b.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn stores_and_modes_agree_on_the_user_shape() {
    let _serial = SERIAL.lock().await;
    let a = app(None, None, &[]).await;
    let (id, token) = register(&a, "shape").await;
    let (_, me) = get_user(&a, &token, &id).await;
    let keys: Vec<&str> = me.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "bio",
            "created_at",
            "display_name",
            "email",
            "id",
            "metadata",
            "role",
            "updated_at",
            "username"
        ]
    );
    // others do not see the email
    let (_, seen) = get_user(&a, &a.token("stranger"), &id).await;
    assert!(seen.get("email").is_none(), "{seen}");
}

/// POSTs one message to `limited`; true if it was accepted, false if rate limited.
async fn send_limited(app: &TestApp, token: &str) -> bool {
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/rooms/limited/messages",
            Some(token),
            Some(json!({ "content": "hi" })),
        )
        .await;
    assert!(status == 201 || status == 429, "{status} {body}");
    status == 201
}

#[tokio::test]
async fn rate_limits_are_shared_across_instances_with_redis() {
    let _serial = SERIAL.lock().await;
    let url = redis_url();
    let prefix = fresh_prefix();
    let r = Some((url.as_str(), prefix.as_str()));
    let slow = [("TSUNAGI_SEND_RATE", "0.5"), ("TSUNAGI_SEND_BURST", "3")];
    let a = app(None, r, &slow).await;
    let b = app(Some(&shared_db(&a)), r, &slow).await;
    let owner = a.token("owner");
    a.create_room(&owner, "limited", false).await;
    // What one instance lets a user send at once …
    let mut alone = 0;
    for _ in 0..10 {
        alone += usize::from(send_limited(&a, &a.token("solo")).await);
    }
    // … is what two instances together let another user send: the limit is one, in Redis.
    let mut together = 0;
    for i in 0..10 {
        let app = if i % 2 == 0 { &a } else { &b };
        together += usize::from(send_limited(app, &a.token("duo")).await);
    }
    assert!((3..=5).contains(&alone), "{alone}");
    assert!(
        together <= alone + 1,
        "alone {alone}, across two instances {together}"
    );
}
