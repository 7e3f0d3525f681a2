//! Conformance checks for readings, their atomicity and the latest values.

use vigia_core::{SensorId, Timestamp, DEFAULT_METRIC};

use super::{
    assert_conflict, assert_not_found, provision, reading, readings_batch, setup, MISSING_SENSOR,
    T0,
};
use crate::{LatestReading, Point, ReadingQuery, SensorReading, Store, WriteBatch};

fn all_of(metric: &str) -> ReadingQuery {
    ReadingQuery {
        metric: metric.to_string(),
        from: Timestamp(i64::MIN / 2),
        to: Timestamp(i64::MAX / 2),
        limit: 10_000,
        step_ms: None,
    }
}

fn points(pairs: &[(i64, f64)]) -> Vec<Point> {
    pairs
        .iter()
        .map(|&(offset, value)| Point {
            ts: Timestamp(T0 + offset),
            value,
        })
        .collect()
}

/// The same reading twice is stored once, counted once, and the first value stays.
pub async fn readings_are_idempotent(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1"]).await;
    let s = sensors[0].id;
    let first = readings_batch(vec![
        reading(s, 0, -20.0),
        reading(s, 1000, -19.5),
        reading(s, 2000, -19.0),
    ]);
    let outcome = store.write_batch(first.clone()).await.expect("first write");
    assert_eq!(outcome.readings_written, 3);

    let again = store.write_batch(first).await.expect("redelivery");
    assert_eq!(
        again.readings_written, 0,
        "a redelivered batch writes nothing new"
    );

    // Overlap: one new, one duplicate with a different value, and a duplicate within the batch.
    let mixed = readings_batch(vec![
        reading(s, 3000, -18.5),
        reading(s, 0, 99.0),
        reading(s, 3000, 42.0),
    ]);
    let outcome = store.write_batch(mixed).await.expect("mixed write");
    assert_eq!(outcome.readings_written, 1, "only the new reading counts");

    let series = store
        .readings()
        .series(tenant.id, "CF-1", &all_of(DEFAULT_METRIC))
        .await
        .expect("series");
    assert_eq!(
        series,
        points(&[(0, -20.0), (1000, -19.5), (2000, -19.0), (3000, -18.5)])
    );

    // Another metric at the same instant is a different reading.
    let humidity = SensorReading {
        metric: "humidity".into(),
        ..reading(s, 0, 70.0)
    };
    let outcome = store
        .write_batch(readings_batch(vec![humidity]))
        .await
        .expect("humidity");
    assert_eq!(outcome.readings_written, 1);
    let series = store
        .readings()
        .series(tenant.id, "CF-1", &all_of("humidity"))
        .await
        .expect("humidity series");
    assert_eq!(series, points(&[(0, 70.0)]));
    assert!(
        store
            .write_batch(WriteBatch::default())
            .await
            .expect("empty batch")
            .readings_written
            == 0,
        "an empty batch is a no-op"
    );
}

/// Large batches with duplicates inside and across them count every new reading once.
pub async fn large_batches_count_exactly(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1", "CF-2", "CF-3"]).await;
    let ids: Vec<_> = sensors.iter().map(|s| s.id).collect();
    // 1,037 readings: 3 sensors × 300 instants, plus 137 repeats of earlier ones.
    let mut rows: Vec<SensorReading> = (0..900)
        .map(|i| reading(ids[i % 3], (i / 3) as i64 * 1000, i as f64))
        .collect();
    rows.extend((0..137).map(|i| reading(ids[i % 3], (i / 3) as i64 * 1000, -1.0)));
    let outcome = store
        .write_batch(readings_batch(rows.clone()))
        .await
        .expect("large batch");
    assert_eq!(
        outcome.readings_written, 900,
        "duplicates inside a batch count once"
    );
    // Half old, half new.
    let next: Vec<SensorReading> = (450..1350)
        .map(|i| reading(ids[i % 3], (i / 3) as i64 * 1000, i as f64))
        .collect();
    let outcome = store
        .write_batch(readings_batch(next))
        .await
        .expect("overlapping batch");
    assert_eq!(outcome.readings_written, 450);
    let series = store
        .readings()
        .series(tenant.id, "CF-2", &all_of(DEFAULT_METRIC))
        .await
        .expect("series");
    assert_eq!(series.len(), 450);
    assert!(
        series
            .iter()
            .enumerate()
            .all(|(n, p)| p.ts == Timestamp(T0 + n as i64 * 1000) && p.value == (n * 3 + 1) as f64),
        "every CF-2 point in order with its first value"
    );
    let latest = store
        .readings()
        .latest(tenant.id, &crate::SensorScope::All)
        .await
        .expect("latest");
    assert_eq!(latest.len(), 3);
    assert!(
        latest.iter().all(|l| l.ts == Timestamp(T0 + 449_000)),
        "{latest:?}"
    );
}

