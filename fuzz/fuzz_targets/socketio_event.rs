//! A client event end to end through the gateway's decoders: the packet text, the split of
//! `["name", payload]` and the event's fields (`src/gateway/client_event.rs`, with
//! `src/payload.rs` and the reading rules of `src/domain/reading.rs`).
//! Holds: no panic; a refusal is always `bad_request` (never another code: these are the
//! payload rules of §5); what is accepted obeys the contract's shapes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tsunagi::domain::{RoomId, SensorId, StateKey};
use tsunagi::gateway::client_event::{self, ClientEvent, label};
use tsunagi::gateway::packet::{self, Inbound};

fn check(name: &str, payload: Option<Value>) {
    let had_object = matches!(payload, Some(Value::Object(_)));
    let known = label(name) != "unknown";
    match ClientEvent::parse(name, payload) {
        Err(e) => {
            assert_eq!(e.code(), "bad_request", "{name:?}: {e}");
            assert!(e.to_string().len() < 1024, "an error echoes too much: {e}");
        }
        Ok(event) => {
            assert!(known && had_object, "{name:?} accepted without an object");
            let room = |r: &RoomId| assert_eq!(RoomId::parse(r.as_str()).as_ref(), Ok(r));
            let sensor = |s: &SensorId| assert_eq!(SensorId::parse(s.as_str()).as_ref(), Ok(s));
            match &event {
                ClientEvent::Join { room: r }
                | ClientEvent::Leave { room: r }
                | ClientEvent::Typing { room: r }
                | ClientEvent::Presence { room: r } => room(r),
                ClientEvent::Send {
                    content, client_id, ..
                } => {
                    assert!(!content.contains('\0'));
                    assert!(client_id.as_deref().is_none_or(|c| !c.contains('\0')));
                }
                ClientEvent::Sync {
                    room: r,
                    since_seq,
                    limit,
                    ..
                } => {
                    room(r);
                    assert!(*since_seq >= 0 && (1..=500).contains(limit));
                }
                ClientEvent::Reading {
                    sensor: s, reading, ..
                } => {
                    sensor(s);
                    assert_eq!(reading.sensor, s.as_str());
                    assert!(reading.value.is_finite() && reading.ts >= 0);
                    assert!(reading.tags.len() <= 16);
                }
                ClientEvent::Subscribe { sensor: s } | ClientEvent::Unsubscribe { sensor: s } => {
                    sensor(s)
                }
                ClientEvent::StateSet {
                    room: r,
                    key,
                    version,
                    ..
                } => {
                    room(r);
                    assert_eq!(StateKey::parse(key.as_str()).as_ref(), Ok(key));
                    assert!(version.is_none_or(|v| v >= 0));
                }
                ClientEvent::StateGet { room: r, key } => {
                    room(r);
                    if let Some(k) = key {
                        assert_eq!(StateKey::parse(k.as_str()).as_ref(), Ok(k));
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // As a whole packet…
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(Inbound::Event { data, .. }) = packet::decode(text)
    {
        let (name, payload) = packet::split_event(data);
        check(&name, payload);
    }
    // …and as the JSON of an EVENT, with each known name in turn (the fuzzer need not find
    // the names to reach the field rules).
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let (name, payload) = packet::split_event(value.clone());
        check(&name, payload);
        for name in client_event::EVENT_NAMES {
            check(name, Some(value.clone()));
        }
    }
});
