//! The [`SensorStore`] contract (its doc comment in `src/store/sensors.rs`), run on SQLite and,
//! with `TSUNAGI_TEST_PG`, on PostgreSQL: buckets equal a reference computed here for every
//! bucket length, a later reading of a (sensor, ts) wins, retention removes what is old (on
//! PostgreSQL by dropping whole day partitions, made ahead), and the hot queries use the key.

use std::collections::BTreeMap;

use tsunagi::domain::{Reading, SensorId};
use tsunagi::store::Store;
use tsunagi::store::sensors::{DAY_MS, NewSensor, TimeRange};

#[allow(unused_imports)]
use crate::store::{Postgres, Sqlite, StoreFactory};

on_every_engine!(
    series_equal_a_reference_for_every_bucket,
    ranges_are_ascending_and_newest_first,
    retention_removes_old_readings_and_days_come_back,
    sensors_are_listed_to_who_may_read_them,
);

const BUCKETS: [i64; 8] = [
    1_000, 10_000, 60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000,
];

fn sid(id: &str) -> SensorId {
    SensorId::parse(id).unwrap()
}

async fn create(store: &dyn Store, id: &str, owner: &str, private: bool) {
    store
        .create_sensor(NewSensor {
            id: sid(id),
            name: id.into(),
            private,
            owner_id: owner.into(),
            metadata: None,
        })
        .await
        .unwrap();
}

fn reading(sensor: &str, ts: i64, value: f64) -> Reading {
    Reading {
        sensor: sensor.into(),
        ts,
        value,
        tags: Default::default(),
    }
}

/// A small deterministic generator (the same readings on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

async fn series_equal_a_reference_for_every_bucket(f: &dyn StoreFactory) {
    let store = f.open().await;
    create(&*store, "probe.1", "owner", false).await;
    create(&*store, "other", "owner", false).await;
    let start = 1_764_806_400_000; // a whole day, 2025-12-04T00:00Z
    let mut rng = Lcg(7);
    let mut reference: BTreeMap<i64, f64> = BTreeMap::new();
    for round in 0..3 {
        let mut batch: BTreeMap<i64, Reading> = BTreeMap::new();
        for _ in 0..1500 {
            let ts = start + (rng.next() % (3 * DAY_MS as u64)) as i64;
            let value = (rng.next() % 20_000) as f64 / 100.0 - 50.0 + f64::from(round);
            batch.insert(ts, reading("probe.1", ts, value));
        }
        for r in batch.values() {
            reference.insert(r.ts, r.value); // later rounds win
        }
        let rows: Vec<Reading> = batch.into_values().collect();
        store.write_readings(&rows).await.unwrap();
    }
    // another sensor's readings in the same buckets must not count
    store
        .write_readings(&[reading("other", start + 5, 1e6)])
        .await
        .unwrap();
    let range = TimeRange {
        from: start + 1234,
        to: start + 2 * DAY_MS + 777,
    };
    for len in BUCKETS {
        let mut expected: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
        for (&ts, &v) in reference.range(range.from..range.to) {
            expected.entry(ts - ts % len).or_default().push((ts, v));
        }
        let got = store.series(&sid("probe.1"), range, len).await.unwrap();
        assert_eq!(got.len(), expected.len(), "bucket {len}: bucket count");
        for (b, (t, rows)) in got.iter().zip(&expected) {
            let values: Vec<f64> = rows.iter().map(|(_, v)| *v).collect();
            let sum: f64 = values.iter().sum();
            assert_eq!(b.t, *t, "bucket {len}");
            assert_eq!(b.count, rows.len() as i64, "bucket {len} at {t}");
            assert!(
                close(b.sum, sum),
                "bucket {len} at {t}: sum {} vs {sum}",
                b.sum
            );
            assert!(
                close(b.avg, sum / values.len() as f64),
                "bucket {len} at {t}: avg"
            );
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!((b.min, b.max), (min, max), "bucket {len} at {t}");
            let last = rows.iter().max_by_key(|(ts, _)| *ts).unwrap().1;
            assert_eq!(b.last, last, "bucket {len} at {t}: last");
        }
    }
}

async fn ranges_are_ascending_and_newest_first(f: &dyn StoreFactory) {
    let store = f.open().await;
    create(&*store, "s", "owner", false).await;
    let rows: Vec<Reading> = (0..100)
        .map(|i| reading("s", 1_000 * i, i as f64))
        .collect();
    store.write_readings(&rows).await.unwrap();
    let page = store
        .readings(
            &sid("s"),
            TimeRange {
                from: 10_000,
                to: 20_000,
            },
            1000,
        )
        .await
        .unwrap();
    let ts: Vec<i64> = page.iter().map(|r| r.ts).collect();
    assert_eq!(ts, (10..20).map(|i| i * 1000).collect::<Vec<_>>());
    let limited = store
        .readings(
            &sid("s"),
            TimeRange {
                from: 0,
                to: i64::MAX,
            },
            5,
        )
        .await
        .unwrap();
    assert_eq!(limited.last().map(|r| r.ts), Some(4000));
    let newest = store.newest_readings(&sid("s"), 3).await.unwrap();
    let ts: Vec<i64> = newest.iter().map(|r| r.ts).collect();
    assert_eq!(ts, vec![99_000, 98_000, 97_000]);
    let info = store.sensor(&sid("s")).await.unwrap().unwrap();
    assert_eq!(
        info.last_ts,
        Some(99_000),
        "last_ts follows the written readings"
    );
}

