//! Runs every store conformance check against [`PostgresStore`], each on a database of its
//! own (created for it, dropped after it), plus what only a server backend has:
//! partitions, the read replica pool, URL errors, an unreachable server, migrations
//! racing, durability settings.
//!
//! Needs PostgreSQL at 127.0.0.1:5432 (user `postgres`, trust); skipped with a notice when
//! it is not there, failed under `VIGIA_REQUIRE_SERVICES=1`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use vigia_core::{SensorId, Timestamp, DEFAULT_METRIC};
use vigia_store::conformance;
use vigia_store::postgres::{
    partitions, PostgresFactory, PostgresStore, PostgresStoreOptions, PARTITION_WIDTH_MS,
    SCHEMA_VERSION,
};
use vigia_store::{
    Durability, OpenContext, ReadingQuery, SensorReading, Store, StoreError, StoreFactory,
    WriteBatch,
};

const SERVER: &str = "127.0.0.1:5432";
const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn available() -> bool {
    vigia_core::services::service_available("postgres", SERVER)
}

/// A database of its own, dropped (connections and all) when this is dropped, even when
/// the test panicked.
struct TestDb {
    name: String,
}

impl TestDb {
    async fn create() -> TestDb {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let name = format!(
            "vigia_t_{}_{}_{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(ADMIN_URL)
            .await
            .expect("admin connection");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        admin.close().await.ok();
        TestDb { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    /// The same database through another address, as a replica would be reached.
    fn second_url(&self) -> String {
        format!("postgresql://postgres@localhost:5432/{}", self.name)
    }

    fn options(&self) -> PostgresStoreOptions {
        PostgresStoreOptions {
            durability: Durability::Os,
            ..PostgresStoreOptions::new(self.url())
        }
    }

    async fn open(&self) -> PostgresStore {
        PostgresStore::open(self.options())
            .await
            .expect("open store")
    }

    async fn raw(&self) -> PgConnection {
        PgConnection::connect(&self.url())
            .await
            .expect("raw connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await, and may run on a runtime thread: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut admin = PgConnection::connect(ADMIN_URL).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            if !available() {
                return;
            }
            let db = TestDb::create().await;
            let store = db.open().await;
            conformance::$check(&store).await;
            store.close().await;
        }
    )*};
}

vigia_store::for_each_store_check!(conformance_tests);
vigia_store::for_each_rollup_check!(conformance_tests);

/// Every check within 5 connections in all (seed 004 §1.2), with full durability.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_within_five_connections() {
    if !available() {
        return;
    }
    let dbs = Mutex::new(Vec::new());
    conformance::run_all(|| async {
        let db = TestDb::create().await;
        let store = PostgresStore::open(PostgresStoreOptions {
            max_connections: 5,
            ..PostgresStoreOptions::new(db.url())
        })
        .await
        .expect("open store");
        dbs.lock().expect("dbs").push(db);
        store
    })
    .await;
    assert!(
        dbs.lock().expect("dbs").len() > 20,
        "one database per check"
    );
}

/// Every check with a replica pool (the same database through a second URL) and 5
/// connections split 4 + 1: reads on the replica pool see what the checks expect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_with_a_read_url() {
    if !available() {
        return;
    }
    let dbs = Mutex::new(Vec::new());
    conformance::run_all(|| async {
        let db = TestDb::create().await;
        let store = PostgresStore::open(PostgresStoreOptions {
            max_connections: 5,
            read_url: Some(db.second_url()),
            ..db.options()
        })
        .await
        .expect("open store");
        assert!(store.reads_are_read_only().await.expect("setting"));
        dbs.lock().expect("dbs").push(db);
        store
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
        from: Timestamp(i64::MIN / 2),
        to: Timestamp(i64::MAX / 2),
        limit: usize::MAX,
        step_ms: None,
    }
}

/// Which partition holds the reading at `ts`.
async fn partition_of(raw: &mut PgConnection, ts: i64) -> String {
    sqlx::query_scalar("SELECT tableoid::regclass::text FROM readings WHERE ts = $1")
        .bind(ts)
        .fetch_one(raw)
        .await
        .expect("partition of a reading")
}

