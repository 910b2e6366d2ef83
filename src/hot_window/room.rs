//! One room's window: its newest messages, contiguous in seq, or (while a store read that will
//! start it is under way) the messages that arrived since that read began.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::domain::Message;

/// The bytes a held message is charged: its strings and its fixed part. An estimate of its heap
/// use (allocator overhead aside): the budget bounds memory, it is not an allocator count.
pub fn charge(m: &Message) -> usize {
    std::mem::size_of::<Message>()
        + 2 * std::mem::size_of::<usize>() // the Arc's counts
        + std::mem::size_of::<Arc<Message>>() // the deque's slot
        + m.id.len()
        + m.room.len()
        + m.user_id.len()
        + m.content.len()
        + m.client_id.as_ref().map_or(0, String::len)
        + m.created_at.len()
}

/// What a room's window knows.
#[derive(Debug, Default)]
pub struct RoomWindow {
    /// Contiguous in seq, ascending.
    msgs: VecDeque<Arc<Message>>,
    /// Ready: the window ends at `last` (the room's last seq as far as this window was told;
    /// `msgs` may be empty, for a room without messages). Not ready: `msgs` are the messages
    /// that arrived since a store read began, and nothing can be answered yet.
    ready: bool,
    last: i64,
    bytes: usize,
}

/// A new message did not follow the window's last one: the window no longer holds every
/// message up to the room's end and must go.
#[derive(Debug, PartialEq, Eq)]
pub struct Hole;

/// A page read from the store: contiguous, ascending, and (when `end` is set) the room's
/// newest messages at the time of the read, the room's last seq being `end`.
pub struct Page<'a> {
    pub items: &'a [Message],
    pub end: Option<i64>,
}

impl RoomWindow {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The seq the window ends at, once ready.
    pub fn last(&self) -> Option<i64> {
        self.ready.then_some(self.last)
    }

    /// The first seq held (`last + 1` when empty).
    fn first(&self) -> i64 {
        self.msgs.front().map_or(self.last + 1, |m| m.seq)
    }

    /// A committed message, in the room's seq order. One already held is ignored; one past a
    /// hole is refused. Keeps at most `cap` messages (dropping the oldest).
    pub fn push(&mut self, m: &Arc<Message>, cap: usize) -> Result<(), Hole> {
        match self
            .msgs
            .back()
            .map(|b| b.seq)
            .or(self.ready.then_some(self.last))
        {
            Some(last) if m.seq <= last => return Ok(()),
            Some(last) if m.seq != last + 1 => return Err(Hole),
            _ => {}
        }
        self.bytes += charge(m);
        self.msgs.push_back(m.clone());
        self.last = m.seq;
        self.trim(cap);
        Ok(())
    }

    fn trim(&mut self, cap: usize) {
        while self.msgs.len() > cap {
            if let Some(old) = self.msgs.pop_front() {
                self.bytes -= charge(&old);
            }
        }
    }

    /// Joins a store page to what is held. Not ready: the page must reach the room's end as of
    /// its read (`end`), and what arrived since the read began must follow it without a hole
    /// (else refused: the caller drops the window); the window is then ready. Ready: a page
    /// that touches the window widens it (older messages in front; messages committed but not
    /// yet announced at the back); one apart from it is ignored.
    pub fn fill(&mut self, page: Page<'_>, cap: usize) -> Result<(), Hole> {
        if page.items.windows(2).any(|w| w[1].seq != w[0].seq + 1) {
            return Err(Hole); // never expected of the store: trust neither
        }
        let (first, last) = match (page.items.first(), page.items.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            _ => match page.end {
                // an empty page at the room's end: the room ends there
                Some(end) => (end + 1, end),
                None => return Ok(()),
            },
        };
        if !self.ready {
            let Some(end) = page.end else { return Ok(()) };
            let start = self.msgs.front().map_or(end + 1, |m| m.seq);
            if start > end + 1 {
                return Err(Hole);
            }
            // what arrived since is the window; the page goes in front of it
            self.ready = true;
            self.last = self.msgs.back().map_or(end, |m| m.seq);
        } else if first > self.last + 1 || last + 1 < self.first() {
            // apart from the window (older, or past what was announced yet): nothing to add,
            // and the window itself stays whole
            return Ok(());
        }
        let held_first = self.first();
        for m in page.items.iter().rev().filter(|m| m.seq < held_first) {
            if self.msgs.len() >= cap {
                break; // only the newest `cap` are kept: older ones would be dropped at once
            }
            self.bytes += charge(m);
            self.msgs.push_front(Arc::new(m.clone()));
        }
        let last = self.last;
        for m in page.items.iter().filter(|m| m.seq > last) {
            self.push(&Arc::new(m.clone()), cap)?;
        }
        self.trim(cap);
        Ok(())
    }

