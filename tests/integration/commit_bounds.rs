//! Sends are answered within their bound (acquire timeout + one statement or busy timeout) when
//! the database stalls, never one after another behind it; the committer recovers by itself.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use sqlx::Connection;

use crate::common::*;

/// Holds the messages table's write lock from another connection until dropped (PostgreSQL:
/// ACCESS EXCLUSIVE in an open transaction; SQLite: the database's write lock). The connection
/// is only held: dropping it releases the lock.
#[allow(dead_code)]
enum Locker {
    Pg(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

async fn lock_messages(db: &str) -> Locker {
    if db.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(db).await.unwrap();
        sqlx::query("BEGIN").execute(&mut c).await.unwrap();
        sqlx::query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            .execute(&mut c)
            .await
            .unwrap();
        Locker::Pg(c)
    } else {
        let mut c = sqlx::SqliteConnection::connect(db).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut c)
            .await
            .unwrap();
        Locker::Sqlite(c)
    }
}

#[tokio::test]
async fn a_locked_messages_table_makes_sends_fail_within_the_bound_then_recover() {
    let app = spawn_app(&[
        ("TSUNAGI_DB_ACQUIRE_TIMEOUT_MS", "500"),
        ("TSUNAGI_DB_STATEMENT_TIMEOUT_MS", "500"),
        ("TSUNAGI_DB_BUSY_TIMEOUT_MS", "500"),
        ("TSUNAGI_SEND_RATE", "0"),
    ])
    .await;
    let t = app.token("alice");
    for room in ["locked", "other"] {
        app.create_room(&t, room, false).await;
    }
    let send = |room: &'static str, i: usize| {
        let (app, t) = (&app, &t);
        async move {
            let started = Instant::now();
            let path = format!("/api/v1/rooms/{room}/messages");
            let body = json!({ "content": format!("m{i}"), "client_id": format!("{room}-{i}") });
            let (status, body) = app.request(Method::POST, &path, Some(t), Some(body)).await;
            (status, body, started.elapsed())
        }
    };

    let locker = lock_messages(&app.db).await;
    let sends = (0..20).map(|i| send(if i % 2 == 0 { "locked" } else { "other" }, i));
    let answers = futures::future::join_all(sends).await;
    // bound: 0.5 s acquire + 0.5 s statement; slack for this noisy machine
    let bound = Duration::from_millis(2500);
    for (status, body, took) in &answers {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        assert!(*took < bound, "answered after {took:?}: {answers:?}");
    }

    drop(locker);
    let (status, body, _) = send("other", 100).await;
    assert_eq!(status, 201, "{body}");
    // a refused send retried with its client_id commits once
    let (status, body, _) = send("locked", 0).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["seq"], 1, "{body}");
}
