//! One webhook delivery (PROTOCOL.md §6.4): the `webhook` job. `POST url` with the body
//! `{ id, event, created_at, data }` and the signature headers; a 2xx within the timeout is
//! delivered, anything else is retried by the job runner (1 s, 2 s, 4 s … ±20 %) until
//! `TSUNAGI_WEBHOOK_MAX_ATTEMPTS`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use metrics::{Counter, Histogram};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::guard::GuardedResolver;
use crate::services::jobs::{JobError, JobHandler};
use crate::store::Store;
use crate::store::jobs::Job;
use crate::telemetry::Telemetry;

/// Deliveries to one host at once, per instance: a slow receiver holds few of the runner's slots.
const PER_HOST: usize = 4;

/// `v1=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

struct Metrics {
    delivered: Counter,
    failed: Counter,
    latency: Histogram,
}

pub struct Deliveries {
    store: Arc<dyn Store>,
    http: reqwest::Client,
    max_attempts: i64,
    allow_private: bool,
    per_host: parking_lot::Mutex<HashMap<String, Arc<Semaphore>>>,
    metrics: Metrics,
}

impl Deliveries {
    pub fn new(
        store: Arc<dyn Store>,
        timeout: Duration,
        max_attempts: u32,
        allow_private: bool,
        t: &Telemetry,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .user_agent(concat!("tsunagi/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Deliveries {
            store,
            http,
            max_attempts: i64::from(max_attempts),
            allow_private,
            per_host: Default::default(),
            metrics: t.record(|| Metrics {
                delivered: metrics::counter!("tsunagi_webhook_deliveries_total", "result" => "delivered"),
                failed: metrics::counter!("tsunagi_webhook_deliveries_total", "result" => "failed"),
                latency: metrics::histogram!("tsunagi_webhook_delivery_seconds"),
            }),
        })
    }

    fn host_slots(&self, host: &str) -> Arc<Semaphore> {
        self.per_host
            .lock()
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(PER_HOST)))
            .clone()
    }
}

#[async_trait::async_trait]
impl JobHandler for Deliveries {
    async fn run(&self, job: &Job, _stop: &CancellationToken) -> Result<(), JobError> {
        let hook_id = job.payload["webhook"]
            .as_str()
            .ok_or_else(|| JobError::Fatal("payload: no webhook".into()))?;
        let Some(hook) = self
            .store
            .webhook(hook_id)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?
        else {
            // deleted since: nobody to deliver to
            return Ok(());
        };
        let event = job.payload["event"].as_str().unwrap_or_default();
        let body = serde_json::to_vec(&json!({
            "id": job.id,
            "event": event,
            "created_at": job.created_at,
            "data": job.payload["data"],
        }))
        .map_err(|e| JobError::Fatal(e.to_string()))?;
        let url = reqwest::Url::parse(&hook.url).map_err(|e| JobError::Fatal(e.to_string()))?;
        // a literal address never reaches the resolver: checked here, at every delivery
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        if literal.is_some_and(|ip| !self.allow_private && super::guard::is_private(ip)) {
            return Err(JobError::Retry(super::guard::Refused::Private.to_string()));
        }
        let slots = self.host_slots(url.host_str().unwrap_or_default());
        let _slot = slots
            .acquire()
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        let timestamp = chrono::Utc::now().timestamp();
        let started = Instant::now();
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-tsunagi-event", event)
            .header("x-tsunagi-delivery", &job.id)
            .header("x-tsunagi-timestamp", timestamp.to_string())
            .header(
                "x-tsunagi-signature",
                signature(&hook.secret, timestamp, &body),
            )
            .body(body)
            .send()
            .await;
        self.metrics.latency.record(started.elapsed().as_secs_f64());
        let failure = match sent {
            Ok(r) if r.status().is_success() => {
                self.metrics.delivered.increment(1);
                return Ok(());
            }
            Ok(r) => format!("the receiver answered {}", r.status()),
            // the error's text carries the URL, which may hold a token: not logged, not kept
            Err(e) if e.is_timeout() => "the receiver did not answer in time".to_owned(),
            Err(e) if e.is_connect() => {
                "no connection to the receiver (or its address is refused)".to_owned()
            }
            Err(_) => "the request failed".to_owned(),
        };
        self.metrics.failed.increment(1);
        Err(JobError::Retry(failure))
    }

    fn max_attempts(&self) -> i64 {
        self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // computed independently (Python's hmac) for key "Jefe", "1700000000.{\"a\":1}"
        assert_eq!(
            signature("Jefe", 1_700_000_000, b"{\"a\":1}"),
            "v1=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
    }
}