/// A batch naming an unknown sensor, or a non-finite value, fails with `Conflict` and
/// writes nothing: no readings, no latest values.
pub async fn batch_is_atomic(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1"]).await;
    let s = sensors[0].id;
    let cases = [
        ("unknown sensor", reading(MISSING_SENSOR, 500, 1.0)),
        ("NaN value", reading(s, 500, f64::NAN)),
        ("infinite value", reading(s, 500, f64::INFINITY)),
    ];
    for (what, bad) in cases {
        let batch = readings_batch(vec![reading(s, 0, -20.0), bad, reading(s, 1000, -19.0)]);
        assert_conflict(store.write_batch(batch).await, what);
        let series = store
            .readings()
            .series(tenant.id, "CF-1", &all_of(DEFAULT_METRIC))
            .await
            .expect("series");
        assert!(
            series.is_empty(),
            "{what}: nothing of the batch stored, got {series:?}"
        );
        assert!(
            store
                .readings()
                .latest(tenant.id, &crate::SensorScope::All)
                .await
                .expect("latest")
                .is_empty(),
            "{what}: no latest"
        );
    }
    // The store is still healthy and the same readings go in once corrected.
    let good = readings_batch(vec![reading(s, 0, -20.0), reading(s, 1000, -19.0)]);
    assert_eq!(
        store
            .write_batch(good)
            .await
            .expect("good batch")
            .readings_written,
        2
    );
}

/// Concurrent callers' batches are independent: one caller's bad batch does not fail,
/// or take with it, another's good batch.
pub async fn concurrent_batches_fail_alone(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1"]).await;
    let s = sensors[0].id;
    let good = |offset| readings_batch(vec![reading(s, offset, 1.0), reading(s, offset + 1, 2.0)]);
    let bad = readings_batch(vec![
        reading(s, 100, 1.0),
        reading(MISSING_SENSOR, 100, 1.0),
    ]);
    let (a, b, c) = tokio::join!(
        store.write_batch(good(0)),
        store.write_batch(bad),
        store.write_batch(good(10))
    );
    assert_eq!(a.expect("first good batch").readings_written, 2);
    assert_conflict(b, "bad batch among good ones");
    assert_eq!(c.expect("second good batch").readings_written, 2);
    let series = store
        .readings()
        .series(tenant.id, "CF-1", &all_of(DEFAULT_METRIC))
        .await
        .expect("series");
    assert_eq!(series, points(&[(0, 1.0), (1, 2.0), (10, 1.0), (11, 2.0)]));
}

/// The latest value per (sensor, metric) never moves back in time, whatever the order
/// the readings arrive in, within a batch or across batches.
pub async fn latest_only_moves_forward(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1", "CF-2"]).await;
    let (s1, s2) = (sensors[0].id, sensors[1].id);
    let latest = || async {
        let mut l = store
            .readings()
            .latest(tenant.id, &crate::SensorScope::All)
            .await
            .expect("latest");
        l.sort_by(|a, b| (a.sensor, &a.metric).cmp(&(b.sensor, &b.metric)));
        l
    };
    let at = |sensor, offset: i64, value| LatestReading {
        sensor,
        metric: DEFAULT_METRIC.to_string(),
        ts: Timestamp(T0 + offset),
        value,
    };

    // Out of order within one batch: the newest wins.
    let batch = readings_batch(vec![
        reading(s1, 300, 3.0),
        reading(s1, 100, 1.0),
        reading(s2, 50, 5.0),
    ]);
    store.write_batch(batch).await.expect("write");
    assert_eq!(latest().await, vec![at(s1, 300, 3.0), at(s2, 50, 5.0)]);

    // A late reading is stored but does not move the latest back.
    store
        .write_batch(readings_batch(vec![reading(s1, 200, 2.0)]))
        .await
        .expect("late");
    assert_eq!(latest().await[0], at(s1, 300, 3.0));
    let series = store
        .readings()
        .series(tenant.id, "CF-1", &all_of(DEFAULT_METRIC))
        .await
        .expect("series");
    assert_eq!(series.len(), 3, "the late reading is stored");

    // A duplicate of the latest instant with another value changes nothing.
    store
        .write_batch(readings_batch(vec![reading(s1, 300, 99.0)]))
        .await
        .expect("dup");
    assert_eq!(latest().await[0], at(s1, 300, 3.0));

    // A newer one moves it.
    store
        .write_batch(readings_batch(vec![reading(s1, 400, 4.0)]))
        .await
        .expect("newer");
    assert_eq!(latest().await, vec![at(s1, 400, 4.0), at(s2, 50, 5.0)]);
    let everyone = store.readings().all_latest().await.expect("all latest");
    assert_eq!(everyone.len(), 2);
}

