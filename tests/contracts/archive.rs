//! The archive contract (`src/store/archive.rs`: `ArchiveStore` and `ColdStore`), run on SQLite
//! (cold storage: `archive.db` beside the primary) and, with `TSUNAGI_TEST_PG`, on PostgreSQL
//! (a month-partitioned table in the primary): history reads every message once across hot and
//! cold, at every stage of a move (a crash between the cold commit and the hot one included);
//! retried client_ids of archived messages; archivers, appenders and readers all at once.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tsunagi::domain::RoomId;
use tsunagi::services::archive::Archiver;
use tsunagi::store::{HistoryQuery, NewMessage, NewRoom, ReadFrom, Store};
use tsunagi::telemetry::Telemetry;

#[allow(unused_imports)]
use crate::store::{Postgres, Sqlite, StoreFactory};

on_every_engine!(
    history_reads_each_message_once_at_every_stage_of_a_move,
    a_retried_client_id_of_an_archived_message_returns_it,
    archivers_appenders_and_readers_at_once_lose_and_repeat_nothing,
    only_messages_older_than_the_cutoff_move,
);

fn room(id: &str) -> RoomId {
    RoomId::parse(id).unwrap()
}

async fn create_room(store: &dyn Store, id: &str) -> String {
    let (info, _) = store
        .create_room(NewRoom {
            id: room(id),
            name: id.into(),
            private: false,
            owner_id: "owner".into(),
            metadata: None,
        })
        .await
        .unwrap();
    info.epoch
}

async fn append_n(store: &dyn Store, id: &str, n: usize, tag: &str) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<NewMessage> = chunk
            .iter()
            .map(|i| NewMessage {
                room: room(id),
                user_id: format!("u{}", i % 3),
                content: format!("{tag}-{i}"),
                client_id: Some(format!("{tag}-{i}")),
            })
            .collect();
        store.append(&batch).await.unwrap();
    }
}

/// Every seq of the room, read forward in pages of `limit` (as `sync` does).
async fn forward(store: &dyn Store, id: &str, limit: u32) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let q = HistoryQuery {
            after_seq: Some(after),
            before_seq: None,
            limit,
        };
        let page = store
            .history(&room(id), q, ReadFrom::Primary)
            .await
            .unwrap();
        seqs.extend(page.items.iter().map(|m| m.seq));
        match page.items.last() {
            Some(m) if page.more => after = m.seq,
            _ => return seqs,
        }
    }
}

/// Every seq of the room, read backwards from the end in pages of `limit` (as `GET …/messages`
/// with `before_seq` does), returned ascending.
async fn backward(store: &dyn Store, id: &str, limit: u32) -> Vec<i64> {
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let q = HistoryQuery {
            after_seq: None,
            before_seq: before,
            limit,
        };
        let page = store
            .history(&room(id), q, ReadFrom::Primary)
            .await
            .unwrap();
        let first = page.items.first().map(|m| m.seq);
        pages.push(page.items.iter().map(|m| m.seq).collect::<Vec<_>>());
        match first {
            Some(s) if page.more => before = Some(s),
            _ => break,
        }
    }
    pages.into_iter().rev().flatten().collect()
}

fn one_to(n: i64) -> Vec<i64> {
    (1..=n).collect()
}

async fn assert_complete(store: &dyn Store, id: &str, n: i64) {
    for limit in [1, 7, 50, 500] {
        assert_eq!(
            forward(store, id, limit).await,
            one_to(n),
            "forward, pages of {limit}"
        );
        assert_eq!(
            backward(store, id, limit).await,
            one_to(n),
            "backward, pages of {limit}"
        );
    }
    // a range across the marker, both cursors
    let q = HistoryQuery {
        after_seq: Some(3),
        before_seq: Some(n),
        limit: 500,
    };
    let page = store
        .history(&room(id), q, ReadFrom::Primary)
        .await
        .unwrap();
    assert_eq!(
        page.items.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (4..n).take(500).collect::<Vec<_>>()
    );
}

