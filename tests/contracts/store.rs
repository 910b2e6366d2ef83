//! The [`Store`] contract (its doc comment in `src/store/mod.rs`, and `UserStore`'s), written
//! once and run on every engine: `SqliteStore` on a temp file, and `PgStore` on a fresh
//! PostgreSQL database when `TSUNAGI_TEST_PG` is set.
//!
//! Each suite takes a [`StoreFactory`]: one fresh, migrated database, on which every `open`
//! gives another handle (another tsunagi process on the same data).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tsunagi::domain::{RoomId, RoomInfo};
use tsunagi::store::postgres::{PgSettings, PgStore};
use tsunagi::store::sqlite::{SqliteSettings, SqliteStore};
use tsunagi::store::users::NewUser;
use tsunagi::store::{
    Appended, HistoryQuery, NewMessage, NewRoom, ReadFrom, Store, StoreError, pg_settings,
    sqlite_settings,
};

use crate::helpers;

/// A fresh database of one engine; each `open` is one more handle on it.
pub trait StoreFactory: Sync {
    fn open(&self) -> BoxFuture<'_, Arc<dyn Store>>;
}

/// Every handle a factory opened, closed at the end of a passing test.
#[derive(Default)]
struct Opened(Mutex<Vec<Arc<dyn Store>>>);

impl Opened {
    fn keep(&self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        self.0.lock().unwrap().push(store.clone());
        store
    }

    async fn close_all(&self) {
        let all = std::mem::take(&mut *self.0.lock().unwrap());
        for store in all {
            store.close().await;
        }
    }
}

pub struct Sqlite {
    settings: SqliteSettings,
    opened: Opened,
    _dir: tempfile::TempDir,
}

impl Sqlite {
    pub async fn fresh() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/contract.db", dir.path().display());
        let settings = sqlite_settings(&helpers::config(&url)).unwrap();
        tsunagi::store::sqlite::migrate(&settings).await.unwrap();
        Sqlite {
            settings,
            opened: Opened::default(),
            _dir: dir,
        }
    }

    pub async fn close(self) {
        self.opened.close_all().await;
    }
}

impl StoreFactory for Sqlite {
    fn open(&self) -> BoxFuture<'_, Arc<dyn Store>> {
        Box::pin(async move {
            let store = SqliteStore::open(&self.settings).await.unwrap();
            self.opened.keep(Arc::new(store))
        })
    }
}

pub struct Postgres {
    base: String,
    database: String,
    settings: PgSettings,
    opened: Opened,
}

impl Postgres {
    /// `None` when `TSUNAGI_TEST_PG` is not set; panics when it is set and unreachable.
    pub async fn fresh() -> Option<Self> {
        let Some(base) = helpers::test_pg() else {
            eprintln!("TSUNAGI_TEST_PG is not set: the PostgreSQL engine is not run");
            return None;
        };
        let database = helpers::create_pg_database(&base).await;
        let settings = pg_settings(&helpers::config(&format!("{base}/{database}")));
        tsunagi::store::postgres::migrate(&settings).await.unwrap();
        Some(Postgres {
            base,
            database,
            settings,
            opened: Opened::default(),
        })
    }

    pub async fn close(self) {
        self.opened.close_all().await;
        helpers::drop_pg_database(&self.base, &self.database).await;
    }

    /// The server (`postgres://user@host:port`) and the database's name.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn database(&self) -> &str {
        &self.database
    }
}

impl StoreFactory for Postgres {
    fn open(&self) -> BoxFuture<'_, Arc<dyn Store>> {
        Box::pin(async move {
            let store = PgStore::open(&self.settings).await.unwrap();
            self.opened.keep(Arc::new(store))
        })
    }
}

/// Declares each suite once per engine: `store::sqlite::<suite>` and `store::postgres::<suite>`.
macro_rules! on_every_engine {
    ($($suite:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $suite() {
                    let engine = super::Sqlite::fresh().await;
                    super::$suite(&engine).await;
                    engine.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $suite() {
                    let Some(engine) = super::Postgres::fresh().await else { return };
                    super::$suite(&engine).await;
                    engine.close().await;
                }
            )*
        }
    };
}

on_every_engine!(
    seqs_follow_each_room_in_batch_order,
    a_known_client_id_takes_no_seq,
    concurrent_appends_leave_no_gap,
    concurrent_retries_store_one_message,
    history_pages_both_ways,
    unknown_room_is_not_found_and_writes_nothing,
    creating_a_room_twice_conflicts,
    membership_is_per_room_and_user,
    rooms_are_listed_to_who_may_see_them,
    users_are_unique_by_name_and_email,
);

