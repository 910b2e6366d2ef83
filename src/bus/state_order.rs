//! One room's order of `state` events (PROTOCOL.md §6.2): released in the room's `state_seq`
//! order, starting after the seq a join's snapshot was read at. Two instances publish through
//! Redis at once, so a later write can arrive first: it is held until the earlier one comes, or
//! until the feed gives up waiting (`ordered::GAP_WAIT`) and skips the hole. A skipped write is
//! not recovered (the state table keeps no history); what follows it is newer and sent in order.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::domain::State;

pub type Released = Vec<(i64, Arc<State>)>;

#[derive(Default)]
pub struct StateOrder {
    /// The seq to release next; None until the first join read a snapshot.
    next: Option<i64>,
    held: BTreeMap<i64, Arc<State>>,
}

impl StateOrder {
    pub fn accept(&mut self, seq: i64, state: Arc<State>) -> Released {
        if self.next.is_some_and(|n| seq < n) {
            return Vec::new(); // already released or skipped
        }
        self.held.insert(seq, state);
        self.drain()
    }

    /// The first join's snapshot was current at `seq`: order starts after it (once).
    pub fn start_at(&mut self, seq: i64) -> Released {
        if self.next.is_some() {
            return Vec::new();
        }
        self.next = Some(seq + 1);
        self.held = self.held.split_off(&(seq + 1));
        self.drain()
    }

    /// Whether something waits behind a missing seq.
    pub fn has_hole(&self) -> bool {
        self.next.is_some() && !self.held.is_empty()
    }

    /// Gives up on the missing seqs: releases what waits behind them.
    pub fn skip_hole(&mut self) -> Released {
        if let Some(&first) = self.held.keys().next() {
            self.next = Some(first);
        }
        self.drain()
    }

    fn drain(&mut self) -> Released {
        let mut out = Vec::new();
        while let Some(next) = self.next {
            match self.held.remove(&next) {
                Some(s) => {
                    out.push((next, s));
                    self.next = Some(next + 1);
                }
                None => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(v: i64) -> Arc<State> {
        Arc::new(State {
            room: "r".into(),
            key: "k".into(),
            value: serde_json::json!(v),
            version: v,
            updated_by: "u".into(),
            updated_at: "t".into(),
        })
    }

    fn seqs(r: Released) -> Vec<i64> {
        r.into_iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn holds_a_later_write_until_the_earlier_arrives_or_the_hole_is_skipped() {
        let mut o = StateOrder::default();
        assert!(seqs(o.accept(6, st(6))).is_empty(), "held until started");
        assert_eq!(seqs(o.start_at(4)), Vec::<i64>::new());
        assert_eq!(seqs(o.accept(5, st(5))), vec![5, 6]);
        assert_eq!(seqs(o.accept(8, st(8))), Vec::<i64>::new());
        assert!(o.has_hole());
        assert_eq!(seqs(o.accept(7, st(7))), vec![7, 8]);
        assert_eq!(seqs(o.accept(10, st(10))), Vec::<i64>::new());
        assert_eq!(seqs(o.skip_hole()), vec![10]);
        assert!(
            seqs(o.accept(9, st(9))).is_empty(),
            "late after a skip: dropped"
        );
        assert!(
            seqs(o.start_at(100)).is_empty(),
            "a second join does not restart it"
        );
    }
}
