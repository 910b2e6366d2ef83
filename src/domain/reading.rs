//! READING and SENSOR-INFO of PROTOCOL.md §6.1, and the rules of a reading's fields.
//!
//! Times are kept as milliseconds since the Unix epoch (what the store indexes and buckets on)
//! and shown as RFC 3339 UTC with milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{DomainError, DomainResult};

/// How far ahead of the server's clock a reading's `ts` may be.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
/// Tags: at most this many pairs, and this many bytes of JSON.
pub const MAX_TAGS: usize = 16;
pub const MAX_TAGS_BYTES: usize = 1024;

/// READING = `{ sensor, ts, value, tags }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reading {
    pub sensor: String,
    #[serde(with = "ms_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub ts: i64,
    pub value: f64,
    #[schema(value_type = std::collections::HashMap<String, String>)]
    pub tags: Map<String, Value>,
}

/// SENSOR-INFO = `{ id, name, private, owner_id, metadata?, created_at, last_ts }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SensorInfo {
    pub id: String,
    pub name: String,
    pub private: bool,
    pub owner_id: String,
    /// Left out when none was given (as ROOM-INFO's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub created_at: String,
    /// The greatest `ts` written so far (null until a reading is written).
    #[serde(with = "opt_ms_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_ts: Option<i64>,
}

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn ms_to_rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A time given as RFC 3339 text or as integer milliseconds since the epoch (§6.1 `ts`, `from`,
/// `to`). Finer than a millisecond is cut to the millisecond; before 1970 is refused (a reading
/// "since the epoch" cannot be earlier, and buckets start at whole multiples from it).
pub fn parse_time(field: &str, v: &Value) -> DomainResult<i64> {
    let ms = match v {
        Value::String(s) => parse_time_text(field, s)?,
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            DomainError::invalid(format!("{field} must be RFC 3339 or integer milliseconds"))
        })?,
        _ => {
            return Err(DomainError::invalid(format!(
                "{field} must be RFC 3339 or integer milliseconds"
            )));
        }
    };
    if ms < 0 {
        return Err(DomainError::invalid(format!(
            "{field} must not be before 1970"
        )));
    }
    Ok(ms)
}

/// The text form of [`parse_time`] (query strings): digits are milliseconds, else RFC 3339.
pub fn parse_time_text(field: &str, s: &str) -> DomainResult<i64> {
    let ms = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<i64>().ok()
    } else {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis())
    };
    match ms {
        Some(ms) if ms >= 0 => Ok(ms),
        Some(_) => Err(DomainError::invalid(format!(
            "{field} must not be before 1970"
        ))),
        None => Err(DomainError::invalid(format!(
            "{field} must be RFC 3339 or integer milliseconds"
        ))),
    }
}

/// One reading of a write (`{ value, ts?, tags? }`) for `sensor`, accepted at `now` (ms).
pub fn parse_reading(sensor: &str, p: &Map<String, Value>, now: i64) -> DomainResult<Reading> {
    let value = match p.get("value") {
        Some(Value::Number(n)) => n.as_f64().filter(|v| v.is_finite()),
        _ => None,
    }
    .ok_or_else(|| DomainError::invalid("value must be a finite JSON number"))?;
    let ts = match p.get("ts") {
        None | Some(Value::Null) => now,
        Some(v) => parse_time("ts", v)?,
    };
    if ts > now + MAX_FUTURE_MS {
        return Err(DomainError::invalid(
            "ts must not be more than 5 minutes in the future",
        ));
    }
    let tags = match p.get("tags") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(tags)) => check_tags(tags)?,
        Some(_) => return Err(DomainError::invalid("tags must be an object")),
    };
    Ok(Reading {
        sensor: sensor.to_owned(),
        ts,
        value,
        tags,
    })
}

fn check_tags(tags: &Map<String, Value>) -> DomainResult<Map<String, Value>> {
    if tags.len() > MAX_TAGS {
        return Err(DomainError::invalid(format!(
            "tags must have at most {MAX_TAGS} pairs"
        )));
    }
    for (k, v) in tags {
        let Value::String(s) = v else {
            return Err(DomainError::invalid("every tag value must be a string"));
        };
        // PostgreSQL's jsonb cannot hold U+0000
        if k.contains('\0') || s.contains('\0') {
            return Err(DomainError::invalid("tags must not contain U+0000"));
        }
    }
    if Value::Object(tags.clone()).to_string().len() > MAX_TAGS_BYTES {
        return Err(DomainError::invalid(format!(
            "tags must be at most {MAX_TAGS_BYTES} bytes of JSON"
        )));
    }
    Ok(tags.clone())
}

mod ms_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::ms_to_rfc3339(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_time_text("ts", &text).map_err(serde::de::Error::custom)
    }
}

mod opt_ms_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&super::ms_to_rfc3339(*ms)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| super::parse_time_text("last_ts", &t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_reading_round_trips_in_the_contract_shape() {
        let r = parse_reading(
            "s",
            &obj(
                json!({ "value": 1.5, "ts": "2026-12-04T10:00:00.123456Z", "tags": { "a": "b" } }),
            ),
            now_ms(),
        )
        .unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({ "sensor": "s", "ts": "2026-12-04T10:00:00.123Z", "value": 1.5, "tags": { "a": "b" } })
        );
        assert_eq!(serde_json::from_value::<Reading>(v).unwrap(), r);
    }

    /// Found by fuzzing (fuzz/fuzz_targets/reading_state.rs): this value was read one unit in
    /// the last place off, so the READING shown was not the number sent (nor read back as it).
    #[test]
    fn a_value_reads_back_exactly() {
        let body = r#"{ "value": 1000000000000001534763298 }"#;
        let p: Map<String, Value> = serde_json::from_str(body).unwrap();
        let r = parse_reading("s", &p, now_ms()).unwrap();
        let shown = serde_json::to_string(&r).unwrap();
        assert_eq!(
            serde_json::from_str::<Reading>(&shown).unwrap(),
            r,
            "{shown}"
        );
        // the nearest f64, as the standard library's (correctly rounded) parser finds it
        assert_eq!(r.value, "1000000000000001534763298".parse::<f64>().unwrap());
        let state_value: Value = serde_json::from_str("1000000000000001534763298").unwrap();
        let back: Value = serde_json::from_str(&state_value.to_string()).unwrap();
        assert_eq!(back, state_value);
    }

    #[test]
    fn bad_fields_are_refused() {
        let now = now_ms();
        for bad in [
            json!({}),
            json!({ "value": "1" }),
            json!({ "value": true }),
            json!({ "value": 1, "ts": 1.5 }),
            json!({ "value": 1, "ts": -1 }),
            json!({ "value": 1, "ts": "yesterday" }),
            json!({ "value": 1, "ts": now + MAX_FUTURE_MS + 1000 }),
            json!({ "value": 1, "tags": [] }),
            json!({ "value": 1, "tags": { "a": 1 } }),
            json!({ "value": 1, "tags": { "a": "x".repeat(1100) } }),
        ] {
            assert!(parse_reading("s", &obj(bad.clone()), now).is_err(), "{bad}");
        }
        let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(parse_reading("s", &obj(json!({ "value": 1, "tags": many })), now).is_err());
        let r = parse_reading("s", &obj(json!({ "value": 2, "ts": 1000 })), now).unwrap();
        assert_eq!((r.ts, r.value, r.tags.len()), (1000, 2.0, 0));
    }
}
