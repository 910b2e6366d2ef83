//! Starts a real tsunagi on a free port with a fresh SQLite database, and talks to it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tsunagi::auth::Tokens;
use tsunagi::client::SioClient;
use tsunagi::config::Config;

pub const SECRET: &str = "integration-test-secret-0123456789";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub url: String,
    /// The database URL, to start again on the same data.
    pub db: String,
    pub dir: tempfile::TempDir,
    pub tokens: Tokens,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app(extra: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    spawn_app_in(dir, extra).await
}

/// With `TSUNAGI_TEST_PG=postgres://user@host:port` set, apps get a fresh PostgreSQL database
/// each instead of a SQLite file, so the same tests run on both stores.
pub fn test_pg() -> Option<String> {
    std::env::var("TSUNAGI_TEST_PG")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Creates an empty database on the test PostgreSQL server; returns its name.
pub async fn fresh_pg_database(base: &str) -> String {
    use sqlx::Connection;
    let name = format!("tsunagi_r_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    name
}

pub async fn spawn_app_in(dir: tempfile::TempDir, extra: &[(&str, &str)]) -> TestApp {
    let db = match extra.iter().find(|(k, _)| *k == "TSUNAGI_DATABASE_URL") {
        Some((_, url)) => url.to_string(),
        None => match test_pg() {
            Some(base) => format!("{base}/{}", fresh_pg_database(&base).await),
            None => format!("sqlite://{}/t.db", dir.path().display()),
        },
    };
    let mut env: HashMap<String, String> = HashMap::from([
        ("TSUNAGI_DATABASE_URL".into(), db.clone()),
        ("TSUNAGI_JWT_SECRET".into(), SECRET.into()),
        ("TSUNAGI_LISTEN".into(), "127.0.0.1:0".into()),
    ]);
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    let config = Config::from_map(&env).expect("test config is valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(tsunagi::server::run(config, listener, async {
        stopped.await.ok();
    }));
    let app = TestApp {
        url,
        db,
        dir,
        tokens: Tokens::new(SECRET.as_bytes()),
        http: reqwest::Client::new(),
        stop: Some(stop),
        done: Some(done),
    };
    for _ in 0..100 {
        if let Ok(r) = app.http.get(format!("{}/healthz", app.url)).send().await
            && r.status() == 200
        {
            return app;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("tsunagi did not start");
}

impl TestApp {
    pub fn token(&self, user: &str) -> String {
        self.tokens.mint(user, false, None, 3600)
    }

    pub fn admin_token(&self, user: &str) -> String {
        self.tokens.mint(user, true, None, 3600)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let res = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap();
        res.text().await.unwrap()
    }

    pub async fn create_room(&self, token: &str, id: &str, private: bool) -> Value {
        let body = json!({ "id": id, "private": private });
        let (status, info) = self
            .request(
                reqwest::Method::POST,
                "/api/v1/rooms",
                Some(token),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{info}");
        info
    }

    pub async fn connect(&self, user: &str) -> SioClient {
        SioClient::connect(&self.url, Some(&self.token(user)))
            .await
            .expect("connects")
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            s.send(()).ok();
        }
        match self.done.take() {
            Some(d) => tokio::time::timeout(Duration::from_secs(30), d)
                .await
                .expect("shutdown finishes")
                .expect("run does not panic"),
            None => Ok(()),
        }
    }
}

pub async fn join(c: &SioClient, room: &str) -> Value {
    let ack = c.call("join", json!({ "room": room }), WAIT).await.unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    ack
}

/// Collects `n` `message` events from `c`.
pub async fn messages(c: &mut SioClient, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match c.next_event("message", WAIT).await {
            Some(m) => out.push(m),
            None => panic!("only {} of {n} messages arrived", out.len()),
        }
    }
    out
}
