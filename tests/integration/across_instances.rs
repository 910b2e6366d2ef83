//! Several tsunagi instances on one database and one Redis act as one (PROTOCOL §3 "Across
//! instances"): a message committed on any instance reaches the room's sockets on every instance,
//! in seq order, with no gap, even when instances write the same room at once.

use std::time::Duration;

use crate::common::{TestApp, WAIT, join, messages, spawn_app};
use serde_json::json;
use tsunagi::client::SioClient;

async fn instance(db: Option<&str>, prefix: &str) -> TestApp {
    let url =
        std::env::var("TSUNAGI_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut env = vec![
        ("TSUNAGI_REDIS_URL", url.as_str()),
        ("TSUNAGI_REDIS_PREFIX", prefix),
        ("TSUNAGI_SEND_RATE", "0"),
    ];
    if let Some(db) = db {
        env.push(("TSUNAGI_DATABASE_URL", db));
    }
    let app = spawn_app(&env).await;
    // the bus is subscribed once /readyz sees Redis and a moment has passed for SUBSCRIBE
    for _ in 0..100 {
        let (status, _) = app
            .request(reqwest::Method::GET, "/readyz", None, None)
            .await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    app
}

async fn send_many(c: &SioClient, room: &str, who: &str, n: usize) {
    for i in 0..n {
        let body = json!({ "room": room, "content": format!("{who} {i}") });
        let ack = c.call("send", body, WAIT).await.unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
    }
}

#[tokio::test]
async fn concurrent_writers_on_two_instances_reach_every_socket_in_order() {
    let prefix = format!("tsunagi-test-{}", uuid::Uuid::new_v4().simple());
    let a = instance(None, &prefix).await;
    let b = instance(Some(&a.db.clone()), &prefix).await;
    a.create_room(&a.token("owner"), "both", false).await;

    let mut on_a = a.connect("reader-a").await;
    let mut on_b = b.connect("reader-b").await;
    join(&on_a, "both").await;
    join(&on_b, "both").await;
    let writer_a = a.connect("writer-a").await;
    let writer_b = b.connect("writer-b").await;

    tokio::join!(
        send_many(&writer_a, "both", "a", 60),
        send_many(&writer_b, "both", "b", 60)
    );
    for reader in [&mut on_a, &mut on_b] {
        let got = messages(reader, 120).await;
        let seqs: Vec<i64> = got.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (1..=120).collect::<Vec<_>>());
    }
    // still connected: a further message arrives without a resync
    send_many(&writer_a, "both", "a", 1).await;
    assert_eq!(messages(&mut on_b, 1).await[0]["seq"], 121);
    let text = b.metrics_text().await;
    assert!(
        !text.contains("tsunagi_delivery_gap_disconnects_total ")
            || text.contains("tsunagi_delivery_gap_disconnects_total 0"),
        "{text}"
    );

    // HTTP sends on B reach sockets on A too
    let (status, _) = b
        .request(
            reqwest::Method::POST,
            "/api/v1/rooms/both/messages",
            Some(&b.token("poster")),
            Some(json!({ "content": "over http" })),
        )
        .await;
    assert_eq!(status, 201);
    let m = &messages(&mut on_a, 2).await[1..]; // 121 first, sent above
    assert_eq!(
        (m[0]["seq"].as_i64(), m[0]["content"].as_str()),
        (Some(122), Some("over http"))
    );
}

#[tokio::test]
async fn a_hole_is_filled_from_the_store_when_the_bus_lost_a_message() {
    // B subscribes under another prefix, so it hears nothing A publishes: every message A
    // commits is "lost" on the bus, and B must read it from the store when the next one shows
    // the hole.
    let a = instance(
        None,
        &format!("tsunagi-test-{}", uuid::Uuid::new_v4().simple()),
    )
    .await;
    let b_prefix = format!("tsunagi-test-{}", uuid::Uuid::new_v4().simple());
    let b = instance(Some(&a.db.clone()), &b_prefix).await;
    a.create_room(&a.token("owner"), "holes", false).await;
    let mut on_b = b.connect("reader").await;
    join(&on_b, "holes").await;
    let writer_a = a.connect("wa").await;
    let writer_b = b.connect("wb").await;
    send_many(&writer_a, "holes", "a", 3).await; // seqs 1-3: B never hears of them
    send_many(&writer_b, "holes", "b", 1).await; // seq 4, committed on B: shows the hole
    let got = messages(&mut on_b, 4).await;
    let seqs: Vec<i64> = got.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert!(
        b.metrics_text()
            .await
            .contains("tsunagi_delivery_gap_fills_total")
    );
}