fn room_id(id: &str) -> RoomId {
    RoomId::parse(id).unwrap()
}

fn msg(room: &str, user: &str, content: &str, client_id: Option<&str>) -> NewMessage {
    NewMessage {
        room: room_id(room),
        user_id: user.into(),
        content: content.into(),
        client_id: client_id.map(Into::into),
    }
}

async fn create_room(store: &dyn Store, id: &str, private: bool, owner: &str) -> RoomInfo {
    let room = NewRoom {
        id: room_id(id),
        name: format!("room {id}"),
        private,
        owner_id: owner.into(),
        metadata: None,
    };
    store.create_room(room).await.unwrap().0
}

/// (room, seq, created) of each answer, in batch order.
fn summary(out: &[Appended]) -> Vec<(String, i64, bool)> {
    out.iter()
        .map(|a| (a.message.room.clone(), a.message.seq, a.created))
        .collect()
}

fn expect(rows: &[(&str, i64, bool)]) -> Vec<(String, i64, bool)> {
    rows.iter()
        .map(|(r, s, c)| (r.to_string(), *s, *c))
        .collect()
}

async fn last_seq(store: &dyn Store, id: &str) -> i64 {
    let info = store.room(&room_id(id), ReadFrom::Primary).await.unwrap();
    info.expect("the room exists").last_seq
}

/// Seqs of one history page, and its `more`.
async fn page(
    store: &dyn Store,
    room: &str,
    after_seq: Option<i64>,
    before_seq: Option<i64>,
    limit: u32,
) -> (Vec<i64>, bool) {
    let q = HistoryQuery {
        after_seq,
        before_seq,
        limit,
    };
    let page = store
        .history(&room_id(room), q, ReadFrom::Primary)
        .await
        .unwrap();
    (page.items.iter().map(|m| m.seq).collect(), page.more)
}

async fn seqs_follow_each_room_in_batch_order(engine: &impl StoreFactory) {
    let store = engine.open().await;
    create_room(&*store, "a", false, "owner").await;
    create_room(&*store, "b", false, "owner").await;
    let batch = [
        msg("a", "u", "a1", None),
        msg("b", "u", "b1", None),
        msg("a", "v", "a2", None),
        msg("a", "u", "a3", None),
    ];
    let (out, _) = store.append(&batch).await.unwrap();
    let want = [
        ("a", 1, true),
        ("b", 1, true),
        ("a", 2, true),
        ("a", 3, true),
    ];
    assert_eq!(summary(&out), expect(&want));
    for (answer, sent) in out.iter().zip(&batch) {
        assert_eq!(answer.message.content, sent.content);
        assert_eq!(answer.message.user_id, sent.user_id);
    }
    let (out, _) = store
        .append(&[msg("b", "u", "b2", None), msg("a", "u", "a4", None)])
        .await
        .unwrap();
    assert_eq!(summary(&out), expect(&[("b", 2, true), ("a", 4, true)]));
    assert_eq!(last_seq(&*store, "a").await, 4);
    assert_eq!(last_seq(&*store, "b").await, 2);
    let q = HistoryQuery {
        after_seq: Some(0),
        before_seq: None,
        limit: 10,
    };
    let history = store
        .history(&room_id("a"), q, ReadFrom::Primary)
        .await
        .unwrap();
    let stored: Vec<(i64, &str)> = history
        .items
        .iter()
        .map(|m| (m.seq, m.content.as_str()))
        .collect();
    assert_eq!(stored, [(1, "a1"), (2, "a2"), (3, "a3"), (4, "a4")]);
}

