//! The listening socket with a cap on concurrent connections (mini-redis's `Semaphore`): each
//! accepted connection holds a permit until it closes; one past the cap is answered a short
//! `503` and closed at once, so clients learn the server is full instead of hanging.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry::Telemetry;

pub struct CappedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    telemetry: Telemetry,
}

impl CappedListener {
    pub fn new(inner: TcpListener, max_connections: usize, telemetry: Telemetry) -> Self {
        CappedListener {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
            telemetry,
        }
    }
}

const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 77\r\n\r\n{\"error\":{\"code\":\"unavailable\",\"message\":\"too many connections, try again\"}}\n";

impl Listener for CappedListener {
    type Io = Capped;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Capped, SocketAddr) {
        loop {
            // axum's own loop: transient accept errors (EMFILE, ECONNABORTED) are logged and retried
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            stream.set_nodelay(true).ok(); // small frames (acks) must not wait for delayed ACKs
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let open = self
                        .telemetry
                        .record(|| metrics::gauge!("tsunagi_connections_open"));
                    open.increment(1.0);
                    return (
                        Capped {
                            stream,
                            open,
                            _permit: permit,
                        },
                        addr,
                    );
                }
                Err(_) => {
                    self.telemetry
                        .record(|| metrics::counter!("tsunagi_connections_refused_total"))
                        .increment(1);
                    tokio::spawn(refuse(stream));
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        stream.write_all(FULL).await.ok();
        stream.shutdown().await.ok();
    })
    .await;
}

/// A connection that holds its permit until dropped.
pub struct Capped {
    stream: TcpStream,
    /// `tsunagi_connections_open`, lowered when the connection closes.
    open: metrics::Gauge,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Capped {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn one_past_the_cap_is_told_503_and_a_freed_slot_is_reused() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = CappedListener::new(tcp, 1, Telemetry::detached());
        let first = TcpStream::connect(addr).await.unwrap();
        let (held, _) = listener.accept().await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        let accept = tokio::spawn(async move {
            let (io, _) = listener.accept().await;
            io
        });
        let mut answer = String::new();
        second.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(body.len(), 77, "Content-Length matches the body");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "unavailable");
        drop((held, first));
        let _third = TcpStream::connect(addr).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), accept)
            .await
            .expect("the freed permit admits the next connection")
            .unwrap();
    }
}