    /// The newest `limit` messages, ascending, and whether older ones exist; `None` when the
    /// window holds fewer than that and does not reach the room's first message.
    pub fn newest(&self, limit: usize) -> Option<(Vec<Message>, bool)> {
        if !self.ready || (self.msgs.len() < limit && self.first() > 1) {
            return None;
        }
        let skip = self.msgs.len().saturating_sub(limit);
        let items: Vec<Message> = self.msgs.iter().skip(skip).map(|m| (**m).clone()).collect();
        let more = items.first().is_some_and(|m| m.seq > 1);
        Some((items, more))
    }

    /// The first `limit` messages after `since`, ascending, and whether more follow; `None`
    /// when the window does not reach back to `since + 1` or `since` is past its end.
    pub fn after(&self, since: i64, limit: usize) -> Option<(Vec<Message>, bool)> {
        if !self.ready || since + 1 < self.first() || since > self.last {
            return None;
        }
        let skip = usize::try_from(since + 1 - self.first()).ok()?;
        let items: Vec<Message> = self
            .msgs
            .iter()
            .skip(skip)
            .take(limit)
            .map(|m| (**m).clone())
            .collect();
        let more = since.saturating_add(limit as i64) < self.last;
        Some((items, more))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn msg(seq: i64) -> Message {
        Message {
            id: format!("m{seq}"),
            room: "r".into(),
            seq,
            user_id: "u".into(),
            content: format!("c{seq}"),
            client_id: None,
            created_at: "t".into(),
        }
    }

    fn page(seqs: std::ops::RangeInclusive<i64>) -> Vec<Message> {
        seqs.map(msg).collect()
    }

    fn seqs(items: &[Message]) -> Vec<i64> {
        items.iter().map(|m| m.seq).collect()
    }

    fn ready(seqs: std::ops::RangeInclusive<i64>, cap: usize) -> RoomWindow {
        let mut w = RoomWindow::default();
        let items = page(seqs.clone());
        let end = *seqs.end();
        w.fill(
            Page {
                items: &items,
                end: Some(end),
            },
            cap,
        )
        .unwrap();
        w
    }

    #[test]
    fn nothing_is_answered_before_a_page_reaching_the_end_arrives() {
        let mut w = RoomWindow::default();
        w.push(&Arc::new(msg(5)), 10).unwrap();
        assert_eq!(w.newest(1), None);
        assert_eq!(w.after(4, 1), None);
        // a page that does not say where the room ends starts nothing
        let items = page(1..=4);
        w.fill(
            Page {
                items: &items,
                end: None,
            },
            10,
        )
        .unwrap();
        assert!(!w.is_ready());
        w.fill(
            Page {
                items: &items,
                end: Some(4),
            },
            10,
        )
        .unwrap();
        let (got, more) = w.newest(50).unwrap();
        assert_eq!((seqs(&got), more), (vec![1, 2, 3, 4, 5], false));
    }

    #[test]
    fn a_page_and_what_arrived_since_must_meet() {
        let mut w = RoomWindow::default();
        w.push(&Arc::new(msg(7)), 10).unwrap(); // 6 was committed, neither read nor announced
        let items = page(1..=5);
        let filled = w.fill(
            Page {
                items: &items,
                end: Some(5),
            },
            10,
        );
        assert_eq!(filled, Err(Hole));
    }

    #[test]
    fn overlapping_arrivals_are_held_once() {
        let mut w = RoomWindow::default();
        for s in 4..=6 {
            w.push(&Arc::new(msg(s)), 10).unwrap();
        }
        let items = page(1..=5); // 4 and 5 read and announced both
        w.fill(
            Page {
                items: &items,
                end: Some(5),
            },
            10,
        )
        .unwrap();
        w.push(&Arc::new(msg(6)), 10).unwrap(); // a repeat
        let (got, _) = w.newest(50).unwrap();
        assert_eq!(seqs(&got), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(w.bytes(), got.iter().map(charge).sum::<usize>());
    }

    #[test]
    fn a_hole_after_the_end_is_refused() {
        let mut w = ready(1..=3, 10);
        assert_eq!(w.push(&Arc::new(msg(5)), 10), Err(Hole));
        w.push(&Arc::new(msg(3)), 10).unwrap();
        w.push(&Arc::new(msg(4)), 10).unwrap();
        assert_eq!(w.last(), Some(4));
    }

    #[test]
    fn the_count_is_bounded_and_short_windows_do_not_answer() {
        let mut w = ready(1..=3, 4);
        for s in 4..=10 {
            w.push(&Arc::new(msg(s)), 4).unwrap();
        }
        let (got, more) = w.newest(4).unwrap();
        assert_eq!((seqs(&got), more), (vec![7, 8, 9, 10], true));
        assert_eq!(w.newest(5), None, "five asked, four held, older ones exist");
        assert_eq!(w.bytes(), got.iter().map(charge).sum::<usize>());
        let (got, more) = w.after(6, 2).unwrap();
        assert_eq!((seqs(&got), more), (vec![7, 8], true));
        let (got, more) = w.after(8, 100).unwrap();
        assert_eq!((seqs(&got), more), (vec![9, 10], false));
        assert_eq!(w.after(10, 5).map(|(i, m)| (i.len(), m)), Some((0, false)));
        assert_eq!(w.after(5, 2), None, "older than the window");
        assert_eq!(
            w.after(11, 2),
            None,
            "past the end: the store decides (reset)"
        );
    }

    #[test]
    fn an_empty_room_is_answered_and_a_page_widens_a_ready_window() {
        let mut w = RoomWindow::default();
        w.fill(
            Page {
                items: &[],
                end: Some(0),
            },
            10,
        )
        .unwrap();
        assert_eq!(w.newest(50), Some((Vec::new(), false)));
        assert_eq!(w.after(0, 100), Some((Vec::new(), false)));

        // a sync's page started the window at 8; a join's page reaches further back
        let mut w = ready(8..=9, 10);
        assert_eq!(w.newest(5), None);
        let items = page(3..=9);
        w.fill(
            Page {
                items: &items,
                end: Some(9),
            },
            10,
        )
        .unwrap();
        let (got, more) = w.newest(5).unwrap();
        assert_eq!((seqs(&got), more), (vec![5, 6, 7, 8, 9], true));
        let far = page(1..=2);
        let filled = w.fill(
            Page {
                items: &far,
                end: None,
            },
            10,
        );
        assert_eq!(filled, Ok(()), "touching pages widen the window");
        let apart = page(20..=21);
        let ignored = w.fill(
            Page {
                items: &apart,
                end: None,
            },
            10,
        );
        assert_eq!(
            ignored,
            Ok(()),
            "a page apart from a ready window leaves it as it is"
        );
        assert_eq!(w.newest(9).map(|(i, _)| seqs(&i)), Some((1..=9).collect()));
    }
}
