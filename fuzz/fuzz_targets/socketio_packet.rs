//! The gateway's Socket.IO packet decoder (`src/gateway/packet.rs`) over any text an
//! Engine.IO message can carry (engineioxide hands the gateway UTF-8 text; its own framing is
//! the dependency's, not fuzzed here).
//! Holds: no panic; a decoded packet re-encoded in the canonical form decodes to itself; the
//! server's own packets (event, ack, connect error) decode to what was encoded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tsunagi::gateway::packet::{self, Inbound};

/// The canonical text of an inbound packet (what an official client would send for it).
fn encode(p: &Inbound) -> Option<String> {
    let nsp = |n: &str| {
        if n == "/" {
            String::new()
        } else {
            format!("{n},")
        }
    };
    let ack = |a: &Option<i64>| a.map(|a| a.to_string()).unwrap_or_default();
    Some(match p {
        Inbound::Connect { nsp: n, auth } => format!(
            "0{}{}",
            nsp(n),
            auth.as_ref().map(Value::to_string).unwrap_or_default()
        ),
        Inbound::Disconnect { nsp: n } => format!("1{}", nsp(n)),
        Inbound::Event {
            nsp: n,
            ack: a,
            data,
        } => format!("2{}{}{data}", nsp(n), ack(a)),
        Inbound::Ack | Inbound::Refused { .. } => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(decoded) = packet::decode(text) {
        if let Inbound::Event { ack: Some(a), .. } | Inbound::Refused { ack: Some(a), .. } =
            &decoded
        {
            assert!(*a >= 0, "a negative ack id from {text:?}");
        }
        // A bare unsigned number as the payload would be read back as an ack id (as
        // socket.io-parser does too); every other packet round-trips.
        let unsigned_number = |v: &Value| {
            v.as_number()
                .is_some_and(|n| !n.to_string().starts_with('-'))
        };
        let ambiguous = match &decoded {
            Inbound::Connect { auth: Some(v), .. } | Inbound::Event { data: v, .. } => {
                unsigned_number(v)
            }
            _ => false,
        };
        if let (false, Some(again)) = (ambiguous, encode(&decoded)) {
            let twice = packet::decode(&again);
            assert_eq!(twice.as_ref(), Ok(&decoded), "{text:?} → {again:?}");
        }
    }

    // The server's packets, with the fuzzer's text as the event name and the ack body.
    let body = json!({ "ok": false, "error": { "message": text } });
    let ev = packet::event(text, &body);
    assert_eq!(
        packet::decode(&ev),
        Ok(Inbound::Event {
            nsp: "/".into(),
            ack: None,
            data: json!([text, body])
        })
    );
    let (name, payload) = packet::split_event(json!([text, body]));
    assert_eq!((name.as_str(), payload.as_ref()), (text, Some(&body)));
    assert_eq!(packet::decode(&packet::ack(7, &body)), Ok(Inbound::Ack));
    let refused = packet::connect_error("/", text, Some(json!({ "code": "invalid_token" })));
    assert!(
        packet::decode(&refused).is_err(),
        "a CONNECT_ERROR is no client packet"
    );
});
