//! Parse-don't-validate types for what crosses the contract (PROTOCOL.md §3, §5):
//! room ids, message content, client ids, and the MESSAGE / ROOM-INFO shapes.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// ROOM = 1 to 64 of `a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId(String);

impl TryFrom<String> for RoomId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        RoomId::parse(&s).map_err(|e| e.to_string())
    }
}

impl From<RoomId> for String {
    fn from(r: RoomId) -> String {
        r.0
    }
}

impl RoomId {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        if ok {
            Ok(RoomId(s.to_owned()))
        } else {
            Err(ApiError::bad_request(
                "room must be 1 to 64 of a-z, 0-9, _ and -",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RoomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Message content: non-empty, no U+0000, at most `max_bytes` of UTF-8.
pub fn check_content(content: &str, max_bytes: usize) -> Result<(), ApiError> {
    if content.is_empty() {
        return Err(ApiError::bad_request("content must not be empty"));
    }
    if content.contains('\0') {
        return Err(ApiError::bad_request("content must not contain U+0000"));
    }
    if content.len() > max_bytes {
        return Err(ApiError::TooLarge(format!(
            "content is {} bytes, the limit is {max_bytes}",
            content.len()
        )));
    }
    Ok(())
}

/// `client_id`: 1 to 128 characters (Unicode scalar values).
pub fn check_client_id(client_id: &str) -> Result<(), ApiError> {
    let n = client_id.chars().count();
    if (1..=128).contains(&n) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "client_id must be 1 to 128 characters",
        ))
    }
}

/// A user id as it may appear in `POST …/members` and in token `sub`: 1 to 128 characters.
pub fn check_user_id(user_id: &str) -> Result<(), ApiError> {
    let n = user_id.chars().count();
    if (1..=128).contains(&n) {
        Ok(())
    } else {
        Err(ApiError::bad_request("user_id must be 1 to 128 characters"))
    }
}

/// MESSAGE of PROTOCOL.md §3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub room: String,
    pub seq: i64,
    pub user_id: String,
    pub content: String,
    pub client_id: Option<String>,
    pub created_at: String,
}

/// ROOM-INFO of PROTOCOL.md §5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub id: String,
    pub name: String,
    pub private: bool,
    pub owner_id: String,
    pub epoch: String,
    pub last_seq: i64,
    pub created_at: String,
    /// An open JSON object the application keeps with the room; left out when none was given,
    /// so ROOM-INFO stays exactly the contract's shape for rooms without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// Timestamps are RFC 3339 in UTC with milliseconds, so they sort as text too.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids() {
        assert!(RoomId::parse("general").is_ok());
        assert!(RoomId::parse("a_b-1").is_ok());
        assert!(RoomId::parse(&"a".repeat(64)).is_ok());
        assert!(RoomId::parse(&"a".repeat(65)).is_err());
        assert!(RoomId::parse("").is_err());
        assert!(RoomId::parse("Upper").is_err());
        assert!(RoomId::parse("sp ace").is_err());
        assert!(RoomId::parse("é").is_err());
    }

    #[test]
    fn content_rules() {
        assert!(check_content("hi", 10).is_ok());
        assert_eq!(check_content("", 10).unwrap_err().code(), "bad_request");
        assert_eq!(check_content("a\0b", 10).unwrap_err().code(), "bad_request");
        assert_eq!(check_content("ééééé_", 10).unwrap_err().code(), "too_large");
        assert!(check_content("ééééé", 10).is_ok());
    }

    #[test]
    fn client_ids_count_code_points() {
        assert!(check_client_id(&"é".repeat(128)).is_ok());
        assert!(check_client_id(&"é".repeat(129)).is_err());
        assert!(check_client_id("").is_err());
    }
}
