use serde_json::{Value, json};

use super::*;

fn state(room: &str, key: &str, value: Value, version: i64) -> State {
    State {
        room: room.into(),
        key: key.into(),
        value,
        version,
        updated_by: "u1".into(),
        updated_at: "2026-12-06T00:00:00.000Z".into(),
    }
}

fn cache(max_bytes: usize) -> StateCache {
    StateCache::new(true, max_bytes, Telemetry::detached())
}

/// What the cache answers for `room`: (key, value) pairs and the seq.
fn read(c: &StateCache, room: &str) -> Option<(Vec<(String, Value)>, i64)> {
    c.snapshot(room).map(|(states, seq)| {
        let kv = states.into_iter().map(|s| (s.key, s.value)).collect();
        (kv, seq)
    })
}

fn start(c: &StateCache, room: &str, states: &[State], seq: i64) {
    let fill = c.begin_fill(room).expect("the cache is on");
    c.fill(fill, states, seq);
}

fn write(c: &StateCache, room: &str, key: &str, value: Value, seq: i64) {
    c.begin_write(room).done(&state(room, key, value, seq), seq);
}

#[test]
fn writes_after_the_first_read_are_applied_in_order() {
    let c = cache(1 << 20);
    write(&c, "a", "x", json!(0), 1); // nobody read the room: not kept
    assert!(c.inner.lock().rooms.is_empty());
    assert_eq!(read(&c, "a"), None);
    start(&c, "a", &[state("a", "x", json!(0), 1)], 1);
    write(&c, "a", "y", json!(2), 2);
    write(&c, "a", "x", json!(3), 3);
    write(&c, "a", "y", Value::Null, 4); // a deletion
    let expected = vec![("x".to_owned(), json!(3))];
    assert_eq!(read(&c, "a"), Some((expected, 4)));
    let bytes = slot_charge("a") + charge(&state("a", "x", json!(3), 3));
    assert_eq!(c.inner.lock().rooms.bytes(), bytes);
}

#[test]
fn a_write_that_finishes_first_is_held_until_the_earlier_one_settles() {
    let c = cache(1 << 20);
    start(&c, "a", &[], 0);
    let first = c.begin_write("a");
    let second = c.begin_write("a");
    second.done(&state("a", "k", json!("second"), 2), 2);
    // seq 1 committed but is not known yet: the writer of seq 2 must not read around it
    assert_eq!(read(&c, "a"), None);
    first.done(&state("a", "k", json!("first"), 1), 1);
    assert_eq!(
        read(&c, "a"),
        Some((vec![("k".into(), json!("second"))], 2))
    );
}

#[test]
fn a_write_whose_outcome_is_lost_drops_the_room() {
    let c = cache(1 << 20);
    start(&c, "a", &[], 0);
    let lost = c.begin_write("a");
    write(&c, "a", "k", json!(1), 2);
    drop(lost); // an error, or the request went away: seq 1 may have committed
    assert_eq!(read(&c, "a"), None);
    assert!(c.inner.lock().rooms.is_empty());
    assert_eq!(c.inner.lock().rooms.bytes(), 0);
}

#[test]
fn after_a_lost_outcome_the_room_is_not_kept_until_a_write_commits() {
    let c = cache(1 << 20);
    start(&c, "a", &[], 0);
    drop(c.begin_write("a")); // its COMMIT may still land (seq 1)
    // a read meanwhile may see seq 0 and then the database move to 1: nothing is kept
    assert!(c.begin_fill("a").is_none());
    assert_eq!(read(&c, "a"), None);
    // the next commit of the room (seq 2) comes after the lost write's end, whatever it was
    write(&c, "a", "k", json!(2), 2);
    assert!(c.inner.lock().uncertain.is_empty());
    start(&c, "a", &[state("a", "k", json!(2), 2)], 2);
    assert_eq!(read(&c, "a"), Some((vec![("k".into(), json!(2))], 2)));
}

