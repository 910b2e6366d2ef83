//! Reading JSON payload fields the way PROTOCOL.md §5 says: `null` is absent, a wrong type is
//! `bad_request`, unknown fields are ignored. Shared by Socket.IO events and HTTP bodies.

use serde_json::{Map, Value};

use crate::domain::{DomainError, DomainResult};

pub type Object = Map<String, Value>;

pub fn object(v: Option<Value>) -> DomainResult<Object> {
    match v {
        Some(Value::Object(map)) => Ok(map),
        _ => Err(DomainError::invalid("the payload must be a JSON object")),
    }
}

pub use crate::domain::holds_nul;

pub fn opt_str<'a>(p: &'a Object, field: &str) -> DomainResult<Option<&'a str>> {
    match p.get(field) {
        None | Some(Value::Null) => Ok(None),
        // U+0000 is refused in every field: PostgreSQL text cannot hold it.
        Some(Value::String(s)) if s.contains('\0') => Err(DomainError::invalid(format!(
            "{field} must not contain U+0000"
        ))),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(DomainError::invalid(format!("{field} must be a string"))),
    }
}

pub fn req_str<'a>(p: &'a Object, field: &str) -> DomainResult<&'a str> {
    opt_str(p, field)?.ok_or_else(|| DomainError::invalid(format!("{field} is required")))
}

pub fn opt_bool(p: &Object, field: &str) -> DomainResult<Option<bool>> {
    match p.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(DomainError::invalid(format!("{field} must be a boolean"))),
    }
}

/// An integer within `min..=max`; `null` is absent.
pub fn opt_int(p: &Object, field: &str, min: i64, max: i64) -> DomainResult<Option<i64>> {
    match p.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(DomainError::invalid(format!(
                "{field} must be an integer from {min} to {max}"
            ))),
        },
    }
}

/// A query-string integer within `min..=max` (`?limit=10`); absent → `None`.
pub fn query_int(
    raw: Option<&String>,
    field: &str,
    min: i64,
    max: i64,
) -> DomainResult<Option<i64>> {
    match raw {
        None => Ok(None),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) && !s.starts_with('+') => Ok(Some(n)),
            _ => Err(DomainError::invalid(format!(
                "{field} must be an integer from {min} to {max}"
            ))),
        },
    }
}