async fn retention_removes_old_readings_and_days_come_back(f: &dyn StoreFactory) {
    let (writer, janitor) = (f.open().await, f.open().await);
    create(&*writer, "s", "owner", false).await;
    let now = tsunagi::domain::now_ms();
    let old = now - 40 * DAY_MS;
    let kept = now - 10 * DAY_MS;
    writer
        .write_readings(&[
            reading("s", old, 1.0),
            reading("s", kept, 2.0),
            reading("s", now, 3.0),
        ])
        .await
        .unwrap();
    let done = janitor
        .maintain_sensors(now, Some(now - 30 * DAY_MS))
        .await
        .unwrap();
    assert!(done.removed >= 1, "{done:?}");
    let all = TimeRange {
        from: 0,
        to: i64::MAX,
    };
    let left: Vec<i64> = writer
        .readings(&sid("s"), all, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.ts)
        .collect();
    assert_eq!(left, vec![kept, now]);
    if done.partitions > 0 {
        // PostgreSQL: today and the days ahead are ready; the 40-day-old day is gone
        assert!(done.partitions >= 4, "{done:?}");
    }
    // the writer still believes the old day's partition exists: it must make it again
    writer
        .write_readings(&[reading("s", old + 1, 4.0)])
        .await
        .unwrap();
    let back = writer.readings(&sid("s"), all, 10).await.unwrap();
    assert_eq!(back.first().map(|r| (r.ts, r.value)), Some((old + 1, 4.0)));
}

async fn sensors_are_listed_to_who_may_read_them(f: &dyn StoreFactory) {
    let store = f.open().await;
    create(&*store, "a.public", "ann", false).await;
    create(&*store, "b.private", "ann", true).await;
    create(&*store, "c.private", "bob", true).await;
    let again = store
        .create_sensor(NewSensor {
            id: sid("a.public"),
            name: "x".into(),
            private: false,
            owner_id: "bob".into(),
            metadata: None,
        })
        .await;
    assert!(
        matches!(again, Err(tsunagi::store::StoreError::Conflict(_))),
        "{again:?}"
    );
    let ids = |v: Vec<tsunagi::domain::SensorInfo>| -> Vec<String> {
        v.into_iter().map(|s| s.id).collect()
    };
    let ann = ids(store.list_sensors("ann", false, None, 10).await.unwrap());
    assert_eq!(ann, vec!["a.public", "b.private"]);
    let bob = ids(store.list_sensors("bob", false, None, 10).await.unwrap());
    assert_eq!(bob, vec!["a.public", "c.private"]);
    let admin = ids(store
        .list_sensors("root", true, Some("a.public"), 10)
        .await
        .unwrap());
    assert_eq!(admin, vec!["b.private", "c.private"]);
}

/// On a million readings, the series and range queries read the (sensor, ts) key of the day
/// partitions they touch only (PostgreSQL; skipped without `TSUNAGI_TEST_PG`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_plans_use_the_key_on_a_million_readings() {
    use sqlx::Connection;
    let Some(engine) = Postgres::fresh().await else {
        return;
    };
    let store = engine.open().await;
    let now = tsunagi::domain::now_ms();
    let today = now - now % DAY_MS;
    // partitions for the three days before today, today and the days ahead
    store.maintain_sensors(now, None).await.unwrap();
    let first = today - 3 * DAY_MS;
    let seed: Vec<Reading> = (0..3)
        .map(|d| reading("seed", first + d * DAY_MS, 0.0))
        .collect();
    store.write_readings(&seed).await.unwrap();
    let url = format!("{}/{}", helpers_base(&engine), engine.database());
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    // 100 sensors x 10 000 readings, one every 25 s: about 2.9 days from `first`
    sqlx::query(
        "INSERT INTO readings (sensor, ts, value, tags) \
         SELECT 's' || (i % 100), $1 + (i / 100) * 25000, random(), '{}' \
         FROM generate_series(0, 999999) AS i",
    )
    .bind(first)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("ANALYZE readings")
        .execute(&mut conn)
        .await
        .unwrap();
    let explain = |sql: &str| format!("EXPLAIN (FORMAT TEXT) {sql}");
    let day_two = first + DAY_MS;
    let plans = [
        (
            "series",
            sqlx::query(sqlx::AssertSqlSafe(explain(
                tsunagi::store::postgres::sensors::SERIES,
            )))
            .bind("s7")
            .bind(day_two)
            .bind(day_two + 6 * 3_600_000)
            .bind(60_000i64),
        ),
        (
            "range",
            sqlx::query(sqlx::AssertSqlSafe(explain(
                tsunagi::store::postgres::sensors::READINGS_RANGE,
            )))
            .bind("s7")
            .bind(day_two)
            .bind(day_two + 3_600_000)
            .bind(501i64),
        ),
    ];
    for (name, q) in plans {
        let rows = q.fetch_all(&mut conn).await.unwrap();
        let plan: Vec<String> = rows.iter().map(|r| sqlx::Row::get(r, 0)).collect();
        let text = plan.join("\n");
        assert!(!text.contains("Seq Scan"), "{name} scans a table:\n{text}");
        assert!(text.contains("Index"), "{name} uses no index:\n{text}");
        let other_day = tsunagi::store::postgres::sensors::partition_name(first);
        assert!(
            !text.contains(&other_day),
            "{name} reads a partition outside its range:\n{text}"
        );
    }
    drop(conn);
    engine.close().await;
}

fn helpers_base(engine: &Postgres) -> String {
    engine.base().to_owned()
}
