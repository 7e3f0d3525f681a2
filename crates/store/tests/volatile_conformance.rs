//! Runs the store conformance suite against [`VolatileStore`], one test per check, plus
//! what only an in-memory store must show: readers never see half a commit, and the
//! store answers `Unavailable` once closed.

use std::sync::Arc;
use std::time::Duration;

use vigia_core::{SensorId, Timestamp, DEFAULT_METRIC};
use vigia_store::conformance;
use vigia_store::memory::VolatileStore;
use vigia_store::{ReadingQuery, SensorReading, Store, StoreError, WriteBatch};

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            conformance::$check(&VolatileStore::new()).await;
        }
    )*};
}

vigia_store::for_each_store_check!(conformance_tests);
vigia_store::for_each_rollup_check!(conformance_tests);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes() {
    conformance::run_all(|| async { VolatileStore::new() }).await;
}

fn reading(sensor: SensorId, ts: i64, value: f64) -> SensorReading {
    SensorReading {
        sensor,
        metric: DEFAULT_METRIC.into(),
        ts: Timestamp(ts),
        value,
    }
}

fn everything() -> ReadingQuery {
    ReadingQuery {
        metric: DEFAULT_METRIC.into(),
        from: Timestamp(0),
        to: Timestamp(i64::MAX / 2),
        limit: usize::MAX,
        step_ms: None,
    }
}

/// Readers keep answering, with whole batches only, while writers commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_during_writes() {
    let store = Arc::new(VolatileStore::new());
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let sensor = store
        .catalog()
        .provision_sensors(tenant.id, &["CF-1".into()])
        .await
        .expect("sensor")[0]
        .id;
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for round in 0..200i64 {
                let batch = WriteBatch {
                    excursions: Vec::new(),
                    readings: (0..100)
                        .map(|i| reading(sensor, round * 100 + i, round as f64))
                        .collect(),
                    alerts: vec![],
                };
                store.write_batch(batch).await.expect("write");
                tokio::task::yield_now().await;
            }
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            let tenant = tenant.id;
            tokio::spawn(async move {
                let mut last = 0;
                loop {
                    let series = store
                        .readings()
                        .series(tenant, "CF-1", &everything())
                        .await
                        .expect("read");
                    assert_eq!(series.len() % 100, 0, "saw a partial batch");
                    assert!(series.len() >= last, "a later read saw fewer rows");
                    last = series.len();
                    if last == 20_000 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    writer.await.expect("writer");
    for r in readers {
        r.await.expect("reader");
    }
    let latest = store
        .readings()
        .latest(tenant.id, &vigia_store::SensorScope::All)
        .await
        .expect("latest");
    assert_eq!((latest[0].ts, latest[0].value), (Timestamp(19_999), 199.0));
}

/// Close is idempotent and every later call is `Unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_store_is_unavailable() {
    let store = VolatileStore::new();
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let sensor = store
        .catalog()
        .provision_sensors(tenant.id, &["CF-1".into()])
        .await
        .expect("sensor")[0]
        .id;
    let batch = WriteBatch {
        excursions: Vec::new(),
        readings: vec![reading(sensor, 1, 1.0)],
        alerts: vec![],
    };
    store.write_batch(batch.clone()).await.expect("write");
    store.close().await;
    store.close().await;
    assert!(matches!(
        store.write_batch(batch).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .readings()
            .series(tenant.id, "CF-1", &everything())
            .await,
        Err(StoreError::Unavailable(_))
    ));
}
