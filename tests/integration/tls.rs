//! HTTPS and WSS on the listener (PROTOCOL.md §7), against the real binary: a test CA (rcgen)
//! signs server certificates for localhost and 127.0.0.1; clients trust that CA only.
//! SIGHUP reloads the pair without touching open connections; a broken pair is refused, at
//! start (the process stops, naming the setting and the file) and on reload (the old pair stays).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::binary::Data;
use crate::common::SECRET;

const WAIT: Duration = Duration::from_secs(10);

/// A certificate authority the test's clients trust (and nothing else).
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

fn test_ca() -> TestCa {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "tsunagi test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCa {
        pem: cert.pem(),
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for localhost and 127.0.0.1: (chain PEM, key PEM, certificate DER).
fn server_cert(ca: &TestCa, serial: u64, cn: &str) -> (String, String, CertificateDer<'static>) {
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.serial_number = Some(serial.into());
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

struct Pair {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Pair {
    fn write(cert_pem: &str, key_pem: &str) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        Pair {
            _dir: dir,
            cert,
            key,
        }
    }
}

/// `tsunagi serve` with TLS, its JSON log kept as it comes.
struct TlsServer {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
    /// The `url` of the start line.
    start_url: String,
    _data: Data,
}

fn command(data: &Data, pair: &Pair) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tsunagi"));
    cmd.arg("serve")
        .env("TSUNAGI_DATABASE_URL", &data.url)
        .env("TSUNAGI_JWT_SECRET", SECRET)
        .env("TSUNAGI_LISTEN", "127.0.0.1:0")
        .env("TSUNAGI_LOG_FORMAT", "json")
        .env("TSUNAGI_LOG", "info")
        .env("TSUNAGI_TLS_CERT", &pair.cert)
        .env("TSUNAGI_TLS_KEY", &pair.key)
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn spawn_tls(pair: &Pair, ca: &TestCa) -> TlsServer {
    spawn_tls_with(pair, ca, &[]).await
}

async fn spawn_tls_with(pair: &Pair, ca: &TestCa, env: &[(&str, &str)]) -> TlsServer {
    let data = Data::sqlite();
    let mut child = command(&data, pair)
        .envs(env.iter().copied())
        .spawn()
        .expect("the tsunagi binary runs");
    let (addr, start_url, log) = crate::binary::read_start(&mut child).await;
    let server = TlsServer {
        child,
        addr,
        log,
        start_url,
        _data: data,
    };
    let http = https_client(ca);
    for _ in 0..400 {
        if let Ok(r) = http.get(server.url("/readyz")).send().await
            && r.status() == 200
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("tsunagi did not become ready over HTTPS");
}

impl TlsServer {
    fn url(&self, path: &str) -> String {
        let port = self.addr.rsplit(':').next().unwrap();
        format!("https://localhost:{port}{path}")
    }

    fn sighup(&self) {
        let pid = self.child.id().expect("still running") as i32;
        // SAFETY: kill(2) with a pid we started and a valid signal number
        unsafe { libc::kill(pid, libc::SIGHUP) };
    }

    /// Waits for the `nth` log line (1-based) whose message contains `needle`; returns it.
    async fn logged(&self, needle: &str, nth: usize) -> serde_json::Value {
        for _ in 0..400 {
            let found = self
                .log
                .lock()
                .unwrap()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| {
                    v["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(needle))
                })
                .nth(nth - 1);
            if let Some(v) = found {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "no log line {needle:?} (#{nth}):\n{}",
            self.log.lock().unwrap()
        );
    }
}

fn https_client(ca: &TestCa) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .timeout(WAIT)
        .build()
        .unwrap()
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A fresh TLS connection trusting only `ca`, without session resumption (so the handshake
/// shows the certificate in service now), offering `alpn`.
async fn handshake(addr: &str, ca: &TestCa, alpn: &[&[u8]]) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake succeeds")
}

fn served_cert(stream: &Tls) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// One keep-alive `GET path` on an open connection; the status line.
async fn get_on(stream: &mut Tls, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head.lines().next().unwrap().to_owned()
}

#[tokio::test]
async fn https_is_served_with_http1_alpn_and_plain_http_gets_no_http_answer() {
    let ca = test_ca();
    let (cert, key, der) = server_cert(&ca, 1, "tsunagi-first");
    let pair = Pair::write(&cert, &key);
    let server = spawn_tls(&pair, &ca).await;
    assert!(
        server.start_url.starts_with("https://"),
        "{}",
        server.start_url
    );

    let res = https_client(&ca)
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // offered h2 first: the server speaks HTTP/1.1 only and says so
    let tls = handshake(&server.addr, &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(served_cert(&tls), der);

    // plain HTTP to the HTTPS port: no HTTP answer, and the connection is closed
    let mut plain = TcpStream::connect(&server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, plain.read_to_end(&mut answer))
        .await
        .expect("closed, not left hanging")
        .ok();
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plaintext answer: {}",
        String::from_utf8_lossy(&answer)
    );
    let plain_url = format!("http://{}/healthz", server.addr);
    assert!(reqwest::get(plain_url).await.is_err());

    // SIGTERM drains as without TLS: an idle kept-alive HTTPS connection does not hold it up
    let mut kept = handshake(&server.addr, &ca, &[b"http/1.1"]).await;
    assert_eq!(get_on(&mut kept, "/healthz").await, "HTTP/1.1 200 OK");
    let mut server = server;
    let pid = server.child.id().unwrap() as i32;
    // SAFETY: kill(2) with a pid we started and a valid signal number
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn sighup_serves_the_new_pair_to_new_connections_and_keeps_open_ones() {
    let ca = test_ca();
    let (cert1, key1, der1) = server_cert(&ca, 1, "tsunagi-first");
    let (cert2, key2, der2) = server_cert(&ca, 2, "tsunagi-second");
    let pair = Pair::write(&cert1, &key1);
    let server = spawn_tls(&pair, &ca).await;

    // opened before the reload: an HTTP keep-alive connection and an engine.io WebSocket
    let mut kept = handshake(&server.addr, &ca, &[b"http/1.1"]).await;
    assert_eq!(get_on(&mut kept, "/healthz").await, "HTTP/1.1 200 OK");
    let ws_tls = handshake(&server.addr, &ca, &[b"http/1.1"]).await;
    let (mut ws, _) = tokio_tungstenite::client_async(
        server
            .url("/socket.io/?EIO=4&transport=websocket")
            .replace("https://", "wss://"),
        ws_tls,
    )
    .await
    .expect("WebSocket over TLS");
    let open = ws.next().await.unwrap().unwrap();
    assert!(open.to_text().unwrap().starts_with('0'), "{open:?}");

    std::fs::write(&pair.cert, &cert2).unwrap();
    std::fs::write(&pair.key, &key2).unwrap();
    server.sighup();
    let reloaded = server.logged("TLS certificate and key reloaded", 1).await;
    assert_eq!(reloaded["level"], "INFO", "{reloaded}");

    // a new connection gets the new certificate
    let fresh = handshake(&server.addr, &ca, &[b"http/1.1"]).await;
    assert_eq!(served_cert(&fresh), der2);
    assert_ne!(der1, der2);
    // the open ones still work, on the session they negotiated
    assert_eq!(get_on(&mut kept, "/healthz").await, "HTTP/1.1 200 OK");
    assert_eq!(served_cert(&kept), der1);
    let token = tsunagi::auth::Tokens::new(SECRET.as_bytes()).mint("tls-user", false, None, 3600);
    let connect = format!("40{}", serde_json::json!({ "token": token }));
    ws.send(Message::text(connect)).await.unwrap();
    let connected = tokio::time::timeout(WAIT, async {
        loop {
            let frame = ws.next().await.expect("still open").expect("a frame");
            if let Ok(text) = frame.to_text()
                && text.starts_with("40")
            {
                return text.to_owned();
            }
        }
    })
    .await
    .expect("Socket.IO connect answered on the WebSocket opened before the reload");
    assert!(connected.contains("sid"), "{connected}");

    // a broken file: logged as an error naming it, and the pair in service stays
    std::fs::write(&pair.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    server.sighup();
    let failed = server.logged("TLS reload failed", 1).await;
    assert_eq!(failed["level"], "ERROR", "{failed}");
    let error = failed["fields"]["error"].as_str().unwrap();
    assert!(
        error.contains("TSUNAGI_TLS_CERT") && error.contains(pair.cert.to_str().unwrap()),
        "{error}"
    );
    let after = handshake(&server.addr, &ca, &[b"http/1.1"]).await;
    assert_eq!(served_cert(&after), der2);
    let res = https_client(&ca)
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // a key that is not the certificate's: refused as well (the pair must match)
    std::fs::write(&pair.cert, &cert1).unwrap();
    server.sighup();
    let mismatch = server.logged("TLS reload failed", 2).await;
    let error = mismatch["fields"]["error"].as_str().unwrap();
    assert!(error.contains("does not belong"), "{error}");
    let after = handshake(&server.addr, &ca, &[b"http/1.1"]).await;
    assert_eq!(served_cert(&after), der2);
}

/// Starts with `pair` and expects the start to fail; what it printed.
async fn failed_start(pair: &Pair) -> String {
    let data = Data::sqlite();
    let out = tokio::time::timeout(Duration::from_secs(20), command(&data, pair).output())
        .await
        .expect("exits")
        .unwrap();
    assert!(!out.status.success(), "started with a bad pair");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mentions(said: &str, setting: &str, path: &Path) -> bool {
    said.contains(setting) && said.contains(path.to_str().unwrap())
}

#[tokio::test]
async fn a_bad_certificate_or_key_stops_the_start_naming_the_setting_and_file() {
    let ca = test_ca();
    let (cert, key, _) = server_cert(&ca, 1, "tsunagi-first");
    let (_, other_key, _) = server_cert(&ca, 2, "tsunagi-second");

    let no_cert = Pair::write("not a certificate\n", &key);
    let said = failed_start(&no_cert).await;
    assert!(mentions(&said, "TSUNAGI_TLS_CERT", &no_cert.cert), "{said}");

    // a key block that is not a key: named, and its content never repeated
    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC1uZXZlci1wcmludGVk";
    let bad_key = Pair::write(
        &cert,
        &format!("-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n"),
    );
    let said = failed_start(&bad_key).await;
    assert!(mentions(&said, "TSUNAGI_TLS_KEY", &bad_key.key), "{said}");
    assert!(!said.contains(secret), "{said}");

    let mismatched = Pair::write(&cert, &other_key);
    let said = failed_start(&mismatched).await;
    assert!(
        mentions(&said, "TSUNAGI_TLS_KEY", &mismatched.key) && said.contains("does not belong"),
        "{said}"
    );
}

#[tokio::test]
async fn wss_sockets_that_never_read_are_dropped_at_their_byte_budget() {
    // the budget counts the bytes handed to TLS: it must hold over WSS as over WS
    let ca = test_ca();
    let (cert, key, _) = server_cert(&ca, 1, "tsunagi-first");
    let pair = Pair::write(&cert, &key);
    let env = [
        ("TSUNAGI_SEND_RATE", "0"),
        ("TSUNAGI_WRITE_RATE", "0"),
        ("TSUNAGI_SOCKET_BUFFER_BYTES", "1048576"),
    ];
    let server = spawn_tls_with(&pair, &ca, &env).await;
    let http = https_client(&ca);
    let tokens = tsunagi::auth::Tokens::new(SECRET.as_bytes());
    let owner = tokens.mint("owner", false, None, 3600);
    let r = http
        .post(server.url("/api/v1/rooms"))
        .bearer_auth(&owner)
        .json(&serde_json::json!({ "id": "big" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for i in 0..50 {
        let content = format!("{i:04}{}", "y".repeat(16_000));
        let r = http
            .post(server.url("/api/v1/rooms/big/messages"))
            .bearer_auth(&owner)
            .json(&serde_json::json!({ "content": content }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // each join is answered with ~800 KB of history; these clients never read a byte
    let mut sockets = Vec::new();
    for u in 0..10 {
        let tls = handshake(&server.addr, &ca, &[b"http/1.1"]).await;
        let url = server.url("/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = tokio_tungstenite::client_async(url.replace("https://", "wss://"), tls)
            .await
            .unwrap();
        let token = tokens.mint(&format!("reader{u}"), false, None, 3600);
        let connect = format!("40{}", serde_json::json!({ "token": token }));
        ws.send(Message::text(connect)).await.unwrap();
        for ack in 0..60 {
            let join = format!(r#"42{ack}["join",{{"room":"big"}}]"#);
            ws.send(Message::text(join)).await.unwrap();
        }
        sockets.push(ws);
    }
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let text = http
                .get(server.url("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let dropped: f64 = text
                .lines()
                .find(|l| l.starts_with("tsunagi_slow_consumer_disconnects_total"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            if dropped >= 10.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("every never-reading WSS socket is dropped as a slow consumer");
    drop(sockets);
}
