//! Clients that try to take the server down without a token: thousands of silent connections
//! and slowloris header trickles, against the real binary under a small descriptor limit.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::binary::{Data, peak_rss_mib, spawn_binary};
use crate::common::SECRET;

/// The binary under `prlimit --nofile=<fds>`, on a fresh SQLite file; its address once serving.
struct Spawned {
    child: Child,
    addr: String,
    /// Everything it has logged so far.
    log: std::sync::Arc<std::sync::Mutex<String>>,
    _dir: Data,
}

async fn spawn_limited(fds: u32, env: &[(&str, &str)]) -> Spawned {
    let data = Data::sqlite();
    let b = spawn_binary(&data.url, fds, env).await;
    Spawned {
        child: b.child,
        addr: b.addr,
        log: b.log,
        _dir: data,
    }
}

/// `GET /healthz` on a new connection: the status line and how long it took.
async fn healthz(addr: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.ok();
    let status = answer.lines().next().unwrap_or("").to_owned();
    (status, started.elapsed())
}

/// Whether the server has closed `s` (EOF or reset), waiting at most `within`.
async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a 503 or 408 on its way to the close
        }
    }
}

#[tokio::test]
async fn silent_and_slowloris_connections_leave_healthz_answering_under_512_descriptors() {
    let ours = tsunagi::http_server::raise_fd_limit(4096);
    assert!(
        ours >= 4000,
        "the test needs 4000 descriptors of its own, has {ours}"
    );
    let header_timeout = Duration::from_millis(2000);
    let Spawned {
        mut child,
        addr,
        _dir,
        ..
    } = spawn_limited(512, &[("TSUNAGI_HTTP_HEADER_TIMEOUT_MS", "2000")]).await;

    let t0 = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(&addr).await.expect("connects"));
    }
    let mut slow = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect(&addr).await.expect("connects");
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.ok();
        slow.push(s);
    }
    eprintln!("connected 2500 in {:?}", t0.elapsed());
    let trickle = tokio::spawn(async move {
        // one header byte per connection every 200 ms: a head that never completes
        for _ in 0..15 {
            for s in slow.iter_mut() {
                let _ = s.write_all(b"x").await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        slow
    });

    let mut times = Vec::new();
    for _ in 0..20 {
        let (status, took) = healthz(&addr).await;
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "healthz answered {status:?}"
        );
        times.push(took);
    }
    times.sort();
    eprintln!("healthz: {times:?} at {:?}", t0.elapsed());
    assert!(
        times[times.len() * 9 / 10] < Duration::from_millis(100),
        "healthz took {times:?} with 2500 hostile connections open"
    );

    // every hostile connection is closed within the header timeout (plus scheduling slack)
    let mut slow = trickle.await.unwrap();
    let started = Instant::now();
    let within = header_timeout + Duration::from_secs(3);
    let mut still_open = 0;
    for s in idle.iter_mut().chain(slow.iter_mut()) {
        if !closed(s, within.saturating_sub(started.elapsed())).await {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "connections the server left open past its timeouts"
    );
    let (status, _) = healthz(&addr).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(child.try_wait().unwrap().is_none(), "the server died");
    child.kill().await.ok();
}

/// A request with one header of `n` bytes: the status line, or "" when the server reset the
/// connection while the client was still writing (which it may do to a head over the limit).
async fn with_header_of(addr: &str, n: usize) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\nx-big: {}\r\n\r\n",
        "a".repeat(n)
    );
    let (mut r, mut w) = s.split();
    let write = async { w.write_all(head.as_bytes()).await.ok() };
    let read = async {
        let mut answer = Vec::new();
        r.read_to_end(&mut answer).await.ok();
        answer
    };
    let (_, answer) = tokio::join!(write, read);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused_431() {
    let Spawned {
        mut child,
        addr,
        _dir,
        ..
    } = spawn_limited(1024, &[]).await;
    assert!(
        with_header_of(&addr, 20 * 1024)
            .await
            .starts_with("HTTP/1.1 200")
    );
    for n in [40 * 1024, 200 * 1024] {
        let status = with_header_of(&addr, n).await;
        assert!(
            status.starts_with("HTTP/1.1 431") || status.is_empty(),
            "a {n}-byte header got {status:?}"
        );
    }
    let (status, _) = healthz(&addr).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    child.kill().await.ok();
}

#[tokio::test]
async fn three_hundred_concurrent_logins_stay_within_memory_and_past_the_queue_get_429() {
    let Spawned {
        mut child,
        addr,
        _dir,
        ..
    } = spawn_limited(4096, &[("TSUNAGI_LOGIN_RATE", "0")]).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let register = serde_json::json!({
        "username": "crowd", "email": "crowd@example.com", "password": "a fine passphrase 42"
    });
    let r = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&register)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let logins = (0..300).map(|_| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = serde_json::json!({ "login": "crowd", "password": "a fine passphrase 42" });
            let r = http
                .post(format!("{base}/api/v1/auth/login"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().contains_key("retry-after"))
        }
    });
    let answers = futures::future::join_all(logins).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let busy = answers
        .iter()
        .filter(|(s, after)| *s == 429 && *after)
        .count();
    assert_eq!(
        ok + busy,
        300,
        "only 200 or 429 with Retry-After: {answers:?}"
    );
    assert!(
        ok >= 32 && busy > 0,
        "{ok} logged in, {busy} told to come back"
    );
    let peak = peak_rss_mib(child.id().unwrap());
    eprintln!("{ok} logged in, {busy} told to come back; peak RSS {peak} MiB");
    // one argon2 working set (19 MiB) per core, allocated once, plus the server itself
    assert!(
        peak < 160,
        "peak RSS {peak} MiB during 300 concurrent logins"
    );
    child.kill().await.ok();
}

