//! The worker pool against the test kit: the volatile bus and store (real backends that
//! pass every conformance suite) with faults injected. A commit that fails after the rules
//! ran goes back to the bus and lands exactly once on retry; acks that fail only cost a
//! redelivery, which the store absorbs.

use std::sync::Arc;
use std::time::Duration;

use vigia_bus::testkit::FaultyBus;
use vigia_bus::volatile::VolatileBus;
use vigia_bus::{Bus, Capacity, Topic};
use vigia_core::{AlertState, IngestBatch, Reading, Rule, SensorSpec, Severity, Timestamp};
use vigia_fanout::InProcessFanout;
use vigia_ingest::{Pipeline, PipelineConfig, SensorDirectory};
use vigia_store::memory::VolatileStore;
use vigia_store::testkit::FaultyStore;
use vigia_store::{AlertFilter, ReadingQuery, Store};

struct Kit {
    store: Arc<FaultyStore>,
    bus: Arc<FaultyBus>,
    tenant: vigia_core::TenantId,
    pipeline: Arc<Pipeline>,
    workers: tokio::task::JoinSet<()>,
}

async fn kit() -> Kit {
    let store = Arc::new(FaultyStore::new(Arc::new(VolatileStore::new())));
    let tenant = store.catalog().default_tenant().await.unwrap().id;
    let mut spec = SensorSpec {
        rules: vec![Rule::threshold(Severity::Critical, None, Some(-18.0))],
        ..SensorSpec::default()
    };
    spec.normalise().unwrap();
    store
        .catalog()
        .put_sensor(tenant, "CF-1", &spec, "test", Timestamp::now())
        .await
        .unwrap();
    let bus = Arc::new(FaultyBus::new(Arc::new(VolatileBus::new(
        Capacity::default(),
    ))));
    let directory = Arc::new(SensorDirectory::new());
    directory.warm(store.as_ref()).await.unwrap();
    let pipeline = Pipeline::new(
        store.clone(),
        bus.clone(),
        Arc::new(InProcessFanout::new(16)),
        directory,
        PipelineConfig {
            workers: 1,
            retry_backoff: Duration::from_millis(10),
            ..PipelineConfig::default()
        },
    )
    .await
    .unwrap();
    let workers = pipeline.spawn_workers();
    Kit {
        store,
        bus,
        tenant,
        pipeline,
        workers,
    }
}

fn batch(tenant: vigia_core::TenantId, start: i64, values: &[f64]) -> IngestBatch {
    IngestBatch {
        tenant,
        received_ms: Timestamp::now().0,
        readings: values
            .iter()
            .enumerate()
            .map(|(i, &value)| Reading {
                sensor: "CF-1".into(),
                metric: "temperature".into(),
                ts: Timestamp(start + i as i64 * 5_000),
                value,
            })
            .collect(),
    }
}

async fn settle(kit: &Kit) {
    for _ in 0..400 {
        if kit.bus.lag(Topic::READINGS).await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the bus never drained");
}

async fn stored(kit: &Kit) -> (usize, Vec<AlertState>) {
    let points = kit
        .store
        .readings()
        .series(
            kit.tenant,
            "CF-1",
            &ReadingQuery {
                metric: "temperature".into(),
                from: Timestamp(0),
                to: Timestamp(i64::MAX / 2),
                limit: 10_000,
                step_ms: None,
            },
        )
        .await
        .unwrap();
    let alerts = kit
        .store
        .alerts()
        .list(
            kit.tenant,
            &AlertFilter {
                limit: 100,
                ..AlertFilter::default()
            },
        )
        .await
        .unwrap();
    (points.len(), alerts.into_iter().map(|a| a.state).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_retried_and_lands_once() {
    let kit = kit().await;
    let faults = kit.store.faults();
    faults.fail_nth_write_batch(1);
    let t = Timestamp::now().0 - 60_000;
    vigia_bus::readings::publish(
        kit.bus.as_ref(),
        batch(kit.tenant, t, &[-20.0, -12.0, -11.0]),
    )
    .await
    .unwrap();
    settle(&kit).await;
    assert_eq!(stored(&kit).await, (3, vec![AlertState::Open]));
    assert_eq!(faults.injected(), 1, "the first commit failed");
    assert_eq!(
        faults.calls("write_batch"),
        2,
        "and the redelivery committed"
    );
    drop(kit.workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_acks_leave_the_batch_on_the_bus_and_a_redelivery_changes_nothing() {
    let kit = kit().await;
    kit.bus.fail_acks(true);
    let t = Timestamp::now().0 - 60_000;
    let readings = batch(kit.tenant, t, &[-20.0, -12.0]);
    vigia_bus::readings::publish(kit.bus.as_ref(), readings.clone())
        .await
        .unwrap();
    for _ in 0..400 {
        if stored(&kit).await.0 == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stored(&kit).await, (2, vec![AlertState::Open]));
    assert_eq!(
        kit.bus.lag(Topic::READINGS).await.unwrap(),
        2,
        "committed but not acked: still owed to the bus"
    );
    kit.bus.fail_acks(false);
    // What a restart would redeliver: the same batch again.
    vigia_bus::readings::publish(kit.bus.as_ref(), readings)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stored(&kit).await,
        (2, vec![AlertState::Open]),
        "the redelivered batch changed nothing"
    );
    drop(kit.workers);
}

/// A hand resolution made in another process whose `ExcursionForgotten` never arrived
/// (a cross-process fan-out lost it): the worker still holds the excursion for active
/// and would open no alert for the next breach, until its refresh timer compares its
/// state with the store's unresolved alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_excursion_forgotten_heals_from_the_store() {
    let kit = kit().await;
    let t = Timestamp::now().0 - 120_000;
    vigia_bus::readings::publish(kit.bus.as_ref(), batch(kit.tenant, t, &[-12.0]))
        .await
        .unwrap();
    settle(&kit).await;
    assert_eq!(stored(&kit).await.1, [AlertState::Open]);
    assert_eq!(
        kit.pipeline.forget_resolved_excursions().await.unwrap(),
        0,
        "the alert is still unresolved: nothing to forget"
    );
    let alert = kit.store.alerts().unresolved().await.unwrap().remove(0);
    kit.store
        .alerts()
        .resolve(kit.tenant, alert.id, "ops", Timestamp::now())
        .await
        .unwrap();
    vigia_bus::readings::publish(kit.bus.as_ref(), batch(kit.tenant, t + 10_000, &[-11.0]))
        .await
        .unwrap();
    settle(&kit).await;
    assert_eq!(
        stored(&kit).await.1,
        [AlertState::Resolved],
        "without the control message the breach goes unseen"
    );
    assert_eq!(kit.pipeline.forget_resolved_excursions().await.unwrap(), 1);
    vigia_bus::readings::publish(kit.bus.as_ref(), batch(kit.tenant, t + 20_000, &[-10.0]))
        .await
        .unwrap();
    settle(&kit).await;
    let mut states = stored(&kit).await.1;
    states.sort_by_key(|s| s.as_str());
    assert_eq!(
        states,
        [AlertState::Open, AlertState::Resolved],
        "after the heal the next breach opens a new alert"
    );
    drop(kit.workers);
}
