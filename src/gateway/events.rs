//! The client events of PROTOCOL.md §3, run one at a time per session in arrival order
//! (so a socket's sends are queued for commit in the order it sent them).

use std::sync::Arc;

use serde_json::{Value, json};

use super::Gateway;
use super::client_event::{self, ClientEvent};
use super::packet;
use super::sensor_events;
use super::session::{InboundEvent, Session};
use crate::app::App;
use crate::domain::{Message, RoomId, State};
use crate::error::{ApiError, ApiResult};

const JOIN_HISTORY: u32 = 50;

/// Handles the session's queued events one at a time, and ends when none is left (the next
/// event starts another: `inbox.rs`).
pub async fn worker(gw: Arc<Gateway>, session: Arc<Session>) {
    while let Some(ev) = session.next_event() {
        if session.is_closed() {
            break;
        }
        handle(&gw, &session, ev).await;
    }
}

fn ok(mut body: Value) -> Value {
    body["ok"] = Value::Bool(true);
    body
}

fn failure(e: &ApiError) -> Value {
    json!({ "ok": false, "error": e.body() })
}

pub(super) fn reply(session: &Session, ack: Option<i64>, result: ApiResult<Value>) {
    if let Some(id) = ack {
        let body = match result {
            Ok(v) => ok(v),
            Err(e) => failure(&e),
        };
        session.emit(packet::ack(id, &body));
    }
}

async fn handle(gw: &Arc<Gateway>, session: &Arc<Session>, ev: InboundEvent) {
    if let Some(reason) = ev.refused {
        gw.metrics.events_in("unknown").increment(1);
        return reply(session, ev.ack, Err(ApiError::bad_request(reason)));
    }
    gw.metrics
        .events_in(client_event::label(&ev.name))
        .increment(1);
    let event = match ClientEvent::parse(&ev.name, ev.payload) {
        Ok(event) => event,
        Err(e) => return reply(session, ev.ack, Err(e)),
    };
    // A role changed since the token was issued counts from the next event on (a users-cache
    // hit per event; the change drops the key on every instance before it is answered).
    match gw.app.users.effective(&session.identity).await {
        Ok(who) => session.set_who(who),
        Err(e) => return reply(session, ev.ack, Err(e.into())),
    }
    let result = match event {
        ClientEvent::Join { room } => join(gw, session, room, ev.ack).await,
        ClientEvent::Leave { room } => leave(gw, session, room).await,
        ClientEvent::Send {
            room,
            content,
            client_id,
        } => return send(gw, session, &room, content, client_id, ev.ack).await,
        ClientEvent::Typing { room } => typing(gw, session, room).await,
        ClientEvent::Sync {
            room,
            since_seq,
            epoch,
            limit,
        } => sync(gw, session, room, since_seq, epoch.as_deref(), limit).await,
        ClientEvent::Presence { room } => presence(gw, session, room).await,
        ClientEvent::Reading {
            sensor,
            reading,
            durable,
        } => return sensor_events::reading(gw, session, sensor, reading, durable, ev.ack).await,
        ClientEvent::Subscribe { sensor } => sensor_events::subscribe(gw, session, sensor).await,
        ClientEvent::StateSet {
            room,
            key,
            value,
            version,
        } => gw
            .app
            .state
            .set(&session.who(), &room, &key, value.as_ref(), version)
            .await
            .map(|state| Some(json!({ "state": state })))
            .map_err(ApiError::from),
        ClientEvent::StateGet { room, key } => gw
            .app
            .state
            .get(&session.who(), &room, key.as_ref())
            .await
            .map(|items| Some(json!({ "items": items })))
            .map_err(ApiError::from),
        ClientEvent::Unsubscribe { sensor } => {
            sensor_events::unsubscribe(gw, session, sensor).await
        }
    };
    match result {
        // join sends its own ack, in order with the messages that follow it
        Ok(None) => {}
        Ok(Some(v)) => reply(session, ev.ack, Ok(v)),
        Err(e) => reply(session, ev.ack, Err(e)),
    }
}

/// A join's answer (PROTOCOL.md §3), serialized straight from the messages read: a hot room's
/// join is answered from memory, and a `Value` tree of 50 messages would be most of its work.
#[derive(serde::Serialize)]
struct JoinAck<'a> {
    ok: bool,
    room: &'a RoomId,
    epoch: &'a str,
    last_seq: i64,
    history: &'a [Message],
    state: &'a [State],
}

