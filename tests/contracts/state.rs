//! The [`StateStore`] contract (its doc comment in `src/store/state.rs`), run on SQLite and,
//! with `TSUNAGI_TEST_PG`, on PostgreSQL: conditional writes under concurrency from several
//! handles (several tsunagi processes), versions across deletes, one `state_seq` per success.

use std::sync::Arc;

use serde_json::json;
use tsunagi::domain::{RoomId, StateKey};
use tsunagi::store::state::StateWrite;
use tsunagi::store::{NewRoom, Store, StoreError};

#[allow(unused_imports)]
use crate::store::{Postgres, Sqlite, StoreFactory};

on_every_engine!(
    fifty_writers_of_one_version_make_one_winner,
    versions_advance_and_restart_after_a_delete,
    a_room_snapshot_is_every_key_at_one_seq,
);

fn room(id: &str) -> RoomId {
    RoomId::parse(id).unwrap()
}

fn key(k: &str) -> StateKey {
    StateKey::parse(k).unwrap()
}

async fn create_room(store: &dyn Store, id: &str) {
    store
        .create_room(NewRoom {
            id: room(id),
            name: id.into(),
            private: false,
            owner_id: "owner".into(),
            metadata: None,
        })
        .await
        .unwrap();
}

async fn fifty_writers_of_one_version_make_one_winner(f: &dyn StoreFactory) {
    let mut handles: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..5 {
        handles.push(f.open().await);
    }
    create_room(&*handles[0], "game").await;
    let first = handles[0]
        .write_state(
            &room("game"),
            &key("board"),
            Some(&json!({ "turn": 0 })),
            Some(0),
            "owner",
        )
        .await
        .unwrap();
    assert!(matches!(first, StateWrite::Done { ref state, seq: 1 } if state.version == 1));
    let writers = (0..50).map(|i| {
        let store = handles[i % handles.len()].clone();
        tokio::spawn(async move {
            store
                .write_state(
                    &room("game"),
                    &key("board"),
                    Some(&json!({ "turn": i })),
                    Some(1),
                    &format!("player{i}"),
                )
                .await
        })
    });
    let results: Vec<Result<StateWrite, StoreError>> = futures::future::join_all(writers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let winners: Vec<_> = results
        .iter()
        .filter_map(|r| match r {
            Ok(StateWrite::Done { state, seq }) => Some((state.clone(), *seq)),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let (winner, seq) = &winners[0];
    assert_eq!((winner.version, *seq), (2, 2));
    for r in &results {
        match r {
            Ok(StateWrite::Done { .. }) => {}
            Ok(StateWrite::Conflict(Some(current))) => assert_eq!(current, winner),
            other => panic!("a loser must see the winner as current: {other:?}"),
        }
    }
}

async fn versions_advance_and_restart_after_a_delete(f: &dyn StoreFactory) {
    let store = f.open().await;
    create_room(&*store, "r").await;
    let (r, k) = (room("r"), key("k.1"));
    let done = |w: StateWrite| match w {
        StateWrite::Done { state, seq } => (state.version, seq, state.value),
        other => panic!("expected a write, got {other:?}"),
    };
    assert_eq!(
        done(
            store
                .write_state(&r, &k, Some(&json!(1)), None, "u")
                .await
                .unwrap()
        ),
        (1, 1, json!(1))
    );
    assert_eq!(
        done(
            store
                .write_state(&r, &k, Some(&json!(2)), Some(1), "u")
                .await
                .unwrap()
        ),
        (2, 2, json!(2))
    );
    // a conflict writes nothing and takes no seq
    let stale = store
        .write_state(&r, &k, Some(&json!(3)), Some(1), "u")
        .await
        .unwrap();
    assert!(matches!(stale, StateWrite::Conflict(Some(ref s)) if s.version == 2));
    let exists = store
        .write_state(&r, &k, Some(&json!(3)), Some(0), "u")
        .await
        .unwrap();
    assert!(matches!(exists, StateWrite::Conflict(Some(_))));
    let wrong = store.write_state(&r, &k, None, Some(7), "u").await.unwrap();
    assert!(matches!(wrong, StateWrite::Conflict(Some(_))));
    assert_eq!(
        done(store.write_state(&r, &k, None, Some(2), "u").await.unwrap()),
        (3, 3, json!(null))
    );
    assert_eq!(
        store.write_state(&r, &k, None, None, "u").await.unwrap(),
        StateWrite::Missing
    );
    let absent = store
        .write_state(&r, &k, Some(&json!(4)), Some(2), "u")
        .await
        .unwrap();
    assert_eq!(absent, StateWrite::Conflict(None));
    assert_eq!(
        done(
            store
                .write_state(&r, &k, Some(&json!(5)), Some(0), "u")
                .await
                .unwrap()
        ),
        (1, 4, json!(5))
    );
    let missing_room = store
        .write_state(&room("nope"), &k, Some(&json!(1)), None, "u")
        .await;
    assert!(
        matches!(missing_room, Err(StoreError::NotFound(_))),
        "{missing_room:?}"
    );
}

async fn a_room_snapshot_is_every_key_at_one_seq(f: &dyn StoreFactory) {
    let store = f.open().await;
    create_room(&*store, "s").await;
    assert_eq!(
        store.room_state(&room("s")).await.unwrap(),
        Some((vec![], 0))
    );
    for k in ["b", "a", "C", "a"] {
        store
            .write_state(&room("s"), &key(k), Some(&json!({ "k": k })), None, "u")
            .await
            .unwrap();
    }
    let (states, seq) = store.room_state(&room("s")).await.unwrap().unwrap();
    let keys: Vec<(&str, i64)> = states.iter().map(|s| (s.key.as_str(), s.version)).collect();
    // by key, byte order (upper case first), on both stores
    assert_eq!(keys, vec![("C", 1), ("a", 2), ("b", 1)]);
    assert_eq!(seq, 4);
    assert_eq!(store.room_state(&room("nope")).await.unwrap(), None);
}
