//! A small Socket.IO v4 client over WebSocket, for the Rust tests and the load generator.
//! (No maintained Rust Socket.IO client speaks to an arbitrary v4 server with acks and auth on
//! this stack's tokio-tungstenite; the protocol needed here is a few lines.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("connect_error: {0}")]
    Refused(Value),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("timed out")]
    Timeout,
    #[error("connection closed")]
    Closed,
}

type Acks = Arc<Mutex<HashMap<i64, oneshot::Sender<Value>>>>;

pub struct SioClient {
    out: mpsc::UnboundedSender<WsMessage>,
    acks: Acks,
    next_ack: AtomicI64,
    /// Server events, in arrival order: (event name, first argument).
    pub events: mpsc::UnboundedReceiver<(String, Value)>,
    pub sid: String,
}

impl SioClient {
    /// Connects to `base` (`http://host:port`) with `auth: { token }`.
    pub async fn connect(base: &str, token: Option<&str>) -> Result<SioClient, ClientError> {
        let url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            base.replacen("http", "ws", 1)
        );
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let (mut sink, mut stream) = ws.split();
        let open = next_text(&mut stream).await?;
        if !open.starts_with('0') {
            return Err(ClientError::Protocol(format!("expected OPEN, got {open}")));
        }
        let auth = match token {
            Some(t) => serde_json::json!({ "token": t }).to_string(),
            None => String::new(),
        };
        sink.send(WsMessage::text(format!("40{auth}"))).await?;
        let sid = loop {
            let t = next_text(&mut stream).await?;
            if t == "2" {
                sink.send(WsMessage::text("3")).await?;
            } else if let Some(body) = t.strip_prefix("40") {
                let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                break v["sid"].as_str().unwrap_or_default().to_owned();
            } else if let Some(body) = t.strip_prefix("44") {
                return Err(ClientError::Refused(
                    serde_json::from_str(body).unwrap_or(Value::Null),
                ));
            }
        };
        let (out, mut out_rx) = mpsc::unbounded_channel::<WsMessage>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            sink.close().await.ok();
        });
        let acks: Acks = Arc::default();
        let (ev_tx, events) = mpsc::unbounded_channel();
        let reader_acks = acks.clone();
        let pong = out.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let WsMessage::Text(t) = frame else { continue };
                let t = t.as_str();
                if t == "2" {
                    pong.send(WsMessage::text("3")).ok();
                } else if let Some(rest) = t.strip_prefix("42") {
                    if let Ok(Value::Array(mut a)) = serde_json::from_str(rest)
                        && !a.is_empty()
                    {
                        let arg = if a.len() > 1 {
                            a.swap_remove(1)
                        } else {
                            Value::Null
                        };
                        let name = a[0].as_str().unwrap_or_default().to_owned();
                        if ev_tx.send((name, arg)).is_err() {
                            break;
                        }
                    }
                } else if let Some(rest) = t.strip_prefix("43") {
                    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                    let id: i64 = rest[..digits].parse().unwrap_or(-1);
                    let arg = match serde_json::from_str(&rest[digits..]) {
                        Ok(Value::Array(mut a)) if !a.is_empty() => a.swap_remove(0),
                        _ => Value::Null,
                    };
                    if let Some(tx) = reader_acks.lock().remove(&id) {
                        tx.send(arg).ok();
                    }
                } else if t.starts_with("41") || t == "1" {
                    break;
                }
            }
            // dropping the pending ack senders wakes their waiters with Closed
            reader_acks.lock().clear();
        });
        Ok(SioClient {
            out,
            acks,
            next_ack: AtomicI64::new(0),
            events,
            sid,
        })
    }

    /// Emits `event` with `data` and returns the wait for its ack.
    pub fn emit_with_ack(
        &self,
        event: &str,
        data: &Value,
    ) -> impl Future<Output = Result<Value, ClientError>> + use<> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.acks.lock().insert(id, tx);
        let sent = self.out.send(WsMessage::text(format!(
            "42{id}[{},{}]",
            Value::from(event),
            data
        )));
        async move {
            sent.map_err(|_| ClientError::Closed)?;
            rx.await.map_err(|_| ClientError::Closed)
        }
    }

    /// Emits and waits at most `timeout` for the ack.
    pub async fn call(
        &self,
        event: &str,
        data: Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        tokio::time::timeout(timeout, self.emit_with_ack(event, &data))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// The next server event named `name` within `timeout`, skipping others.
    pub async fn next_event(&mut self, name: &str, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((n, v))) if n == name => return Some(v),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    pub fn close(&self) {
        self.out.send(WsMessage::text("41")).ok();
        self.out.send(WsMessage::Close(None)).ok();
    }
}

async fn next_text<S>(stream: &mut S) -> Result<String, ClientError>
where
    S: StreamExt<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .map_err(|_| ClientError::Timeout)?
            .ok_or(ClientError::Closed)??;
        if let WsMessage::Text(t) = frame {
            return Ok(t.as_str().to_owned());
        }
    }
}
