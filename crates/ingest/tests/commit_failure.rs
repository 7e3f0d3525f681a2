//! The worker pool when the store refuses a commit after the rules have run: the batch
//! goes back to the bus, and its redelivery must still open the alert it carries. The
//! failure is real: another connection holds SQLite's write lock past the busy timeout.

use std::sync::Arc;
use std::time::Duration;

use vigia_bus::{EmbeddedBus, EmbeddedBusOptions};
use vigia_core::{
    AlertState, IngestBatch, RateDirection, Reading, Rule, SensorSpec, Severity, Timestamp,
};
use vigia_fanout::InProcessFanout;
use vigia_ingest::{Pipeline, PipelineConfig, SensorDirectory};
use vigia_store::sqlite::{SqliteStore, SqliteStoreOptions};
use vigia_store::{AlertFilter, Store};

fn delivery(tenant: vigia_core::TenantId, points: &[(i64, f64)]) -> Arc<IngestBatch> {
    Arc::new(IngestBatch {
        tenant,
        received_ms: Timestamp::now().0,
        readings: points
            .iter()
            .map(|&(ts, value)| Reading {
                sensor: "CF-1".into(),
                metric: "temperature".into(),
                ts: Timestamp(ts),
                value,
            })
            .collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_judged_before_a_failed_commit_opens_on_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("vigia.sqlite3");
    let store = SqliteStore::open(SqliteStoreOptions {
        busy_timeout: Duration::from_millis(50),
        ..SqliteStoreOptions::new(&db)
    })
    .await
    .unwrap();
    let tenant = store.catalog().default_tenant().await.unwrap().id;
    let mut spec = SensorSpec {
        rules: vec![
            Rule::threshold(Severity::Critical, None, Some(-18.0)),
            Rule::rate(Severity::Warning, 1.0, RateDirection::Rise),
        ],
        ..SensorSpec::default()
    };
    spec.normalise().unwrap();
    store
        .catalog()
        .put_sensor(tenant, "CF-1", &spec, "test", Timestamp::now())
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let directory = Arc::new(SensorDirectory::new());
    directory.warm(store.as_ref()).await.unwrap();
    let bus = EmbeddedBus::open(EmbeddedBusOptions::new(dir.path().join("bus.sqlite3"))).unwrap();
    let pipeline = Pipeline::new(
        store.clone(),
        Arc::new(bus),
        Arc::new(InProcessFanout::new(16)),
        directory,
        PipelineConfig::default(),
    )
    .await
    .unwrap();

    let t = Timestamp::now().0 - 60_000;
    let calm = delivery(tenant, &[(t, -20.0), (t + 20_000, -20.0)]);
    pipeline.process(&[calm]).await.unwrap();

    // Another process holds the write lock: the rules run, the commit fails.
    let breach = delivery(tenant, &[(t + 40_000, -12.0)]);
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let failed = pipeline.process(std::slice::from_ref(&breach)).await;
    assert!(failed.is_err(), "the commit should fail: {failed:?}");
    blocker.execute_batch("ROLLBACK").unwrap();

    // The bus hands the batch back; this time both alerts open, from the same readings.
    pipeline
        .process(std::slice::from_ref(&breach))
        .await
        .unwrap();
    let open = |store: Arc<dyn Store>| async move {
        let filter = AlertFilter {
            state: Some(AlertState::Open),
            limit: 100,
            ..AlertFilter::default()
        };
        let mut rules: Vec<String> = store
            .alerts()
            .list(tenant, &filter)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.rule)
            .collect();
        rules.sort();
        rules
    };
    assert_eq!(
        open(store.clone()).await,
        ["rate-warning", "threshold-critical"],
        "the redelivered breach opens its alerts"
    );

    // The excursion goes on: no duplicates.
    let more = delivery(tenant, &[(t + 45_000, -11.0)]);
    pipeline.process(&[more]).await.unwrap();
    assert_eq!(
        open(store.clone()).await,
        ["rate-warning", "threshold-critical"]
    );
}
