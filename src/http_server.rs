//! The HTTP/1.1 server under both edges: the accept loop and what it allows a connection.
//!
//! `axum::serve` has no header timeout, no header size limit and no connection cap, so one
//! client could hold descriptors until the process could not accept any more. Here (on hyper's
//! own connection builder, not a parser of ours):
//! - a connection must send a complete request head within `TSUNAGI_HTTP_HEADER_TIMEOUT_MS`,
//!   first request and every later one on a kept-alive connection alike (slow or silent clients
//!   are closed; a WebSocket, once upgraded, lives by the engine's heartbeats instead);
//! - a request head is at most `TSUNAGI_HTTP_MAX_HEADER_BYTES` (else 431);
//! - at most `TSUNAGI_MAX_CONNECTIONS` connections are open (never more than the descriptor
//!   limit allows, which is raised to its hard limit at start). At the cap the connection idle
//!   the longest — waiting for a request head, so holding nothing — is closed to admit the new
//!   one, so a flood of idle sockets cannot lock real clients out; with none idle, the new
//!   connection is answered `503` with `Retry-After: 1` and closed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::io_stats::{IoCounters, Upgrades};
use crate::telemetry::Telemetry;
use crate::tls::Tls;

pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Descriptors kept free of connections: database pools, Redis, files, the accept of a refusal.
const RESERVED_FDS: u64 = 128;

/// How long a new connection at the cap waits for the slot of the idle one closed for it.
const EVICTION_WAIT: Duration = Duration::from_millis(200);

const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 77\r\n\r\n{\"error\":{\"code\":\"unavailable\",\"message\":\"too many connections, try again\"}}\n";

/// Connections the kernel may hold for us before we accept them (it caps this at
/// `net.core.somaxconn`). A flood of connects overruns a short queue and makes every client,
/// real ones too, wait for SYN retransmissions (1 s, 3 s, …).
const ACCEPT_BACKLOG: u32 = 4096;

/// The listening socket on `addr`, with a backlog that absorbs a burst of connects.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Raises the soft descriptor limit to the hard one, and the hard one too when it is below
/// `want` (descriptors for every connection allowed plus the reserve) and the process may
/// (root, or CAP_SYS_RESOURCE; never past `fs.nr_open`). Logs what it did; returns the limit
/// in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    let Some(lim) = rlimit_nofile() else {
        return 1024;
    };
    let (before, hard) = (lim.rlim_cur, lim.rlim_max);
    if hard < want {
        let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(hard);
        let target = want.min(ceiling).max(hard);
        if target > hard && set_nofile(target, target) {
            tracing::info!(
                from = before,
                to = target,
                "raised the descriptor limit (soft and hard)"
            );
            return target;
        }
    }
    if before < hard && set_nofile(hard, hard) {
        tracing::info!(
            from = before,
            to = hard,
            "raised the descriptor limit to its hard limit"
        );
        return hard;
    }
    before
}

fn rlimit_nofile() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed to it.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

fn set_nofile(soft: u64, hard: u64) -> bool {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct passed to it.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 }
}

/// Descriptors wanted for `max_connections` connections and the reserve.
pub fn fds_wanted(max_connections: usize) -> u64 {
    max_connections as u64 + RESERVED_FDS
}

/// The cap in force: the configured one, unless the descriptor limit leaves less.
pub fn effective_cap(configured: usize, fd_limit: u64) -> usize {
    let room = fd_limit.saturating_sub(RESERVED_FDS).max(16) as usize;
    if configured > room {
        tracing::warn!(
            configured,
            fd_limit,
            cap = room,
            "TSUNAGI_MAX_CONNECTIONS is above what the descriptor limit allows; capping there \
             (raise LimitNOFILE / ulimit -n)"
        );
    }
    configured.min(room)
}

/// One open connection, as the cap sees it.
struct Conn {
    /// Since when it has waited for a request head; `None` while a request runs or once
    /// upgraded (then it is never closed to make room).
    idle_since: Mutex<Option<Instant>>,
    close: CancellationToken,
}

