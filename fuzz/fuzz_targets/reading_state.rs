//! Reading and state payloads (`src/domain/reading.rs`, `src/domain/state.rs`): one reading
//! of a write (`{ value, ts?, tags? }`), the times of §6.1 and a state `value`.
//! Holds: no panic; refusals are the typed ones (`Invalid`, and `TooLarge` only for a state
//! value); an accepted reading obeys §6.1 and a READING round-trips through its JSON; an
//! accepted time round-trips through RFC 3339; an accepted state value is not null, holds no
//! U+0000 and fits the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tsunagi::domain::{
    DomainError, MAX_FUTURE_MS, Reading, State, check_state_value, holds_nul, ms_to_rfc3339,
    parse_reading, parse_time, parse_time_text,
};

/// A fixed "now" (2026-12-05T00:00:00Z): runs must not depend on the clock.
const NOW_MS: i64 = 1_796_428_800_000;
const MAX_STATE_BYTES: usize = 512;

fn check_time(field: &str, ms: i64) {
    assert!(ms >= 0, "{field} before 1970: {ms}");
    // RFC 3339 has four-digit years: up to 9999 the text reads back
    if ms <= 253_402_300_799_999 {
        let text = ms_to_rfc3339(ms);
        assert_eq!(parse_time_text(field, &text), Ok(ms), "{text}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(ms) = parse_time_text("ts", text)
    {
        check_time("ts", ms);
    }
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(ms) = parse_time("ts", &value) {
        check_time("ts", ms);
    }

    if let Value::Object(p) = &value {
        match parse_reading("s.1", p, NOW_MS) {
            Err(e) => assert!(matches!(e, DomainError::Invalid(_)), "{e:?}"),
            Ok(r) => {
                assert!(r.value.is_finite());
                assert!(0 <= r.ts && r.ts <= NOW_MS + MAX_FUTURE_MS, "ts {}", r.ts);
                assert!(r.tags.len() <= 16 && r.tags.values().all(Value::is_string));
                assert!(Value::Object(r.tags.clone()).to_string().len() <= 1024);
                assert!(!holds_nul(&Value::Object(r.tags.clone())));
                // READING as the API shows it reads back as the same reading
                let shown = serde_json::to_string(&r).unwrap();
                let back: Reading = serde_json::from_str(&shown).unwrap();
                assert_eq!(back, r, "{shown}");
            }
        }
    }

    let state_value = match &value {
        Value::Object(p) => p.get("value"),
        other => Some(other),
    };
    match check_state_value(state_value, MAX_STATE_BYTES) {
        Err(DomainError::TooLarge(_)) => {
            assert!(state_value.unwrap().to_string().len() > MAX_STATE_BYTES)
        }
        Err(DomainError::Invalid(_)) => {
            assert!(state_value.is_none_or(|v| v.is_null() || holds_nul(v)))
        }
        Ok(v) => {
            assert!(!v.is_null() && !holds_nul(&v));
            assert!(v.to_string().len() <= MAX_STATE_BYTES);
            let state = State {
                room: "r".into(),
                key: "k".into(),
                value: v,
                version: 1,
                updated_by: "u".into(),
                updated_at: ms_to_rfc3339(NOW_MS),
            };
            let shown = serde_json::to_string(&state).unwrap();
            assert_eq!(
                serde_json::from_str::<State>(&shown).unwrap(),
                state,
                "{shown}"
            );
        }
    }
});
