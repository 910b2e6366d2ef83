//! Clients that try to take the server down without a token: thousands of silent connections
//! and slowloris header trickles, against the real binary under a small descriptor limit.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::common::SECRET;

/// The binary under `prlimit --nofile=<fds>`, on a fresh SQLite file; its address once serving.
async fn spawn_limited(fds: u32, env: &[(&str, &str)]) -> (Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={fds}:{fds}"))
        .arg(env!("CARGO_BIN_EXE_tsunagi"))
        .arg("serve")
        .env(
            "TSUNAGI_DATABASE_URL",
            format!("sqlite://{}/t.db", dir.path().display()),
        )
        .env("TSUNAGI_JWT_SECRET", SECRET)
        .env("TSUNAGI_LISTEN", "127.0.0.1:0")
        .env("TSUNAGI_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("prlimit and the tsunagi binary run");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(listen) = v["fields"]["listen"].as_str() {
                return listen.to_owned();
            }
        }
        panic!("tsunagi exited before serving");
    })
    .await
    .expect("tsunagi starts");
    // keep reading its log so it never blocks on a full pipe
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr, dir)
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
    let ours = tsunagi::http_server::raise_fd_limit();
    assert!(
        ours >= 4000,
        "the test needs 4000 descriptors of its own, has {ours}"
    );
    let header_timeout = Duration::from_millis(2000);
    let (mut child, addr, _dir) =
        spawn_limited(512, &[("TSUNAGI_HTTP_HEADER_TIMEOUT_MS", "2000")]).await;

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

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused_431() {
    let (mut child, addr, _dir) = spawn_limited(1024, &[]).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let big = "a".repeat(200 * 1024);
    let head = format!("GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: {big}\r\n\r\n");
    s.write_all(head.as_bytes()).await.ok();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.ok();
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{:?}",
        &answer[..answer.len().min(80)]
    );
    child.kill().await.ok();
}

#[tokio::test]
async fn nul_in_any_id_or_metadata_is_400_on_either_store() {
    use reqwest::Method;
    let app = crate::common::spawn_app(&[("TSUNAGI_SEND_RATE", "0")]).await;
    let t = app.admin_token("alice");
    app.create_room(&t, "r", false).await;
    let nul_meta = serde_json::json!({ "metadata": { "k": "a\u{0}b" } });
    let nul_key = serde_json::json!({ "id": "r2", "metadata": { "k\u{0}": 1 } });
    let cases: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, "/api/v1/users/a%00b".into(), None),
        (
            Method::PATCH,
            "/api/v1/users/a%00b".into(),
            Some(serde_json::json!({ "bio": "x" })),
        ),
        (
            Method::PATCH,
            "/api/v1/users/alice".into(),
            Some(nul_meta.clone()),
        ),
        (Method::GET, "/api/v1/rooms/r%00/messages".into(), None),
        (
            Method::POST,
            "/api/v1/rooms/r%00/messages".into(),
            Some(serde_json::json!({ "content": "x" })),
        ),
        (
            Method::POST,
            "/api/v1/rooms/r/messages".into(),
            Some(serde_json::json!({ "content": "x", "client_id": "a\u{0}" })),
        ),
        (
            Method::POST,
            "/api/v1/rooms/r/members".into(),
            Some(serde_json::json!({ "user_id": "b\u{0}" })),
        ),
        (Method::GET, "/api/v1/rooms/r%00/members".into(), None),
        (
            Method::GET,
            "/api/v1/rooms/r/members?cursor=a%00".into(),
            None,
        ),
        (Method::GET, "/api/v1/rooms?cursor=a%00".into(), None),
        (Method::GET, "/api/v1/users?cursor=a%00".into(), None),
        (Method::GET, "/api/v1/admin/audit?actor=a%00".into(), None),
        (
            Method::POST,
            "/api/v1/rooms".into(),
            Some(serde_json::json!({ "id": "r\u{0}" })),
        ),
        (Method::POST, "/api/v1/rooms".into(), Some(nul_key)),
        (
            Method::POST,
            "/api/v1/rooms".into(),
            Some(serde_json::json!({ "id": "r3", "metadata": { "a": ["\u{0}"] } })),
        ),
    ];
    for (method, path, body) in cases {
        let (status, answer) = app
            .request(method.clone(), &path, Some(&t), body.clone())
            .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{method} {path} {body:?}: {answer}"
        );
    }
}

/// Peak resident memory of process `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

#[tokio::test]
async fn three_hundred_concurrent_logins_stay_within_memory_and_past_the_queue_get_429() {
    let (mut child, addr, _dir) = spawn_limited(4096, &[("TSUNAGI_LOGIN_RATE", "0")]).await;
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