async fn history_reads_each_message_once_at_every_stage_of_a_move(f: &dyn StoreFactory) {
    let store = f.open().await;
    let epoch = create_room(&*store, "long").await;
    append_n(&*store, "long", 250, "m").await;
    assert_complete(&*store, "long", 250).await;

    // one batch moved: copied, then the marker advanced and the hot rows deleted
    let rows = store.archive_batch("long", 0, 100).await.unwrap();
    assert_eq!(rows.first().map(|m| m.seq), Some(1));
    assert_eq!(rows.len(), 100);
    store.cold().insert(&epoch, &rows).await.unwrap();
    assert_complete(&*store, "long", 250).await; // copied, not yet moved: read hot only
    assert!(store.advance_archive("long", 0, 100).await.unwrap());
    assert_complete(&*store, "long", 250).await;

    // a crash after the cold commit: copies above the marker are invisible
    let rows = store.archive_batch("long", 100, 60).await.unwrap();
    assert_eq!(rows.first().map(|m| m.seq), Some(101));
    store.cold().insert(&epoch, &rows).await.unwrap();
    assert_complete(&*store, "long", 250).await;
    // … and the next pass copies them again (no change) and moves them
    store.cold().insert(&epoch, &rows).await.unwrap();
    // a stale archiver (marker read before the move) changes nothing
    assert!(!store.advance_archive("long", 0, 160).await.unwrap());
    assert!(store.advance_archive("long", 100, 160).await.unwrap());
    assert_complete(&*store, "long", 250).await;
    let stats = store.archive_stats().await.unwrap();
    assert_eq!((stats.hot_messages, stats.cold_messages), (90, 160));
    assert!(stats.oldest_hot.is_some());

    // the content comes back as it was sent
    let q = HistoryQuery {
        after_seq: Some(41),
        before_seq: Some(43),
        limit: 10,
    };
    let page = store
        .history(&room("long"), q, ReadFrom::Primary)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].content, "m-41");
    assert_eq!(page.items[0].client_id.as_deref(), Some("m-41"));
    assert_eq!(page.items[0].user_id, "u2");

    // everything moved, and new messages after it
    let rows = store.archive_batch("long", 160, 1000).await.unwrap();
    store.cold().insert(&epoch, &rows).await.unwrap();
    assert!(store.advance_archive("long", 160, 250).await.unwrap());
    assert_complete(&*store, "long", 250).await;
    append_n(&*store, "long", 5, "late").await;
    assert_complete(&*store, "long", 255).await;
    let stats = store.archive_stats().await.unwrap();
    assert_eq!((stats.hot_messages, stats.cold_messages), (5, 250));
}

async fn a_retried_client_id_of_an_archived_message_returns_it(f: &dyn StoreFactory) {
    let store = f.open().await;
    let epoch = create_room(&*store, "retry").await;
    append_n(&*store, "retry", 10, "k").await;
    let rows = store.archive_batch("retry", 0, 6).await.unwrap();
    store.cold().insert(&epoch, &rows).await.unwrap();
    assert!(store.advance_archive("retry", 0, 6).await.unwrap());
    // k-4 (seq 5) is cold, k-8 (seq 9) hot; a new key takes the next seq; in one batch
    let again = |cid: &str, user: &str| NewMessage {
        room: room("retry"),
        user_id: user.into(),
        content: "a retry with other content".into(),
        client_id: Some(cid.into()),
    };
    let (out, _) = store
        .append(&[again("k-4", "u1"), again("k-8", "u2"), again("k-new", "u1")])
        .await
        .unwrap();
    assert_eq!(
        out.iter()
            .map(|a| (a.message.seq, a.created, a.message.content.clone()))
            .collect::<Vec<_>>(),
        vec![
            (5, false, "k-4".to_owned()),
            (9, false, "k-8".to_owned()),
            (11, true, "a retry with other content".to_owned()),
        ]
    );
    // another user's key is another message
    let (out, _) = store.append(&[again("k-4", "u2")]).await.unwrap();
    assert_eq!((out[0].message.seq, out[0].created), (12, true));
    assert_complete(&*store, "retry", 12).await;
}

