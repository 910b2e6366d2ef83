//! The client events of PROTOCOL.md §3 as one closed set, parsed once from a Socket.IO EVENT.
//! Each field is checked in the contract's order (§5 "Everywhere"): what the payload lacks or
//! has of the wrong type first; the rules of values that services own (a send's content and
//! client id) are theirs.

use serde_json::Value;

use crate::domain::{Reading, RoomId, SensorId, StateKey, now_ms, parse_reading};
use crate::error::{ApiError, ApiResult};
use crate::payload::{Object, opt_bool, opt_int, opt_str, req_str};

#[derive(Debug, PartialEq)]
pub enum ClientEvent {
    Join {
        room: RoomId,
    },
    Leave {
        room: RoomId,
    },
    Send {
        room: String,
        content: String,
        client_id: Option<String>,
    },
    Typing {
        room: RoomId,
    },
    Sync {
        room: RoomId,
        since_seq: i64,
        epoch: Option<String>,
        limit: u32,
    },
    Presence {
        room: RoomId,
    },
    /// §6.1: one reading of a sensor.
    Reading {
        sensor: SensorId,
        reading: Reading,
        durable: bool,
    },
    Subscribe {
        sensor: SensorId,
    },
    /// §6.2: a conditional (with `version`) or unconditional write of one key; the value's
    /// rules are the service's (they come after the room's in the contract's order).
    StateSet {
        room: RoomId,
        key: StateKey,
        value: Option<Value>,
        version: Option<i64>,
    },
    StateGet {
        room: RoomId,
        key: Option<StateKey>,
    },
    Unsubscribe {
        sensor: SensorId,
    },
}

/// Every client event name of the contract (§3, §6), as `label` knows them.
pub const EVENT_NAMES: [&str; 11] = [
    "join",
    "leave",
    "send",
    "typing",
    "sync",
    "presence",
    "reading",
    "subscribe",
    "unsubscribe",
    "state_set",
    "state_get",
];

/// The most of an unknown event's name an error message quotes.
const QUOTED_NAME_CHARS: usize = 64;

/// The metric label of an event name (a closed set, so labels cannot grow without bound).
pub fn label(name: &str) -> &'static str {
    match name {
        "join" => "join",
        "leave" => "leave",
        "send" => "send",
        "typing" => "typing",
        "sync" => "sync",
        "presence" => "presence",
        "reading" => "reading",
        "subscribe" => "subscribe",
        "unsubscribe" => "unsubscribe",
        "state_set" => "state_set",
        "state_get" => "state_get",
        _ => "unknown",
    }
}

fn room(p: &Object) -> ApiResult<RoomId> {
    Ok(RoomId::parse(req_str(p, "room")?)?)
}

fn sensor(p: &Object) -> ApiResult<SensorId> {
    Ok(SensorId::parse(req_str(p, "sensor")?)?)
}

impl ClientEvent {
    pub fn parse(name: &str, payload: Option<Value>) -> ApiResult<ClientEvent> {
        let known = label(name) != "unknown";
        let p = match payload {
            Some(Value::Object(map)) if known => map,
            _ if known => return Err(ApiError::bad_request("the payload must be an object")),
            _ => {
                let quoted: String = name.chars().take(QUOTED_NAME_CHARS).collect();
                return Err(ApiError::bad_request(format!("unknown event `{quoted}`")));
            }
        };
        Ok(match name {
            "join" => ClientEvent::Join { room: room(&p)? },
            "leave" => ClientEvent::Leave { room: room(&p)? },
            "send" => ClientEvent::Send {
                room: req_str(&p, "room")?.to_owned(),
                content: req_str(&p, "content")?.to_owned(),
                client_id: opt_str(&p, "client_id")?.map(str::to_owned),
            },
            "typing" => ClientEvent::Typing { room: room(&p)? },
            "sync" => {
                let room = room(&p)?;
                let since_seq = opt_int(&p, "since_seq", 0, i64::MAX)?
                    .ok_or_else(|| ApiError::bad_request("since_seq is required"))?;
                ClientEvent::Sync {
                    room,
                    since_seq,
                    epoch: opt_str(&p, "epoch")?.map(str::to_owned),
                    limit: opt_int(&p, "limit", 1, 500)?.unwrap_or(100) as u32,
                }
            }
            "reading" => {
                let sensor = sensor(&p)?;
                let reading = parse_reading(sensor.as_str(), &p, now_ms())?;
                ClientEvent::Reading {
                    sensor,
                    reading,
                    durable: opt_bool(&p, "durable")?.unwrap_or(false),
                }
            }
            "subscribe" => ClientEvent::Subscribe {
                sensor: sensor(&p)?,
            },
            "unsubscribe" => ClientEvent::Unsubscribe {
                sensor: sensor(&p)?,
            },
            "state_set" => ClientEvent::StateSet {
                room: room(&p)?,
                key: StateKey::parse(req_str(&p, "key")?)?,
                value: p.get("value").cloned(),
                version: opt_int(&p, "version", 0, i64::MAX)?,
            },
            "state_get" => ClientEvent::StateGet {
                room: room(&p)?,
                key: opt_str(&p, "key")?.map(StateKey::parse).transpose()?,
            },
            _ => ClientEvent::Presence { room: room(&p)? },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_name_has_its_own_label() {
        for name in EVENT_NAMES {
            assert_eq!(label(name), name);
        }
        assert_eq!(label("other"), "unknown");
    }
    use serde_json::json;

    fn code(r: ApiResult<ClientEvent>) -> &'static str {
        r.unwrap_err().code()
    }

    #[test]
    fn parses_each_event_and_refuses_what_is_not_one() {
        assert_eq!(
            ClientEvent::parse("join", Some(json!({ "room": "a" }))).unwrap(),
            ClientEvent::Join {
                room: RoomId::parse("a").unwrap()
            }
        );
        let sync = ClientEvent::parse("sync", Some(json!({ "room": "a", "since_seq": 3 })));
        assert!(matches!(
            sync,
            Ok(ClientEvent::Sync {
                since_seq: 3,
                limit: 100,
                ..
            })
        ));
        assert_eq!(
            code(ClientEvent::parse("sync", Some(json!({ "room": "a" })))),
            "bad_request"
        );
        assert_eq!(
            code(ClientEvent::parse("join", Some(json!([1])))),
            "bad_request"
        );
        assert_eq!(
            code(ClientEvent::parse("join", Some(json!({ "room": "A" })))),
            "bad_request"
        );
        let send = ClientEvent::parse("send", Some(json!({ "room": "a", "content": "x" })));
        assert!(matches!(
            send,
            Ok(ClientEvent::Send {
                client_id: None,
                ..
            })
        ));
    }

    #[test]
    fn an_unknown_name_is_quoted_only_in_part() {
        let long = "x".repeat(100_000);
        let e = ClientEvent::parse(&long, Some(json!({}))).unwrap_err();
        assert_eq!(e.code(), "bad_request");
        assert!(e.to_string().len() < 200, "the whole name was echoed");
        assert_eq!(label(&long), "unknown");
    }
}
