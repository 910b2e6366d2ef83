//! Live sensor readings for subscribed sockets (PROTOCOL.md §6.1 `reading`), throttled per
//! socket and sensor: at most one event per interval (1 / `TSUNAGI_SENSOR_LIVE_RATE`). A
//! reading that comes sooner is held, a later one replacing it, and the one held is sent when
//! the interval ends: a socket gets the newest reading of each interval, never a backlog.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use engineioxide::Str;
use metrics::Counter;
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use super::packet;
use super::session::Session;
use crate::domain::Reading;

struct Slot {
    session: Arc<Session>,
    state: Mutex<SlotState>,
}

struct SlotState {
    /// When the next event may go out.
    next_at: Instant,
    /// The newest reading that came too soon.
    held: Option<Reading>,
    /// A timer will send `held` at `next_at`.
    armed: bool,
}

pub struct LiveSensors {
    /// sensor → sid → slot.
    subs: RwLock<HashMap<String, HashMap<String, Arc<Slot>>>>,
    interval: Duration,
    /// `tsunagi_events_out_total{event="reading"}`.
    sent: Counter,
}

impl LiveSensors {
    pub fn new(rate_per_second: f64, sent: Counter) -> Self {
        LiveSensors {
            subs: RwLock::default(),
            interval: Duration::from_secs_f64(1.0 / rate_per_second),
            sent,
        }
    }

    pub fn subscribe(&self, sensor: &str, session: Arc<Session>) {
        let mut subs = self.subs.write();
        let slots = subs.entry(sensor.to_owned()).or_default();
        slots.entry(session.sid.clone()).or_insert_with(|| {
            Arc::new(Slot {
                session,
                state: Mutex::new(SlotState {
                    next_at: Instant::now(),
                    held: None,
                    armed: false,
                }),
            })
        });
    }

    pub fn unsubscribe(&self, sensor: &str, sid: &str) {
        let mut subs = self.subs.write();
        if let Some(slots) = subs.get_mut(sensor) {
            slots.remove(sid);
            if slots.is_empty() {
                subs.remove(sensor);
            }
        }
    }

    /// Hands `readings` (one write's, of one sensor) to its subscribers: each gets the one
    /// with the greatest ts now, or at the end of its interval.
    pub fn deliver(&self, sensor: &str, readings: &[Reading]) {
        let Some(newest) = readings.iter().max_by_key(|r| r.ts) else {
            return;
        };
        let slots: Vec<Arc<Slot>> = match self.subs.read().get(sensor) {
            Some(slots) => slots.values().cloned().collect(),
            None => return,
        };
        let now = Instant::now();
        for slot in slots {
            let mut st = slot.state.lock();
            if !st.armed && now >= st.next_at {
                st.next_at = now + self.interval;
                drop(st);
                if slot
                    .session
                    .emit(Str::from(packet::event("reading", newest)))
                {
                    self.sent.increment(1);
                }
                continue;
            }
            st.held = Some(newest.clone());
            if !st.armed {
                st.armed = true;
                let at = st.next_at;
                let weak = Arc::downgrade(&slot);
                tokio::spawn(send_held(weak, at, self.interval, self.sent.clone()));
            }
        }
    }
}

/// Sends what a slot holds once its interval ends (unless it was unsubscribed meanwhile).
async fn send_held(slot: Weak<Slot>, at: Instant, interval: Duration, sent: Counter) {
    tokio::time::sleep_until(at).await;
    let Some(slot) = slot.upgrade() else { return };
    let held = {
        let mut st = slot.state.lock();
        st.armed = false;
        st.next_at = Instant::now() + interval;
        st.held.take()
    };
    if let Some(r) = held
        && slot.session.emit(Str::from(packet::event("reading", &r)))
    {
        sent.increment(1);
    }
}