/// Open creates today's partition and the week ahead; readings far in the past and the
/// future land in the default partition and are read back with the current ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_land_in_day_partitions_or_the_default() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = db.open().await;
    let now = Timestamp::now().0;
    let today = partitions::partition_start(now);
    let names = store.reading_partitions().await.expect("partitions");
    for day in 0..=7 {
        let name = partitions::partition_name(today + day * PARTITION_WIDTH_MS);
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(names.contains(&"readings_default".to_string()));
    assert_eq!(names.len(), 9, "{names:?}");

    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let sensor = store
        .catalog()
        .provision_sensors(tenant.id, &["CF-1".into()])
        .await
        .expect("sensor")[0]
        .id;
    let past = -2_000_000_000_000; // 1906
    let future = 4_102_444_800_000; // 2100-01-01
    let tomorrow = today + PARTITION_WIDTH_MS + 5;
    let batch = WriteBatch {
        excursions: Vec::new(),
        readings: vec![
            reading(sensor, future, 3.0),
            reading(sensor, now, 1.0),
            reading(sensor, past, -1.0),
            reading(sensor, tomorrow, 2.0),
        ],
        alerts: vec![],
    };
    assert_eq!(
        store
            .write_batch(batch.clone())
            .await
            .expect("write")
            .readings_written,
        4
    );
    assert_eq!(
        store
            .write_batch(batch)
            .await
            .expect("again")
            .readings_written,
        0,
        "idempotent across partitions, the default included"
    );
    let series = store
        .readings()
        .series(tenant.id, "CF-1", &everything())
        .await
        .expect("series");
    let got: Vec<(i64, f64)> = series.iter().map(|p| (p.ts.0, p.value)).collect();
    assert_eq!(
        got,
        [(past, -1.0), (now, 1.0), (tomorrow, 2.0), (future, 3.0)]
    );

    let mut raw = db.raw().await;
    assert_eq!(partition_of(&mut raw, past).await, "readings_default");
    assert_eq!(partition_of(&mut raw, future).await, "readings_default");
    assert_eq!(
        partition_of(&mut raw, now).await,
        partitions::partition_name(today)
    );
    assert_eq!(
        partition_of(&mut raw, tomorrow).await,
        partitions::partition_name(today + PARTITION_WIDTH_MS)
    );
    store.close().await;
}

/// Housekeeping creates the partitions that came due, and a partition whose day already
/// has readings in the default partition takes them over: none lost, none doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housekeep_creates_next_partitions_and_moves_default_rows() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = db.open().await;
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let sensor = store
        .catalog()
        .provision_sensors(tenant.id, &["CF-1".into()])
        .await
        .expect("sensor")[0]
        .id;
    let today = partitions::partition_start(Timestamp::now().0);
    let last = today + 7 * PARTITION_WIDTH_MS;
    let last_name = partitions::partition_name(last);
    // As if the last day ahead had not been created yet: its readings go to the default.
    let mut raw = db.raw().await;
    sqlx::raw_sql(&format!("DROP TABLE {last_name}"))
        .execute(&mut raw)
        .await
        .expect("drop partition");
    let readings: Vec<_> = (0..500)
        .map(|i| reading(sensor, last + i * 1000, i as f64))
        .collect();
    store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings,
            alerts: vec![],
        })
        .await
        .expect("write");
    assert_eq!(partition_of(&mut raw, last).await, "readings_default");

    let summary = store.housekeep().await.expect("housekeep");
    assert!(
        summary.contains("1 readings partition(s) created"),
        "{summary}"
    );
    assert!(summary.contains("500 reading(s) moved"), "{summary}");
    assert_eq!(partition_of(&mut raw, last).await, last_name);
    let in_default: i64 = sqlx::query_scalar("SELECT count(*) FROM readings_default")
        .fetch_one(&mut raw)
        .await
        .expect("count");
    assert_eq!(in_default, 0);
    let series = store
        .readings()
        .series(tenant.id, "CF-1", &everything())
        .await
        .expect("series");
    assert_eq!(series.len(), 500);

    // A later day comes due: its partition is created, nothing moved.
    let report = store
        .ensure_partitions(Timestamp(today + PARTITION_WIDTH_MS))
        .await
        .expect("next day");
    assert_eq!(
        report.created,
        [partitions::partition_name(last + PARTITION_WIDTH_MS)]
    );
    assert_eq!(report.moved, 0);
    let again = store.housekeep().await.expect("housekeep again");
    assert!(
        again.starts_with("0 readings partition(s) created"),
        "{again}"
    );
    store.close().await;
}