async fn a_known_client_id_takes_no_seq(engine: &impl StoreFactory) {
    let store = engine.open().await;
    create_room(&*store, "a", false, "owner").await;
    create_room(&*store, "b", false, "owner").await;
    let (out, _) = store
        .append(&[msg("a", "u", "one", Some("k1"))])
        .await
        .unwrap();
    let first = out[0].message.clone();
    assert_eq!(summary(&out), expect(&[("a", 1, true)]));

    // A retry in a later batch, even with other content, answers with the stored message.
    let (out, _) = store
        .append(&[msg("a", "u", "one, edited", Some("k1"))])
        .await
        .unwrap();
    assert!(!out[0].created);
    assert_eq!(out[0].message, first);

    let batch = [
        msg("a", "u", "two", Some("k2")),
        msg("a", "u", "two again", Some("k2")), // retried within the batch
        msg("a", "v", "v's k1", Some("k1")),    // the key is per user
        msg("a", "u", "no key", None),
        msg("a", "u", "one again", Some("k1")), // stored earlier
        msg("b", "u", "b's k1", Some("k1")),    // and per room
    ];
    let (out, _) = store.append(&batch).await.unwrap();
    let want = [
        ("a", 2, true),
        ("a", 2, false),
        ("a", 3, true),
        ("a", 4, true),
        ("a", 1, false),
        ("b", 1, true),
    ];
    assert_eq!(summary(&out), expect(&want));
    assert_eq!(out[1].message, out[0].message);
    assert_eq!(out[4].message, first);
    assert_eq!(last_seq(&*store, "a").await, 4);
    assert_eq!(
        page(&*store, "a", Some(0), None, 10).await,
        (vec![1, 2, 3, 4], false)
    );
    let (out, _) = store.append(&[msg("a", "u", "next", None)]).await.unwrap();
    assert_eq!(summary(&out), expect(&[("a", 5, true)]), "no seq was taken");
}

