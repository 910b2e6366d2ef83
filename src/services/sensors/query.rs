//! The query parameters of readings and series (PROTOCOL.md §6.1): time ranges, bucket
//! lengths, aggregates, cursors. Parsed once, in the contract's words.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::domain::{DomainError, DomainResult, ms_to_rfc3339, now_ms, parse_time_text};
use crate::store::sensors::{Bucket, TimeRange};

/// The default range when `from` is absent: one hour before `to`.
const DEFAULT_SPAN_MS: i64 = 3_600_000;
/// A series may span at most this many buckets.
pub const MAX_BUCKETS: i64 = 10_000;

/// `from` and `to` of a query string (`to` defaults to now, `from` to `to` minus one hour).
pub fn time_range(q: &HashMap<String, String>) -> DomainResult<TimeRange> {
    let to = match q.get("to") {
        Some(t) => parse_time_text("to", t)?,
        None => now_ms(),
    };
    let from = match q.get("from") {
        Some(f) => parse_time_text("from", f)?,
        None => (to - DEFAULT_SPAN_MS).max(0),
    };
    if from > to {
        return Err(DomainError::invalid("from must not be after to"));
    }
    Ok(TimeRange { from, to })
}

/// The bucket lengths of §6.1, in ms.
pub fn bucket_ms(q: &HashMap<String, String>) -> DomainResult<(&'static str, i64)> {
    const LENGTHS: [(&str, i64); 8] = [
        ("1s", 1_000),
        ("10s", 10_000),
        ("1m", 60_000),
        ("5m", 300_000),
        ("15m", 900_000),
        ("1h", 3_600_000),
        ("6h", 21_600_000),
        ("1d", 86_400_000),
    ];
    let asked = q
        .get("bucket")
        .ok_or_else(|| DomainError::invalid("bucket is required: 1s 10s 1m 5m 15m 1h 6h 1d"))?;
    LENGTHS
        .iter()
        .find(|(name, _)| name == asked)
        .copied()
        .ok_or_else(|| DomainError::invalid("bucket must be one of 1s 10s 1m 5m 15m 1h 6h 1d"))
}

/// How many buckets of `len` the range touches.
pub fn buckets_spanned(range: TimeRange, len: i64) -> i64 {
    if range.to <= range.from {
        return 0;
    }
    (range.to - 1) / len - range.from / len + 1
}

/// The aggregates a series answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
}

impl Agg {
    fn name(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Sum => "sum",
            Agg::Count => "count",
            Agg::Last => "last",
        }
    }

    fn value(self, b: &Bucket) -> Value {
        match self {
            Agg::Avg => json!(b.avg),
            Agg::Min => json!(b.min),
            Agg::Max => json!(b.max),
            Agg::Sum => json!(b.sum),
            Agg::Count => json!(b.count),
            Agg::Last => json!(b.last),
        }
    }
}

/// `agg`: a comma-separated subset of `avg,min,max,sum,count,last` (absent or empty: the
/// default `avg,min,max,count`).
pub fn aggs(q: &HashMap<String, String>) -> DomainResult<Vec<Agg>> {
    let all = [
        Agg::Avg,
        Agg::Min,
        Agg::Max,
        Agg::Sum,
        Agg::Count,
        Agg::Last,
    ];
    let Some(asked) = q.get("agg").filter(|a| !a.is_empty()) else {
        return Ok(vec![Agg::Avg, Agg::Min, Agg::Max, Agg::Count]);
    };
    let mut out = Vec::new();
    for name in asked.split(',') {
        let agg = all
            .iter()
            .find(|a| a.name() == name.trim())
            .ok_or_else(|| {
                DomainError::invalid(
                    "agg must be a comma-separated subset of avg,min,max,sum,count,last",
                )
            })?;
        if !out.contains(agg) {
            out.push(*agg);
        }
    }
    Ok(out)
}

/// A series item: `t` and the asked fields.
pub fn bucket_view(b: &Bucket, aggs: &[Agg]) -> Value {
    let mut item = Map::new();
    item.insert("t".into(), Value::String(ms_to_rfc3339(b.t)));
    for a in aggs {
        item.insert(a.name().into(), a.value(b));
    }
    Value::Object(item)
}

/// The `cursor` of a readings page: the ts (ms) of the last reading handed out.
pub fn readings_cursor(q: &HashMap<String, String>) -> DomainResult<Option<i64>> {
    match q.get("cursor").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0 && !c.starts_with('+'))
            .map(Some)
            .ok_or_else(|| DomainError::invalid("cursor is not one this API gave out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ranges_buckets_and_aggs() {
        let r = time_range(&q(&[("from", "1000"), ("to", "1970-01-01T00:00:05Z")])).unwrap();
        assert_eq!((r.from, r.to), (1000, 5000));
        assert!(time_range(&q(&[("from", "6000"), ("to", "5000")])).is_err());
        assert!(time_range(&q(&[("from", "soon")])).is_err());
        let r = time_range(&q(&[("to", "7200000")])).unwrap();
        assert_eq!(r.from, 3_600_000);
        assert_eq!(bucket_ms(&q(&[("bucket", "5m")])).unwrap().1, 300_000);
        assert!(bucket_ms(&q(&[("bucket", "2m")])).is_err());
        assert!(bucket_ms(&q(&[])).is_err());
        assert_eq!(buckets_spanned(TimeRange { from: 0, to: 1000 }, 1000), 1);
        assert_eq!(
            buckets_spanned(
                TimeRange {
                    from: 999,
                    to: 1001
                },
                1000
            ),
            2
        );
        assert_eq!(buckets_spanned(TimeRange { from: 5, to: 5 }, 1000), 0);
        assert_eq!(aggs(&q(&[])).unwrap().len(), 4);
        assert_eq!(
            aggs(&q(&[("agg", "last,sum")])).unwrap(),
            vec![Agg::Last, Agg::Sum]
        );
        assert!(aggs(&q(&[("agg", "avg,median")])).is_err());
        assert_eq!(readings_cursor(&q(&[("cursor", "42")])).unwrap(), Some(42));
        assert!(readings_cursor(&q(&[("cursor", "x")])).is_err());
    }
}
