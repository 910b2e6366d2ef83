//! The in-process bus of a single instance: publish order is delivery order.

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{Bus, BusEvent};

#[derive(Default)]
pub struct LocalBus {
    // Unbounded on purpose: subscribers (the gateway hub) never await while delivering, and a
    // bounded channel would force the committer to either wait or drop a committed message.
    subscribers: Mutex<Vec<mpsc::UnboundedSender<BusEvent>>>,
}

impl Bus for LocalBus {
    fn publish(&self, event: BusEvent) {
        let mut subs = self.subscribers.lock();
        subs.retain(|s| s.send(event.clone()).is_ok());
    }

    fn subscribe(&self) -> mpsc::UnboundedReceiver<BusEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.lock().push(tx);
        rx
    }
}
