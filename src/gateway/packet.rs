//! The Socket.IO v5 packet text format (the protocol of Socket.IO v4 clients), on top of
//! engine.io messages: `<type>[<attachments>-][<nsp>,][<ack id>][<json>]`.

use std::io::Write;

use serde_json::Value;

#[derive(Debug, PartialEq)]
pub enum Inbound {
    Connect {
        nsp: String,
        auth: Option<Value>,
    },
    Disconnect {
        nsp: String,
    },
    Event {
        nsp: String,
        ack: Option<i64>,
        data: Value,
    },
    /// An ack of a server emit: tsunagi never asks for one.
    Ack,
    /// An event that cannot be taken: binary (not part of the contract; the attachments arrive
    /// as separate frames and are ignored) or not valid JSON (a lone UTF-16 surrogate, say).
    /// It is answered `bad_request` rather than cutting the connection.
    Refused {
        nsp: String,
        ack: Option<i64>,
        reason: &'static str,
    },
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("malformed Socket.IO packet: {0}")]
pub struct PacketError(&'static str);

pub fn decode(s: &str) -> Result<Inbound, PacketError> {
    let bytes = s.as_bytes();
    let kind = *bytes.first().ok_or(PacketError("empty"))?;
    if !kind.is_ascii_digit() {
        // also keeps every slice below on a char boundary: it starts after one ASCII byte
        return Err(PacketError("packet type"));
    }
    let mut i = 1;
    if kind == b'5' || kind == b'6' {
        let dash = s[i..].find('-').ok_or(PacketError("attachment count"))?;
        i += dash + 1;
    }
    let mut nsp = "/".to_owned();
    if bytes.get(i) == Some(&b'/') {
        let comma = s[i..].find(',').map(|c| i + c);
        let end = comma.unwrap_or(s.len());
        nsp = s[i..end].to_owned();
        i = comma.map(|c| c + 1).unwrap_or(s.len());
    }
    let digits = s[i..].bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits > 0 {
        Some(
            s[i..i + digits]
                .parse::<i64>()
                .map_err(|_| PacketError("ack id"))?,
        )
    } else {
        None
    };
    i += digits;
    let rest = &s[i..];
    let json = || -> Result<Option<Value>, PacketError> {
        if rest.is_empty() {
            Ok(None)
        } else {
            serde_json::from_str(rest)
                .map(Some)
                .map_err(|_| PacketError("json"))
        }
    };
    match kind {
        b'0' => Ok(Inbound::Connect { nsp, auth: json()? }),
        b'1' => Ok(Inbound::Disconnect { nsp }),
        b'2' => match json() {
            Ok(Some(data)) => Ok(Inbound::Event { nsp, ack, data }),
            Ok(None) => Err(PacketError("event without data")),
            Err(_) => Ok(Inbound::Refused {
                nsp,
                ack,
                reason: "the event is not valid JSON text (lone surrogates are not characters)",
            }),
        },
        b'3' | b'6' => Ok(Inbound::Ack),
        b'5' => Ok(Inbound::Refused {
            nsp,
            ack,
            reason: "binary payloads are not accepted",
        }),
        _ => Err(PacketError("packet type")),
    }
}

/// The name and payload of an EVENT's data, `["name", payload, …]`: anything else (not an
/// array, no name, a name that is not a string) gives an empty name, which no event has, so it
/// is answered `bad_request` as an unknown event. Items past the payload are ignored.
pub fn split_event(data: Value) -> (String, Option<Value>) {
    match data {
        Value::Array(mut items) if !items.is_empty() => {
            let payload = (items.len() > 1).then(|| items.swap_remove(1));
            match items.swap_remove(0) {
                Value::String(name) => (name, payload),
                _ => (String::new(), None),
            }
        }
        _ => (String::new(), None),
    }
}

pub fn connect_ok(sid: &str) -> String {
    format!("0{}", serde_json::json!({ "sid": sid }))
}

/// CONNECT_ERROR with `data`, which the official client exposes as `err.data`.
pub fn connect_error(nsp: &str, message: &str, data: Option<Value>) -> String {
    let mut body = serde_json::json!({ "message": message });
    if let Some(d) = data {
        body["data"] = d;
    }
    if nsp == "/" {
        format!("4{body}")
    } else {
        format!("4{nsp},{body}")
    }
}

/// An EVENT `name` carrying `data`, written in one buffer (encoded once per message and room).
pub fn event<T: serde::Serialize + ?Sized>(name: &str, data: &T) -> String {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"2[");
    serde_json::to_writer(&mut out, name).expect("a str serializes");
    out.push(b',');
    serde_json::to_writer(&mut out, data).expect("event payloads serialize");
    out.push(b']');
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// An ACK of `id` carrying `body`. Written straight into the packet (not through `Display`,
/// which goes through the formatter a piece at a time; a join's ack is 50 messages long).
pub fn ack<T: serde::Serialize + ?Sized>(id: i64, body: &T) -> String {
    let mut out = Vec::with_capacity(128);
    write!(out, "3{id}[").expect("a Vec takes every write");
    serde_json::to_writer(&mut out, body).expect("ack bodies serialize");
    out.push(b']');
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_client_packets() {
        assert_eq!(
            decode(r#"0{"token":"t"}"#).unwrap(),
            Inbound::Connect {
                nsp: "/".into(),
                auth: Some(json!({"token":"t"}))
            }
        );
        assert_eq!(
            decode("0").unwrap(),
            Inbound::Connect {
                nsp: "/".into(),
                auth: None
            }
        );
        assert_eq!(
            decode("0/admin,").unwrap(),
            Inbound::Connect {
                nsp: "/admin".into(),
                auth: None
            }
        );
        assert_eq!(
            decode(r#"212["send",{"room":"a"}]"#).unwrap(),
            Inbound::Event {
                nsp: "/".into(),
                ack: Some(12),
                data: json!(["send", {"room":"a"}])
            }
        );
        assert_eq!(
            decode(r#"2/x,3["e"]"#).unwrap(),
            Inbound::Event {
                nsp: "/x".into(),
                ack: Some(3),
                data: json!(["e"])
            }
        );
        assert_eq!(
            decode(r#"51-4["e",{"_placeholder":true,"num":0}]"#).unwrap(),
            Inbound::Refused {
                nsp: "/".into(),
                ack: Some(4),
                reason: "binary payloads are not accepted"
            }
        );
        assert!(matches!(
            decode(r#"27["send",{"content":"a\ud83d"}]"#).unwrap(),
            Inbound::Refused { ack: Some(7), .. }
        ));
        assert_eq!(
            decode("1").unwrap(),
            Inbound::Disconnect { nsp: "/".into() }
        );
        assert!(decode("9").is_err());
        assert!(decode("é").is_err());
        assert!(decode("4é").is_err());
        assert!(decode("").is_err());
    }

    /// Found by fuzzing (fuzz/fuzz_targets/socketio_packet.rs): a 40-digit number was read
    /// one unit in the last place off, so re-encoding the event changed it.
    #[test]
    fn numbers_in_events_read_back_exactly() {
        let text = format!("212   [9      ,   {}2  ]", "3".repeat(39));
        let Inbound::Event { data, .. } = decode(&text).unwrap() else {
            panic!("not an event")
        };
        let again = decode(&format!("212{data}")).unwrap();
        assert_eq!(
            again,
            Inbound::Event {
                nsp: "/".into(),
                ack: Some(12),
                data
            }
        );
    }

    #[test]
    fn encodes_server_packets() {
        assert_eq!(ack(5, &json!({"ok":true})), r#"35[{"ok":true}]"#);
        assert_eq!(
            event("typing", &json!({"room":"a"})),
            r#"2["typing",{"room":"a"}]"#
        );
        let err = connect_error("/", "no", Some(json!({"code":"auth_required"})));
        let body: Value = serde_json::from_str(err.strip_prefix('4').unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"message":"no","data":{"code":"auth_required"}})
        );
        assert!(connect_error("/x", "Invalid namespace", None).starts_with("4/x,{"));
    }
}
