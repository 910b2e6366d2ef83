//! STATE of PROTOCOL.md §6.2: one versioned JSON document of a room, and the rules of its value.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{DomainError, DomainResult};

/// STATE = `{ room, key, value, version, updated_by, updated_at }`; a deletion is announced as
/// a STATE with `value: null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct State {
    pub room: String,
    pub key: String,
    pub value: Value,
    pub version: i64,
    pub updated_by: String,
    pub updated_at: String,
}

/// A state `value`: any JSON but `null`, at most `max_bytes` of JSON. Its absence and `null`
/// are `bad_request` (the contract's precedence puts them before `too_large`).
pub fn check_state_value(value: Option<&Value>, max_bytes: usize) -> DomainResult<Value> {
    let value = match value {
        None | Some(Value::Null) => {
            return Err(DomainError::invalid(
                "value is required and must not be null",
            ));
        }
        Some(v) => v,
    };
    // PostgreSQL's jsonb cannot hold U+0000
    if holds_nul(value) {
        return Err(DomainError::invalid("value must not contain U+0000"));
    }
    if value.to_string().len() > max_bytes {
        return Err(DomainError::TooLarge(format!(
            "value must be at most {max_bytes} bytes of JSON"
        )));
    }
    Ok(value.clone())
}

/// Whether U+0000 appears anywhere in `v` (a key or a string): PostgreSQL's text and jsonb
/// cannot hold it, so both stores refuse it alike, before it reaches either.
pub fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}
