//! The domain, under everything: parse-don't-validate types for what crosses the contract
//! (PROTOCOL.md §3, §5, §6) and the MESSAGE / ROOM-INFO shapes. Knows no HTTP, no SQL.
//!
//! Layout: `ids.rs` (room, user, client, sensor ids, state keys), `text.rs` (content,
//! usernames, emails), `reading.rs` (READING, SENSOR-INFO, times), `state.rs` (STATE), `duration.rs` (`30d`), `error.rs` (what is wrong
//! with a value).

use serde::{Deserialize, Serialize};

mod duration;
mod error;
mod ids;
mod reading;
mod state;
mod text;

pub use duration::parse_duration;
pub use error::{DomainError, DomainResult};
pub use ids::{ClientId, RoomId, SensorId, StateKey, UserId};
pub use reading::{
    MAX_FUTURE_MS, Reading, SensorInfo, ms_to_rfc3339, now_ms, parse_reading, parse_time,
    parse_time_text,
};
pub use state::{State, check_state_value, holds_nul};
pub use text::{Content, Email, Username};

/// MESSAGE of PROTOCOL.md §3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// Timestamps are RFC 3339 in UTC with milliseconds, so they sort as text too.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
