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
    directory: Arc<SensorDirectory>,
    workers: tokio::task::JoinSet<()>,
}

async fn kit() -> Kit {
    let mut kit = paused_kit().await;
    kit.workers = kit.pipeline.spawn_workers();
    kit
}

/// A kit whose workers are not started yet, so what a test publishes first is delivered
/// to one worker at once.
async fn paused_kit() -> Kit {
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
        directory.clone(),
        PipelineConfig {
            workers: 1,
            retry_backoff: Duration::from_millis(10),
            ..PipelineConfig::default()
        },
    )
    .await
    .unwrap();
    Kit {
        store,
        bus,
        tenant,
        pipeline,
        directory,
        workers: tokio::task::JoinSet::new(),
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

/// The value the store refuses for good in the dead-letter tests.
const POISON: f64 = 666.0;

fn refuse_poison(faults: &vigia_store::testkit::Faults) {
    faults.refuse_write_batches(|batch| batch.readings.iter().any(|r| r.value == POISON));
}

async fn dead_letters(kit: &Kit) -> Vec<vigia_store::DeadLetter> {
    let letters = kit.store.dead_letters();
    let mut all = Vec::new();
    for summary in letters.list(kit.tenant, None, 100).await.unwrap() {
        all.push(letters.get(kit.tenant, summary.id).await.unwrap());
    }
    all
}

/// Three deliveries reach one worker together and the store refuses their commit for
/// good because of one of them: each is retried alone, the two good ones commit, and the
/// refused one is kept whole as a dead letter with the store's reason; nothing stays on
/// the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_store_refuses_for_good_becomes_a_dead_letter_and_its_companions_commit() {
    let mut kit = paused_kit().await;
    let faults = kit.store.faults();
    refuse_poison(&faults);
    let t = Timestamp::now().0 - 60_000;
    let poisoned = batch(kit.tenant, t + 5_000, &[-19.0, POISON]);
    for delivery in [
        batch(kit.tenant, t, &[-20.0]),
        poisoned.clone(),
        batch(kit.tenant, t + 15_000, &[-21.0]),
    ] {
        vigia_bus::readings::publish(kit.bus.as_ref(), delivery)
            .await
            .unwrap();
    }
    kit.workers = kit.pipeline.spawn_workers();
    settle(&kit).await;

    assert_eq!(stored(&kit).await, (2, vec![]), "the two good deliveries");
    let letters = dead_letters(&kit).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].readings, poisoned.readings, "kept whole");
    assert_eq!(letters[0].summary.received_at.0, poisoned.received_ms);
    assert!(
        letters[0].summary.reason.contains("refused the batch"),
        "the store's reason: {}",
        letters[0].summary.reason
    );
    assert_eq!(
        faults.calls("write_batch"),
        4,
        "one commit of all three, then one commit each alone"
    );
    assert_eq!(faults.calls("dead_letters.put"), 1);
    drop(kit.workers);
}

/// A commit that fails for a reason that may pass (the store is unavailable) is retried
/// for as long as it takes and never becomes a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_and_never_dead_lettered() {
    let kit = kit().await;
    let faults = kit.store.faults();
    faults.fail_every_write_batch();
    let t = Timestamp::now().0 - 60_000;
    vigia_bus::readings::publish(kit.bus.as_ref(), batch(kit.tenant, t, &[-20.0]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(faults.calls("write_batch") >= 3, "retried with backoff");
    assert_eq!(faults.calls("dead_letters.put"), 0, "never dead-lettered");
    assert_eq!(kit.bus.lag(Topic::READINGS).await.unwrap(), 1, "still owed");
    faults.heal_all();
    settle(&kit).await;
    assert_eq!(stored(&kit).await.0, 1, "committed once the store is back");
    assert!(dead_letters(&kit).await.is_empty());
    drop(kit.workers);
}

/// When even the dead letter cannot be written, the refused delivery goes back to the
/// bus rather than being acked and lost; it becomes a dead letter once that works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_cannot_be_written_stays_on_the_bus() {
    let kit = kit().await;
    let faults = kit.store.faults();
    refuse_poison(&faults);
    faults.fail("dead_letters.put");
    let t = Timestamp::now().0 - 60_000;
    let poisoned = batch(kit.tenant, t, &[POISON]);
    vigia_bus::readings::publish(kit.bus.as_ref(), poisoned.clone())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(faults.calls("dead_letters.put") >= 2, "tried again");
    assert_eq!(kit.bus.lag(Topic::READINGS).await.unwrap(), 1, "not lost");
    faults.heal("dead_letters.put");
    settle(&kit).await;
    let letters = dead_letters(&kit).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].readings, poisoned.readings);
    assert_eq!(stored(&kit).await.0, 0, "the store still refuses it");
    drop(kit.workers);
}

/// An offline rule end to end through the pool: the sweep opens one alert once the
/// sensor has been silent past `expected + grace` on the wall clock (not before, and not
/// twice), and readings flowing again for the hold resolve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sensor_opens_one_offline_alert_and_flowing_data_resolves_it() {
    let kit = kit().await;
    let mut spec = SensorSpec {
        rules: vec![serde_json::from_value(serde_json::json!({
            "kind": "offline", "expected": "5s", "grace": "10s"
        }))
        .unwrap()],
        ..SensorSpec::default()
    };
    spec.normalise().unwrap();
    let sensor = kit
        .store
        .catalog()
        .put_sensor(kit.tenant, "CF-1", &spec, "test", Timestamp::now())
        .await
        .unwrap()
        .sensor;
    kit.directory.insert(sensor);
    let now = Timestamp::now().0;
    vigia_bus::readings::publish(kit.bus.as_ref(), batch(kit.tenant, now - 12_000, &[-20.0]))
        .await
        .unwrap();
    settle(&kit).await;
    wait_for_commit(&kit, 1).await;

    // 12 s of silence against 15 s allowed: nothing yet.
    assert_eq!(kit.pipeline.sweep_silence(Timestamp(now)).await.unwrap(), 0);
    // 20 s: one alert, and a second sweep opens no other.
    assert_eq!(
        kit.pipeline
            .sweep_silence(Timestamp(now + 8_000))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        kit.pipeline
            .sweep_silence(Timestamp(now + 9_000))
            .await
            .unwrap(),
        0
    );
    assert_eq!(stored(&kit).await.1, vec![AlertState::Open]);

    // Readings every 5 s for longer than the hold (60 s) resolve it.
    let values = vec![-20.0; 15];
    vigia_bus::readings::publish(kit.bus.as_ref(), batch(kit.tenant, now + 10_000, &values))
        .await
        .unwrap();
    settle(&kit).await;
    wait_for_commit(&kit, 16).await;
    assert_eq!(stored(&kit).await.1, vec![AlertState::Resolved]);
    drop(kit.workers);
}

/// Waits until `n` readings of CF-1 are stored (the bus drains when a worker takes a
/// batch, before its commit).
async fn wait_for_commit(kit: &Kit, n: usize) {
    for _ in 0..400 {
        if stored(kit).await.0 >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} readings were never stored");
}
