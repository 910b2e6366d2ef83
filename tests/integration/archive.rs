//! Archiving with the real binary (PROTOCOL.md §6.3): `tsunagi archive` killed with SIGKILL in
//! the middle of a pass loses and repeats nothing, a second run finishes the move, and the
//! server reads every message once across hot and cold (`GET …/messages` both ways, client_id
//! retries, the admin stats). On SQLite, or on PostgreSQL with `TSUNAGI_TEST_PG`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tsunagi::auth::Tokens;
use tsunagi::config::Config;
use tsunagi::domain::RoomId;
use tsunagi::store::{NewMessage, NewRoom, Store};
use tsunagi::telemetry::Telemetry;

use crate::binary::{Data, spawn_binary};
use crate::common::SECRET;

const MESSAGES: i64 = 12_000;

async fn open_store(db: &str) -> std::sync::Arc<dyn Store> {
    let env = HashMap::from([
        ("TSUNAGI_DATABASE_URL".to_owned(), db.to_owned()),
        ("TSUNAGI_JWT_SECRET".to_owned(), SECRET.to_owned()),
    ]);
    let config = Config::from_map(&env).unwrap();
    tsunagi::store::build(&config, &Telemetry::new(0))
        .await
        .unwrap()
        .0
}

/// Every seq `GET …/messages` returns, paging forward from 0 or backwards from the end.
async fn read_all(http: &reqwest::Client, base: &str, token: &str, forward: bool) -> Vec<i64> {
    let mut pages: Vec<Vec<i64>> = Vec::new();
    let mut cursor: Option<i64> = if forward { Some(0) } else { None };
    loop {
        let query = match (forward, cursor) {
            (true, Some(c)) => format!("after_seq={c}"),
            (false, Some(c)) => format!("before_seq={c}"),
            _ => String::new(),
        };
        let page: Value = http
            .get(format!(
                "{base}/api/v1/rooms/history/messages?limit=500&{query}"
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let seqs: Vec<i64> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect();
        cursor = if forward { seqs.last() } else { seqs.first() }.copied();
        pages.push(seqs);
        if page["more"] != json!(true) {
            break;
        }
    }
    if !forward {
        pages.reverse();
    }
    pages.into_iter().flatten().collect()
}

async fn archive_command(db: &str, older_than: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args(["archive", "--older-than", older_than])
        .env("TSUNAGI_DATABASE_URL", db)
        .env("TSUNAGI_JWT_SECRET", SECRET)
        .env("TSUNAGI_ARCHIVE_BATCH", "40")
        .env("TSUNAGI_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_in_the_middle_of_a_pass_loses_and_repeats_nothing() {
    let data = Data::fresh().await;
    let store = open_store(&data.url).await;
    store
        .create_room(NewRoom {
            id: RoomId::parse("history").unwrap(),
            name: "history".into(),
            private: false,
            owner_id: "owner".into(),
            metadata: None,
        })
        .await
        .unwrap();
    for start in (0..MESSAGES).step_by(500) {
        let batch: Vec<NewMessage> = (start..start + 500)
            .map(|i| NewMessage {
                room: RoomId::parse("history").unwrap(),
                user_id: "writer".into(),
                content: format!("message {i}"),
                client_id: Some(format!("c{i}")),
            })
            .collect();
        store.append(&batch).await.unwrap();
    }

    // the dry run moves nothing
    let dry = tokio::process::Command::new(env!("CARGO_BIN_EXE_tsunagi"))
        .args(["archive", "--older-than", "0s", "--dry-run"])
        .env("TSUNAGI_DATABASE_URL", &data.url)
        .env("TSUNAGI_JWT_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(dry.status.success());
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(
        said.contains(&format!("would move {MESSAGES} messages")),
        "{said}"
    );
    assert_eq!(store.archive_stats().await.unwrap().cold_messages, 0);

    // SIGKILL once some batches have moved, well before the end
    let mut pass = archive_command(&data.url, "0s").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let cold = store.archive_stats().await.unwrap().cold_messages;
        if cold >= 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pass moved nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pass.start_kill().unwrap();
    pass.wait().await.unwrap();
    let after_kill = store.archive_stats().await.unwrap();
    assert!(
        after_kill.cold_messages > 0 && after_kill.cold_messages < MESSAGES,
        "killed mid-pass: {after_kill:?}"
    );
    assert_eq!(after_kill.hot_messages + after_kill.cold_messages, MESSAGES);

    let mut server = spawn_binary(&data.url, 1024, &[("TSUNAGI_ARCHIVE_AFTER", "0")]).await;
    let base = server.url();
    let http = reqwest::Client::new();
    let token = Tokens::new(SECRET.as_bytes()).mint("reader", false, None, 3600);
    let every: Vec<i64> = (1..=MESSAGES).collect();
    assert_eq!(read_all(&http, &base, &token, true).await, every);
    assert_eq!(read_all(&http, &base, &token, false).await, every);

    // a second run, with the server up, finishes the move (the count is read again: on
    // PostgreSQL the killed process's last commit may land after it died)
    let cold_before = store.archive_stats().await.unwrap().cold_messages;
    let rest = archive_command(&data.url, "0s")
        .await
        .wait_with_output()
        .await
        .unwrap();
    assert!(rest.status.success());
    let said = String::from_utf8_lossy(&rest.stdout);
    let moved = MESSAGES - cold_before;
    assert!(
        said.contains(&format!("moved {moved} messages from 1 rooms")),
        "{said}"
    );
    assert_eq!(read_all(&http, &base, &token, true).await, every);
    assert_eq!(read_all(&http, &base, &token, false).await, every);

    // a retried client_id of an archived message returns it, unchanged
    let writer = Tokens::new(SECRET.as_bytes()).mint("writer", false, None, 3600);
    let r = http
        .post(format!("{base}/api/v1/rooms/history/messages"))
        .bearer_auth(&writer)
        .json(&json!({ "content": "again", "client_id": "c17" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    assert_eq!(
        (first["seq"].as_i64(), first["content"].as_str()),
        (Some(18), Some("message 17"))
    );

    let admin = Tokens::new(SECRET.as_bytes()).mint("ops", true, None, 3600);
    let stats: Value = http
        .get(format!("{base}/api/v1/admin/stats"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["messages"]["hot"], json!(0), "{stats}");
    assert_eq!(stats["messages"]["cold"], json!(MESSAGES));
    assert_eq!(stats["messages"]["oldest_hot_at"], Value::Null);
    store.close().await;
    server.terminate(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_pass_queued_over_http_runs_as_a_job() {
    let data = Data::fresh().await;
    let mut server = spawn_binary(&data.url, 1024, &[("TSUNAGI_SEND_RATE", "0")]).await;
    let base = server.url();
    let http = reqwest::Client::new();
    let tokens = Tokens::new(SECRET.as_bytes());
    let (user, admin) = (
        tokens.mint("u1", false, None, 3600),
        tokens.mint("ops", true, None, 3600),
    );
    let r = http
        .post(format!("{base}/api/v1/rooms"))
        .bearer_auth(&user)
        .json(&json!({ "id": "jobs" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for i in 0..30 {
        let r = http
            .post(format!("{base}/api/v1/rooms/jobs/messages"))
            .bearer_auth(&user)
            .json(&json!({ "content": format!("m{i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let queue = |token: &str, body: Value| {
        http.post(format!("{base}/api/v1/admin/archive"))
            .bearer_auth(token.to_owned())
            .json(&body)
            .send()
    };
    assert_eq!(queue(&user, json!({})).await.unwrap().status(), 403);
    assert_eq!(
        queue(&admin, json!({ "older_than": "soon" }))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        queue(&admin, json!({ "older_than": 5 }))
            .await
            .unwrap()
            .status(),
        400
    );
    // the default (30 days) moves nothing yet; "0s" moves everything
    let r = queue(&admin, json!({ "older_than": "0s" })).await.unwrap();
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["kind"], "archive");
    assert!(
        ["queued", "running", "done"].contains(&job["state"].as_str().unwrap()),
        "{job}"
    );
    for field in [
        "id",
        "attempts",
        "last_error",
        "run_at",
        "created_at",
        "updated_at",
    ] {
        assert!(job.get(field).is_some(), "JOB has {field}: {job}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed: Value = http
            .get(format!("{base}/api/v1/admin/jobs?kind=archive"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mine = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == job["id"])
            .cloned()
            .expect("the job is listed");
        if mine["state"] == "done" {
            assert_eq!(mine["attempts"], 1);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job did not finish: {mine}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats: Value = http
        .get(format!("{base}/api/v1/admin/stats"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            stats["messages"]["hot"].as_i64(),
            stats["messages"]["cold"].as_i64()
        ),
        (Some(0), Some(30))
    );
    let page: Value = http
        .get(format!("{base}/api/v1/rooms/jobs/messages"))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 30);
    assert_eq!(page["items"][0]["content"], "m0");
    server.terminate(Duration::from_secs(20)).await;
}
