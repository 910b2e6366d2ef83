//! Identifiers of the contract, parsed once at the edge and trusted everywhere after.

use serde::{Deserialize, Serialize};

use super::error::{DomainError, DomainResult};

/// Implements the string plumbing every id shares.
macro_rules! string_id {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(s: String) -> DomainResult<Self> {
                $name::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

/// Text of `min..=max` Unicode scalar values without U+0000 (PostgreSQL text cannot hold it).
fn chars_between(s: &str, min: usize, max: usize) -> bool {
    let n = s.chars().count();
    (min..=max).contains(&n) && !s.contains('\0')
}

/// `s` if it is 1 to 128 of `A-Z a-z 0-9 _ . : -` (SENSOR and KEY of PROTOCOL §6), else an
/// error naming the field `what`.
fn dotted_name(s: &str, what: &str) -> DomainResult<String> {
    let ok = (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(DomainError::invalid(format!(
            "{what} must be 1 to 128 of A-Z, a-z, 0-9, _, ., : and -"
        )))
    }
}

/// ROOM = 1 to 64 of `a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId(String);
string_id!(RoomId);

impl RoomId {
    pub fn parse(s: &str) -> DomainResult<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        if ok {
            Ok(RoomId(s.to_owned()))
        } else {
            Err(DomainError::invalid(
                "room must be 1 to 64 of a-z, 0-9, _ and -",
            ))
        }
    }
}

/// A user id as tokens carry it (`sub`) and members are added by: 1 to 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);
string_id!(UserId);

impl UserId {
    pub fn parse(s: &str) -> DomainResult<Self> {
        if chars_between(s, 1, 128) {
            Ok(UserId(s.to_owned()))
        } else {
            Err(DomainError::invalid("user_id must be 1 to 128 characters"))
        }
    }
}

/// `client_id` of a send (its idempotency key): 1 to 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);
string_id!(ClientId);

impl ClientId {
    pub fn parse(s: &str) -> DomainResult<Self> {
        if chars_between(s, 1, 128) {
            Ok(ClientId(s.to_owned()))
        } else {
            Err(DomainError::invalid(
                "client_id must be 1 to 128 characters",
            ))
        }
    }
}

/// SENSOR = 1 to 128 of `A-Z a-z 0-9 _ . : -` (PROTOCOL §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SensorId(String);
string_id!(SensorId);

impl SensorId {
    pub fn parse(s: &str) -> DomainResult<Self> {
        dotted_name(s, "sensor").map(SensorId)
    }
}

/// KEY of a room's state = 1 to 128 of `A-Z a-z 0-9 _ . : -` (PROTOCOL §6.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StateKey(String);
string_id!(StateKey);

impl StateKey {
    pub fn parse(s: &str) -> DomainResult<Self> {
        dotted_name(s, "key").map(StateKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids() {
        assert!(RoomId::parse("general").is_ok());
        assert!(RoomId::parse("a_b-1").is_ok());
        assert!(RoomId::parse(&"a".repeat(64)).is_ok());
        for bad in [&"a".repeat(65), "", "Upper", "sp ace", "é", "a\0"] {
            assert!(RoomId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_and_client_ids_count_code_points_and_refuse_nul() {
        assert!(ClientId::parse(&"é".repeat(128)).is_ok());
        assert!(ClientId::parse(&"é".repeat(129)).is_err());
        assert!(ClientId::parse("").is_err());
        assert!(UserId::parse(&"é".repeat(128)).is_ok());
        assert!(UserId::parse("a\0b").is_err());
        assert!(UserId::parse("").is_err());
    }

    #[test]
    fn sensor_ids_and_state_keys() {
        for ok in ["t1", "Floor-2:room.3_a", &"x".repeat(128)] {
            assert!(
                SensorId::parse(ok).is_ok() && StateKey::parse(ok).is_ok(),
                "{ok}"
            );
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(129)] {
            assert!(
                SensorId::parse(bad).is_err() && StateKey::parse(bad).is_err(),
                "{bad:?}"
            );
        }
    }
}
