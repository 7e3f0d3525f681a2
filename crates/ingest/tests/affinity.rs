//! Sensor affinity between worker pools that share one bus and one store (as worker
//! processes do), on the volatile backends: the pools split the partitions with no
//! partition owned twice, each sensor's readings are judged by one pool, a pool that
//! leaves hands its partitions to the others at once, and one that joins takes its share.
//! The SIGKILL of a real worker process on Redis/NATS is `crates/vigia/tests/scale_out.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigia_bus::volatile::VolatileBus;
use vigia_bus::{readings, Bus, Capacity};
use vigia_core::{
    partition::partition_of, IngestBatch, RateDirection, Reading, Rule, SensorSpec, Severity,
    TenantId, Timestamp,
};
use vigia_fanout::InProcessFanout;
use vigia_ingest::affinity::AffinityConfig;
use vigia_ingest::{Pipeline, PipelineConfig, SensorDirectory};
use vigia_store::memory::VolatileStore;
use vigia_store::{AlertFilter, ReadingQuery, Store};

const PARTITIONS: usize = 8;

struct Pool {
    pipeline: Arc<Pipeline>,
    workers: tokio::task::JoinSet<()>,
}

async fn pool(store: &Arc<VolatileStore>, bus: &Arc<VolatileBus>, member: &str) -> Pool {
    let directory = Arc::new(SensorDirectory::new());
    directory.warm(store.as_ref()).await.unwrap();
    let pipeline = Pipeline::new(
        store.clone(),
        bus.clone(),
        Arc::new(InProcessFanout::new(16)),
        directory,
        PipelineConfig {
            workers: 2,
            retry_backoff: Duration::from_millis(10),
            partitions: PARTITIONS,
            affinity: AffinityConfig {
                member: member.into(),
                lease: Duration::from_secs(1),
            },
            ..PipelineConfig::default()
        },
    )
    .await
    .unwrap();
    let workers = pipeline.spawn_workers();
    Pool { pipeline, workers }
}

