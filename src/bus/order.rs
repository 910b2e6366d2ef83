//! The order in which this instance hands a room's messages on (used by the ordered feed).
//!
//! Messages reach an instance from its own committer and, with Redis, from other instances; two
//! instances writing one room interleave, so seq 6 (committed here) can arrive before seq 5
//! (committed elsewhere, still on its way through Redis). A room's messages are released strictly
//! in seq order: ahead-of-order ones wait here, and a hole that does not close soon is filled from
//! the store by the feed. Ordering starts at the position the room's first join read up to.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::domain::Message;

/// Most messages held for one room while its ordering has not started or waits on a hole.
const HOLD_MAX: usize = 10_000;

#[derive(Default)]
pub struct RoomOrder {
    /// The seq released next; `None` until a join says where this instance's sockets are.
    next: Option<i64>,
    held: BTreeMap<i64, Arc<Message>>,
}

impl RoomOrder {
    /// Takes `m`; returns what can be released now, in seq order.
    pub fn accept(&mut self, m: Arc<Message>) -> Vec<Arc<Message>> {
        if self.next.is_some_and(|n| m.seq < n) {
            return Vec::new(); // released already (a duplicate)
        }
        if self.held.len() >= HOLD_MAX {
            // Cannot happen while the store answers; release rather than grow without bound
            // (sockets that see the jump resync with `sync`).
            tracing::warn!(room = %m.room, "too many messages held: releasing past a gap");
            return self.skip_gap();
        }
        self.held.insert(m.seq, m);
        self.drain()
    }

    /// A join read the room up to `last_seq`: ordering starts there unless it already runs.
    pub fn start_at(&mut self, last_seq: i64) -> Vec<Arc<Message>> {
        if self.next.is_none() {
            self.next = Some(last_seq + 1);
            self.held = self.held.split_off(&(last_seq + 1));
        }
        self.drain()
    }

    /// `(missing from, next held)` when held messages wait behind a missing one.
    pub fn gap(&self) -> Option<(i64, i64)> {
        let next = self.next?;
        let (&first, _) = self.held.first_key_value()?;
        (first > next).then_some((next, first))
    }

    /// Gives up on the hole: releases from the first held message on.
    pub fn skip_gap(&mut self) -> Vec<Arc<Message>> {
        if let Some((_, first)) = self.gap() {
            self.next = Some(first);
        }
        self.drain()
    }

    fn drain(&mut self) -> Vec<Arc<Message>> {
        let mut out = Vec::new();
        while let Some(next) = self.next
            && let Some(m) = self.held.remove(&next)
        {
            out.push(m);
            self.next = Some(next + 1);
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Message `seq` of room `r` (shared with the feed's tests).
    pub(crate) fn message(seq: i64) -> Message {
        Message {
            id: format!("m{seq}"),
            room: "r".into(),
            seq,
            user_id: "u".into(),
            content: "x".into(),
            client_id: None,
            created_at: "t".into(),
        }
    }

    fn msg(seq: i64) -> Arc<Message> {
        Arc::new(message(seq))
    }

    fn seqs(v: Vec<Arc<Message>>) -> Vec<i64> {
        v.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn releases_in_seq_order_from_the_join_position() {
        let mut o = RoomOrder::default();
        assert!(seqs(o.accept(msg(5))).is_empty()); // not started: held
        assert_eq!(seqs(o.start_at(3)), Vec::<i64>::new()); // 4 is missing
        assert_eq!(o.gap(), Some((4, 5)));
        assert_eq!(seqs(o.accept(msg(6))), Vec::<i64>::new());
        assert_eq!(seqs(o.accept(msg(4))), vec![4, 5, 6]);
        assert_eq!(o.gap(), None);
        assert!(seqs(o.accept(msg(5))).is_empty()); // duplicate
        assert_eq!(seqs(o.start_at(10)), Vec::<i64>::new()); // already running: no jump
        assert_eq!(seqs(o.accept(msg(7))), vec![7]);
    }

    #[test]
    fn a_start_drops_what_the_join_history_holds_and_a_skip_jumps_the_hole() {
        let mut o = RoomOrder::default();
        for s in [2, 3, 4] {
            o.accept(msg(s));
        }
        assert_eq!(seqs(o.start_at(2)), vec![3, 4]);
        o.accept(msg(7));
        assert_eq!(o.gap(), Some((5, 7)));
        assert_eq!(seqs(o.skip_gap()), vec![7]);
        assert_eq!(seqs(o.accept(msg(8))), vec![8]);
    }
}