#[tokio::test]
async fn presence_and_typing_are_one_across_instances() {
    let prefix = format!("tsunagi-test-{}", uuid::Uuid::new_v4().simple());
    let a = instance(None, &prefix).await;
    let b = instance(Some(&a.db.clone()), &prefix).await;
    a.create_room(&a.token("owner"), "lobby", false).await;
    let mut watcher = b.connect("watcher").await;
    join(&watcher, "lobby").await;

    // alice's first socket, on A: B's watcher hears she is online
    let alice_a = a.connect("alice").await;
    join(&alice_a, "lobby").await;
    let ev = watcher.next_event("presence", WAIT).await.unwrap();
    assert_eq!(
        (ev["user_id"].as_str(), ev["status"].as_str()),
        (Some("alice"), Some("online"))
    );
    let ack = watcher
        .call("presence", json!({ "room": "lobby" }), WAIT)
        .await
        .unwrap();
    let users: Vec<&str> = ack["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, vec!["alice", "watcher"], "{ack}");

    // her second socket, on B, is not news; typing on A reaches B
    let alice_b = b.connect("alice").await;
    join(&alice_b, "lobby").await;
    let typing = alice_a
        .call("typing", json!({ "room": "lobby" }), WAIT)
        .await
        .unwrap();
    assert_eq!(typing["ok"], true);
    let ev = watcher.next_event("typing", WAIT).await.unwrap();
    assert_eq!(ev["user_id"], "alice");

    // leaving A keeps her online (B still has her); leaving B too makes her offline
    alice_a.close();
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice_b
        .call("leave", json!({ "room": "lobby" }), WAIT)
        .await
        .unwrap();
    let ev = watcher.next_event("presence", WAIT).await.unwrap();
    assert_eq!(
        (ev["user_id"].as_str(), ev["status"].as_str()),
        (Some("alice"), Some("offline"))
    );
    assert!(
        watcher
            .next_event("presence", Duration::from_millis(300))
            .await
            .is_none()
    );
}

/// Writers on two instances take turns writing one key; every socket, on either instance, sees
/// the key's versions strictly increasing and ends at the last one (PROTOCOL §6.2).
#[tokio::test]
async fn state_versions_reach_sockets_on_both_instances_in_order() {
    let prefix = format!("tsunagi-test-{}", uuid::Uuid::new_v4().simple());
    let a = instance(None, &prefix).await;
    let b = instance(Some(&a.db.clone()), &prefix).await;
    a.create_room(&a.token("owner"), "board", false).await;
    let mut readers = Vec::new();
    for (i, app) in [&a, &b, &a, &b].into_iter().enumerate() {
        let c = app.connect(&format!("reader{i}")).await;
        join(&c, "board").await;
        readers.push(c);
    }
    let (wa, wb) = (a.connect("writer-a").await, b.connect("writer-b").await);
    for i in 0..100 {
        let w = if i % 2 == 0 { &wa } else { &wb };
        let body = json!({ "room": "board", "key": "turn", "value": i });
        let ack = w.call("state_set", body, WAIT).await.unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
    }
    for (i, r) in readers.iter_mut().enumerate() {
        let mut last = 0;
        while last < 100 {
            let ev = r
                .next_event("state", WAIT)
                .await
                .unwrap_or_else(|| panic!("reader {i} stopped at version {last}"));
            let v = ev["version"].as_i64().unwrap();
            assert!(v > last, "reader {i}: version {v} after {last}");
            last = v;
        }
    }
}