/// Waits until the pools own every partition between them, each exactly once, and
/// each pool some; returns what each owns.
async fn settled(pools: &[&Pool]) -> Vec<Vec<usize>> {
    let started = Instant::now();
    loop {
        let owned: Vec<Vec<usize>> = pools
            .iter()
            .map(|p| p.pipeline.owned_partitions())
            .collect();
        let all: Vec<usize> = owned.iter().flatten().copied().collect();
        let distinct: HashSet<usize> = all.iter().copied().collect();
        if all.len() == PARTITIONS
            && distinct.len() == PARTITIONS
            && owned.iter().all(|o| !o.is_empty())
        {
            return owned;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the pools did not settle on one owner per partition: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn readings_of(sensors: usize, per_sensor: usize, start: i64) -> Vec<Reading> {
    (0..sensors * per_sensor)
        .map(|i| Reading {
            sensor: format!("AF-{}", i % sensors),
            metric: "temperature".into(),
            ts: Timestamp(start + i as i64),
            value: -20.0,
        })
        .collect()
}

async fn stored(store: &VolatileStore, tenant: TenantId) -> usize {
    let mut total = 0;
    for sensor in store
        .catalog()
        .list_sensors(tenant, None, 10_000)
        .await
        .unwrap()
    {
        total += store
            .readings()
            .series(
                tenant,
                &sensor.key,
                &ReadingQuery {
                    metric: "temperature".into(),
                    from: Timestamp(0),
                    to: Timestamp(i64::MAX / 2),
                    limit: 1_000_000,
                    step_ms: None,
                },
            )
            .await
            .unwrap()
            .len();
    }
    total
}

async fn wait_stored(store: &VolatileStore, tenant: TenantId, n: usize) {
    let started = Instant::now();
    while stored(store, tenant).await < n {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "only {} of {n} readings stored",
            stored(store, tenant).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stored(store, tenant).await,
        n,
        "more readings than published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_split_the_partitions_and_hand_them_over_when_one_leaves_or_joins() {
    let store = Arc::new(VolatileStore::new());
    let tenant = store.catalog().default_tenant().await.unwrap().id;
    let bus = Arc::new(VolatileBus::new(
        Capacity::default().with_readings(1_000_000, PARTITIONS),
    ));
    let a = pool(&store, &bus, "pool-a").await;
    let mut b = pool(&store, &bus, "pool-b").await;
    let owned = settled(&[&a, &b]).await;
    println!("a owns {:?}, b owns {:?}", owned[0], owned[1]);

    let batch = IngestBatch {
        tenant,
        received_ms: Timestamp::now().0,
        readings: readings_of(200, 10, 1_000),
    };
    readings::publish_partitioned(&*bus, batch, PARTITIONS)
        .await
        .unwrap();
    wait_stored(&store, tenant, 2_000).await;

    // B leaves: A owns everything at its next tick (B released, no expiry to wait).
    let left = Instant::now();
    b.pipeline.close();
    while b.workers.join_next().await.is_some() {}
    assert!(b.pipeline.owned_partitions().is_empty());
    loop {
        if a.pipeline.owned_partitions().len() == PARTITIONS {
            break;
        }
        assert!(
            left.elapsed() < Duration::from_secs(3),
            "A did not take B's partitions: {:?}",
            a.pipeline.owned_partitions()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("A took B's partitions {:?} after it left", left.elapsed());
    let batch = IngestBatch {
        tenant,
        received_ms: Timestamp::now().0,
        readings: readings_of(200, 10, 100_000),
    };
    readings::publish_partitioned(&*bus, batch, PARTITIONS)
        .await
        .unwrap();
    wait_stored(&store, tenant, 4_000).await;

    // C joins: it takes its share from A, and A gives exactly that up.
    let c = pool(&store, &bus, "pool-c").await;
    let owned = settled(&[&a, &c]).await;
    println!(
        "after C joined: a owns {:?}, c owns {:?}",
        owned[0], owned[1]
    );
    let expected_c = vigia_ingest::affinity::assignment(
        &["pool-a".to_string(), "pool-c".to_string()],
        "pool-c",
        PARTITIONS,
    );
    assert_eq!(owned[1], expected_c);
    bus.close();
    drop((a, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_excursion_spread_over_partitioned_batches_opens_one_alert() {
    let store = Arc::new(VolatileStore::new());
    let tenant = store.catalog().default_tenant().await.unwrap().id;
    let mut spec = SensorSpec {
        rules: vec![Rule::rate(Severity::Warning, 1.0, RateDirection::Rise)],
        ..SensorSpec::default()
    };
    spec.normalise().unwrap();
    store
        .catalog()
        .put_sensor(tenant, "RISE-1", &spec, "test", Timestamp::now())
        .await
        .unwrap();
    let bus = Arc::new(VolatileBus::new(
        Capacity::default().with_readings(1_000_000, PARTITIONS),
    ));
    let a = pool(&store, &bus, "pool-a").await;
    let b = pool(&store, &bus, "pool-b").await;
    settled(&[&a, &b]).await;

    // +0.5 °C every 10 s (3 °C/min, over a 1 °C/min limit) for 10 minutes, one reading a
    // batch, with other sensors' readings in between so every partition is busy.
    let start = Timestamp::now().0 - 600_000;
    for i in 0..60i64 {
        let mut readings = readings_of(40, 1, start + i * 10_000 + 1);
        readings.push(Reading {
            sensor: "RISE-1".into(),
            metric: "temperature".into(),
            ts: Timestamp(start + i * 10_000),
            value: -20.0 + 0.5 * i as f64,
        });
        readings::publish_partitioned(
            &*bus,
            IngestBatch {
                tenant,
                received_ms: Timestamp::now().0,
                readings,
            },
            PARTITIONS,
        )
        .await
        .unwrap();
    }
    let owner_partition = partition_of(tenant, "RISE-1", PARTITIONS);
    println!("RISE-1 travels on partition {owner_partition}");
    let started = Instant::now();
    let alerts = loop {
        let alerts = store
            .alerts()
            .list(
                tenant,
                &AlertFilter {
                    limit: 100,
                    ..AlertFilter::default()
                },
            )
            .await
            .unwrap();
        if stored(&store, tenant).await == 60 * 41 {
            break alerts;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not all stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rise: Vec<_> = alerts.iter().filter(|a| a.sensor == "RISE-1").collect();
    assert_eq!(rise.len(), 1, "one alert for one excursion: {rise:?}");
    bus.close();
    drop((a, b));
}