/// Recent readings span every tenant, come oldest first from `since` (inclusive) on,
/// and `limit` keeps the newest.
pub async fn recent_readings_for_rebuild(store: &dyn Store) {
    let (_, sensors) = setup(store, &["CF-1"]).await;
    let other = store
        .catalog()
        .create_tenant("other-plant", "Other plant")
        .await
        .expect("second tenant");
    let theirs = provision(store, &other, &["CF-1"]).await;
    let (mine, theirs) = (sensors[0].id, theirs[0].id);
    let mut humidity = reading(theirs, 2500, 40.0);
    humidity.metric = "humidity".into();
    store
        .write_batch(readings_batch(vec![
            reading(mine, 3000, -19.0),
            reading(mine, 0, -21.0),
            reading(theirs, 1000, 4.0),
            humidity.clone(),
            reading(mine, 2000, -20.0),
        ]))
        .await
        .expect("write");

    let recent = store
        .readings()
        .recent(Timestamp(T0 + 1000), 100)
        .await
        .expect("recent");
    assert_eq!(
        recent,
        vec![
            reading(theirs, 1000, 4.0),
            reading(mine, 2000, -20.0),
            humidity.clone(),
            reading(mine, 3000, -19.0),
        ],
        "since is inclusive, every tenant, oldest first"
    );
    let newest = store
        .readings()
        .recent(Timestamp(T0 + 1000), 2)
        .await
        .expect("recent, limited");
    assert_eq!(newest, vec![humidity, reading(mine, 3000, -19.0)]);
    assert!(store
        .readings()
        .recent(Timestamp(T0 + 3001), 100)
        .await
        .expect("nothing that recent")
        .is_empty());
    assert!(store
        .readings()
        .recent(Timestamp(T0), 0)
        .await
        .expect("limit 0")
        .is_empty());
}

