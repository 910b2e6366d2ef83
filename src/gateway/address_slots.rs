//! Concurrent connections per client address (`TSUNAGI_CONNECTIONS_PER_ADDRESS`, PROTOCOL.md §7),
//! counted per instance: a count kept in Redis would outlive an instance that dies with its
//! connections, and lock their addresses out until someone cleaned it up.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::client_addr::AddressKey;

/// The connections each address holds on this instance.
pub struct AddressSlots {
    /// 0: no limit (nothing is counted).
    limit: u32,
    held: Mutex<HashMap<AddressKey, u32>>,
}

/// One connection's place in its address's count, given back when dropped (every way a
/// connection ends drops its engine socket's data, so no path can leak a slot).
pub struct Slot {
    taken: Option<(Arc<AddressSlots>, AddressKey)>,
}

impl AddressSlots {
    pub fn new(limit: u32) -> Arc<Self> {
        Arc::new(AddressSlots {
            limit,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `key`, or `None` when the address holds its limit.
    pub fn acquire(self: &Arc<Self>, key: AddressKey) -> Option<Slot> {
        if self.limit == 0 {
            return Some(Slot { taken: None });
        }
        let mut held = self.held.lock();
        let n = held.entry(key).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            taken: Some((self.clone(), key)),
        })
    }

    #[cfg(test)]
    fn held(&self, key: AddressKey) -> u32 {
        self.held.lock().get(&key).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some((slots, key)) = self.taken.take() else {
            return;
        };
        let mut held = slots.held.lock();
        if let Some(n) = held.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&key); // an address without connections costs nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> AddressKey {
        AddressKey::of(s.parse().unwrap())
    }

    #[test]
    fn limit_per_address_and_release_on_drop() {
        let slots = AddressSlots::new(2);
        let a1 = slots.acquire(key("1.1.1.1")).unwrap();
        let _a2 = slots.acquire(key("1.1.1.1")).unwrap();
        assert!(slots.acquire(key("1.1.1.1")).is_none());
        let _b = slots
            .acquire(key("2.2.2.2"))
            .expect("other addresses are apart");
        drop(a1);
        assert_eq!(slots.held(key("1.1.1.1")), 1);
        assert!(slots.acquire(key("1.1.1.1")).is_some());
        assert_eq!(
            slots.held(key("1.1.1.1")),
            1,
            "the temporary slot was given back"
        );
    }

    #[test]
    fn zero_is_off() {
        let slots = AddressSlots::new(0);
        let held: Vec<_> = (0..100).map(|_| slots.acquire(key("1.1.1.1"))).collect();
        assert!(held.iter().all(Option::is_some));
        assert!(slots.held.lock().is_empty());
    }
}