async fn join(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    room: RoomId,
    ack: Option<i64>,
) -> ApiResult<Option<Value>> {
    let meta = gw.app.rooms.check_access(&session.who(), &room).await?;
    session.begin_join(room.as_str());
    gw.hub.add(room.as_str(), session.clone());
    // No window: history is read only once the room's messages reach this instance.
    gw.hub.subscribed(room.as_str()).await;
    // One turn in the history queue for both reads: a storm's joins pass it once each.
    let reads = async {
        let history = gw
            .app
            .messages
            .newest(&session.who(), &meta, JOIN_HISTORY)
            .await?;
        let state = gw.app.state.snapshot(&room).await?;
        Ok((history, state))
    };
    let (history, (state, state_seq)) = match gw.app.messages.history_gate().run(reads).await {
        Ok(r) => r,
        Err(e) => {
            part(gw, session, room.as_str()).await;
            return Err(e.into());
        }
    };
    let last_seq = history.items.last().map(|m| m.seq).unwrap_or(0);
    let ack_packet = ack.map(|id| {
        let body = JoinAck {
            ok: true,
            room: &room,
            epoch: &meta.epoch,
            last_seq,
            history: &history.items,
            state: &state,
        };
        packet::ack(id, &body)
    });
    session.activate(room.as_str(), last_seq, state_seq, ack_packet.as_deref());
    gw.hub.started(room.as_str(), last_seq, state_seq);
    gw.app
        .presence
        .arrived(room.as_str(), &session.identity.user_id, &session.sid)
        .await;
    // The connection may have closed while this join ran; its teardown could not see this room.
    if session.is_closed() {
        part(gw, session, room.as_str()).await;
    }
    Ok(None)
}

/// Takes `session` out of `room` locally and in presence (shared by leave and disconnect).
async fn part(gw: &Gateway, session: &Session, room: &str) {
    gw.hub.remove(room, &session.sid);
    session.forget(room);
    depart(&gw.app, session, room).await;
}

/// The presence half of leaving: `offline` when this was the user's last socket there.
pub async fn depart(app: &App, session: &Session, room: &str) {
    app.presence
        .departed(room, &session.identity.user_id, &session.sid)
        .await;
}

async fn leave(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    room: RoomId,
) -> ApiResult<Option<Value>> {
    if session.joined_rooms().iter().any(|r| r == room.as_str()) {
        part(gw, session, room.as_str()).await;
    } else {
        gw.app.rooms.meta(&room).await?;
    }
    Ok(Some(json!({})))
}

async fn send(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    room: &str,
    content: String,
    client_id: Option<String>,
    ack: Option<i64>,
) {
    let started = gw
        .app
        .messages
        .start_send(&session.who(), room, content, client_id)
        .await;
    match started {
        Err(e) => reply(session, ack, Err(e.into())),
        Ok(commit) => {
            let session = session.clone();
            gw.replies.spawn(async move {
                let result = commit
                    .await
                    .map(|a| json!({ "message": a.message }))
                    .map_err(ApiError::from);
                reply(&session, ack, result);
            });
        }
    }
}

async fn typing(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    room: RoomId,
) -> ApiResult<Option<Value>> {
    gw.app.presence.typing(&session.who(), &room).await?;
    Ok(Some(json!({})))
}

async fn sync(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    room: RoomId,
    since_seq: i64,
    epoch: Option<&str>,
    limit: u32,
) -> ApiResult<Option<Value>> {
    let r = gw
        .app
        .messages
        .sync(&session.who(), &room, since_seq, epoch, limit)
        .await?;
    Ok(Some(
        json!({ "epoch": r.epoch, "messages": r.page.items, "more": r.page.more }),
    ))
}

async fn presence(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    room: RoomId,
) -> ApiResult<Option<Value>> {
    let users: Vec<Value> = gw
        .app
        .presence
        .online(&session.who(), &room)
        .await?
        .into_iter()
        .map(|u| json!({ "user_id": u, "status": "online" }))
        .collect();
    Ok(Some(json!({ "users": users })))
}
