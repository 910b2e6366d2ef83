//! A session's client events waiting to be handled, in arrival order, at most [`INBOX_EVENTS`].
//!
//! Not a channel with a task always parked on it: an idle socket would pay for both (a
//! channel's first block of slots and a worker future sized for its largest event, ~several KB)
//! while doing nothing. Here the queue is a `VecDeque` under the session's lock, unallocated
//! while empty, and a worker runs only while events wait: the push that finds none running
//! starts one, and the worker that finds the queue empty stops, both under the same lock, so
//! no event is ever left without a worker and there is never more than one (order holds).

use std::collections::VecDeque;

use parking_lot::Mutex;

use super::session::InboundEvent;

/// Events a session may have waiting to be handled before more are refused `rate_limited`.
pub const INBOX_EVENTS: usize = 256;

#[derive(Default)]
pub struct Inbox {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    events: VecDeque<InboundEvent>,
    /// A worker is running (it will take what is queued).
    running: bool,
    closed: bool,
}

/// What became of a pushed event.
pub enum Pushed {
    /// Queued; no worker was running, so the caller starts one.
    StartWorker,
    /// Queued for the running worker.
    Queued,
    /// The queue is full: nothing was done with it.
    Full(InboundEvent),
    /// The session is gone.
    Closed,
}

impl Inbox {
    pub fn push(&self, event: InboundEvent) -> Pushed {
        let mut s = self.state.lock();
        if s.closed {
            return Pushed::Closed;
        }
        if s.events.len() >= INBOX_EVENTS {
            return Pushed::Full(event);
        }
        s.events.push_back(event);
        if s.running {
            Pushed::Queued
        } else {
            s.running = true;
            Pushed::StartWorker
        }
    }

    /// The next event for the worker; `None` tells it to stop (it is marked stopped here, so
    /// the next push starts a new one).
    pub fn next(&self) -> Option<InboundEvent> {
        let mut s = self.state.lock();
        let next = s.events.pop_front();
        if next.is_none() {
            s.running = false;
            // a burst's buffer is given back: an idle session holds none
            s.events = VecDeque::new();
        }
        next
    }

    /// Drops what is queued (unanswered, as if lost in transit) and refuses what comes later.
    pub fn close(&self) {
        let mut s = self.state.lock();
        s.closed = true;
        s.events = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ack: i64) -> InboundEvent {
        InboundEvent {
            refused: None,
            name: "x".into(),
            payload: None,
            ack: Some(ack),
        }
    }

    #[test]
    fn one_worker_at_a_time_in_order_and_bounded() {
        let inbox = Inbox::default();
        assert!(matches!(inbox.push(ev(0)), Pushed::StartWorker));
        for i in 1..INBOX_EVENTS as i64 {
            assert!(matches!(inbox.push(ev(i)), Pushed::Queued));
        }
        match inbox.push(ev(999)) {
            Pushed::Full(e) => assert_eq!(e.ack, Some(999)),
            _ => panic!("a full inbox refuses"),
        }
        for i in 0..INBOX_EVENTS as i64 {
            assert_eq!(inbox.next().map(|e| e.ack), Some(Some(i)));
        }
        assert!(inbox.next().is_none(), "drained: the worker stops");
        assert!(
            matches!(inbox.push(ev(1000)), Pushed::StartWorker),
            "the next event starts a new worker"
        );
        inbox.close();
        assert!(inbox.next().is_none(), "queued events are dropped at close");
        assert!(matches!(inbox.push(ev(1001)), Pushed::Closed));
    }
}