#[test]
fn a_change_that_changed_nothing_but_saw_newer_state_drops_the_snapshot() {
    let c = cache(1 << 20);
    start(&c, "a", &[state("a", "k", json!(1), 1)], 1);
    // a conflict that agrees with the snapshot keeps it
    let same = state("a", "k", json!(1), 1);
    c.begin_write("a").unchanged("k", Some(&same));
    assert!(read(&c, "a").is_some());
    // seq 2 (k at version 2) committed, not settled yet: a conflict shows it
    let newer = state("a", "k", json!(2), 2);
    c.begin_write("a").unchanged("k", Some(&newer));
    assert_eq!(read(&c, "a"), None);
    // a delete of nothing on a key the snapshot holds: the same
    start(&c, "a", &[state("a", "k", json!(2), 2)], 2);
    c.begin_write("a").unchanged("k", None);
    assert_eq!(read(&c, "a"), None);
    // ... and on a key it does not hold: kept
    start(&c, "a", &[state("a", "k", json!(2), 2)], 2);
    c.begin_write("a").unchanged("gone", None);
    assert!(read(&c, "a").is_some());
}

#[test]
fn writes_during_the_first_read_are_applied_after_it_or_ignored() {
    let c = cache(1 << 20);
    let fill = c.begin_fill("a").unwrap();
    write(&c, "a", "k", json!("in the read"), 1); // committed before the read's snapshot
    write(&c, "a", "k", json!("after it"), 2); // after it
    assert_eq!(read(&c, "a"), None, "no snapshot yet");
    c.fill(fill, &[state("a", "k", json!("in the read"), 1)], 1);
    assert_eq!(
        read(&c, "a"),
        Some((vec![("k".into(), json!("after it"))], 2))
    );
    assert!(c.inner.lock().rooms.get("a").unwrap().held.is_empty());
}

#[test]
fn a_late_read_cannot_bring_back_a_dropped_room_nor_roll_one_back() {
    let c = cache(1 << 20);
    let late = c.begin_fill("a").unwrap();
    drop(c.begin_write("a")); // dropped while the read ran
    c.fill(late, &[], 0);
    assert_eq!(read(&c, "a"), None);
    write(&c, "a", "k", json!(1), 1); // the room is certain again
    let late = c.begin_fill("a").unwrap();
    c.inner.lock().rooms.remove("a"); // evicted while the read ran
    let again = c.begin_fill("a").unwrap();
    c.fill(late, &[], 0);
    assert_eq!(
        read(&c, "a"),
        None,
        "a read of an evicted slot is not taken"
    );
    c.fill(again, &[state("a", "k", json!(1), 1)], 1);
    assert!(read(&c, "a").is_some());
    c.inner.lock().rooms.remove("a");
    // an older read finishing after a newer one does not roll the room back
    let old = c.begin_fill("a").unwrap();
    let new = c.begin_fill("a").unwrap();
    c.fill(new, &[state("a", "k", json!(2), 2)], 2);
    c.fill(old, &[state("a", "k", json!(1), 1)], 1);
    assert_eq!(read(&c, "a"), Some((vec![("k".into(), json!(2))], 2)));
}

#[test]
fn past_the_budget_the_least_recently_read_room_goes() {
    let one = slot_charge("a") + charge(&state("a", "k", json!("v"), 1));
    let c = cache(2 * one);
    start(&c, "a", &[state("a", "k", json!("v"), 1)], 1);
    start(&c, "b", &[state("b", "k", json!("v"), 1)], 1);
    assert!(read(&c, "a").is_some()); // a is now the most recently read
    start(&c, "c", &[state("c", "k", json!("v"), 1)], 1);
    assert!(read(&c, "a").is_some());
    assert_eq!(read(&c, "b"), None);
    assert!(read(&c, "c").is_some());
    assert_eq!(c.inner.lock().rooms.bytes(), 2 * one);
}

#[test]
fn off_with_several_writers_or_no_budget() {
    for c in [
        StateCache::new(false, 1 << 20, Telemetry::detached()),
        StateCache::new(true, 0, Telemetry::detached()),
    ] {
        assert!(c.begin_fill("a").is_none());
        write(&c, "a", "k", json!(1), 1);
        drop(c.begin_write("a"));
        assert_eq!(read(&c, "a"), None);
        assert!(c.inner.lock().rooms.is_empty());
    }
}
