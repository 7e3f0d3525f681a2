//! Runs the store conformance suite against [`SqliteStore`], plus checks that only
//! make sense for an embedded file: reopening, schema versions, readers during writes.

use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use vigia_core::{SensorId, Timestamp, DEFAULT_METRIC};
use vigia_store::conformance;
use vigia_store::sqlite::SCHEMA_VERSION;
use vigia_store::sqlite::{SqliteStore, SqliteStoreOptions};
use vigia_store::{Durability, ReadingQuery, SensorReading, Store, StoreError, WriteBatch};

/// A store in its own temporary directory; the directory lives as long as the store.
struct TempStore {
    store: SqliteStore,
    _dir: TempDir,
}

fn options(dir: &TempDir) -> SqliteStoreOptions {
    SqliteStoreOptions {
        durability: Durability::Os,
        ..SqliteStoreOptions::new(dir.path().join("nested/dir/vigia.db"))
    }
}

async fn fresh() -> TempStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(options(&dir)).await.expect("open store");
    TempStore { store, _dir: dir }
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let t = fresh().await;
            conformance::$check(&t.store).await;
        }
    )*};
}

vigia_store::for_each_store_check!(conformance_tests);
vigia_store::for_each_rollup_check!(conformance_tests);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_with_full_durability() {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_all(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = SqliteStoreOptions::new(dir.path().join("vigia.db"));
        dirs.lock().expect("dirs").push(dir);
        async move { SqliteStore::open(opts).await.expect("open store") }
    })
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tenant, sensor) = {
        let store = SqliteStore::open(options(&dir)).await.expect("open");
        let tenant = store.catalog().default_tenant().await.expect("tenant");
        let sensor = store
            .catalog()
            .provision_sensors(tenant.id, &["CF-1".into()])
            .await
            .expect("sensor");
        let batch = WriteBatch {
            excursions: Vec::new(),
            readings: (0..100)
                .map(|i| reading(sensor[0].id, 1000 + i, i as f64))
                .collect(),
            alerts: vec![],
        };
        assert_eq!(
            store
                .write_batch(batch)
                .await
                .expect("write")
                .readings_written,
            100
        );
        store.close().await;
        assert!(
            matches!(
                store
                    .write_batch(WriteBatch {
                        excursions: Vec::new(),
                        readings: vec![reading(sensor[0].id, 5, 1.0)],
                        alerts: vec![],
                    })
                    .await,
                Err(StoreError::Unavailable(_))
            ),
            "writes after close are Unavailable"
        );
        store.close().await; // idempotent
        (tenant, sensor[0].clone())
    };
    let store = SqliteStore::open(options(&dir)).await.expect("reopen");
    assert_eq!(
        store.catalog().default_tenant().await.expect("tenant"),
        tenant
    );
    assert_eq!(
        store
            .catalog()
            .get_sensor(tenant.id, "CF-1")
            .await
            .expect("get"),
        Some(sensor.clone())
    );
    let series = store
        .readings()
        .series(tenant.id, "CF-1", &everything())
        .await
        .expect("series");
    assert_eq!(series.len(), 100);
    assert_eq!(series[99].value, 99.0);
    // The writer's caches start empty after a reopen: the known sensor is found in the file.
    let again = WriteBatch {
        excursions: Vec::new(),
        readings: vec![reading(sensor.id, 1000, 0.0), reading(sensor.id, 2000, 1.0)],
        alerts: vec![],
    };
    assert_eq!(
        store
            .write_batch(again)
            .await
            .expect("write after reopen")
            .readings_written,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_finishes_queued_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(options(&dir)).await.expect("open"));
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let sensor = store
        .catalog()
        .provision_sensors(tenant.id, &["CF-1".into()])
        .await
        .expect("sensor")[0]
        .id;
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let batch = WriteBatch {
                    excursions: Vec::new(),
                    readings: (0..50)
                        .map(|j| reading(sensor, i * 1000 + j, 1.0))
                        .collect(),
                    alerts: vec![],
                };
                store
                    .write_batch(batch)
                    .await
                    .expect("write")
                    .readings_written
            })
        })
        .collect();
    let mut written = 0;
    for w in writers {
        written += w.await.expect("join");
    }
    assert_eq!(written, 1000);
    drop(store); // joins the writer thread
    let store = SqliteStore::open(options(&dir)).await.expect("reopen");
    let series = store
        .readings()
        .series(tenant.id, "CF-1", &everything())
        .await
        .expect("series");
    assert_eq!(series.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_schema_version() {
    let t = fresh().await;
    assert_eq!(
        t.store.schema_version().await.expect("version"),
        SCHEMA_VERSION
    );
    const { assert!(SCHEMA_VERSION >= 1) };
    let raw =
        rusqlite::Connection::open(t._dir.path().join("nested/dir/vigia.db")).expect("raw open");
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("pragma");
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("pragma");
    assert_eq!(mode, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_database_from_a_newer_build() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(options(&dir)).await.expect("open");
    drop(store);
    let raw = rusqlite::Connection::open(options(&dir).path).expect("raw open");
    raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("bump version");
    drop(raw);
    let err = SqliteStore::open(options(&dir))
        .await
        .err()
        .expect("must refuse");
    match err {
        StoreError::Internal(message) => {
            assert!(message.contains("newer than this build"), "{message}");
            assert!(
                message.contains(&format!("version {}", SCHEMA_VERSION + 1)),
                "{message}"
            );
        }
        other => panic!("expected Internal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_an_unopenable_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A directory where the file should be.
    std::fs::create_dir_all(dir.path().join("taken.db")).expect("mkdir");
    let opts = SqliteStoreOptions::new(dir.path().join("taken.db"));
    let err = SqliteStore::open(opts).await.err().expect("must fail");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

/// Readers keep answering, with consistent snapshots, while the writer commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_during_writes() {
    let t = fresh().await;
    let store = Arc::new(t.store);
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
            }
        })
    };
    let readers: Vec<_> = (0..6)
        .map(|_| {
            let store = Arc::clone(&store);
            let tenant = tenant.id;
            tokio::spawn(async move {
                let mut last = 0;
                let mut reads = 0;
                loop {
                    let series = store
                        .readings()
                        .series(tenant, "CF-1", &everything())
                        .await
                        .expect("read");
                    // Whole batches only: a reader never sees half a commit.
                    assert_eq!(series.len() % 100, 0, "saw a partial batch");
                    assert!(series.len() >= last, "a later read saw fewer rows");
                    last = series.len();
                    reads += 1;
                    if last == 20_000 {
                        return reads;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    writer.await.expect("writer");
    for r in readers {
        assert!(r.await.expect("reader") >= 1);
    }
    let latest = store
        .readings()
        .latest(tenant.id, &vigia_store::SensorScope::All)
        .await
        .expect("latest");
    assert_eq!(latest.len(), 1);
    assert_eq!((latest[0].ts, latest[0].value), (Timestamp(19_999), 199.0));
}

/// Robot creates racing through the writer share its group commits, each in a savepoint
/// of its own: creates for an unknown tenant fail alone (`Conflict`) while the others in
/// their groups land, and every answered create survives a reopen (202 means durable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_robot_writes_fail_alone_and_survive_reopen() {
    use vigia_core::TenantId;
    use vigia_store::{NewRobot, RobotError, RobotFilter};

    let dir = tempfile::tempdir().expect("tempdir");
    let full = SqliteStoreOptions {
        durability: Durability::Full,
        ..options(&dir)
    };
    let store = Arc::new(SqliteStore::open(full.clone()).await.expect("open"));
    let tenant = store.catalog().default_tenant().await.expect("tenant").id;
    let creates: Vec<_> = (0..64)
        .map(|i| {
            let store = Arc::clone(&store);
            let owner = if i % 8 == 0 {
                TenantId(999_999)
            } else {
                tenant
            };
            tokio::spawn(async move {
                let robot = NewRobot {
                    tenant: owner,
                    module: "echo".into(),
                    input: serde_json::json!({ "i": i }),
                    priority: 0,
                    timeout_s: None,
                    idempotency: None,
                };
                (owner, store.robots().create(&robot, Timestamp(i)).await)
            })
        })
        .collect();
    let mut created = 0;
    for create in creates {
        let (owner, result) = create.await.expect("task");
        if owner == tenant {
            result.expect("a good create in a group with failing ones");
            created += 1;
        } else {
            assert!(
                matches!(result, Err(RobotError::Store(StoreError::Conflict(_)))),
                "{result:?}"
            );
        }
    }
    assert_eq!(created, 56);
    store.close().await;
    drop(store);

    let reopened = SqliteStore::open(full).await.expect("reopen");
    let filter = RobotFilter {
        limit: 100,
        ..Default::default()
    };
    let listed = reopened.robots().list(tenant, &filter).await.expect("list");
    assert_eq!(listed.len(), 56, "every answered create is on disk");
}
