//! Sensors and readings over HTTP (PROTOCOL.md §6.1).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::extract::{Caller, JsonObject, ReadingsBody, keyset_page, listing};
use super::openapi as doc;
use crate::app::App;
use crate::domain::SensorInfo;
use crate::domain::{SensorId, now_ms, parse_reading};
use crate::error::{ApiError, ApiResult};
use crate::payload::{opt_bool, opt_str, query_int, req_str};
use crate::services::rooms::check_room_name;
use crate::services::sensors::query::{
    MAX_BUCKETS, aggs, bucket_ms, bucket_view, buckets_spanned, readings_cursor, time_range,
};
use crate::services::users::opt_metadata;

/// Readings one write may carry.
const MAX_READINGS_PER_WRITE: usize = 1000;

#[utoipa::path(
    operation_id = "sensors_create",
    post,
    path = "/api/v1/sensors",
    tag = "sensors",
    request_body = doc::NewSensorBody,
    responses(
        (status = 201, description = "Created; the caller owns it", body = SensorInfo),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 409, response = doc::Conflict),
        (status = 413, response = doc::TooLarge),
        (status = 429, response = doc::RateLimited),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let id = req_str(&body, "id")?;
    let name = opt_str(&body, "name")?.map(str::to_owned);
    let private = opt_bool(&body, "private")?.unwrap_or(false);
    // every bad_request (the id, the name) before too_large (the metadata)
    let id = SensorId::parse(id)?;
    check_room_name(name.as_deref())?;
    let metadata = opt_metadata(&body, app.config.max_metadata_bytes)?;
    let info = app
        .sensors
        .create(&who, id, name, private, metadata)
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

#[utoipa::path(
    operation_id = "sensors_list",
    get,
    path = "/api/v1/sensors",
    tag = "sensors",
    params(doc::ListingQuery),
    responses(
        (status = 200, description = "The sensors the caller may read, by id", body = doc::SensorPage),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let (limit, cursor) = listing(&q)?;
    let fetched = app.sensors.list(&who, cursor, limit + 1).await?;
    let (items, next_cursor) = keyset_page(fetched, limit, |s| s.id.clone());
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

#[utoipa::path(
    operation_id = "sensors_get",
    get,
    path = "/api/v1/sensors/{id}",
    tag = "sensors",
    params(("id" = String, Path, description = "SENSOR: 1 to 128 of A-Z a-z 0-9 _ . : -")),
    responses(
        (status = 200, description = "SENSOR-INFO", body = SensorInfo),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = SensorId::parse(&id)?;
    Ok(Json(app.sensors.get(&who, &id).await?))
}

/// `?durable=` of a readings write: absent or `false`, or `true`.
pub fn durable_param(q: &HashMap<String, String>) -> ApiResult<bool> {
    match q.get("durable").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::bad_request("durable must be true or false")),
    }
}

/// `POST …/readings`: 202 once accepted, or 201 once committed with `?durable=true`.
#[utoipa::path(
    operation_id = "sensors_write",
    post,
    path = "/api/v1/sensors/{id}/readings",
    tag = "sensors",
    params(("id" = String, Path, description = "SENSOR: 1 to 128 of A-Z a-z 0-9 _ . : -"), ("durable" = Option<bool>, Query, description = "true: answer once committed")),
    request_body = doc::ReadingsBody,
    responses(
        (status = 202, description = "Accepted into the buffer", body = doc::ReadingsAccepted),
        (status = 201, description = "Committed (`?durable=true`)", body = doc::ReadingsAccepted),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 413, response = doc::TooLarge),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn write(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ReadingsBody(body): ReadingsBody,
) -> ApiResult<impl IntoResponse> {
    let id = SensorId::parse(&id)?;
    let durable = durable_param(&q)?;
    let items = match body.get("readings") {
        Some(Value::Array(items)) => items,
        _ => return Err(ApiError::bad_request("readings must be an array")),
    };
    if items.is_empty() || items.len() > MAX_READINGS_PER_WRITE {
        return Err(ApiError::bad_request(format!(
            "readings must hold 1 to {MAX_READINGS_PER_WRITE} readings"
        )));
    }
    let now = now_ms();
    let readings = items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(p) => parse_reading(id.as_str(), p, now)
                .map_err(|e| ApiError::bad_request(format!("readings[{i}]: {e}"))),
            _ => Err(ApiError::bad_request(format!(
                "readings[{i}] must be an object"
            ))),
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let accepted = app.sensors.write(&who, &id, readings, durable).await?;
    let status = if durable {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(json!({ "accepted": accepted, "durable": durable })),
    ))
}

/// `GET …/readings?from=&to=&limit=&cursor=`: ascending ts, keyset by ts.
#[utoipa::path(
    operation_id = "sensors_readings",
    get,
    path = "/api/v1/sensors/{id}/readings",
    tag = "sensors",
    params(("id" = String, Path, description = "SENSOR: 1 to 128 of A-Z a-z 0-9 _ . : -"), ("from" = Option<String>, Query, description = "RFC 3339 or ms since the epoch; default `to` minus one hour"), ("to" = Option<String>, Query, description = "RFC 3339 or ms since the epoch; default now (exclusive)"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 5000, description = "1 to 5000, default 500"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses(
        (status = 200, description = "Ascending ts, from <= ts < to", body = doc::ReadingPage),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn readings(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let id = SensorId::parse(&id)?;
    let range = time_range(&q)?;
    let limit = query_int(q.get("limit"), "limit", 1, 5000)?.unwrap_or(500) as u32;
    let cursor = readings_cursor(&q)?;
    let fetched = app
        .sensors
        .readings(&who, &id, range, cursor, limit)
        .await?;
    let (items, next_cursor) = keyset_page(fetched, limit, |r| r.ts.to_string());
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

/// `GET …/series?from=&to=&bucket=&agg=`: buckets computed in SQL.
#[utoipa::path(
    operation_id = "sensors_series",
    get,
    path = "/api/v1/sensors/{id}/series",
    tag = "sensors",
    params(("id" = String, Path, description = "SENSOR: 1 to 128 of A-Z a-z 0-9 _ . : -"), ("from" = Option<String>, Query, description = "RFC 3339 or ms since the epoch; default `to` minus one hour"), ("to" = Option<String>, Query, description = "RFC 3339 or ms since the epoch; default now (exclusive)"), ("bucket" = String, Query, description = "1s 10s 1m 5m 15m 1h 6h 1d; at most 10000 buckets in the range"), ("agg" = Option<String>, Query, description = "Comma-separated subset of avg,min,max,sum,count,last; default avg,min,max,count")),
    responses(
        (status = 200, description = "Buckets with at least one reading, ascending", body = doc::Series),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::NotFound),
        (status = 503, response = doc::Unavailable)
    ),
    security(("bearer" = []))
)]
pub async fn series(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let id = SensorId::parse(&id)?;
    let range = time_range(&q)?;
    let (bucket, len) = bucket_ms(&q)?;
    let aggs = aggs(&q)?;
    if buckets_spanned(range, len) > MAX_BUCKETS {
        return Err(ApiError::bad_request(format!(
            "the range spans more than {MAX_BUCKETS} buckets of {bucket}"
        )));
    }
    let buckets = app.sensors.series(&who, &id, range, len).await?;
    let items: Vec<Value> = buckets.iter().map(|b| bucket_view(b, &aggs)).collect();
    Ok(Json(
        json!({ "sensor": id, "bucket": bucket, "items": items }),
    ))
}