async fn concurrent_appends_leave_no_gap(engine: &impl StoreFactory) {
    const TASKS: usize = 8;
    const BATCHES: usize = 6;
    // Two handles: appends from "two processes" as well as from many tasks.
    let stores = [engine.open().await, engine.open().await];
    create_room(&*stores[0], "busy", false, "owner").await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = stores[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for b in 0..BATCHES {
                let batch: Vec<NewMessage> = (0..=(t + b) % 3)
                    .map(|i| msg("busy", &format!("u{t}"), &format!("{t}-{b}-{i}"), None))
                    .collect();
                let (out, _) = store.append(&batch).await.unwrap();
                let seqs: Vec<i64> = out.iter().map(|a| a.message.seq).collect();
                assert!(
                    seqs.is_sorted(),
                    "a batch's seqs follow its order: {seqs:?}"
                );
                for (a, sent) in out.iter().zip(&batch) {
                    assert!(a.created);
                    assert_eq!(a.message.content, sent.content);
                    got.push((a.message.seq, a.message.content.clone()));
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let seqs: Vec<i64> = all.iter().map(|(s, _)| *s).collect();
    let total = all.len() as i64;
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "1..{total}, no gap, no repeat"
    );
    assert_eq!(last_seq(&*stores[1], "busy").await, total);
    let q = HistoryQuery {
        after_seq: Some(0),
        before_seq: None,
        limit: total as u32 + 1,
    };
    let history = stores[1]
        .history(&room_id("busy"), q, ReadFrom::Primary)
        .await
        .unwrap();
    let stored: Vec<(i64, String)> = history
        .items
        .into_iter()
        .map(|m| (m.seq, m.content))
        .collect();
    assert_eq!(stored, all, "what was acked is what is stored");
}

async fn concurrent_retries_store_one_message(engine: &impl StoreFactory) {
    let stores = [engine.open().await, engine.open().await];
    create_room(&*stores[0], "retry", false, "owner").await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = stores[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let sent = msg("retry", "u", &format!("attempt {t}"), Some("same"));
            store.append(&[sent]).await.unwrap().0.remove(0)
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(
        answers.iter().filter(|a| a.created).count(),
        1,
        "one is stored"
    );
    let ids: BTreeSet<&str> = answers.iter().map(|a| a.message.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "every retry answers with the stored message");
    assert_eq!(
        page(&*stores[0], "retry", Some(0), None, 10).await,
        (vec![1], false)
    );
}

async fn history_pages_both_ways(engine: &impl StoreFactory) {
    let store = engine.open().await;
    create_room(&*store, "h", false, "owner").await;
    create_room(&*store, "empty", false, "owner").await;
    let batch: Vec<NewMessage> = (1..=10)
        .map(|i| msg("h", "u", &format!("m{i}"), None))
        .collect();
    store.append(&batch).await.unwrap();
    let s = &*store;
    // Without after_seq: the newest `limit` (before `before_seq`), ascending; `more`: older exist.
    assert_eq!(page(s, "h", None, None, 3).await, (vec![8, 9, 10], true));
    assert_eq!(page(s, "h", None, Some(8), 3).await, (vec![5, 6, 7], true));
    assert_eq!(page(s, "h", None, Some(4), 3).await, (vec![1, 2, 3], false));
    assert_eq!(page(s, "h", None, Some(1), 3).await, (vec![], false));
    assert_eq!(
        page(s, "h", None, None, 10).await,
        ((1..=10).collect(), false)
    );
    // With after_seq: the oldest `limit` after it; `more`: newer exist.
    assert_eq!(
        page(s, "h", Some(0), None, 4).await,
        (vec![1, 2, 3, 4], true)
    );
    assert_eq!(
        page(s, "h", Some(7), None, 3).await,
        (vec![8, 9, 10], false)
    );
    assert_eq!(page(s, "h", Some(8), None, 4).await, (vec![9, 10], false));
    assert_eq!(page(s, "h", Some(10), None, 4).await, (vec![], false));
    // Both bounds are exclusive.
    assert_eq!(
        page(s, "h", Some(2), Some(6), 10).await,
        (vec![3, 4, 5], false)
    );
    assert_eq!(
        page(s, "h", Some(2), Some(9), 3).await,
        (vec![3, 4, 5], true)
    );
    assert_eq!(page(s, "empty", None, None, 5).await, (vec![], false));
    assert_eq!(page(s, "empty", Some(0), None, 5).await, (vec![], false));
}

async fn unknown_room_is_not_found_and_writes_nothing(engine: &impl StoreFactory) {
    let store = engine.open().await;
    create_room(&*store, "here", false, "owner").await;
    let nowhere = room_id("nowhere");
    assert_eq!(store.room(&nowhere, ReadFrom::Primary).await.unwrap(), None);
    let only = store.append(&[msg("nowhere", "u", "x", None)]).await;
    assert!(matches!(only, Err(StoreError::NotFound(_))), "{only:?}");
    // One unknown room fails the whole batch: the known room's message is not written.
    let mixed = store
        .append(&[
            msg("here", "u", "x", Some("k")),
            msg("nowhere", "u", "y", None),
        ])
        .await;
    assert!(matches!(mixed, Err(StoreError::NotFound(_))), "{mixed:?}");
    assert_eq!(last_seq(&*store, "here").await, 0);
    assert_eq!(page(&*store, "here", None, None, 10).await, (vec![], false));
    let (out, _) = store
        .append(&[msg("here", "u", "x", Some("k"))])
        .await
        .unwrap();
    assert_eq!(
        summary(&out),
        expect(&[("here", 1, true)]),
        "the key was not kept"
    );
    // Members can only be added to a room that exists (the error's kind is not specified).
    assert!(store.add_member(&nowhere, "u", "owner").await.is_err());
    assert!(!store.is_member(&nowhere, "u").await.unwrap());
}

async fn creating_a_room_twice_conflicts(engine: &impl StoreFactory) {
    let store = engine.open().await;
    let room = NewRoom {
        id: room_id("r"),
        name: "Room R".into(),
        private: true,
        owner_id: "alice".into(),
        metadata: Some(serde_json::json!({ "topic": "tests" })),
    };
    let (info, _) = store.create_room(room).await.unwrap();
    assert_eq!(
        (info.id.as_str(), info.name.as_str(), info.private),
        ("r", "Room R", true)
    );
    assert_eq!((info.owner_id.as_str(), info.last_seq), ("alice", 0));
    assert!(!info.epoch.is_empty());
    assert_eq!(info.metadata, Some(serde_json::json!({ "topic": "tests" })));
    let again = NewRoom {
        id: room_id("r"),
        name: "Another R".into(),
        private: false,
        owner_id: "bob".into(),
        metadata: None,
    };
    let conflict = store.create_room(again).await;
    assert!(
        matches!(conflict, Err(StoreError::Conflict(_))),
        "{conflict:?}"
    );
    let stored = store.room(&room_id("r"), ReadFrom::Primary).await.unwrap();
    assert_eq!(
        stored,
        Some(info.clone()),
        "the first room is kept as it was"
    );
    let other = create_room(&*store, "s", false, "alice").await;
    assert_ne!(
        other.epoch, info.epoch,
        "every room has an epoch of its own"
    );
}

async fn membership_is_per_room_and_user(engine: &impl StoreFactory) {
    let store = engine.open().await;
    create_room(&*store, "p", true, "owner").await;
    create_room(&*store, "q", true, "owner").await;
    let (p, q) = (room_id("p"), room_id("q"));
    assert!(!store.is_member(&p, "m").await.unwrap());
    store.add_member(&p, "m", "owner").await.unwrap();
    assert!(store.is_member(&p, "m").await.unwrap());
    store.add_member(&p, "m", "owner").await.unwrap(); // adding again is no error
    assert!(store.is_member(&p, "m").await.unwrap());
    assert!(!store.is_member(&p, "other").await.unwrap());
    assert!(!store.is_member(&q, "m").await.unwrap());
    // Another handle (process) sees the membership at once: is_member decides access.
    let elsewhere = engine.open().await;
    assert!(elsewhere.is_member(&p, "m").await.unwrap());
}

async fn rooms_are_listed_to_who_may_see_them(engine: &impl StoreFactory) {
    let store = engine.open().await;
    create_room(&*store, "a-public", false, "owner").await;
    create_room(&*store, "b-private", true, "owner").await;
    create_room(&*store, "c-private", true, "owner").await;
    create_room(&*store, "d-public", false, "owner").await;
    store
        .add_member(&room_id("c-private"), "member", "owner")
        .await
        .unwrap();
    let list = async |viewer: &str, admin: bool, cursor: Option<&str>, limit: u32| {
        let rooms = store
            .list_rooms(viewer, admin, cursor, limit, ReadFrom::Primary)
            .await
            .unwrap();
        rooms.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(
        list("stranger", false, None, 10).await,
        ["a-public", "d-public"]
    );
    assert_eq!(
        list("member", false, None, 10).await,
        ["a-public", "c-private", "d-public"]
    );
    let all = ["a-public", "b-private", "c-private", "d-public"];
    assert_eq!(list("stranger", true, None, 10).await, all);
    // The owner sees their private rooms (the trait's doc does not say so; both engines do).
    assert_eq!(list("owner", false, None, 10).await, all);
    // Keyset paging by id.
    assert_eq!(
        list("stranger", true, None, 2).await,
        ["a-public", "b-private"]
    );
    assert_eq!(
        list("stranger", true, Some("b-private"), 2).await,
        ["c-private", "d-public"]
    );
    assert_eq!(
        list("member", false, Some("a-public"), 1).await,
        ["c-private"]
    );
    assert!(list("stranger", true, Some("d-public"), 2).await.is_empty());
}

fn new_user(id: &str, username: &str, email: &str) -> NewUser {
    NewUser {
        id: id.into(),
        username: username.into(),
        email: email.into(),
        password_hash: format!("hash of {id}"),
        display_name: format!("{username}'s name"),
    }
}

async fn users_are_unique_by_name_and_email(engine: &impl StoreFactory) {
    let store = engine.open().await;
    let (alice, _) = store
        .create_user(new_user("id-alice", "Alice", "alice@example.com"))
        .await
        .unwrap();
    assert_eq!((alice.role.as_str(), alice.version), ("user", 1));
    assert_eq!(store.user("id-alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user("id-nobody").await.unwrap(), None);
    for login in ["Alice", "alice", "ALICE", "alice@example.com"] {
        let found = store.user_by_login(login).await.unwrap();
        assert_eq!(
            found.map(|u| u.id),
            Some("id-alice".into()),
            "login {login}"
        );
    }
    assert_eq!(store.user_by_login("bob").await.unwrap(), None);
    assert_eq!(store.user_by_login("bob@example.com").await.unwrap(), None);

    let same_name = store
        .create_user(new_user("id-2", "aLICE", "other@example.com"))
        .await;
    match same_name {
        Err(StoreError::Conflict(what)) => assert!(what.contains("username"), "{what}"),
        other => panic!("a username in another case: {other:?}"),
    }
    let same_email = store
        .create_user(new_user("id-3", "carol", "alice@example.com"))
        .await;
    match same_email {
        Err(StoreError::Conflict(what)) => assert!(what.contains("email"), "{what}"),
        other => panic!("the same email: {other:?}"),
    }
    assert_eq!(
        store.user("id-2").await.unwrap(),
        None,
        "nothing was written"
    );
    assert_eq!(
        store.user("id-3").await.unwrap(),
        None,
        "nothing was written"
    );
    store
        .create_user(new_user("id-bob", "bob", "bob@example.com"))
        .await
        .unwrap();
    let bob = store.user_by_login("BOB").await.unwrap();
    assert_eq!(bob.map(|u| u.id), Some("id-bob".into()));
}
