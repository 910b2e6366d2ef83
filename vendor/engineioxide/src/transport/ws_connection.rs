//! One task per WebSocket session (tsunagi's patch): it reads frames, writes the outgoing queue and
//! runs the v4 heartbeat of a session opened on WebSocket.
//!
//! Upstream runs three tasks per WebSocket session: a reader, a writer (`forward_to_socket`) and a
//! heartbeat, each a spawned future of one to two KiB kept for the session's life, plus the channel
//! through which the reader hands pongs to the heartbeat. An idle socket needs none of them awake, so
//! one hand-polled future holds the stream unsplit and drives both directions and the heartbeat's one
//! timer. Behaviour is upstream's: the same packets in the same order, the first ping right after
//! the open packet, a full outgoing queue at ping time or a late pong closes the session
//! (`HeartbeatTimeout`), and queued packets (a `Close` among them) are written before the stream is
//! closed. Unlike upstream, a write error ends the session at once (the reader would see the
//! same broken stream), and the closing flush is bounded by the ping timeout, so a client that
//! never reads cannot hold the task.

use std::{
    future::{Future, poll_fn},
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{Sink, SinkExt, Stream};
use smallvec::smallvec;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::MutexGuard,
    time::{Instant, Sleep},
};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};
use tokio_util::future::FutureExt as _;

use engineioxide_core::{Packet, PacketBuf, ProtocolVersion};

use super::ws::ws_bytes_to_str;
use crate::{
    DisconnectReason, Socket, engine::EngineIo, errors::Error, handler::EngineIoHandler,
    socket::InternalRx,
};

/// Frames read, or packet batches written, in one poll before the task yields to the others.
const MAX_PER_POLL: usize = 64;

/// The v4 heartbeat of a session opened on WebSocket: ping every `interval` (the first right away),
/// a pong within `timeout`. Such a session is never upgrading (upgrades start from polling, whose
/// sessions keep their heartbeat task), so upstream's pause during an upgrade has no place here.
pub(crate) struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    state: Beat,
    /// A pong (or ping) arrived and was not yet counted. One is kept, as upstream's channel of one.
    pong: bool,
    first: bool,
}

enum Beat {
    /// The next ping is due at this instant.
    Tick(Instant),
    /// A ping is out; the timer runs to its deadline; the next ping is due at `next_tick`.
    Pong { next_tick: Instant },
}

impl Heartbeat {
    pub(crate) fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            state: Beat::Tick(Instant::now()),
            pong: false,
            first: true,
        }
    }

    /// Advances the heartbeat; `Err` when the session must close (`HeartbeatTimeout`).
    fn poll<D: Default + Send + Sync + 'static>(
        &mut self,
        socket: &Socket<D>,
        mut timer: Pin<&mut Sleep>,
        cx: &mut Context<'_>,
    ) -> Result<(), ()> {
        loop {
            if let Beat::Pong { next_tick } = self.state {
                if self.pong {
                    self.pong = false;
                    self.state = Beat::Tick(next_tick);
                    timer.as_mut().reset(next_tick);
                }
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            match self.state {
                Beat::Tick(at) => {
                    // Ticks keep their schedule (tokio's `Interval`, as upstream): a late one is
                    // followed by the next without waiting a whole interval.
                    let next_tick = at + self.interval;
                    if self.first {
                        // Some clients send a pong first; it does not answer the first ping.
                        self.first = false;
                        self.pong = false;
                    }
                    socket
                        .internal_tx
                        .try_send(smallvec![Packet::Ping])
                        .map_err(|_| ())?;
                    self.state = Beat::Pong { next_tick };
                    timer.as_mut().reset(Instant::now() + self.timeout);
                }
                Beat::Pong { .. } => return Err(()),
            }
        }
    }
}

/// Why the loop ended.
enum End {
    /// The session was closed elsewhere, or its queue was closed: nothing more to do.
    Cancelled,
    /// The client closed the transport (close packet, close frame or end of stream).
    Closed,
    /// No pong in time, or no room in the queue for a ping.
    HeartbeatTimeout,
    /// A read or write error, or a packet that has no place here.
    Error(Error),
}