#[tokio::test]
async fn no_token_reaches_the_log_even_at_trace() {
    let s = spawn_limited(1024, &[("TSUNAGI_LOG", "trace")]).await;
    let tokens = tsunagi::auth::Tokens::new(SECRET.as_bytes());
    let token = tokens.mint("alice", false, None, 3600);
    let url = format!("http://{}", s.addr);
    let c = tsunagi::client::SioClient::connect(&url, Some(&token))
        .await
        .expect("connects");
    c.call(
        "presence",
        serde_json::json!({ "room": "nowhere" }),
        crate::common::WAIT,
    )
    .await
    .unwrap();
    let r = reqwest::Client::new()
        .get(format!("{url}/api/v1/rooms"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.close();
    let log = s.log.lock().unwrap().clone();
    assert!(log.lines().count() > 10, "trace logging is on: {log}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "the token's signature was logged");
    let mut child = s.child;
    child.kill().await.ok();
}

#[tokio::test]
async fn every_event_counts_against_the_socket_rate_and_room_writes_against_the_user_rate() {
    let app =
        crate::common::spawn_app(&[("TSUNAGI_EVENT_RATE", "10"), ("TSUNAGI_WRITE_RATE", "1")])
            .await;
    let c = app.connect("mallory").await;
    let name = "x".repeat(100_000);
    let calls = (0..60).map(|_| c.call(&name, serde_json::json!({}), crate::common::WAIT));
    let acks = futures::future::join_all(calls).await;
    let codes: Vec<String> = acks
        .iter()
        .map(|a| {
            a.as_ref().unwrap()["error"]["code"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let limited = codes.iter().filter(|c| *c == "rate_limited").count();
    assert!(limited >= 30, "burst of 20 at 10/s: {codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| c == "rate_limited" || c == "bad_request")
    );
    for a in acks.iter().flatten() {
        assert!(
            a.to_string().len() < 400,
            "the unknown name was echoed: {} bytes",
            a.to_string().len()
        );
    }

    let t = app.token("mallory");
    let mut statuses = Vec::new();
    for i in 0..15 {
        let body = serde_json::json!({ "id": format!("flood-{i}") });
        let (status, _) = app
            .request(reqwest::Method::POST, "/api/v1/rooms", Some(&t), Some(body))
            .await;
        statuses.push(status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        10,
        "{statuses:?}"
    );
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[tokio::test]
async fn websockets_that_never_read_are_dropped_at_their_byte_budget() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message as Ws;
    let s = spawn_limited(
        4096,
        &[
            ("TSUNAGI_SEND_RATE", "0"),
            ("TSUNAGI_SOCKET_BUFFER_BYTES", "1048576"),
            ("TSUNAGI_WRITE_RATE", "0"),
        ],
    )
    .await;
    let base = format!("http://{}", s.addr);
    let tokens = tsunagi::auth::Tokens::new(SECRET.as_bytes());
    let http = reqwest::Client::new();
    let owner = tokens.mint("owner", false, None, 3600);
    let r = http
        .post(format!("{base}/api/v1/rooms"))
        .bearer_auth(&owner)
        .json(&serde_json::json!({ "id": "big" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for i in 0..50 {
        let content = format!("{i:04}{}", "y".repeat(16_000));
        let r = http
            .post(format!("{base}/api/v1/rooms/big/messages"))
            .bearer_auth(&owner)
            .json(&serde_json::json!({ "content": content }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // each join is answered with ~800 KB of history; these clients never read a byte
    let mut sockets = Vec::new();
    for u in 0..50 {
        let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", s.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let token = tokens.mint(&format!("reader{u}"), false, None, 3600);
        ws.send(Ws::text(format!(
            "40{}",
            serde_json::json!({ "token": token })
        )))
        .await
        .unwrap();
        for ack in 0..60 {
            ws.send(Ws::text(format!(r#"42{ack}["join",{{"room":"big"}}]"#)))
                .await
                .unwrap();
        }
        sockets.push(ws);
    }
    let dropped = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let text = http
                .get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let n: f64 = text
                .lines()
                .find(|l| l.starts_with("tsunagi_slow_consumer_disconnects_total"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            if n >= 50.0 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("every never-reading socket is dropped as a slow consumer");
    let peak = peak_rss_mib(s.child.id().unwrap());
    eprintln!("{dropped} slow consumers dropped; peak RSS {peak} MiB");
    // 50 sockets × (1 MiB budget + what the kernel's buffers did not take) + the server
    assert!(
        peak < 300,
        "peak RSS {peak} MiB with 50 never-reading sockets"
    );
    drop(sockets);
    let mut child = s.child;
    child.kill().await.ok();
}
