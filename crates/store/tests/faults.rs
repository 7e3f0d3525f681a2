//! The fault-injection kit against real backends: with no fault planned, a
//! [`FaultyStore`] passes the whole conformance suite (it delegates every method
//! faithfully); with faults, an injected failure leaves the backend untouched.

use std::sync::Arc;

use vigia_core::{SensorId, Timestamp, DEFAULT_METRIC};
use vigia_store::conformance;
use vigia_store::memory::VolatileStore;
use vigia_store::sqlite::{SqliteStore, SqliteStoreOptions};
use vigia_store::testkit::FaultyStore;
use vigia_store::{Durability, ReadingQuery, SensorReading, Store, StoreError, WriteBatch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faultless_wrapper_passes_the_conformance_suite() {
    let handles = std::sync::Mutex::new(Vec::new());
    conformance::run_all(|| {
        let store = FaultyStore::new(Arc::new(VolatileStore::new()));
        handles.lock().expect("handles").push(store.faults());
        async move { store }
    })
    .await;
    let handles = handles.into_inner().expect("handles");
    assert!(handles.len() > 20, "one store per check");
    assert!(
        handles
            .iter()
            .all(|f| f.total_calls() > 0 && f.injected() == 0),
        "every check went through the wrapper"
    );
}

fn reading(sensor: SensorId, ts: i64) -> SensorReading {
    SensorReading {
        sensor,
        metric: DEFAULT_METRIC.into(),
        ts: Timestamp(ts),
        value: 1.0,
    }
}

/// Over SQLite: the failing batch never reaches the writer, the next ones commit, and
/// the counts say how many store calls the test made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_commit_failure_leaves_sqlite_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(SqliteStoreOptions {
        durability: Durability::Os,
        ..SqliteStoreOptions::new(dir.path().join("vigia.db"))
    })
    .await
    .expect("open");
    let store = FaultyStore::new(Arc::new(sqlite));
    let faults = store.faults();
    let tenant = store.catalog().default_tenant().await.expect("tenant").id;
    let sensor = store
        .catalog()
        .provision_sensors(tenant, &["CF-1".into()])
        .await
        .expect("sensor")[0]
        .id;

    faults.fail_nth_write_batch(1);
    let batch = WriteBatch {
        excursions: Vec::new(),
        readings: (0..50).map(|ts| reading(sensor, ts)).collect(),
        alerts: vec![],
    };
    let failed = store.write_batch(batch.clone()).await;
    assert!(
        matches!(&failed, Err(StoreError::Unavailable(m)) if m.starts_with("injected: ")),
        "{failed:?}"
    );
    let query = ReadingQuery {
        metric: DEFAULT_METRIC.into(),
        from: Timestamp(0),
        to: Timestamp(1_000),
        limit: 1_000,
        step_ms: None,
    };
    let inner = store.inner();
    assert!(inner
        .readings()
        .series(tenant, "CF-1", &query)
        .await
        .expect("series")
        .is_empty());
    assert!(inner
        .readings()
        .latest(tenant, &vigia_store::SensorScope::All)
        .await
        .expect("latest")
        .is_empty());

    let retried = store.write_batch(batch).await.expect("the retry commits");
    assert_eq!(retried.readings_written, 50);
    assert_eq!(faults.calls("write_batch"), 2);
    assert_eq!(
        faults.total_calls(),
        4,
        "tenant, provisioning and two commits"
    );
    store.close().await;
}
