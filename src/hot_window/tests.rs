use super::room::charge;
use super::room::tests::msg;
use super::*;

fn in_room(room: &str, seq: i64) -> Message {
    Message {
        room: room.into(),
        ..msg(seq)
    }
}

fn seqs(a: Option<Answer>) -> Option<Vec<i64>> {
    a.map(|(items, _)| items.iter().map(|m| m.seq).collect())
}

fn window(source: Source, max_messages: usize, max_bytes: usize) -> HotWindow {
    HotWindow::new(source, max_messages, max_bytes, Telemetry::detached())
}

/// Starts `room`'s window from a store page of seqs 1..=last.
fn start(w: &HotWindow, room: &str, last: i64) {
    let fill = w.begin_fill(room).expect("a fill may start");
    let page: Vec<Message> = (1..=last).map(|s| in_room(room, s)).collect();
    w.fill(fill, &page, Some(last));
}

fn commit(w: &HotWindow, room: &str, seq: i64) {
    w.committed(&Arc::new(in_room(room, seq)));
}

#[test]
fn commits_after_the_start_are_answered_and_the_count_is_bounded() {
    let w = window(Source::Committer, 5, 1 << 20);
    commit(&w, "a", 1); // nobody read the room: not kept
    assert_eq!(w.inner.lock().rooms.len(), 0);
    start(&w, "a", 3);
    for s in 4..=9 {
        commit(&w, "a", s);
    }
    assert_eq!(seqs(w.newest("a", 5, None)), Some(vec![5, 6, 7, 8, 9]));
    assert_eq!(w.newest("a", 6, None), None, "six asked, five held");
    assert_eq!(seqs(w.after("a", 6, 100, None)), Some(vec![7, 8, 9]));
    let held: usize = (5..=9).map(|s| charge(&in_room("a", s))).sum();
    assert_eq!(w.inner.lock().rooms.bytes(), held);
}

#[test]
fn a_hole_drops_the_window_and_a_late_page_cannot_bring_it_back() {
    let w = window(Source::Committer, 50, 1 << 20);
    start(&w, "a", 2);
    let late = w.begin_fill("a").unwrap(); // a read begins...
    commit(&w, "a", 4); // ...3 never reached the window
    assert_eq!(w.newest("a", 2, None), None);
    assert_eq!(w.inner.lock().rooms.bytes(), 0);
    // a new start meanwhile, then the late read's page arrives: it may predate the new start
    let fresh = w.begin_fill("a").unwrap();
    w.fill(
        late,
        &(1..=4).map(|s| in_room("a", s)).collect::<Vec<_>>(),
        Some(4),
    );
    assert_eq!(w.newest("a", 1, None), None, "the late page was not taken");
    commit(&w, "a", 5);
    let page: Vec<Message> = (1..=4).map(|s| in_room("a", s)).collect();
    w.fill(fresh, &page, Some(4));
    assert_eq!(seqs(w.newest("a", 50, None)), Some(vec![1, 2, 3, 4, 5]));
}

#[test]
fn the_byte_budget_drops_the_least_recently_read_rooms() {
    let one = charge(&in_room("a", 1));
    let w = window(Source::Committer, 50, one * 5);
    start(&w, "a", 2);
    start(&w, "b", 2);
    assert!(w.newest("a", 2, None).is_some()); // a is now the more recently read
    start(&w, "c", 2); // 6 messages: over the budget
    assert!(
        w.newest("b", 2, None).is_none(),
        "b was read least recently"
    );
    assert!(w.newest("a", 2, None).is_some());
    assert!(w.newest("c", 2, None).is_some());
    assert!(w.inner.lock().rooms.bytes() <= one * 5);
    assert_eq!(w.counts.evictions.load(Ordering::Relaxed), 1);
    assert_eq!(
        w.counts.hits[Read::Join as usize].load(Ordering::Relaxed),
        3
    );
    assert_eq!(
        w.counts.misses[Read::Join as usize].load(Ordering::Relaxed),
        1
    );
}

#[test]
fn fed_by_the_feed_a_window_answers_only_when_it_reaches_the_primary() {
    let w = window(Source::Feed, 50, 1 << 20);
    assert!(
        w.begin_fill("a").is_none(),
        "not watched: nothing to keep it current"
    );
    w.watch("a");
    start(&w, "a", 3);
    commit(&w, "a", 4); // the committer does not feed this window
    assert_eq!(seqs(w.newest("a", 3, Some(3))), Some(vec![1, 2, 3]));
    assert_eq!(
        w.newest("a", 3, Some(4)),
        None,
        "the feed has not brought 4 yet"
    );
    w.released(&Arc::new(in_room("a", 4)));
    assert_eq!(seqs(w.after("a", 2, 10, Some(4))), Some(vec![3, 4]));
    w.resync("a");
    assert!(!w.holds("a"));
    start(&w, "a", 4); // still watched: a read starts it again
    assert!(w.holds("a"));
    w.unwatch("a");
    assert!(!w.holds("a"));
    assert!(w.begin_fill("a").is_none());
    assert_eq!(w.inner.lock().rooms.bytes(), 0);
}

#[test]
fn an_empty_room_and_a_window_turned_off() {
    let w = window(Source::Committer, 50, 1 << 20);
    let fill = w.begin_fill("e").unwrap();
    w.fill(fill, &[], Some(0));
    assert_eq!(w.newest("e", 50, None), Some((Vec::new(), false)));
    commit(&w, "e", 1);
    assert_eq!(seqs(w.after("e", 0, 100, None)), Some(vec![1]));

    let off = window(Source::Committer, 0, 1 << 20);
    assert!(off.begin_fill("e").is_none());
    assert!(off.newest("e", 50, None).is_none());
}
