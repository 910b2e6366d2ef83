//! Sensor readings against the real binary (PROTOCOL.md §6.1): what write-behind promises at a
//! SIGTERM in the middle of a load, push-back with bounded memory, and live readings across
//! instances. On SQLite, or on PostgreSQL with `TSUNAGI_TEST_PG`; with and without Redis.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tsunagi::auth::Tokens;
use tsunagi::client::SioClient;

use crate::binary::{Binary, Data, spawn_binary};
use crate::common::{SECRET, WAIT};

const DAY_MS: i64 = 86_400_000;

/// Accepted (sensor → ts) as the producers saw them.
type Accepted = Arc<Mutex<HashMap<String, BTreeSet<i64>>>>;

fn tokens() -> Tokens {
    Tokens::new(SECRET.as_bytes())
}

fn redis_env(prefix: &str) -> Vec<(&'static str, String)> {
    let url =
        std::env::var("TSUNAGI_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    vec![
        ("TSUNAGI_REDIS_URL", url),
        ("TSUNAGI_REDIS_PREFIX", prefix.to_owned()),
    ]
}

async fn create_sensor(http: &reqwest::Client, base: &str, token: &str, id: &str) {
    let r = http
        .post(format!("{base}/api/v1/sensors"))
        .bearer_auth(token)
        .json(&json!({ "id": id }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// Every reading of `sensor` in the store, by paging `GET …/readings`.
async fn stored(http: &reqwest::Client, base: &str, token: &str, sensor: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let url = format!(
            "{base}/api/v1/sensors/{sensor}/readings?from=0&to=99999999999999&limit=5000&cursor={cursor}"
        );
        let page: Value = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for r in page["items"].as_array().expect("a page") {
            let ts = chrono::DateTime::parse_from_rfc3339(r["ts"].as_str().unwrap()).unwrap();
            out.insert(ts.timestamp_millis());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return out,
        }
    }
}

/// Posts batches of `per_batch` readings until `batches` are sent or one is refused.
async fn http_producer(
    base: String,
    token: String,
    sensor: String,
    start: i64,
    accepted: Accepted,
) {
    let http = reqwest::Client::new();
    for b in 0..10i64 {
        let readings: Vec<Value> = (0..500i64)
            .map(|i| json!({ "value": i, "ts": start + b * 500 + i }))
            .collect();
        let sent = http
            .post(format!("{base}/api/v1/sensors/{sensor}/readings"))
            .bearer_auth(&token)
            .json(&json!({ "readings": readings }))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 202 => {
                let mut acc = accepted.lock().unwrap();
                acc.entry(sensor.clone())
                    .or_default()
                    .extend((0..500).map(|i| start + b * 500 + i));
            }
            // refused (shutting down) or the connection closed: stop
            _ => return,
        }
    }
}

/// Sends readings one at a time over Socket.IO until `n` are acked or one is not.
async fn socket_producer(
    base: String,
    token: String,
    sensor: String,
    start: i64,
    accepted: Accepted,
) {
    let Ok(c) = SioClient::connect(&base, Some(&token)).await else {
        return;
    };
    for i in 0..5000i64 {
        let ts = start + i;
        let ack = c
            .call(
                "reading",
                json!({ "sensor": sensor, "value": i, "ts": ts }),
                WAIT,
            )
            .await;
        match ack {
            Ok(a) if a["ok"] == true => {
                accepted
                    .lock()
                    .unwrap()
                    .entry(sensor.clone())
                    .or_default()
                    .insert(ts);
            }
            _ => return,
        }
    }
}

/// 20 producers (10 over HTTP, 10 over Socket.IO) send 100 000 readings; SIGTERM arrives when
/// about 40 000 are accepted; the process exits 0, and after a restart every accepted reading
/// is stored.
async fn sigterm_mid_load(env: &[(&str, String)]) {
    let data = Data::fresh().await;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = spawn_binary(&data.url, 4096, &env).await;
    let base = server.url();
    let owner = tokens().mint("owner", false, None, 3600);
    let http = reqwest::Client::new();
    let start = tsunagi::domain::now_ms() - DAY_MS;
    let accepted: Accepted = Arc::default();
    let mut producers = Vec::new();
    for p in 0..20i64 {
        let sensor = format!("load.{p}");
        create_sensor(&http, &base, &owner, &sensor).await;
        let (base, token, acc) = (base.clone(), owner.clone(), accepted.clone());
        let begin = start + p * 100_000;
        producers.push(if p < 10 {
            tokio::spawn(http_producer(base, token, sensor, begin, acc))
        } else {
            tokio::spawn(socket_producer(base, token, sensor, begin, acc))
        });
    }
    let count = |a: &Accepted| a.lock().unwrap().values().map(BTreeSet::len).sum::<usize>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count(&accepted) < 40_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the load never reached 40 000"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = server.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "SIGTERM must end in exit 0, got {status}");
    for p in producers {
        p.await.unwrap();
    }
    let accepted = std::mem::take(&mut *accepted.lock().unwrap());
    let total: usize = accepted.values().map(BTreeSet::len).sum();
    assert!(
        total < 100_000,
        "SIGTERM came after the load ended ({total})"
    );

    let again: Binary = spawn_binary(&data.url, 4096, &env).await;
    let base = again.url();
    for (sensor, want) in &accepted {
        let have = stored(&http, &base, &owner, sensor).await;
        let lost: Vec<&i64> = want.difference(&have).take(5).collect();
        assert!(
            lost.is_empty(),
            "{sensor}: {} of {} accepted readings lost, e.g. {lost:?}",
            want.difference(&have).count(),
            want.len()
        );
    }
    eprintln!("sigterm mid-load: {total} accepted readings, all stored");
}

#[tokio::test]
async fn twenty_producers_lose_no_accepted_reading_at_sigterm() {
    sigterm_mid_load(&[]).await;
}

#[tokio::test]
async fn twenty_producers_lose_no_accepted_reading_at_sigterm_with_redis() {
    let prefix = format!("tsunagi-test-{}", uuid::Uuid::new_v4().simple());
    sigterm_mid_load(&redis_env(&prefix)).await;
}

/// A producer faster than the flush (which here waits a minute) fills the buffer and gets 503
/// with Retry-After; the server's memory stays bounded; what was accepted is written at SIGTERM.
#[tokio::test]
async fn a_producer_faster_than_the_flush_is_pushed_back_with_bounded_memory() {
    let data = Data::fresh().await;
    let env = [
        ("TSUNAGI_SENSOR_FLUSH_MS", "60000"),
        ("TSUNAGI_SENSOR_BATCH", "10000000"),
        ("TSUNAGI_SENSOR_BUFFER", "100000"),
    ];
    let mut server = spawn_binary(&data.url, 4096, &env).await;
    let base = server.url();
    let owner = tokens().mint("owner", false, None, 3600);
    let http = reqwest::Client::new();
    create_sensor(&http, &base, &owner, "flood").await;
    let before = server.peak_rss_mib();
    // maximal tags (1024 bytes of JSON): the largest reading a client may send
    let tags: serde_json::Map<String, Value> = (0..8)
        .map(|i| {
            (
                format!("tag{i}"),
                Value::String(format!("{i}{}", "v".repeat(112))),
            )
        })
        .collect();
    let start = tsunagi::domain::now_ms() - DAY_MS;
    let (mut accepted, mut refused) = (0i64, 0);
    for b in 0..150i64 {
        let readings: Vec<Value> = (0..1000i64)
            .map(|i| json!({ "value": i, "ts": start + b * 1000 + i, "tags": tags }))
            .collect();
        let r = http
            .post(format!("{base}/api/v1/sensors/flood/readings"))
            .bearer_auth(&owner)
            .json(&json!({ "readings": readings }))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            202 => accepted += 1000,
            503 => {
                assert!(r.headers().get("retry-after").is_some());
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, 100_000, "the buffer takes exactly its size");
    assert_eq!(refused, 50);
    let peak = server.peak_rss_mib();
    eprintln!(
        "push-back: peak RSS {peak} MiB (at start {before} MiB) with 100 000 maximal readings waiting"
    );
    assert!(peak < 400, "peak RSS {peak} MiB with a full buffer");
    let status = server.terminate(Duration::from_secs(60)).await;
    assert!(status.success(), "{status}");
    let again = spawn_binary(&data.url, 4096, &[]).await;
    let have = stored(&http, &again.url(), &owner, "flood").await;
    assert_eq!(
        have.len(),
        100_000,
        "every accepted reading is written at SIGTERM"
    );
}

/// A reading accepted on one instance reaches a subscriber on another (through Redis).
#[tokio::test]
async fn a_reading_accepted_on_one_instance_reaches_subscribers_on_another() {
    let data = Data::fresh().await;
    let prefix = format!("tsunagi-test-{}", uuid::Uuid::new_v4().simple());
    let env = redis_env(&prefix);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = spawn_binary(&data.url, 4096, &env).await;
    let b = spawn_binary(&data.url, 4096, &env).await;
    let owner = tokens().mint("owner", false, None, 3600);
    let http = reqwest::Client::new();
    create_sensor(&http, &a.url(), &owner, "shared").await;
    let mut watcher =
        SioClient::connect(&b.url(), Some(&tokens().mint("viewer", false, None, 3600)))
            .await
            .unwrap();
    let ack = watcher
        .call("subscribe", json!({ "sensor": "shared" }), WAIT)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    // the bus subscription of b may take a moment: write until b's socket hears one
    for i in 0..50 {
        let r = http
            .post(format!("{}/api/v1/sensors/shared/readings", a.url()))
            .bearer_auth(&owner)
            .json(&json!({ "readings": [{ "value": i }] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        if let Some(ev) = watcher
            .next_event("reading", Duration::from_millis(200))
            .await
        {
            assert_eq!(ev["sensor"], "shared", "{ev}");
            return;
        }
    }
    panic!("no reading accepted on a reached the subscriber on b");
}