async fn archivers_appenders_and_readers_at_once_lose_and_repeat_nothing(f: &dyn StoreFactory) {
    let handles: Vec<Arc<dyn Store>> = vec![f.open().await, f.open().await, f.open().await];
    create_room(&*handles[0], "busy").await;
    create_room(&*handles[0], "calm").await;
    append_n(&*handles[0], "calm", 120, "c").await;
    let stop = CancellationToken::new();
    let telemetry = Telemetry::new(0);
    // two archivers on two handles (two instances), small batches, moving everything
    let archivers: Vec<_> = handles[..2]
        .iter()
        .map(|h| {
            let archiver = Archiver::new(h.clone(), 17, Arc::new(|| false), &telemetry);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut moved = 0;
                while !stop.is_cancelled() {
                    moved += archiver
                        .pass(Duration::ZERO, &stop, &|_| {})
                        .await
                        .unwrap()
                        .moved;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                moved
            })
        })
        .collect();
    // four appenders, then readers checking every page is gap-free from 0
    let appenders: Vec<_> = (0..4)
        .map(|a| {
            let store = handles[a % handles.len()].clone();
            tokio::spawn(async move {
                for round in 0..15 {
                    append_n(&*store, "busy", 20, &format!("a{a}r{round}")).await;
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let store = handles[r].clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut reads = 0;
                while !stop.is_cancelled() {
                    let seqs = forward(&*store, "busy", 23).await;
                    assert_eq!(seqs, one_to(seqs.len() as i64), "a forward read had a hole");
                    let back = backward(&*store, "calm", 31).await;
                    assert_eq!(back, one_to(120), "a backward read of calm changed");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for a in appenders {
        a.await.unwrap();
    }
    // let the archivers catch up with the last appends, then stop everything
    let done = tokio::time::Instant::now() + Duration::from_secs(30);
    while handles[0].archive_stats().await.unwrap().hot_messages > 0 {
        assert!(
            tokio::time::Instant::now() < done,
            "the archivers did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let mut moved = 0;
    for a in archivers {
        moved += a.await.unwrap();
    }
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    assert_eq!(moved, 1200 + 120, "each message moved once");
    let stats = handles[2].archive_stats().await.unwrap();
    assert_eq!((stats.hot_messages, stats.cold_messages), (0, 1320));
    assert_eq!(stats.oldest_hot, None);
    for h in &handles {
        assert_complete(&**h, "busy", 1200).await;
        assert_complete(&**h, "calm", 120).await;
    }
}

async fn only_messages_older_than_the_cutoff_move(f: &dyn StoreFactory) {
    let store = f.open().await;
    create_room(&*store, "old").await;
    create_room(&*store, "new").await;
    append_n(&*store, "old", 30, "o").await;
    let archiver = Archiver::new(store.clone(), 1000, Arc::new(|| false), &Telemetry::new(0));
    let stop = CancellationToken::new();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    append_n(&*store, "old", 5, "o2").await;
    append_n(&*store, "new", 5, "n").await;
    assert_eq!(archiver.count(Duration::from_secs(1)).await.unwrap(), 30);
    let report = archiver
        .pass(Duration::from_secs(1), &stop, &|_| {})
        .await
        .unwrap();
    assert_eq!((report.moved, report.rooms), (30, 1));
    let stats = store.archive_stats().await.unwrap();
    assert_eq!((stats.hot_messages, stats.cold_messages), (10, 30));
    // nothing is old enough for a second pass
    let again = archiver
        .pass(Duration::from_secs(1), &stop, &|_| {})
        .await
        .unwrap();
    assert_eq!(again.moved, 0);
    assert_complete(&*store, "old", 35).await;
    assert_complete(&*store, "new", 5).await;
}