/// Two processes opening a fresh database at once migrate it once; a newer schema is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_migrate_once_and_newer_schemas_are_refused() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let (a, b) = tokio::join!(
        PostgresStore::open(db.options()),
        PostgresStore::open(db.options())
    );
    let (a, b) = (a.expect("first open"), b.expect("second open"));
    assert_eq!(a.schema_version().await.expect("version"), SCHEMA_VERSION);
    a.close().await;
    b.close().await;
    let mut raw = db.raw().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM schema_migrations")
        .fetch_one(&mut raw)
        .await
        .expect("count");
    assert_eq!(rows, SCHEMA_VERSION);
    sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)")
        .bind(SCHEMA_VERSION + 1)
        .execute(&mut raw)
        .await
        .expect("bump");
    match PostgresStore::open(db.options()).await {
        Err(StoreError::Internal(m)) => assert!(m.contains("newer than this build"), "{m}"),
        Err(other) => panic!("expected Internal, got {other:?}"),
        Ok(_) => panic!("a newer schema must be refused"),
    }
}

/// `must_exist` refuses a database without a Vigía schema and opens one that has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_exist_refuses_an_empty_database() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let ctx = OpenContext {
        must_exist: true,
        ..OpenContext::new("/nonexistent")
    };
    match PostgresFactory.open(&db.url(), &ctx).await {
        Err(StoreError::Config(m)) => assert!(m.contains("no Vigía store"), "{m}"),
        Err(other) => panic!("expected Config, got {other:?}"),
        Ok(_) => panic!("must_exist opened an empty database"),
    }
    db.open().await.close().await;
    let store = PostgresFactory
        .open(&db.url(), &ctx)
        .await
        .expect("now it exists");
    store.ping().await.expect("ping");
    store.close().await;
}

/// Through the registry, with `read_url` on a second connection to the same database:
/// reads (served by the replica pool) see the primary's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_url_serves_reads_through_a_second_pool() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let ctx = OpenContext {
        read_url: Some(db.second_url()),
        max_connections: 5,
        durability: Durability::Os,
        ..OpenContext::new("/nonexistent")
    };
    let store = vigia_store::open(&db.url(), &ctx)
        .await
        .expect("open with replica");
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let sensor = store
        .catalog()
        .provision_sensors(tenant.id, &["CF-1".into()])
        .await
        .expect("sensor")[0]
        .id;
    let now = Timestamp::now().0;
    store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: (0..10)
                .map(|i| reading(sensor, now + i, i as f64))
                .collect(),
            alerts: vec![],
        })
        .await
        .expect("write");
    let series = store
        .readings()
        .series(tenant.id, "CF-1", &everything())
        .await
        .expect("series from the replica pool");
    assert_eq!(series.len(), 10);
    let listed = store
        .catalog()
        .list_sensors(tenant.id, None, usize::MAX)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    let latest = store
        .readings()
        .latest(tenant.id, &vigia_store::SensorScope::All)
        .await
        .expect("latest");
    assert_eq!(latest[0].ts, Timestamp(now + 9));
    store.close().await;
    assert!(
        matches!(store.ping().await, Err(StoreError::Unavailable(_))),
        "closed store is unavailable"
    );

    // The replica pool is read-only: a write through it would be refused by the server.
    let replica_only = PostgresStore::open(PostgresStoreOptions {
        read_url: Some(db.second_url()),
        ..db.options()
    })
    .await
    .expect("open");
    assert!(replica_only.reads_are_read_only().await.expect("setting"));
    replica_only.close().await;
}

