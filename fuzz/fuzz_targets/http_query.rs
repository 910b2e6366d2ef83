//! Query strings of the HTTP API, decoded the way the handlers do: axum's `Query` into a map,
//! then each handler's parameter rules (`src/http/extract.rs` listings, `src/http/admin.rs`
//! filters, `src/http/sensors.rs` `durable`, `src/payload.rs` integers, and the readings and
//! series parameters of `src/services/sensors/query.rs`).
//! Holds: no panic (no overflow: debug assertions are on); every refusal is `bad_request`;
//! what is accepted is within the contract's ranges.
#![no_main]

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::Uri;
use libfuzzer_sys::fuzz_target;
use tsunagi::domain::DomainError;
use tsunagi::error::ApiError;
use tsunagi::http::{durable_param, list_limit, listing, text_filter};
use tsunagi::payload::query_int;
use tsunagi::services::sensors::query::{
    MAX_BUCKETS, aggs, bucket_ms, buckets_spanned, readings_cursor, time_range,
};

fn bad_request<T: std::fmt::Debug>(r: Result<T, ApiError>) -> Option<T> {
    r.map_err(|e| assert_eq!(e.code(), "bad_request", "{e}"))
        .ok()
}

fn invalid<T: std::fmt::Debug>(r: Result<T, DomainError>) -> Option<T> {
    r.map_err(|e| assert!(matches!(e, DomainError::Invalid(_)), "{e:?}"))
        .ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/api/v1/x?{text}").parse::<Uri>() else {
        return;
    };
    let Ok(Query(q)) = Query::<HashMap<String, String>>::try_from_uri(&uri) else {
        return;
    };

    if let Some(limit) = bad_request(list_limit(&q)) {
        assert!((1..=500).contains(&limit));
    }
    if let Some((limit, cursor)) = bad_request(listing(&q)) {
        assert!((1..=500).contains(&limit));
        if let Some(c) = cursor {
            assert!(!c.is_empty() && !c.contains('\0') && c.chars().count() <= 256);
        }
    }
    for name in ["actor", "target", "state", "kind", "cursor"] {
        if let Some(Some(v)) = bad_request(text_filter(&q, name)) {
            assert!(!v.contains('\0') && v.chars().count() <= 256);
        }
    }
    if let Some(durable) = bad_request(durable_param(&q)) {
        assert_eq!(durable, q.get("durable").is_some_and(|d| d == "true"));
    }
    for (name, min) in [
        ("after_seq", 0),
        ("before_seq", 0),
        ("version", 0),
        ("cursor", 1),
    ] {
        if let Some(Some(n)) = invalid(query_int(q.get(name), name, min, i64::MAX)) {
            assert!(n >= min);
            assert_eq!(q.get(name).map(|s| s.parse::<i64>()), Some(Ok(n)));
        }
    }
    if let Some(Some(ts)) = invalid(readings_cursor(&q)) {
        assert!(ts >= 0);
    }
    let range = invalid(time_range(&q));
    if let Some(r) = range {
        assert!(0 <= r.from && r.from <= r.to, "{:?}", (r.from, r.to));
    }
    let bucket = invalid(bucket_ms(&q));
    if let Some(aggs) = invalid(aggs(&q)) {
        assert!(!aggs.is_empty() && aggs.len() <= 6);
    }
    if let (Some(r), Some((_, len))) = (range, bucket) {
        let n = buckets_spanned(r, len);
        assert!(n >= 0);
        // the series handler refuses past MAX_BUCKETS: what it lets through is small
        if n <= MAX_BUCKETS {
            assert!((r.to - r.from) / len <= MAX_BUCKETS);
        }
    }
});
