//! Admission of new Socket.IO sessions under a reconnect storm (`TSUNAGI_HANDSHAKES_PENDING`):
//! at most that many Engine.IO sessions may be open without their Socket.IO CONNECT yet. Past
//! it a new handshake is answered `503` with `Retry-After: 1` before the engine sees it, so
//! refusing costs no upgrade, no session and no token check. A 503 is what the official client
//! retries by itself, with its backoff and jitter, which spreads the storm out; a CONNECT
//! refused with `connect_error` is not retried by socket.io-client (see drain.rs).
//!
//! The count is taken when the engine opens a session (`Pending`, kept in the connection's
//! data) and given back at its CONNECT or when it ends, on every path (the guard is dropped).
//! The check at the door reads the count without reserving: a few handshakes in flight at
//! once may pass it together, which a bound on work (not an exact cap) allows.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Gauge, counter, gauge};

use crate::error::ApiError;
use crate::telemetry::Telemetry;

pub struct Admission {
    /// 0: no bound (nothing refused; the count is still kept for the gauge).
    limit: usize,
    pending: AtomicUsize,
    admitted: Counter,
    refused: Counter,
    pending_gauge: Gauge,
}

/// One opened session's place among the pending ones, given back when dropped.
pub struct Pending(Arc<Admission>);

impl Admission {
    pub fn new(limit: usize, t: &Telemetry) -> Arc<Self> {
        let (admitted, refused, pending_gauge) = t.record(|| {
            (
                counter!("tsunagi_admission_handshakes_total", "result" => "admitted"),
                counter!("tsunagi_admission_handshakes_total", "result" => "refused"),
                gauge!("tsunagi_admission_pending"),
            )
        });
        Arc::new(Admission {
            limit,
            pending: AtomicUsize::new(0),
            admitted,
            refused,
            pending_gauge,
        })
    }

    /// Whether a new handshake may go on now.
    fn open(&self) -> bool {
        let ok = self.limit == 0 || self.pending.load(Ordering::Relaxed) < self.limit;
        if ok { &self.admitted } else { &self.refused }.increment(1);
        ok
    }

    /// Counts a session the engine opened, until its CONNECT or its end.
    pub fn pending(self: &Arc<Self>) -> Pending {
        let n = self.pending.fetch_add(1, Ordering::Relaxed) + 1;
        self.pending_gauge.set(n as f64);
        Pending(self.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let n = self.0.pending.fetch_sub(1, Ordering::Relaxed) - 1;
        self.0.pending_gauge.set(n as f64);
    }
}

/// The middleware in front of the engine: handshakes past the bound get a retryable 503.
pub async fn admit_handshakes(
    State(admission): State<Arc<Admission>>,
    req: Request,
    next: Next,
) -> Response {
    if super::drain::opens_session(&req) && !admission.open() {
        let mut resp =
            ApiError::unavailable("too many connections being opened, try again").into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_bound_and_gives_places_back() {
        let a = Admission::new(2, &Telemetry::new(1000));
        assert!(a.open());
        let p1 = a.pending();
        let _p2 = a.pending();
        assert!(!a.open(), "two pending: the third waits");
        drop(p1);
        assert!(a.open(), "a CONNECT or an end frees a place");
        let off = Admission::new(0, &Telemetry::new(1000));
        let _held: Vec<_> = (0..100).map(|_| off.pending()).collect();
        assert!(off.open(), "0 = no bound");
    }
}