/// A `read_url` of another scheme, a malformed URL, or too few connections are `Config`
/// errors, from `validate` and from `open`, and never echo the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_settings_are_config_errors() {
    let ctx = OpenContext::new("/nonexistent");
    let cases = [
        ("postgres://u:hunter2@127.0.0.1:notaport/db", ctx.clone()),
        (
            "postgres://u:hunter2@127.0.0.1:5432/db?sslmode=bogus",
            ctx.clone(),
        ),
        (
            "postgres://u:hunter2@127.0.0.1:5432/db",
            OpenContext {
                read_url: Some("mysql://root:hunter2@127.0.0.1:3306/test".into()),
                ..ctx.clone()
            },
        ),
        (
            "postgres://u:hunter2@127.0.0.1:5432/db",
            OpenContext {
                max_connections: 1,
                ..ctx.clone()
            },
        ),
    ];
    for (url, ctx) in cases {
        let validated = vigia_store::registry::StoreRegistry::builtin().validate(url, &ctx);
        assert!(
            matches!(&validated, Err(StoreError::Config(m)) if !m.contains("hunter2")),
            "{url} {:?}: {validated:?}",
            ctx.read_url
        );
        let opened = vigia_store::open(url, &ctx).await;
        assert!(
            matches!(&opened, Err(StoreError::Config(m)) if !m.contains("hunter2")),
            "{url}: {:?}",
            opened.err()
        );
    }
    // The read_url error names the setting.
    let err = PostgresFactory
        .validate(
            "postgres://127.0.0.1/db",
            &OpenContext {
                read_url: Some("mysql://127.0.0.1/db".into()),
                ..ctx
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("store_read_url"), "{err}");
}

/// Nothing listening: `Unavailable` within the acquire timeout, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable_quickly() {
    // Port 1 on loopback never has a server here.
    let started = Instant::now();
    let result = PostgresStore::open(PostgresStoreOptions {
        acquire_timeout: Duration::from_secs(2),
        ..PostgresStoreOptions::new("postgres://postgres@127.0.0.1:1/postgres")
    })
    .await;
    let elapsed = started.elapsed();
    match result {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("127.0.0.1:1"), "{m}"),
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("nothing listens on port 1"),
    }
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
    // Through the registry (default 5 s acquire timeout) as well.
    let started = Instant::now();
    let result = vigia_store::open(
        "postgres://postgres@127.0.0.1:1/postgres",
        &OpenContext::new("/nonexistent"),
    )
    .await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{:?}",
        result.err()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// `Durability` maps onto `synchronous_commit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_sets_synchronous_commit() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    for (durability, want) in [(Durability::Full, "on"), (Durability::Os, "off")] {
        let store = PostgresStore::open(PostgresStoreOptions {
            durability,
            ..db.options()
        })
        .await
        .expect("open");
        assert_eq!(store.synchronous_commit().await.expect("setting"), want);
        store.close().await;
    }
}

/// Concurrent batches opening and resolving the same rules in opposite orders, and acks
/// racing them, all commit (no deadlock aborts one), and the outbox holds exactly one
/// event per change reported, in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_alert_changes_do_not_deadlock() {
    use vigia_core::{RuleKind, Severity};
    use vigia_store::{AlertTransition, NewAlert};
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = std::sync::Arc::new(db.open().await);
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let sensor = store
        .catalog()
        .provision_sensors(tenant.id, &["CF-1".into()])
        .await
        .expect("sensor")[0]
        .id;
    let open = |rule: &str| {
        AlertTransition::Open(NewAlert {
            tenant: tenant.id,
            sensor,
            rule: rule.into(),
            kind: RuleKind::Threshold,
            severity: Severity::Critical,
            metric: DEFAULT_METRIC.into(),
            value: 1.0,
            message: "warm".into(),
            opened_at: Timestamp(1),
            details: None,
        })
    };
    let resolve = |rule: &str| AlertTransition::Resolve {
        tenant: tenant.id,
        sensor,
        rule: rule.into(),
        at: Timestamp(2),
    };
    let tasks: Vec<_> = (0..6)
        .map(|task| {
            let store = std::sync::Arc::clone(&store);
            let (first, second) = if task % 2 == 0 {
                ("a", "b")
            } else {
                ("b", "a")
            };
            let alerts = [
                vec![open(first), open(second)],
                vec![resolve(second), resolve(first)],
            ];
            let tenant = tenant.id;
            tokio::spawn(async move {
                let mut changes = 0;
                for round in 0..30 {
                    let outcome = store
                        .write_batch(WriteBatch {
                            excursions: Vec::new(),
                            readings: vec![reading(sensor, task * 1000 + round, 1.0)],
                            alerts: alerts[round as usize % 2].clone(),
                        })
                        .await
                        .expect("batch commits");
                    changes += outcome.alerts.len();
                    for (_, alert) in &outcome.alerts {
                        if alert.state == vigia_core::AlertState::Open {
                            let acked = store
                                .alerts()
                                .ack(tenant, alert.id, "ops", Timestamp(3))
                                .await;
                            match acked {
                                Ok(a) if a.state == vigia_core::AlertState::Acked => changes += 1,
                                // Resolved by another task first: no change, no event.
                                Ok(_) | Err(StoreError::Conflict(_)) => {}
                                Err(e) => panic!("ack: {e:?}"),
                            }
                        }
                    }
                }
                changes
            })
        })
        .collect();
    let mut changes = 0;
    for t in tasks {
        changes += t.await.expect("task");
    }
    let events = store.outbox().read_after(0, 10_000).await.expect("outbox");
    assert_eq!(events.len(), changes, "one event per change");
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert!(changes > 0);
    store.close().await;
}