/// Ranges are inclusive, points come oldest first, `limit` keeps the oldest;
/// an unknown metric is empty and an unknown sensor is `NotFound`.
pub async fn series_limit_and_range(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1", "CF-2"]).await;
    let (s1, s2) = (sensors[0].id, sensors[1].id);
    // Written newest first, to prove the order comes from the query.
    let batch = (0..10)
        .rev()
        .map(|i| reading(s1, i * 1000, i as f64))
        .chain([reading(s2, 0, 50.0)]);
    store
        .write_batch(readings_batch(batch.collect()))
        .await
        .expect("write");

    let query = |from: i64, to: i64, limit: usize| ReadingQuery {
        metric: DEFAULT_METRIC.to_string(),
        from: Timestamp(T0 + from),
        to: Timestamp(T0 + to),
        limit,
        step_ms: None,
    };
    // (from, to, limit, expected (offset, value) points)
    type Case = (i64, i64, usize, &'static [(i64, f64)]);
    let cases: &[Case] = &[
        (2000, 4000, 100, &[(2000, 2.0), (3000, 3.0), (4000, 4.0)]),
        (2001, 3999, 100, &[(3000, 3.0)]),
        (0, 9000, 3, &[(0, 0.0), (1000, 1.0), (2000, 2.0)]),
        (0, 9000, 0, &[]),
        (9001, 20000, 100, &[]),
        (5000, 1000, 100, &[]),
    ];
    for &(from, to, limit, want) in cases {
        let got = store
            .readings()
            .series(tenant.id, "CF-1", &query(from, to, limit))
            .await
            .expect("series");
        assert_eq!(got, points(want), "from {from} to {to} limit {limit}");
    }
    let unknown_metric = ReadingQuery {
        metric: "pressure".into(),
        ..query(0, 9000, 100)
    };
    assert!(store
        .readings()
        .series(tenant.id, "CF-1", &unknown_metric)
        .await
        .expect("unknown metric")
        .is_empty());
    assert_not_found(
        store
            .readings()
            .series(tenant.id, "NOPE", &query(0, 9000, 100))
            .await,
        "unknown sensor",
    );
}

/// With a step, points are bucket averages stamped with the bucket start, oldest first,
/// `limit` counting buckets; buckets align to multiples of the step (also below zero).
pub async fn series_step_buckets(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1"]).await;
    let s = sensors[0].id;
    let at = |ts: i64, value: f64| SensorReading {
        ts: Timestamp(ts),
        ..reading(s, 0, value)
    };
    // T0 is a multiple of 10 s, so buckets of 10 s start at T0, T0 + 10 s, ...
    let rows = vec![
        at(T0, 1.0),
        at(T0 + 4_000, 3.0),
        at(T0 + 9_999, 5.0),
        at(T0 + 10_000, 10.0),
        at(T0 + 35_000, -2.0),
        at(T0 + 36_000, -4.0),
        at(-15_000, 7.0),
        at(-1, 9.0),
    ];
    store
        .write_batch(readings_batch(rows))
        .await
        .expect("write");
    let query = |limit, step| ReadingQuery {
        step_ms: Some(step),
        limit,
        ..all_of(DEFAULT_METRIC)
    };
    let bucket = |ts: i64, value: f64| Point {
        ts: Timestamp(ts),
        value,
    };
    let got = store
        .readings()
        .series(tenant.id, "CF-1", &query(100, 10_000))
        .await
        .expect("10 s buckets");
    assert_eq!(
        got,
        vec![
            bucket(-20_000, 7.0),
            bucket(-10_000, 9.0),
            bucket(T0, 3.0),
            bucket(T0 + 10_000, 10.0),
            bucket(T0 + 30_000, -3.0),
        ]
    );
    let got = store
        .readings()
        .series(tenant.id, "CF-1", &query(2, 10_000))
        .await
        .expect("limited");
    assert_eq!(
        got,
        vec![bucket(-20_000, 7.0), bucket(-10_000, 9.0)],
        "limit counts buckets"
    );
    let got = store
        .readings()
        .series(tenant.id, "CF-1", &query(100, 60_000))
        .await
        .expect("1 min buckets");
    // T0 = 1_700_000_000_000 is 20 s past a whole minute.
    assert_eq!(
        got,
        vec![
            bucket(-60_000, 8.0),
            bucket(T0 - 20_000, (1.0 + 3.0 + 5.0 + 10.0 - 2.0 - 4.0) / 6.0)
        ]
    );
}

/// Another tenant cannot read a sensor's series or latest values.
pub async fn tenant_isolation_of_readings(store: &dyn Store) {
    let (a, sensors) = setup(store, &["CF-1"]).await;
    let b = store
        .catalog()
        .create_tenant("b", "B")
        .await
        .expect("tenant b");
    store
        .write_batch(readings_batch(vec![reading(sensors[0].id, 0, -20.0)]))
        .await
        .expect("write");
    assert_not_found(
        store
            .readings()
            .series(b.id, "CF-1", &all_of(DEFAULT_METRIC))
            .await,
        "series from b",
    );
    assert!(store
        .readings()
        .latest(b.id, &crate::SensorScope::All)
        .await
        .expect("latest of b")
        .is_empty());
    assert_eq!(
        store
            .readings()
            .latest(a.id, &crate::SensorScope::All)
            .await
            .expect("latest of a")
            .len(),
        1
    );

    // b's own CF-1 is a different sensor with its own (empty) series.
    super::provision(store, &b, &["CF-1"]).await;
    assert!(store
        .readings()
        .series(b.id, "CF-1", &all_of(DEFAULT_METRIC))
        .await
        .expect("b series")
        .is_empty());
}

/// Housekeeping (a WAL checkpoint on SQLite) keeps every committed reading readable.
pub async fn housekeeping_keeps_data(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["A"]).await;
    let batch: Vec<_> = (0..1_000)
        .map(|i| reading(sensors[0].id, i, i as f64))
        .collect();
    store
        .write_batch(readings_batch(batch))
        .await
        .expect("write");
    let summary = store.housekeep().await.expect("housekeep");
    assert!(!summary.is_empty());
    store.housekeep().await.expect("housekeep twice");
    let points = store
        .readings()
        .series(tenant.id, "A", &all_of(DEFAULT_METRIC))
        .await
        .expect("series");
    assert_eq!(points.len(), 1_000);
}

/// `latest` of one sensor gives that sensor's metrics only, and nothing for a sensor of
/// another tenant.
pub async fn latest_of_one_sensor(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["A", "B"]).await;
    let (a, b) = (sensors[0].id, sensors[1].id);
    let mut humidity = reading(a, 0, 55.0);
    humidity.metric = "humidity".into();
    store
        .write_batch(readings_batch(vec![
            reading(a, 0, 1.0),
            humidity,
            reading(b, 0, 2.0),
        ]))
        .await
        .expect("write");
    let latest = store
        .readings()
        .latest(tenant.id, &crate::SensorScope::One(a))
        .await
        .expect("latest of A");
    let got: Vec<(SensorId, &str)> = latest
        .iter()
        .map(|l| (l.sensor, l.metric.as_str()))
        .collect();
    assert_eq!(
        got,
        [(a, "humidity"), (a, "temperature")],
        "A's metrics only, by name"
    );
    let other = store
        .catalog()
        .create_tenant("other", "Other")
        .await
        .expect("tenant");
    assert!(
        store
            .readings()
            .latest(other.id, &crate::SensorScope::One(a))
            .await
            .expect("latest")
            .is_empty(),
        "another tenant cannot read A's latest values"
    );
}