#[derive(Default)]
struct Open {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Open {
    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            idle_since: Mutex::new(Some(Instant::now())),
            close: CancellationToken::new(),
        });
        self.conns.lock().insert(id, conn.clone());
        (id, conn)
    }

    fn remove(&self, id: u64) {
        self.conns.lock().remove(&id);
    }

    /// Closes the connection idle the longest; false if none is idle.
    fn close_longest_idle(&self) -> bool {
        let conns = self.conns.lock();
        let oldest = conns
            .values()
            .filter_map(|c| c.idle_since.lock().map(|t| (t, c)))
            .min_by_key(|(t, _)| *t);
        match oldest {
            Some((_, c)) => {
                // taken out of the running at once, so two arrivals never pick the same one
                *c.idle_since.lock() = None;
                c.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// When serving ends. From `accepting` on, new connections are refused (the listener is
/// closed, so a load balancer sends newcomers to other instances at once); open connections
/// are served until `serving` is cancelled, then closed once their request in progress is done.
#[derive(Clone)]
pub struct Stop {
    pub accepting: CancellationToken,
    pub serving: CancellationToken,
}

impl Stop {
    /// Stops accepting and serving at the same moment.
    pub fn at_once(token: CancellationToken) -> Self {
        Self {
            accepting: token.clone(),
            serving: token,
        }
    }
}

/// Serves `router` on `listener` until `stop` says so (see [`Stop`]), then lets open requests
/// finish (at most `drain_within`). With `tls`, every connection is HTTPS (WSS once upgraded): the
/// handshake runs in the connection's own task, never in the accept loop.
#[allow(clippy::too_many_arguments)] // each is one independent part the caller builds
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    telemetry: Telemetry,
    upgrades: Arc<Upgrades>,
    stop: Stop,
    drain_within: Duration,
) {
    let Stop {
        accepting,
        serving: stop,
    } = stop;
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let open = Arc::new(Open::default());
    let connections = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes);
    let (opened, refused, evicted, handshake_failed) = telemetry.record(|| {
        (
            metrics::gauge!("tsunagi_connections_open"),
            metrics::counter!("tsunagi_connections_refused_total"),
            metrics::counter!("tsunagi_connections_evicted_total"),
            metrics::counter!("tsunagi_tls_handshake_failures_total"),
        )
    });
    loop {
        let (stream, peer) = tokio::select! {
            _ = accepting.cancelled() => break,
            _ = stop.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        // small frames (acks, messages) must not wait for the peer's delayed ACK (Nagle)
        stream.set_nodelay(true).ok();
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) if open.close_longest_idle() => {
                evicted.increment(1);
                match tokio::time::timeout(EVICTION_WAIT, permits.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        refused.increment(1);
                        tokio::spawn(refuse(stream, tls.clone()));
                        continue;
                    }
                }
            }
            Err(_) => {
                refused.increment(1);
                tokio::spawn(refuse(stream, tls.clone()));
                continue;
            }
        };
        // idle (so evictable) from here: a pending handshake holds nothing either
        let (id, conn) = open.add();
        let counters = Arc::new(IoCounters::default());
        let service = Tracked {
            router: router.clone(),
            conn: conn.clone(),
            counters: counters.clone(),
            upgrades: upgrades.clone(),
            peer,
        };
        opened.increment(1.0);
        let slot = Slot {
            open: opened.clone(),
            _permit: permit,
        };
        let (open, stop, http, tls) = (open.clone(), stop.clone(), http.clone(), tls.clone());
        let (header_timeout, handshake_failed) = (limits.header_timeout, handshake_failed.clone());
        connections.spawn(async move {
            let closing = Closing {
                conn: &conn,
                stop: &stop,
                drain_within,
            };
            match tls {
                None => {
                    let stream = Capped::new(stream, counters, slot);
                    closing.drive(&http, stream, service).await;
                }
                Some(tls) => {
                    let handshake = closing.handshake(&tls, stream, header_timeout);
                    match handshake.await {
                        Ok(stream) => {
                            let stream = Capped::new(stream, counters, slot);
                            closing.drive(&http, stream, service).await;
                        }
                        Err(Some(why)) => {
                            handshake_failed.increment(1);
                            tracing::debug!(%peer, error = %why, "TLS handshake failed");
                        }
                        Err(None) => {} // closed to make room, or the server stops
                    }
                }
            }
            open.remove(id);
        });
    }
    drop(listener);
    stop.cancelled().await;
    connections.close();
    if tokio::time::timeout(drain_within, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the shutdown timeout");
    }
}

/// When a connection's HTTP stops: it ends, it is closed to make room, or the server drains.
struct Closing<'a> {
    conn: &'a Conn,
    stop: &'a CancellationToken,
    drain_within: Duration,
}

impl Closing<'_> {
    /// The TLS handshake, bounded like a request head (a client that never finishes it is
    /// closed). `Err(None)`: abandoned because the connection is closed or the server stops.
    async fn handshake(
        &self,
        tls: &Tls,
        stream: TcpStream,
        within: Duration,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, Option<String>> {
        let handshake = tokio::time::timeout(within, tls.acceptor().accept(stream));
        tokio::select! {
            done = handshake => match done {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => Err(Some(e.to_string())),
                Err(_) => Err(Some("timed out".to_owned())),
            },
            _ = self.conn.close.cancelled() => Err(None),
            _ = self.stop.cancelled() => Err(None),
        }
    }

    /// Runs hyper over `stream` (plain TCP or TLS) until the connection ends or is closed.
    async fn drive<S>(
        &self,
        http: &hyper::server::conn::http1::Builder,
        stream: Capped<S>,
        service: Tracked,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => {}
            _ = self.conn.close.cancelled() => {} // closed to make room
            _ = self.stop.cancelled() => {
                // finish the request in progress, then close
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(self.drain_within, connection).await;
            }
        }
    }
}

