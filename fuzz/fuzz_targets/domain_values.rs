//! The contract's identifiers and texts (`src/domain/ids.rs`, `src/domain/text.rs`) and
//! durations (`src/domain/duration.rs`, `auth::parse_ttl`), over any text.
//! Holds: no panic; refusals are `Invalid` (`TooLarge` only for content past its limit); what
//! is accepted obeys the contract's rule, is kept as given (emails in lower case) and parses
//! again to the same value, also through its JSON form.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tsunagi::domain::{
    ClientId, Content, DomainError, Email, RoomId, SensorId, StateKey, UserId, Username,
    parse_duration,
};

const MAX_CONTENT_BYTES: usize = 64;

fn invalid<T>(r: Result<T, DomainError>) -> Option<T> {
    r.map_err(|e| assert!(matches!(e, DomainError::Invalid(_)), "{e:?}"))
        .ok()
}

/// An id type: accepted text is kept as is, and reads back through `parse` and JSON.
macro_rules! id_round_trip {
    ($ty:ty, $s:expr, $rule:expr) => {
        if let Some(id) = invalid(<$ty>::parse($s)) {
            assert_eq!(id.as_str(), $s);
            assert!($rule($s), "{} accepted {:?}", stringify!($ty), $s);
            assert_eq!(<$ty>::parse(id.as_str()), Ok(id.clone()));
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(serde_json::from_str::<$ty>(&json).unwrap(), id);
        } else {
            // the JSON form refuses what parse refuses
            let json = serde_json::to_string($s).unwrap();
            assert!(serde_json::from_str::<$ty>(&json).is_err());
        }
    };
}

fn room_rule(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

fn dotted_rule(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn chars_rule(s: &str) -> bool {
    (1..=128).contains(&s.chars().count()) && !s.contains('\0')
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    id_round_trip!(RoomId, s, room_rule);
    id_round_trip!(SensorId, s, dotted_rule);
    id_round_trip!(StateKey, s, dotted_rule);
    id_round_trip!(UserId, s, chars_rule);
    id_round_trip!(ClientId, s, chars_rule);

    match Content::parse(s.to_owned(), MAX_CONTENT_BYTES) {
        Ok(c) => assert!(
            c.as_str() == s && !s.is_empty() && !s.contains('\0') && s.len() <= MAX_CONTENT_BYTES
        ),
        Err(DomainError::TooLarge(_)) => {
            assert!(s.len() > MAX_CONTENT_BYTES && !s.is_empty() && !s.contains('\0'))
        }
        Err(DomainError::Invalid(_)) => assert!(s.is_empty() || s.contains('\0')),
    }

    if let Some(u) = invalid(Username::parse(s)) {
        assert_eq!(u.as_str(), s);
        assert!((3..=32).contains(&s.len()));
    }
    if let Some(e) = invalid(Email::parse(s)) {
        assert_eq!(e.as_str(), s.to_lowercase());
        // what is stored is itself a valid address, stored unchanged
        assert_eq!(
            Email::parse(e.as_str()).as_ref(),
            Ok(&e),
            "{s:?} stored as {:?}",
            e.as_str()
        );
    }

    if let Some(d) = invalid(parse_duration(s)) {
        assert!(d <= Duration::from_secs(100 * 365 * 86_400));
        assert_eq!(parse_duration(&format!("{}s", d.as_secs())), Ok(d));
        assert_eq!(tsunagi::auth::parse_ttl(s), Ok(d.as_secs()));
    } else {
        assert!(tsunagi::auth::parse_ttl(s).is_err());
    }
});
