//! Gateway metric handles, resolved per use through the global recorder.

use metrics::{Counter, Gauge, counter, gauge};

pub fn events_in(event: &'static str) -> Counter {
    counter!("tsunagi_events_in_total", "event" => event)
}

pub fn events_out(event: &'static str) -> Counter {
    counter!("tsunagi_events_out_total", "event" => event)
}

pub fn sockets_connected() -> Gauge {
    gauge!("tsunagi_sockets_connected")
}

pub fn delivery_gaps() -> Counter {
    counter!("tsunagi_delivery_gap_disconnects_total")
}

pub fn slow_consumer_disconnects() -> Counter {
    counter!("tsunagi_slow_consumer_disconnects_total")
}