/// Runs the session until it ends, then writes what is queued and closes the stream.
/// `heartbeat` is `None` when another task runs it (a session upgraded from polling, or v3).
///
/// Not an `async fn`: its arguments would be stored twice in the task (once as arguments, once as
/// locals); an `async move` block keeps one copy of the stream.
pub(crate) fn run<'a, H: EngineIoHandler, S>(
    engine: &'a Arc<EngineIo<H>>,
    socket: &'a Arc<Socket<H::Data>>,
    mut ws: WebSocketStream<S>,
    heartbeat: Option<Heartbeat>,
) -> impl Future<Output = ()> + Send + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        // A polling request that was in progress during an upgrade may still hold the lock.
        let Some(mut guard) = socket
            .internal_rx
            .lock()
            .with_cancellation_token(&socket.cancellation_token)
            .await
        else {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "session closed before the ws transport started");
            return;
        };
        let end = drive(engine, socket, &mut ws, &mut guard, heartbeat).await;

        match end {
            End::Cancelled => {
                #[cfg(feature = "tracing")]
                tracing::debug!(sid = %socket.id, "socket is closing");
            }
            End::Closed => {
                #[cfg(feature = "tracing")]
                tracing::debug!(sid = %socket.id, "ws transport was closed");
                engine.close_session(socket.id, DisconnectReason::TransportClose);
            }
            End::HeartbeatTimeout => {
                #[cfg(feature = "tracing")]
                tracing::debug!(sid = %socket.id, "heartbeat timeout");
                socket.close(DisconnectReason::HeartbeatTimeout);
            }
            End::Error(e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(sid = %socket.id, "ws transport error: {e:?}");
                let reason = Option::<DisconnectReason>::from(&e)
                    .unwrap_or(DisconnectReason::TransportError);
                engine.close_session(socket.id, reason);
            }
        }

        // What was queued before the end (a close packet among it) goes out before the stream closes.
        // Boxed: the closing flush's futures (and their timer) are needed once, at the end; inline
        // they add ~350 bytes to every session's task.
        Box::pin(close(engine, socket, ws, guard)).await;
    }
}

/// Writes what is queued, flushes and closes the stream, within the ping timeout.
async fn close<H: EngineIoHandler, S>(
    engine: &Arc<EngineIo<H>>,
    socket: &Arc<Socket<H::Data>>,
    mut ws: WebSocketStream<S>,
    mut rx: MutexGuard<'_, InternalRx>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    while let Ok(packets) = rx.buffered_rx.try_recv() {
        if write_packets(&mut ws, socket.protocol, packets).is_err() {
            break;
        }
    }
    drop(rx);
    let closing = async {
        ws.flush().await.ok();
        ws.close(None).await.ok();
    };
    tokio::time::timeout(engine.config.ping_timeout, closing)
        .await
        .ok();
}

