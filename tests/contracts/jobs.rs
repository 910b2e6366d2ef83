//! The job queue and outbox contract (`src/store/jobs.rs`, `src/store/webhooks.rs`), on SQLite
//! and, with `TSUNAGI_TEST_PG`, on PostgreSQL: concurrent claims from several handles take each
//! job once; a lease that runs out gives the job to another worker and fences the first one's
//! outcome; dead jobs are retried; changes enqueue their deliveries in their own transaction,
//! and a change that rolls back enqueues nothing.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use tsunagi::domain::{RoomId, StateKey};
use tsunagi::store::jobs::{JobQuery, Outcome};
use tsunagi::store::webhooks::{DELIVERY_JOB, NewWebhook};
use tsunagi::store::{NewMessage, NewRoom, Store, StoreError};

#[allow(unused_imports)]
use crate::store::{Postgres, Sqlite, StoreFactory};

on_every_engine!(
    concurrent_claims_take_each_job_once,
    a_lapsed_lease_passes_the_job_on_and_fences_the_old_attempt,
    dead_jobs_are_retried_and_done_ones_purged,
    changes_enqueue_their_deliveries_and_rollbacks_none,
);

/// One claim of at most one job.
async fn claim_one(
    store: &dyn Store,
    kinds: &[&str],
    now: chrono::DateTime<Utc>,
    lease_until: chrono::DateTime<Utc>,
) -> Option<tsunagi::store::jobs::Job> {
    store.claim(kinds, now, lease_until, 1).await.unwrap().pop()
}

async fn all_jobs(store: &dyn Store, kind: &str) -> Vec<tsunagi::store::jobs::Job> {
    store
        .jobs(&JobQuery {
            kind: Some(kind.into()),
            limit: 10_000,
            ..JobQuery::default()
        })
        .await
        .unwrap()
}

async fn concurrent_claims_take_each_job_once(f: &dyn StoreFactory) {
    let handles: Vec<Arc<dyn Store>> = vec![f.open().await, f.open().await, f.open().await];
    for i in 0..120 {
        handles[0]
            .enqueue("test", &json!({ "n": i }), Utc::now())
            .await
            .unwrap();
    }
    let workers = (0..6).map(|w| {
        let store = handles[w % handles.len()].clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let now = Utc::now();
                // batches of up to 7 (the runner claims as many as it has free slots)
                let jobs = store
                    .claim(&["test"], now, now + Duration::seconds(60), 7)
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    return mine;
                }
                assert!(jobs.len() <= 7);
                for job in jobs {
                    assert_eq!(job.state, "running");
                    assert_eq!(job.attempts, 1);
                    assert!(store.finish(&job.id, 1, &Outcome::Done).await.unwrap());
                    mine.push(job.id);
                }
            }
        })
    });
    let mut seen = HashSet::new();
    let mut total = 0;
    for w in workers {
        for id in w.await.unwrap() {
            total += 1;
            seen.insert(id);
        }
    }
    assert_eq!((total, seen.len()), (120, 120), "each job claimed once");
    let jobs = all_jobs(&*handles[1], "test").await;
    assert!(jobs.iter().all(|j| j.state == "done" && j.attempts == 1));
    // other kinds are not taken
    handles[0]
        .enqueue("other", &json!({}), Utc::now())
        .await
        .unwrap();
    let now = Utc::now();
    assert!(claim_one(&*handles[0], &["test"], now, now).await.is_none());
}

async fn a_lapsed_lease_passes_the_job_on_and_fences_the_old_attempt(f: &dyn StoreFactory) {
    let store = f.open().await;
    let queued = store
        .enqueue("lease", &json!({}), Utc::now())
        .await
        .unwrap();
    let t0 = Utc::now();
    let first = claim_one(&*store, &["lease"], t0, t0 + Duration::seconds(10))
        .await
        .unwrap();
    assert_eq!((first.id.clone(), first.attempts), (queued.id.clone(), 1));
    // leased: nobody else gets it, until the lease has run out
    let soon = t0 + Duration::seconds(5);
    assert!(
        claim_one(&*store, &["lease"], soon, soon + Duration::seconds(10))
            .await
            .is_none()
    );
    assert!(
        store
            .renew(&first.id, 1, t0 + Duration::seconds(20))
            .await
            .unwrap()
    );
    let later = t0 + Duration::seconds(15);
    assert!(claim_one(&*store, &["lease"], later, later).await.is_none());
    let lapsed = t0 + Duration::seconds(21);
    let second = claim_one(&*store, &["lease"], lapsed, lapsed + Duration::seconds(10))
        .await
        .expect("taken up again");
    assert_eq!((second.id.clone(), second.attempts), (queued.id.clone(), 2));
    // the first worker's outcome and renewals no longer count
    assert!(
        !store
            .renew(&first.id, 1, lapsed + Duration::seconds(60))
            .await
            .unwrap()
    );
    assert!(!store.finish(&first.id, 1, &Outcome::Done).await.unwrap());
    let retry_at = Utc::now() + Duration::seconds(30);
    let outcome = Outcome::Retry {
        run_at: retry_at,
        error: "receiver down".into(),
    };
    assert!(store.finish(&second.id, 2, &outcome).await.unwrap());
    let job = store.job(&queued.id).await.unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.attempts), ("queued", 2));
    assert_eq!(job.last_error.as_deref(), Some("receiver down"));
    // not due before run_at
    let now = Utc::now();
    assert!(claim_one(&*store, &["lease"], now, now).await.is_none());
    let due = retry_at + Duration::seconds(1);
    let third = claim_one(&*store, &["lease"], due, due).await.unwrap();
    assert_eq!(third.attempts, 3);
}

