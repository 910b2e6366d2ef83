//! The HTTP API of PROTOCOL.md §4 for rooms and messages.

use crate::common::*;
use reqwest::Method;
use serde_json::json;

fn seqs(page: &serde_json::Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn rooms_create_list_and_members() {
    let app = spawn_app(&[]).await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    let info = app.create_room(&alice, "pub", false).await;
    assert_eq!(info["name"], "pub");
    assert_eq!(info["owner_id"], "alice");
    assert_eq!(info["last_seq"], 0);
    app.create_room(&alice, "secret", true).await;
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/rooms",
            Some(&bob),
            Some(json!({"id":"pub"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );

    let (_, list) = app
        .request(Method::GET, "/api/v1/rooms", Some(&bob), None)
        .await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["pub"]);
    let (_, list) = app
        .request(Method::GET, "/api/v1/rooms", Some(&alice), None)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    let (status, _) = app
        .request(
            Method::POST,
            "/api/v1/rooms/secret/members",
            Some(&bob),
            Some(json!({"user_id":"bob"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .request(
            Method::POST,
            "/api/v1/rooms/secret/members",
            Some(&alice),
            Some(json!({"user_id":"bob"})),
        )
        .await;
    assert_eq!(status, 204);
    let (_, list) = app
        .request(Method::GET, "/api/v1/rooms?limit=1", Some(&bob), None)
        .await;
    assert_eq!(list["items"][0]["id"], "pub");
    assert_eq!(list["next_cursor"], "pub");
    let (_, list) = app
        .request(
            Method::GET,
            "/api/v1/rooms?limit=1&cursor=pub",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(list["items"][0]["id"], "secret");
    assert_eq!(list["next_cursor"], serde_json::Value::Null);
}

#[tokio::test]
async fn message_paging_in_every_direction() {
    let app = spawn_app(&[("TSUNAGI_SEND_RATE", "0")]).await;
    let t = app.token("alice");
    app.create_room(&t, "log", false).await;
    for i in 1..=10 {
        let (status, m) = app
            .request(
                Method::POST,
                "/api/v1/rooms/log/messages",
                Some(&t),
                Some(json!({"content": i.to_string()})),
            )
            .await;
        assert_eq!(status, 201);
        assert_eq!(m["seq"], i);
    }
    let get = |q: &'static str| {
        let app = &app;
        let t = t.clone();
        async move {
            app.request(
                Method::GET,
                &format!("/api/v1/rooms/log/messages{q}"),
                Some(&t),
                None,
            )
            .await
        }
    };
    let (_, p) = get("?limit=3").await;
    assert_eq!(
        (seqs(&p), p["more"].as_bool()),
        (vec![8, 9, 10], Some(true))
    );
    let (_, p) = get("?after_seq=8&limit=3").await;
    assert_eq!((seqs(&p), p["more"].as_bool()), (vec![9, 10], Some(false)));
    let (_, p) = get("?before_seq=4&limit=2").await;
    assert_eq!((seqs(&p), p["more"].as_bool()), (vec![2, 3], Some(true)));
    let (_, p) = get("?after_seq=2&before_seq=7&limit=3").await;
    assert_eq!((seqs(&p), p["more"].as_bool()), (vec![3, 4, 5], Some(true)));
    let (_, p) = get("?after_seq=2&before_seq=7&limit=4").await;
    assert_eq!(
        (seqs(&p), p["more"].as_bool()),
        (vec![3, 4, 5, 6], Some(false))
    );
    for bad in [
        "?limit=0",
        "?limit=501",
        "?limit=x",
        "?after_seq=-1",
        "?before_seq=1.5",
    ] {
        let (status, body) = get(bad).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn errors_use_the_contract_codes() {
    let app = spawn_app(&[
        ("TSUNAGI_MAX_MESSAGE_BYTES", "10"),
        ("TSUNAGI_SEND_RATE", "1"),
        ("TSUNAGI_SEND_BURST", "1"),
    ])
    .await;
    let t = app.token("alice");
    app.create_room(&t, "r", false).await;
    let post = |body: serde_json::Value, tok: Option<String>| {
        let app = &app;
        async move {
            app.request(
                Method::POST,
                "/api/v1/rooms/r/messages",
                tok.as_deref(),
                Some(body),
            )
            .await
        }
    };
    let code = |r: &(u16, serde_json::Value)| {
        (r.0, r.1["error"]["code"].as_str().unwrap_or("").to_owned())
    };
    assert_eq!(
        code(&post(json!({"content":"x"}), None).await),
        (401, "auth_required".into())
    );
    assert_eq!(
        code(&post(json!({"content":"x"}), Some("bad".into())).await),
        (401, "invalid_token".into())
    );
    assert_eq!(
        code(&post(json!({"content":""}), Some(t.clone())).await),
        (400, "bad_request".into())
    );
    assert_eq!(
        code(&post(json!({"content":5}), Some(t.clone())).await),
        (400, "bad_request".into())
    );
    assert_eq!(
        code(&post(json!({"content":"12345678901"}), Some(t.clone())).await),
        (413, "too_large".into())
    );
    let (s, _) = app
        .request(
            Method::POST,
            "/api/v1/rooms/nope/messages",
            Some(&t),
            Some(json!({"content":"x"})),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .request(
            Method::POST,
            "/api/v1/rooms/No!/messages",
            Some(&t),
            Some(json!({"content":"x"})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(post(json!({"content":"ok"}), Some(t.clone())).await.0, 201);
    let res = app
        .http
        .post(format!("{}/api/v1/rooms/r/messages", app.url))
        .bearer_auth(&t)
        .json(&json!({"content":"again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_some());
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"]["retry_after_ms"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn health_readiness_metrics() {
    let app = spawn_app(&[]).await;
    assert_eq!(
        app.request(Method::GET, "/healthz", None, None).await.0,
        200
    );
    let (status, body) = app.request(Method::DELETE, "/healthz", None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (status, body) = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, body["checks"]["database"].as_str()),
        (200, Some("ok"))
    );
    let c = app.connect("alice").await;
    c.call("presence", json!({"room":"none"}), WAIT)
        .await
        .unwrap();
    let text = app.metrics_text().await;
    for name in [
        "tsunagi_sockets_connected",
        "tsunagi_events_in_total",
        "tsunagi_db_pool_connections",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}
