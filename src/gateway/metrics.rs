//! The gateway's metric handles, resolved once per app (the hot path increments handles, never
//! looks a name up).

use metrics::{Counter, Gauge, counter, gauge};

use crate::telemetry::Telemetry;

pub struct GatewayMetrics {
    /// `tsunagi_events_in_total{event}`, one per event name of the contract and `unknown`.
    events_in: [(&'static str, Counter); 12],
    pub messages_out: Counter,
    pub typing_out: Counter,
    pub presence_out: Counter,
    pub readings_out: Counter,
    pub sockets_connected: Gauge,
    pub delivery_gaps: Counter,
    pub slow_consumers: Counter,
    /// Events refused `rate_limited` because the session's queue or event budget is full.
    pub events_refused: Counter,
    /// Transports refused because their address holds `TSUNAGI_CONNECTIONS_PER_ADDRESS`.
    pub connections_refused: Counter,
}

impl GatewayMetrics {
    pub fn new(t: &Telemetry) -> Self {
        t.record(|| {
            let events = [
                "join",
                "leave",
                "send",
                "typing",
                "sync",
                "presence",
                "reading",
                "subscribe",
                "unsubscribe",
                "state_set",
                "state_get",
                "unknown",
            ];
            GatewayMetrics {
                events_in: events.map(|e| (e, counter!("tsunagi_events_in_total", "event" => e))),
                messages_out: counter!("tsunagi_events_out_total", "event" => "message"),
                typing_out: counter!("tsunagi_events_out_total", "event" => "typing"),
                presence_out: counter!("tsunagi_events_out_total", "event" => "presence"),
                readings_out: counter!("tsunagi_events_out_total", "event" => "reading"),
                sockets_connected: gauge!("tsunagi_sockets_connected"),
                delivery_gaps: counter!("tsunagi_delivery_gap_disconnects_total"),
                slow_consumers: counter!("tsunagi_slow_consumer_disconnects_total"),
                events_refused: counter!("tsunagi_rate_limited_total", "limiter" => "events"),
                connections_refused: counter!(
                    "tsunagi_rate_limited_total",
                    "limiter" => "connections_per_address"
                ),
            }
        })
    }

    /// The counter of events named `label` (see `client_event::label`).
    pub fn events_in(&self, label: &str) -> &Counter {
        let (_, unknown) = &self.events_in[11];
        self.events_in
            .iter()
            .find(|(name, _)| *name == label)
            .map_or(unknown, |(_, c)| c)
    }
}