async fn dead_jobs_are_retried_and_done_ones_purged(f: &dyn StoreFactory) {
    let store = f.open().await;
    let a = store
        .enqueue("x", &json!({ "a": 1 }), Utc::now())
        .await
        .unwrap();
    let now = Utc::now();
    let claimed = claim_one(&*store, &["x"], now, now + Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(claimed.payload, json!({ "a": 1 }));
    let dead = Outcome::Dead {
        error: "410 Gone".into(),
    };
    assert!(store.finish(&a.id, 1, &dead).await.unwrap());
    assert!(store.retry("no-such-job").await.unwrap().is_none());
    let retried = store
        .retry(&a.id)
        .await
        .unwrap()
        .expect("a dead job is retried");
    assert_eq!((retried.state.as_str(), retried.attempts), ("queued", 0));
    assert!(
        store.retry(&a.id).await.unwrap().is_none(),
        "only dead jobs"
    );
    let now = Utc::now();
    let again = claim_one(&*store, &["x"], now, now + Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(again.attempts, 1);
    assert!(store.finish(&a.id, 1, &Outcome::Done).await.unwrap());
    let counts = store.job_counts().await.unwrap();
    assert!(
        counts.contains(&("x".into(), "done".into(), 1)),
        "{counts:?}"
    );
    assert_eq!(
        store
            .purge(Utc::now() - Duration::seconds(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .purge(Utc::now() + Duration::seconds(1))
            .await
            .unwrap(),
        1
    );
    assert!(store.job(&a.id).await.unwrap().is_none());
}

async fn changes_enqueue_their_deliveries_and_rollbacks_none(f: &dyn StoreFactory) {
    let store = f.open().await;
    let room = |id: &str| RoomId::parse(id).unwrap();
    let new_room = |id: &str| NewRoom {
        id: room(id),
        name: id.into(),
        private: false,
        owner_id: "owner".into(),
        metadata: None,
    };
    store.create_room(new_room("hooked")).await.unwrap();
    store.create_room(new_room("quiet")).await.unwrap();
    assert!(
        all_jobs(&*store, DELIVERY_JOB).await.is_empty(),
        "no webhooks, no jobs"
    );
    let hook = |events: &[&str], rooms: Option<&[&str]>| NewWebhook {
        url: "https://example.test/h".into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        rooms: rooms.map(|r| r.iter().map(|x| x.to_string()).collect()),
        secret: "s".into(),
        created_by: "owner".into(),
    };
    let messages = store
        .create_webhook(hook(&["message", "state"], Some(&["hooked"])))
        .await
        .unwrap();
    let rooms = store
        .create_webhook(hook(&["room.created"], None))
        .await
        .unwrap();
    let msg = |r: &str, c: &str| NewMessage {
        room: room(r),
        user_id: "u".into(),
        content: c.into(),
        client_id: Some(c.into()),
    };
    let (out, _) = store
        .append(&[
            msg("hooked", "one"),
            msg("quiet", "two"),
            msg("hooked", "three"),
        ])
        .await
        .unwrap();
    // a batch with an unknown room rolls back whole: no message, no delivery
    let failed = store
        .append(&[msg("hooked", "four"), msg("missing", "five")])
        .await;
    assert!(matches!(failed, Err(StoreError::NotFound(_))));
    // a retry takes no seq and enqueues nothing
    store.append(&[msg("hooked", "one")]).await.unwrap();
    store
        .write_state(
            &room("hooked"),
            &StateKey::parse("k").unwrap(),
            Some(&json!(1)),
            None,
            "u",
        )
        .await
        .unwrap();
    store.create_room(new_room("later")).await.unwrap();
    assert!(store.create_room(new_room("later")).await.is_err());
    let jobs = all_jobs(&*store, DELIVERY_JOB).await;
    let mut got: Vec<(String, String, serde_json::Value)> = jobs
        .iter()
        .map(|j| {
            (
                j.payload["webhook"].as_str().unwrap().to_owned(),
                j.payload["event"].as_str().unwrap().to_owned(),
                j.payload["data"].clone(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.1.cmp(&b.1).then(a.2.to_string().cmp(&b.2.to_string())));
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0].1, "message");
    assert_eq!(got[0].2, serde_json::to_value(&out[0].message).unwrap());
    assert_eq!(got[1].2, serde_json::to_value(&out[2].message).unwrap());
    assert!(got[..2].iter().all(|g| g.0 == messages.id));
    assert_eq!(
        (got[2].0.as_str(), got[2].1.as_str()),
        (rooms.id.as_str(), "room.created")
    );
    assert_eq!(got[2].2["id"], "later");
    assert_eq!(
        (got[3].0.as_str(), got[3].1.as_str()),
        (messages.id.as_str(), "state")
    );
    assert_eq!(got[3].2["key"], "k");
    assert!(jobs.iter().all(|j| j.state == "queued" && j.attempts == 0));
    // deleted hooks get nothing more
    assert!(store.delete_webhook(&messages.id).await.unwrap());
    assert!(!store.delete_webhook(&messages.id).await.unwrap());
    store.append(&[msg("hooked", "six")]).await.unwrap();
    assert_eq!(all_jobs(&*store, DELIVERY_JOB).await.len(), 4);
    let listed = store.webhooks(None).await.unwrap();
    assert_eq!(
        listed.iter().map(|w| w.id.clone()).collect::<Vec<_>>(),
        vec![rooms.id.clone()]
    );
    assert_eq!(listed[0].secret, "s");
    assert_eq!(store.webhooks(Some("someone")).await.unwrap().len(), 0);
}