/// The next connection; transient errors (EMFILE, ECONNABORTED) are logged and retried after a
/// pause, as axum's loop does, so a full descriptor table does not spin the loop.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Tells a connection over the cap `503` and closes it; over TLS the answer needs a handshake,
/// so it is given only to a client that completes one within the second allowed.
async fn refuse(stream: TcpStream, tls: Option<Arc<Tls>>) {
    async fn answer<S: AsyncWrite + Unpin>(mut stream: S) {
        stream.write_all(FULL).await.ok();
        stream.shutdown().await.ok();
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        match tls {
            None => answer(stream).await,
            Some(tls) => {
                if let Ok(stream) = tls.acceptor().accept(stream).await {
                    answer(stream).await;
                }
            }
        }
    })
    .await;
}

/// A connection's place under the cap, given back when its stream is dropped.
struct Slot {
    /// `tsunagi_connections_open`, lowered when the connection closes.
    open: metrics::Gauge,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

/// A connection's stream (TCP, or TLS over it), holding its slot under the cap until it
/// closes — also after an upgrade, when the WebSocket owns it. Over TLS it counts the bytes
/// handed to TLS: those the gateway queued, which is what its byte budget compares.
pub struct Capped<S> {
    stream: S,
    /// What this connection has written (for the gateway's byte budget per WebSocket).
    counters: Arc<IoCounters>,
    _slot: Slot,
}

impl<S> Capped<S> {
    fn new(stream: S, counters: Arc<IoCounters>, slot: Slot) -> Self {
        Capped {
            stream,
            counters,
            _slot: slot,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = done {
            self.counters.wrote(n);
        }
        done
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = done {
            self.counters.wrote(n);
        }
        done
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The router, marking its connection busy while a request runs; every request carries its
/// connection's counters, and a WebSocket upgrade of an engine session is recorded.
struct Tracked {
    router: Router,
    conn: Arc<Conn>,
    counters: Arc<IoCounters>,
    upgrades: Arc<Upgrades>,
    /// The TCP peer, given to every request as axum's `ConnectInfo` (the client address, unless
    /// the peer is a trusted proxy).
    peer: SocketAddr,
}

/// The engine session a `…/socket.io/?transport=websocket&sid=…` request upgrades.
fn upgraded_sid(req: &Request<Incoming>) -> Option<&str> {
    let query = req.uri().query()?;
    if !query.split('&').any(|p| p == "transport=websocket") {
        return None;
    }
    query.split('&').find_map(|p| p.strip_prefix("sid="))
}

/// A request whose head outlives it: an Engine.IO handshake (polling or WebSocket, and a
/// WebSocket upgrade of a polling session) keeps its head as long as the session lives.
fn head_outlives(req: &Request<Incoming>) -> bool {
    let Some(query) = req.uri().query() else {
        return false;
    };
    let mut params = query.split('&');
    let transport = params.clone().find_map(|p| p.strip_prefix("transport="));
    match transport {
        Some("websocket") => true,
        Some(_) => !params.any(|p| p.starts_with("sid=")),
        None => false,
    }
}

/// hyper parses a request head without copying: its URI and header values are slices of the
/// connection's read buffer and keep all of it (8 KiB) allocated while any of them lives. A
/// head kept for a session's life gets its own copies (a few hundred bytes) instead.
fn own_head(req: &mut Request<Incoming>) {
    if let Ok(uri) = req.uri().to_string().parse() {
        *req.uri_mut() = uri;
    }
    for value in req.headers_mut().values_mut() {
        if let Ok(mut owned) = hyper::header::HeaderValue::from_bytes(value.as_bytes()) {
            owned.set_sensitive(value.is_sensitive());
            *value = owned;
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        *self.conn.idle_since.lock() = None;
        if let Some(sid) = upgraded_sid(&req) {
            self.upgrades.upgraded(sid, &self.counters);
        }
        if head_outlives(&req) {
            own_head(&mut req);
        }
        req.extensions_mut().insert(self.counters.clone());
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let (mut router, conn) = (self.router.clone(), self.conn.clone());
        Box::pin(async move {
            // axum's Router is always ready: no poll_ready needed before call
            let res = tower_service::Service::call(&mut router, req).await?;
            if res.status() != StatusCode::SWITCHING_PROTOCOLS {
                *conn.idle_since.lock() = Some(Instant::now());
            }
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn start(max: usize, header_timeout: Duration) -> (SocketAddr, CancellationToken) {
        start_with(max, header_timeout, None).await
    }

    async fn start_with(
        max: usize,
        header_timeout: Duration,
        tls: Option<Arc<Tls>>,
    ) -> (SocketAddr, CancellationToken) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let router = Router::new().route(
            "/ok",
            axum::routing::get(|| async { "ok" }).post(|body: String| async move { body }),
        );
        let stop = CancellationToken::new();
        let limits = Limits {
            max_connections: max,
            header_timeout,
            max_header_bytes: 8192,
        };
        tokio::spawn(serve(
            tcp,
            router,
            limits,
            tls,
            Telemetry::detached(),
            Arc::default(),
            Stop::at_once(stop.clone()),
            Duration::from_secs(1),
        ));
        (addr, stop)
    }

    async fn get_ok(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let (addr, _stop) = start(2, Duration::from_secs(30)).await;
        let mut idle = Vec::new();
        for _ in 0..2 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // both accepted
        assert!(get_ok(addr).await.starts_with("HTTP/1.1 200"));
        // the oldest idle one was closed for it
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), idle[0].read(&mut buf))
            .await
            .expect("closed, not left hanging")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn with_none_idle_the_next_connection_is_told_503() {
        let (addr, _stop) = start(1, Duration::from_secs(30)).await;
        // busy: a request whose body is still coming
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"POST /ok HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let answer = get_ok(addr).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(body.len(), 77, "Content-Length matches the body");
        drop(busy);
    }

    #[tokio::test]
    async fn a_silent_or_slow_client_is_closed_after_the_header_timeout() {
        let (addr, _stop) = start(100, Duration::from_millis(300)).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /ok HTTP/1.1\r\n").await.unwrap();
        let started = Instant::now();
        for s in [&mut silent, &mut slow] {
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
                .await
                .expect("closed within the timeout")
                .ok();
        }
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    /// A TLS listener on a self-signed certificate for localhost, and a client trusting it.
    fn tls_pair(dir: &std::path::Path) -> (Arc<Tls>, tokio_rustls::TlsConnector) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let files = crate::config::TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, made.cert.pem()).unwrap();
        std::fs::write(&files.key, made.signing_key.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(made.cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        (
            Arc::new(Tls::load(&files).unwrap()),
            tokio_rustls::TlsConnector::from(Arc::new(client)),
        )
    }

    /// `GET /ok` over a new TLS connection (trusting the test CA); the whole answer.
    async fn get_over_tls(connector: &tokio_rustls::TlsConnector, addr: SocketAddr) -> Vec<u8> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = connector.connect(name, tcp).await.unwrap();
        client
            .write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.ok();
        answer
    }

    #[tokio::test]
    async fn a_stalled_tls_handshake_blocks_no_one_and_is_closed_after_the_header_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (tls, connector) = tls_pair(dir.path());
        let (addr, _stop) = start_with(100, Duration::from_millis(1000), Some(tls)).await;
        // opens TCP and never says a word; another sends half a ClientHello
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
            .await
            .unwrap();
        let started = Instant::now();
        // meanwhile a real client is served at once
        assert!(
            get_over_tls(&connector, addr)
                .await
                .starts_with(b"HTTP/1.1 200")
        );
        // a loop waiting on a handshake would answer only after the 1 s timeout
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "not held up"
        );
        for s in [&mut silent, &mut partial] {
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
                .await
                .expect("closed within the timeout")
                .ok();
        }
        assert!(started.elapsed() >= Duration::from_millis(900));
    }

    #[tokio::test]
    async fn at_the_cap_a_pending_tls_handshake_makes_room() {
        let dir = tempfile::tempdir().unwrap();
        let (tls, connector) = tls_pair(dir.path());
        let (addr, _stop) = start_with(1, Duration::from_secs(30), Some(tls)).await;
        let mut pending = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await; // accepted, handshake pending
        assert!(
            get_over_tls(&connector, addr)
                .await
                .starts_with(b"HTTP/1.1 200")
        );
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), pending.read(&mut buf))
            .await
            .expect("closed, not left hanging")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn over_tls_with_none_idle_the_next_connection_is_told_503_inside_tls() {
        let dir = tempfile::tempdir().unwrap();
        let (tls, connector) = tls_pair(dir.path());
        let (addr, _stop) = start_with(1, Duration::from_secs(30), Some(tls)).await;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        // busy: a request whose body is still coming
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut busy = connector.connect(name.clone(), tcp).await.unwrap();
        busy.write_all(b"POST /ok HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n")
            .await
            .unwrap();
        busy.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut refused = connector.connect(name, tcp).await.unwrap();
        let mut answer = Vec::new();
        refused.read_to_end(&mut answer).await.ok();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        drop(busy);
    }
}