/// Reads, writes and runs the heartbeat until the session ends. A function of its own so that its
/// state (the timer, the cancellation future) is not kept beside the closing flush's in the task.
fn drive<'a, H: EngineIoHandler, S>(
    engine: &'a Arc<EngineIo<H>>,
    socket: &'a Arc<Socket<H::Data>>,
    ws: &'a mut WebSocketStream<S>,
    rx: &'a mut InternalRx,
    mut heartbeat: Option<Heartbeat>,
) -> impl Future<Output = End> + Send + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let buffered_rx = &mut rx.buffered_rx;
        let mut cancelled = pin!(socket.cancellation_token.cancelled());
        let mut timer = pin!(tokio::time::sleep_until(Instant::now()));
        let mut unflushed = false;

        poll_fn(|cx| {
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(End::Cancelled);
            }

            // Read.
            for read in 0.. {
                if read == MAX_PER_POLL {
                    cx.waker().wake_by_ref();
                    break;
                }
                match Pin::new(&mut *ws).poll_next(cx) {
                    Poll::Ready(Some(Ok(msg))) => {
                        if let Some(end) = on_frame(engine, socket, msg, heartbeat.as_mut()) {
                            return Poll::Ready(end);
                        }
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(End::Error(e.into())),
                    Poll::Ready(None) => return Poll::Ready(End::Closed),
                    Poll::Pending => break,
                }
            }

            // Heartbeat: after reading (a pong just read counts), before writing (a ping goes out now).
            if let Some(hb) = heartbeat.as_mut() {
                if hb.poll(socket, timer.as_mut(), cx).is_err() {
                    return Poll::Ready(End::HeartbeatTimeout);
                }
            }

            // Write: the queue first, then the volatile slot (upstream's biased order).
            for batch in 0.. {
                if batch == MAX_PER_POLL {
                    cx.waker().wake_by_ref();
                    break;
                }
                match Pin::new(&mut *ws).poll_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(End::Error(e.into())),
                    Poll::Pending => break,
                }
                let packets = match buffered_rx.poll_recv_or_volatile(cx) {
                    Poll::Ready(Some(packets)) => packets,
                    Poll::Ready(None) => return Poll::Ready(End::Cancelled),
                    Poll::Pending => break,
                };
                if let Err(e) = write_packets(ws, socket.protocol, packets) {
                    return Poll::Ready(End::Error(e.into()));
                }
                unflushed = true;
            }
            if unflushed {
                match Pin::new(&mut *ws).poll_flush(cx) {
                    Poll::Ready(Ok(())) => unflushed = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(End::Error(e.into())),
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Handles one frame from the client; `Some` ends the session.
fn on_frame<H: EngineIoHandler>(
    engine: &Arc<EngineIo<H>>,
    socket: &Arc<Socket<H::Data>>,
    msg: Message,
    heartbeat: Option<&mut Heartbeat>,
) -> Option<End> {
    match msg {
        Message::Text(msg) => match Packet::parse(socket.protocol, ws_bytes_to_str(msg)) {
            Ok(Packet::Close) => Some(End::Closed),
            Ok(Packet::Pong | Packet::Ping) => {
                match heartbeat {
                    Some(hb) => hb.pong = true,
                    None => socket.on_pong(),
                }
                None
            }
            Ok(Packet::Message(msg)) => {
                engine.handler.on_message(msg, socket.clone());
                None
            }
            Ok(p) => Some(End::Error(Error::BadPacket(p))),
            Err(e) => Some(End::Error(e.into())),
        },
        Message::Binary(mut data) => {
            if socket.protocol == ProtocolVersion::V3 && !data.is_empty() {
                // The first byte is the message type, which we don't need.
                data = data.split_off(1);
            }
            engine.handler.on_binary(data, socket.clone());
            None
        }
        Message::Close(_) => Some(End::Closed),
        _ => None,
    }
}

/// Queues one batch of packets in the stream's write buffer (the caller flushes).
fn write_packets<S>(
    ws: &mut WebSocketStream<S>,
    protocol: ProtocolVersion,
    packets: PacketBuf,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for packet in packets {
        let msg = match packet {
            Packet::Binary(bin) | Packet::BinaryV3(bin) => {
                if protocol == ProtocolVersion::V3 {
                    // v3 requires the packet type as the first byte: a new buffer, v3 only.
                    let mut buff = Vec::with_capacity(bin.len() + 1);
                    buff.push(0x04);
                    buff.extend(bin);
                    Message::Binary(buff.into())
                } else {
                    Message::Binary(bin)
                }
            }
            // A Noop sent to end a polling request during an upgrade may remain in the queue.
            Packet::Noop => continue,
            packet => {
                let text: String = packet.try_into().unwrap();
                Message::Text(text.into())
            }
        };
        Pin::new(&mut *ws).start_send(msg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use engineioxide_core::{Str, TransportType};
    use futures_util::StreamExt;
    use http::Request;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::config::EngineIoConfig;

    const TIMEOUT: Duration = Duration::from_secs(2);

    #[derive(Debug, Default)]
    struct Recorder {
        messages: Mutex<Vec<String>>,
        disconnects: Mutex<Vec<DisconnectReason>>,
    }
    impl EngineIoHandler for Recorder {
        type Data = ();
        fn on_connect(self: Arc<Self>, _: Arc<Socket<()>>) {}
        fn on_disconnect(&self, _: Arc<Socket<()>>, reason: DisconnectReason) {
            self.disconnects.lock().unwrap().push(reason);
        }
        fn on_message(self: &Arc<Self>, msg: Str, _: Arc<Socket<()>>) {
            self.messages.lock().unwrap().push(msg.to_string());
        }
        fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
    }

    type Client = WebSocketStream<DuplexStream>;

    /// An engine with one WebSocket session and the client end of its stream.
    async fn session(
        ping: Duration,
    ) -> (
        Arc<EngineIo<Recorder>>,
        Arc<Socket<()>>,
        WebSocketStream<DuplexStream>,
        Client,
    ) {
        let config = EngineIoConfig::builder()
            .ping_interval(ping)
            .ping_timeout(ping)
            .build();
        let engine = Arc::new(EngineIo::new(Arc::new(Recorder::default()), config));
        let socket = engine.create_session(
            ProtocolVersion::V4,
            TransportType::Websocket,
            Request::<()>::default().into_parts().0,
            false,
        );
        let (server, client) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        (engine, socket, server, client)
    }

    fn spawn_run(
        engine: &Arc<EngineIo<Recorder>>,
        socket: &Arc<Socket<()>>,
        ws: WebSocketStream<DuplexStream>,
        heartbeat: Option<Heartbeat>,
    ) -> tokio::task::JoinHandle<()> {
        let (engine, socket) = (engine.clone(), socket.clone());
        tokio::spawn(async move { run(&engine, &socket, ws, heartbeat).await })
    }

    /// The connection's future is what an idle session keeps in its task: keep it small.
    #[tokio::test]
    async fn the_connection_future_stays_small() {
        let (engine, socket, server, _client) = session(Duration::from_secs(1)).await;
        let stream = std::mem::size_of_val(&server);
        let fut = run(&engine, &socket, server, None);
        let size = std::mem::size_of_val(&fut);
        // 1 008 bytes with a 296-byte stream when written (1 384 as `async fn`s, whose arguments are
        // stored twice).
        assert!(size <= stream + 800, "run future: {size} bytes");
    }

    async fn next_text(client: &mut Client) -> String {
        loop {
            let msg = tokio::time::timeout(TIMEOUT, client.next())
                .await
                .expect("a frame in time")
                .expect("the stream is open")
                .expect("a valid frame");
            match msg {
                Message::Text(text) => return text.to_string(),
                Message::Close(_) => return "<close>".into(),
                _ => continue,
            }
        }
    }

    #[tokio::test]
    async fn packets_go_out_in_order_and_messages_reach_the_handler() {
        let (engine, socket, server, mut client) = session(Duration::from_secs(60)).await;
        let task = spawn_run(&engine, &socket, server, None);
        socket.emit("a").unwrap();
        socket.emit("b").unwrap();
        assert_eq!(next_text(&mut client).await, "4a");
        assert_eq!(next_text(&mut client).await, "4b");

        client.send(Message::text("4hello")).await.unwrap();
        client.send(Message::text("4world")).await.unwrap();
        client.close(None).await.unwrap();
        tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
        assert_eq!(*engine.handler.messages.lock().unwrap(), ["hello", "world"]);
        assert!(engine.get_socket(socket.id).is_none());
    }

    #[tokio::test]
    async fn the_latest_volatile_packet_goes_out_after_the_queued_ones() {
        let (engine, socket, server, mut client) = session(Duration::from_secs(60)).await;
        socket.emit("a").unwrap();
        assert!(socket.emit_volatile("v1"));
        assert!(socket.emit_volatile("v2"));
        let _task = spawn_run(&engine, &socket, server, None);
        assert_eq!(next_text(&mut client).await, "4a");
        assert_eq!(next_text(&mut client).await, "4v2");
        assert!(socket.emit_volatile("v3"));
        assert_eq!(next_text(&mut client).await, "4v3");
    }

    #[tokio::test]
    async fn the_first_ping_goes_out_at_once_and_answered_pings_keep_the_session() {
        let (engine, socket, server, mut client) = session(Duration::from_millis(40)).await;
        let task = spawn_run(
            &engine,
            &socket,
            server,
            Some(Heartbeat::new(
                Duration::from_millis(40),
                Duration::from_millis(40),
            )),
        );
        for _ in 0..4 {
            assert_eq!(next_text(&mut client).await, "2");
            client.send(Message::text("3")).await.unwrap();
        }
        assert!(engine.get_socket(socket.id).is_some());
        socket.close(DisconnectReason::ClosingServer);
        // a next ping may come first
        let mut text = next_text(&mut client).await;
        while text == "2" {
            text = next_text(&mut client).await;
        }
        assert_eq!(text, "1");
        tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_unanswered_ping_closes_the_session_with_a_close_packet() {
        let (engine, socket, server, mut client) = session(Duration::from_millis(30)).await;
        let task = spawn_run(
            &engine,
            &socket,
            server,
            Some(Heartbeat::new(
                Duration::from_millis(30),
                Duration::from_millis(30),
            )),
        );
        assert_eq!(next_text(&mut client).await, "2");
        assert_eq!(next_text(&mut client).await, "1");
        assert_eq!(next_text(&mut client).await, "<close>");
        tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
        assert!(engine.get_socket(socket.id).is_none());
        // on_disconnect runs in a task of its own once the transport gave the queue back
        tokio::time::timeout(TIMEOUT, socket.closed())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_at_ping_time_closes_the_session() {
        let (engine, socket, server, client) = session(Duration::from_millis(30)).await;
        // The client never reads; fill the queue before the task starts.
        while socket.emit("x").is_ok() {}
        let task = spawn_run(
            &engine,
            &socket,
            server,
            Some(Heartbeat::new(
                Duration::from_millis(30),
                Duration::from_millis(30),
            )),
        );
        tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
        assert!(engine.get_socket(socket.id).is_none());
        drop(client);
    }

    #[tokio::test]
    async fn a_client_that_never_reads_cannot_hold_the_task() {
        let (engine, socket, server, client) = session(Duration::from_millis(50)).await;
        let task = spawn_run(&engine, &socket, server, None);
        // Far more than the duplex buffer: the writes block until the session is closed.
        let big = "y".repeat(16 * 1024);
        for _ in 0..16 {
            socket.emit(big.clone()).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished());
        socket.close(DisconnectReason::ClosingServer);
        // bounded by the ping timeout (50 ms)
        tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
        drop(client);
    }

    /// A polling request can still hold the lock at the end of an upgrade.
    #[tokio::test]
    async fn the_transport_waits_for_the_lock_of_a_polling_request() {
        let (engine, socket, server, mut client) = session(Duration::from_secs(60)).await;
        let polling = socket.internal_rx.lock().await;
        let task = spawn_run(&engine, &socket, server, None);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !task.is_finished(),
            "the transport should wait for the lock"
        );

        drop(polling);
        socket.emit(Str::from("hello")).unwrap();
        assert_eq!(next_text(&mut client).await, "4hello");
    }

    #[tokio::test]
    async fn waiting_for_the_lock_stops_with_the_session() {
        let (engine, socket, server, _client) = session(Duration::from_secs(60)).await;
        let _polling = socket.internal_rx.lock().await;
        let task = spawn_run(&engine, &socket, server, None);
        tokio::time::sleep(Duration::from_millis(20)).await;

        socket.cancellation_token.cancel();
        tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
    }
}
