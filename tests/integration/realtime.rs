//! The realtime guarantees of PROTOCOL.md §3 through a Rust Socket.IO client.

use std::time::Duration;

use crate::common::*;
use serde_json::json;
use tsunagi::client::{ClientError, SioClient};

#[tokio::test]
async fn connect_errors_carry_codes() {
    let app = spawn_app(&[]).await;
    let code = |e: ClientError| match e {
        ClientError::Refused(v) => v["data"]["code"].as_str().unwrap().to_owned(),
        other => panic!("{other}"),
    };
    let missing = SioClient::connect(&app.url, None).await.err().unwrap();
    assert_eq!(code(missing), "auth_required");
    let bad = SioClient::connect(&app.url, Some("nope"))
        .await
        .err()
        .unwrap();
    assert_eq!(code(bad), "invalid_token");
    let expired = app.tokens.mint("a", false, None, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = SioClient::connect(&app.url, Some(&expired))
        .await
        .err()
        .unwrap();
    assert_eq!(code(e), "token_expired");
}

#[tokio::test]
async fn concurrent_senders_every_receiver_sees_one_gap_free_order() {
    let app = spawn_app(&[("TSUNAGI_SEND_RATE", "0")]).await;
    let owner = app.token("owner");
    app.create_room(&owner, "busy", false).await;
    let senders = 10;
    let per_sender = 20;
    let mut receivers = Vec::new();
    for i in 0..3 {
        let c = app.connect(&format!("watcher{i}")).await;
        join(&c, "busy").await;
        receivers.push(c);
    }
    let mut clients = Vec::new();
    for i in 0..senders {
        let c = app.connect(&format!("sender{i}")).await;
        join(&c, "busy").await;
        clients.push(c);
    }
    let mut acks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        for j in 0..per_sender {
            let body = json!({ "room": "busy", "content": format!("{i}-{j}") });
            acks.push(c.emit_with_ack("send", &body));
        }
    }
    for a in futures::future::join_all(acks).await {
        assert_eq!(a.unwrap()["ok"], true);
    }
    let total = senders * per_sender;
    for c in receivers.iter_mut().chain(clients.iter_mut()) {
        let got = messages(c, total).await;
        let seqs: Vec<i64> = got.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (1..=total as i64).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn one_socket_pipelined_sends_commit_in_send_order() {
    let app = spawn_app(&[("TSUNAGI_SEND_RATE", "0")]).await;
    app.create_room(&app.token("o"), "order", false).await;
    let c = app.connect("alice").await;
    let waits: Vec<_> = (0..100)
        .map(|i| {
            c.emit_with_ack(
                "send",
                &json!({ "room": "order", "content": i.to_string() }),
            )
        })
        .collect();
    let acks = futures::future::join_all(waits).await;
    for (i, a) in acks.into_iter().enumerate() {
        let a = a.unwrap();
        assert_eq!(a["message"]["content"], i.to_string());
        assert_eq!(a["message"]["seq"], i as i64 + 1);
    }
}

#[tokio::test]
async fn retry_with_client_id_returns_first_and_broadcasts_once() {
    let app = spawn_app(&[]).await;
    app.create_room(&app.token("o"), "idem", false).await;
    let mut watcher = app.connect("w").await;
    join(&watcher, "idem").await;
    let c = app.connect("alice").await;
    let first = c
        .call(
            "send",
            json!({ "room": "idem", "content": "one", "client_id": "k1" }),
            WAIT,
        )
        .await
        .unwrap();
    let again = c
        .call(
            "send",
            json!({ "room": "idem", "content": "two", "client_id": "k1" }),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(first["message"], again["message"]);
    let other = c
        .call(
            "send",
            json!({ "room": "idem", "content": "three", "client_id": "k2" }),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(other["message"]["seq"], 2);
    let got = messages(&mut watcher, 2).await;
    assert_eq!(got[0]["content"], "one");
    assert_eq!(got[1]["content"], "three");
}

#[tokio::test]
async fn join_history_then_live_messages_without_gap_or_repeat() {
    let app = spawn_app(&[("TSUNAGI_SEND_RATE", "0")]).await;
    app.create_room(&app.token("o"), "flow", false).await;
    let sender = app.connect("s").await;
    // a steady stream while others join
    let stream = tokio::spawn(async move {
        for i in 0..300 {
            let body = json!({ "room": "flow", "content": i.to_string() });
            assert_eq!(sender.call("send", body, WAIT).await.unwrap()["ok"], true);
        }
        sender
    });
    let mut joined = Vec::new();
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c = app.connect(&format!("j{i}")).await;
        let ack = join(&c, "flow").await;
        joined.push((ack["last_seq"].as_i64().unwrap(), c));
    }
    stream.await.unwrap();
    for (last_seq, c) in joined.iter_mut() {
        let want = 300 - *last_seq as usize;
        let got = messages(c, want).await;
        let seqs: Vec<i64> = got.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, ((*last_seq + 1)..=300).collect::<Vec<_>>());
        assert!(
            c.next_event("message", Duration::from_millis(200))
                .await
                .is_none()
        );
    }
}

#[tokio::test]
async fn sync_returns_exactly_what_was_missed() {
    let app = spawn_app(&[("TSUNAGI_SEND_RATE", "0")]).await;
    app.create_room(&app.token("o"), "gap", false).await;
    let sender = app.connect("s").await;
    for i in 0..5 {
        sender
            .call(
                "send",
                json!({ "room": "gap", "content": i.to_string() }),
                WAIT,
            )
            .await
            .unwrap();
    }
    let away = app.connect("away").await;
    let ack = join(&away, "gap").await;
    let (epoch, last) = (ack["epoch"].clone(), ack["last_seq"].as_i64().unwrap());
    away.close();
    for i in 5..12 {
        sender
            .call(
                "send",
                json!({ "room": "gap", "content": i.to_string() }),
                WAIT,
            )
            .await
            .unwrap();
    }
    let back = app.connect("away").await;
    let r = back
        .call(
            "sync",
            json!({ "room": "gap", "since_seq": last, "epoch": epoch, "limit": 4 }),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(r["more"], true);
    let seqs: Vec<i64> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![6, 7, 8, 9]);
    let r = back
        .call("sync", json!({ "room": "gap", "since_seq": 9 }), WAIT)
        .await
        .unwrap();
    assert_eq!(r["more"], false);
    assert_eq!(r["messages"].as_array().unwrap().len(), 3);
    let reset = back
        .call(
            "sync",
            json!({ "room": "gap", "since_seq": 0, "epoch": "other" }),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(reset["error"]["code"], "reset");
    let past = back
        .call("sync", json!({ "room": "gap", "since_seq": 13 }), WAIT)
        .await
        .unwrap();
    assert_eq!(past["error"]["code"], "reset");
}

#[tokio::test]
async fn shutdown_commits_what_was_queued_and_returns() {
    let mut app = spawn_app(&[("TSUNAGI_SEND_RATE", "0")]).await;
    app.create_room(&app.token("o"), "bye", false).await;
    let c = app.connect("alice").await;
    let waits: Vec<_> = (0..200)
        .map(|i| c.emit_with_ack("send", &json!({ "room": "bye", "content": i.to_string() })))
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.stop().await.expect("clean shutdown");
    let mut acked = Vec::new();
    for w in waits {
        if let Ok(a) = w.await
            && a["ok"] == true
        {
            acked.push(a["message"]["seq"].as_i64().unwrap());
        }
    }
    // restart on the same database: every acked message is there, gap-free
    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    let again = spawn_app_in(dir, &[("TSUNAGI_DATABASE_URL", &app.db)]).await;
    let (status, page) = again
        .request(
            reqwest::Method::GET,
            "/api/v1/rooms/bye/messages?after_seq=0&limit=500",
            Some(&again.token("x")),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let seqs: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    for s in acked {
        assert!(seqs.contains(&s));
    }
}

#[tokio::test]
async fn nul_characters_are_bad_requests_everywhere() {
    let app = spawn_app(&[]).await;
    let t = app.token("alice");
    app.create_room(&t, "nul", false).await;
    let c = app.connect("alice").await;
    for body in [
        json!({ "room": "nul", "content": "ok", "client_id": "a\u{0}" }),
        json!({ "room": "nul", "content": "a\u{0}b" }),
    ] {
        let ack = c.call("send", body, WAIT).await.unwrap();
        assert_eq!(ack["error"]["code"], "bad_request", "{ack}");
    }
    let (status, _) = app
        .request(
            reqwest::Method::POST,
            "/api/v1/rooms",
            Some(&t),
            Some(json!({"id":"x","name":"a\u{0}"})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = app
        .request(
            reqwest::Method::GET,
            "/api/v1/rooms?cursor=%00",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 400);
    let ack = c
        .call(
            "send",
            json!({ "room": "nul", "content": "still fine" }),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(ack["ok"], true);
}

#[tokio::test]
async fn large_pages_are_cut_to_a_megabyte_and_say_more() {
    let app = spawn_app(&[("TSUNAGI_SEND_RATE", "0")]).await;
    let t = app.token("alice");
    app.create_room(&t, "big", false).await;
    // each content escapes to ~96 KB of JSON (U+0001 is written \u0001)
    let content = "\u{1}".repeat(16_000);
    let c = app.connect("alice").await;
    for _ in 0..30 {
        let ack = c
            .call("send", json!({ "room": "big", "content": content }), WAIT)
            .await
            .unwrap();
        assert_eq!(ack["ok"], true);
    }
    let mut since = 0;
    let mut pages = 0;
    loop {
        let r = c
            .call(
                "sync",
                json!({ "room": "big", "since_seq": since, "limit": 500 }),
                WAIT,
            )
            .await
            .unwrap();
        let msgs = r["messages"].as_array().unwrap();
        assert!(!msgs.is_empty());
        assert!(
            r.to_string().len() <= (1 << 20) + 4096,
            "a page of {} bytes",
            r.to_string().len()
        );
        assert_eq!(
            msgs[0]["seq"],
            since + 1,
            "pages follow each other without a gap"
        );
        since = msgs.last().unwrap()["seq"].as_i64().unwrap();
        pages += 1;
        if r["more"] == false {
            break;
        }
    }
    assert_eq!((since, pages > 1), (30, true));
    let ack = join(&c, "big").await;
    assert_eq!(ack["last_seq"], 30);
    let history = ack["history"].as_array().unwrap();
    assert!(
        history.len() < 30 && history.last().unwrap()["seq"] == 30,
        "join keeps the newest"
    );
}