/// Text PostgreSQL cannot store (a NUL byte, which SQLite accepts) is refused as a
/// `Conflict` naming the problem, and the store carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_postgres_cannot_store_is_a_conflict() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = db.open().await;
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let bad = store
        .catalog()
        .provision_sensors(tenant.id, &["CF\0-1".into()])
        .await;
    assert!(
        matches!(&bad, Err(StoreError::Conflict(m)) if m.contains("0x00")),
        "{bad:?}"
    );
    let sensor = store
        .catalog()
        .provision_sensors(tenant.id, &["CF-1".into()])
        .await
        .expect("a good key still goes in")[0]
        .id;
    let bad_metric = store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: vec![SensorReading {
                metric: "temp\0".into(),
                ..reading(sensor, 1, 1.0)
            }],
            alerts: vec![],
        })
        .await;
    assert!(
        matches!(bad_metric, Err(StoreError::Conflict(_))),
        "{bad_metric:?}"
    );
    store.close().await;
}

/// A batch that changes alerts takes the outbox lock BEFORE it writes an alert row: while
/// another session holds the lock, the batch has written nothing of its alerts, so that
/// session can insert the same unresolved alert at once (had the batch inserted first,
/// the session would wait on the batch's row while the batch waits on its lock: a
/// deadlock). The batch then finds the alert open and opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_batches_take_the_outbox_lock_before_alert_rows() {
    use vigia_core::{RuleKind, Severity};
    use vigia_store::postgres::OUTBOX_LOCK_KEY;
    use vigia_store::{AlertTransition, NewAlert};
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = std::sync::Arc::new(db.open().await);
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let sensor = store
        .catalog()
        .provision_sensors(tenant.id, &["CF-1".into()])
        .await
        .expect("sensor")[0]
        .id;
    let mut holder = db.raw().await;
    sqlx::raw_sql("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(OUTBOX_LOCK_KEY)
        .execute(&mut holder)
        .await
        .expect("take the outbox lock");
    let batch = {
        let store = std::sync::Arc::clone(&store);
        tokio::spawn(async move {
            store
                .write_batch(WriteBatch {
                    excursions: Vec::new(),
                    readings: vec![reading(sensor, 1, 1.0)],
                    alerts: vec![AlertTransition::Open(NewAlert {
                        tenant: tenant.id,
                        sensor,
                        rule: "b".into(),
                        kind: RuleKind::Threshold,
                        severity: Severity::Critical,
                        metric: DEFAULT_METRIC.into(),
                        value: 1.0,
                        message: "warm".into(),
                        opened_at: Timestamp(1),
                        details: None,
                    })],
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!batch.is_finished(), "the batch waits for the outbox lock");
    let inserted = tokio::time::timeout(
        Duration::from_secs(3),
        sqlx::query(
            "INSERT INTO alerts (tenant_id, sensor_id, rule, kind, severity, state, metric,
                 value, message, opened_at)
             VALUES ($1, $2, 'b', 'threshold', 'critical', 'open', 'temperature', 1, 'x', 1)
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant.id.0)
        .bind(sensor.0)
        .execute(&mut holder),
    )
    .await
    .expect("no alert row of the waiting batch blocks the insert")
    .expect("insert");
    assert_eq!(inserted.rows_affected(), 1);
    sqlx::raw_sql("COMMIT")
        .execute(&mut holder)
        .await
        .expect("commit");
    let outcome = batch
        .await
        .expect("join")
        .expect("the batch commits after the lock");
    assert_eq!(outcome.readings_written, 1);
    assert!(
        outcome.alerts.is_empty(),
        "the alert was already open: {outcome:?}"
    );
    store.close().await;
}
