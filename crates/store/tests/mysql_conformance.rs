//! Runs every store conformance check (the rollups port's too) against [`MysqlStore`] on
//! MariaDB, each on a database of its own (created for it, dropped after it), plus what
//! only a server backend has: the 5-connection budget, the read replica pool, URL errors,
//! an unreachable server, migrations racing, statement sizes under max_allowed_packet, the
//! generated column that keeps one unresolved alert per (sensor, rule), duplicates that
//! are not hidden, the outbox lock order, and the watermark row locks that order batches
//! and roll-ups.
//!
//! Needs MariaDB at 127.0.0.1:3306 (user `root`, no password); skipped with a notice when
//! it is not there, failed under `VIGIA_REQUIRE_SERVICES=1`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{Connection, MySqlConnection};
use vigia_core::{RuleKind, SensorId, Severity, Timestamp, DEFAULT_METRIC};
use vigia_store::conformance;
use vigia_store::mysql::{MysqlFactory, MysqlStore, MysqlStoreOptions, SCHEMA_VERSION};
use vigia_store::{
    AlertTransition, Durability, NewAlert, OpenContext, ReadingQuery, Resolution, RollupRepo,
    SensorReading, Store, StoreError, StoreFactory, WriteBatch,
};

const SERVER: &str = "127.0.0.1:3306";
const ADMIN_URL: &str = "mysql://root@127.0.0.1:3306/mysql";

fn available() -> bool {
    vigia_core::services::service_available("mariadb", SERVER)
}

/// A database of its own, dropped when this is dropped, even when the test panicked.
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
        let mut admin = MySqlConnection::connect(ADMIN_URL)
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
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }

    /// The same database through another address and the alias scheme, as a replica
    /// would be reached.
    fn second_url(&self) -> String {
        format!("mariadb://root@localhost:3306/{}", self.name)
    }

    fn options(&self) -> MysqlStoreOptions {
        MysqlStoreOptions {
            durability: Durability::Os,
            ..MysqlStoreOptions::new(self.url())
        }
    }

    async fn open(&self) -> MysqlStore {
        MysqlStore::open(self.options()).await.expect("open store")
    }

    async fn raw(&self) -> MySqlConnection {
        MySqlConnection::connect(&self.url())
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
                let mut admin = MySqlConnection::connect(ADMIN_URL).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}"))
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

/// Connections the server has open on `database` now (every client, this test's too).
async fn server_connections(admin: &mut MySqlConnection, database: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM information_schema.processlist WHERE db = ?")
        .bind(database)
        .fetch_one(admin)
        .await
        .expect("processlist")
}

/// Every check within 5 connections in all (seed 004 §1.2), through the registry, with
/// statements cut small (so multi-row INSERTs are split), while a watcher samples the
/// server's process list: no database ever sees more than 5 connections of the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_within_five_connections() {
    if !available() {
        return;
    }
    let dbs: Mutex<Vec<Arc<TestDb>>> = Mutex::new(Vec::new());
    let current: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (current, done, peak) = (current.clone(), done.clone(), peak.clone());
        tokio::spawn(async move {
            let mut admin = MySqlConnection::connect(ADMIN_URL).await.expect("admin");
            while !done.load(Ordering::Relaxed) {
                let name = current.lock().expect("current").clone();
                if let Some(name) = name {
                    let n = server_connections(&mut admin, &name).await;
                    peak.fetch_max(n as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    conformance::run_all(|| async {
        let db = Arc::new(TestDb::create().await);
        *current.lock().expect("current") = Some(db.name.clone());
        let store = MysqlStore::open(MysqlStoreOptions {
            max_connections: 5,
            statement_bytes: 2048,
            ..MysqlStoreOptions::new(db.url())
        })
        .await
        .expect("open store");
        dbs.lock().expect("dbs").push(db);
        store
    })
    .await;
    done.store(true, Ordering::Relaxed);
    watcher.await.expect("watcher");
    assert!(
        dbs.lock().expect("dbs").len() > 20,
        "one database per check"
    );
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak >= 1, "the watcher saw the store's connections");
    assert!(peak <= 5, "at most 5 connections at once, saw {peak}");
}

/// Every check with a replica pool (the same database through a second URL, with the
/// `mariadb` scheme) and 5 connections split 4 + 1: reads on the replica pool see what the
/// checks expect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_with_a_read_url() {
    if !available() {
        return;
    }
    let dbs = Mutex::new(Vec::new());
    conformance::run_all(|| async {
        let db = TestDb::create().await;
        let store = MysqlStore::open(MysqlStoreOptions {
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

/// The default tenant and its sensor `CF-1`, provisioned.
async fn tenant_and_sensor(store: &dyn Store) -> (vigia_core::Tenant, SensorId) {
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let sensor = store
        .catalog()
        .provision_sensors(tenant.id, &["CF-1".into()])
        .await
        .expect("sensor")[0]
        .id;
    (tenant, sensor)
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

fn open_alert(tenant: vigia_core::TenantId, sensor: SensorId, rule: &str) -> AlertTransition {
    AlertTransition::Open(NewAlert {
        tenant,
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
}

/// A batch far larger than one statement (tiny statement budget) is split into many
/// multi-row INSERTs within one transaction: every reading lands once, duplicates (within
/// and across batches) are counted as not written, and doubles read back bit for bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_split_under_the_statement_budget() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = MysqlStore::open(MysqlStoreOptions {
        statement_bytes: 1024,
        ..db.options()
    })
    .await
    .expect("open");
    assert_eq!(store.statement_bytes(), 1024);
    let (tenant, sensor) = tenant_and_sensor(&store).await;
    let values: Vec<f64> = (0..5_000)
        .map(|i| match i % 5 {
            0 => (i as f64) / 3.0,
            1 => -1e-300 * i as f64,
            2 => f64::MAX / (i as f64 + 1.0),
            3 => f64::MIN_POSITIVE / 3.0, // subnormal
            _ => 0.1 + 0.2,
        })
        .collect();
    let mut readings: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| reading(sensor, i as i64, v))
        .collect();
    // 500 duplicates inside the batch: the first occurrence wins.
    readings.extend((0..500).map(|i| reading(sensor, i, 12345.0)));
    let outcome = store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: readings.clone(),
            alerts: vec![],
        })
        .await
        .expect("write");
    assert_eq!(outcome.readings_written, 5_000);
    let again = store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: readings[4_000..].to_vec(),
            alerts: vec![],
        })
        .await
        .expect("again");
    assert_eq!(again.readings_written, 0, "every one already stored");
    let series = store
        .readings()
        .series(tenant.id, "CF-1", &everything())
        .await
        .expect("series");
    assert_eq!(series.len(), 5_000);
    for (point, want) in series.iter().zip(&values) {
        assert_eq!(point.value.to_bits(), want.to_bits(), "at {}", point.ts.0);
    }
    store.close().await;
}

/// The server's max_allowed_packet caps the statement budget at half of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_budget_stays_under_max_allowed_packet() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = MysqlStore::open(MysqlStoreOptions {
        statement_bytes: usize::MAX,
        ..db.options()
    })
    .await
    .expect("open");
    let mut raw = db.raw().await;
    let packet: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
        .fetch_one(&mut raw)
        .await
        .expect("max_allowed_packet");
    assert_eq!(store.statement_bytes() as i64, packet / 2);
    store.close().await;
}

/// The generated `unresolved` column: NULL once resolved, so resolved alerts of a rule
/// pile up freely while a second unresolved one is refused by the database itself,
/// even when written behind the store's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unique_key_on_a_generated_column_allows_one_unresolved_alert() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = db.open().await;
    let (tenant, sensor) = tenant_and_sensor(&store).await;
    for round in 0..3 {
        let opened = store
            .write_batch(WriteBatch {
                excursions: Vec::new(),
                readings: vec![],
                alerts: vec![open_alert(tenant.id, sensor, "hot")],
            })
            .await
            .expect("open");
        assert_eq!(opened.alerts.len(), 1, "round {round}");
        let resolved = store
            .write_batch(WriteBatch {
                excursions: Vec::new(),
                readings: vec![],
                alerts: vec![AlertTransition::Resolve {
                    tenant: tenant.id,
                    sensor,
                    rule: "hot".into(),
                    at: Timestamp(2),
                }],
            })
            .await
            .expect("resolve");
        assert_eq!(resolved.alerts.len(), 1);
    }
    store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: vec![],
            alerts: vec![open_alert(tenant.id, sensor, "hot")],
        })
        .await
        .expect("open a fourth");
    let mut raw = db.raw().await;
    // `state` is decoded as bytes: its binary collation makes sqlx see VARBINARY.
    let unresolved: Vec<(Vec<u8>, Option<i64>)> =
        sqlx::query_as("SELECT state, unresolved FROM alerts ORDER BY id")
            .fetch_all(&mut raw)
            .await
            .expect("alerts");
    assert_eq!(
        unresolved,
        [
            (b"resolved".to_vec(), None),
            (b"resolved".to_vec(), None),
            (b"resolved".to_vec(), None),
            (b"open".to_vec(), Some(1)),
        ]
    );
    let second = sqlx::query(
        "INSERT INTO alerts (tenant_id, sensor_id, rule, kind, severity, state, metric, value,
             message, opened_at) VALUES (?, ?, 'hot', 'threshold', 'critical', 'acked', 'x', 1,
             'x', 1)",
    )
    .bind(tenant.id.0)
    .bind(sensor.0)
    .execute(&mut raw)
    .await;
    let err = second.expect_err("a second unresolved alert is refused");
    assert!(err.to_string().contains("alerts_one_unresolved"), "{err}");
    // Another rule, or another sensor, is another key.
    assert_eq!(
        store
            .write_batch(WriteBatch {
                excursions: Vec::new(),
                readings: vec![],
                alerts: vec![open_alert(tenant.id, sensor, "hot ")],
            })
            .await
            .expect("open")
            .alerts
            .len(),
        1,
        "`hot ` is another rule than `hot` (NO PAD collation)"
    );
    store.close().await;
}

/// The no-op duplicate handling hides nothing else: a metric name or a sensor key too long
/// for its column is refused as a `Conflict` (where INSERT IGNORE would truncate or skip
/// it with a warning), the batch writes nothing, and the store carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_the_table_refuses_are_conflicts_not_skipped_rows() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = db.open().await;
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let bad = store
        .catalog()
        .provision_sensors(tenant.id, &["CF-1".into(), "k".repeat(300)])
        .await;
    assert!(
        matches!(&bad, Err(StoreError::Conflict(m)) if m.contains("too long")),
        "{bad:?}"
    );
    assert!(
        store
            .catalog()
            .list_sensors(tenant.id, None, usize::MAX)
            .await
            .expect("list")
            .is_empty(),
        "the failed statement inserted nothing"
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
            readings: vec![
                reading(sensor, 1, 1.0),
                SensorReading {
                    metric: "m".repeat(300),
                    ..reading(sensor, 2, 1.0)
                },
            ],
            alerts: vec![],
        })
        .await;
    assert!(
        matches!(bad_metric, Err(StoreError::Conflict(_))),
        "{bad_metric:?}"
    );
    assert!(store
        .readings()
        .series(tenant.id, "CF-1", &everything())
        .await
        .expect("series")
        .is_empty());
    let fine = store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: vec![reading(sensor, 1, 1.0)],
            alerts: vec![],
        })
        .await
        .expect("the store carries on");
    assert_eq!(fine.readings_written, 1);
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
        MysqlStore::open(db.options()),
        MysqlStore::open(db.options())
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
    sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)")
        .bind(SCHEMA_VERSION + 1)
        .execute(&mut raw)
        .await
        .expect("bump");
    match MysqlStore::open(db.options()).await {
        Err(StoreError::Internal(m)) => assert!(m.contains("newer than this build"), "{m}"),
        Err(other) => panic!("expected Internal, got {other:?}"),
        Ok(_) => panic!("a newer schema must be refused"),
    }
}

/// A migration that stopped half way (MariaDB DDL commits statement by statement) is
/// finished by the next open: the file re-runs over the tables already made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_applied_migration_is_finished_at_the_next_open() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    db.open().await.close().await;
    let mut raw = db.raw().await;
    sqlx::raw_sql("DELETE FROM schema_migrations; DROP TABLE outbox_cursors, store_locks")
        .execute(&mut raw)
        .await
        .expect("undo part of the migration");
    let store = db.open().await;
    assert_eq!(
        store.schema_version().await.expect("version"),
        SCHEMA_VERSION
    );
    conformance::outbox_has_one_event_per_alert_change(&store).await;
    store.close().await;
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
    match MysqlFactory.open(&db.url(), &ctx).await {
        Err(StoreError::Config(m)) => assert!(m.contains("no Vigía store"), "{m}"),
        Err(other) => panic!("expected Config, got {other:?}"),
        Ok(_) => panic!("must_exist opened an empty database"),
    }
    db.open().await.close().await;
    let store = MysqlFactory
        .open(&db.url(), &ctx)
        .await
        .expect("now it exists");
    store.ping().await.expect("ping");
    store.close().await;
}

/// A database that does not exist is a `Config` error naming it, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_database_is_a_config_error() {
    if !available() {
        return;
    }
    let result = vigia_store::open(
        "mysql://root@127.0.0.1:3306/vigia_no_such_database",
        &OpenContext::new("/nonexistent"),
    )
    .await;
    match result {
        Err(StoreError::Config(m)) => assert!(m.contains("vigia_no_such_database"), "{m}"),
        other => panic!("expected Config, got {:?}", other.err()),
    }
}

/// Through the registry (`mariadb://` alias), with `read_url` on a second connection to
/// the same database: reads (served by the replica pool) see the primary's writes, and
/// the replica sessions are read-only.
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
    let primary = db.url().replacen("mysql://", "mariadb://", 1);
    let store = vigia_store::open(&primary, &ctx)
        .await
        .expect("open with replica");
    let (tenant, sensor) = tenant_and_sensor(&*store).await;
    store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: (0..10)
                .map(|i| reading(sensor, 100 + i, i as f64))
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
    let latest = store
        .readings()
        .latest(tenant.id, &vigia_store::SensorScope::All)
        .await
        .expect("latest");
    assert_eq!(latest[0].ts, Timestamp(109));
    store.close().await;
    assert!(
        matches!(store.ping().await, Err(StoreError::Unavailable(_))),
        "closed store is unavailable"
    );
    let replica_only = MysqlStore::open(MysqlStoreOptions {
        read_url: Some(db.second_url()),
        ..db.options()
    })
    .await
    .expect("open");
    assert!(replica_only.reads_are_read_only().await.expect("setting"));
    replica_only.close().await;
}

/// A `read_url` of another backend, a malformed URL, a URL without a database, or too
/// few connections are `Config` errors, from `validate` and from `open`, and never echo
/// the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_settings_are_config_errors() {
    let ctx = OpenContext::new("/nonexistent");
    let cases = [
        ("mysql://u:hunter2@127.0.0.1:notaport/db", ctx.clone()),
        ("mysql://u:hunter2@127.0.0.1:3306", ctx.clone()),
        (
            "mysql://u:hunter2@127.0.0.1:3306/db?ssl-mode=bogus",
            ctx.clone(),
        ),
        (
            "mysql://u:hunter2@127.0.0.1:3306/db",
            OpenContext {
                read_url: Some("postgres://u:hunter2@127.0.0.1:5432/db".into()),
                ..ctx.clone()
            },
        ),
        (
            "mariadb://u:hunter2@127.0.0.1:3306/db",
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
}

/// Nothing listening: `Unavailable` within the acquire timeout, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable_quickly() {
    let started = Instant::now();
    let result = MysqlStore::open(MysqlStoreOptions {
        acquire_timeout: Duration::from_secs(2),
        ..MysqlStoreOptions::new("mysql://root@127.0.0.1:1/vigia")
    })
    .await;
    let elapsed = started.elapsed();
    match result {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("127.0.0.1:1"), "{m}"),
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("nothing listens on port 1"),
    }
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
}

/// The server drops the store's connections (as a restart would): the calls in flight
/// fail with `Unavailable`, and the next ones reconnect without a restart of the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_unavailable_then_recover() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = MysqlStore::open(MysqlStoreOptions {
        max_connections: 2,
        ..db.options()
    })
    .await
    .expect("open");
    let (tenant, sensor) = tenant_and_sensor(&store).await;
    let mut admin = MySqlConnection::connect(ADMIN_URL).await.expect("admin");
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = ?",
    )
    .bind(&db.name)
    .fetch_all(&mut admin)
    .await
    .expect("processlist");
    assert!(!ids.is_empty());
    for id in ids {
        sqlx::raw_sql(&format!("KILL CONNECTION {id}"))
            .execute(&mut admin)
            .await
            .expect("kill");
    }
    let mut failures = 0;
    let mut written = 0;
    for ts in 0..20 {
        match store
            .write_batch(WriteBatch {
                excursions: Vec::new(),
                readings: vec![reading(sensor, ts, 1.0)],
                alerts: vec![],
            })
            .await
        {
            Ok(outcome) => written += outcome.readings_written,
            Err(StoreError::Unavailable(_)) => failures += 1,
            Err(other) => panic!("expected Unavailable, got {other:?}"),
        }
    }
    assert!(
        failures <= 2,
        "only the killed connections fail: {failures}"
    );
    assert_eq!(written + failures, 20);
    let series = store
        .readings()
        .series(tenant.id, "CF-1", &everything())
        .await
        .expect("series");
    assert_eq!(series.len(), written, "a failed batch wrote nothing");
    store.close().await;
}

/// Concurrent batches opening and resolving the same rules in opposite orders, and acks
/// racing them, all commit (no deadlock aborts one), and the outbox holds exactly one
/// event per change reported, in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_alert_changes_do_not_deadlock() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = Arc::new(db.open().await);
    let (tenant, sensor) = tenant_and_sensor(&*store).await;
    let resolve = |rule: &str| AlertTransition::Resolve {
        tenant: tenant.id,
        sensor,
        rule: rule.into(),
        at: Timestamp(2),
    };
    let tasks: Vec<_> = (0..6)
        .map(|task| {
            let store = Arc::clone(&store);
            let (first, second) = if task % 2 == 0 {
                ("a", "b")
            } else {
                ("b", "a")
            };
            let alerts = [
                vec![
                    open_alert(tenant.id, sensor, first),
                    open_alert(tenant.id, sensor, second),
                ],
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
                            match store
                                .alerts()
                                .ack(tenant, alert.id, "ops", Timestamp(3))
                                .await
                            {
                                Ok(a) if a.state == vigia_core::AlertState::Acked => changes += 1,
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

/// A batch that changes alerts takes the outbox lock BEFORE it writes an alert row: while
/// another session holds the lock row, the batch has written nothing of its alerts, so
/// that session can insert the same unresolved alert at once. The batch then finds the
/// alert open and opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_batches_take_the_outbox_lock_before_alert_rows() {
    use vigia_store::mysql::OUTBOX_LOCK_ROW;
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = Arc::new(db.open().await);
    let (tenant, sensor) = tenant_and_sensor(&*store).await;
    let mut holder = db.raw().await;
    sqlx::raw_sql("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("SELECT name FROM store_locks WHERE name = ? FOR UPDATE")
        .bind(OUTBOX_LOCK_ROW)
        .fetch_one(&mut holder)
        .await
        .expect("take the outbox lock");
    let batch = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .write_batch(WriteBatch {
                    excursions: Vec::new(),
                    readings: vec![reading(sensor, 1, 1.0)],
                    alerts: vec![open_alert(tenant.id, sensor, "b")],
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
             VALUES (?, ?, 'b', 'threshold', 'critical', 'open', 'temperature', 1, 'x', 1)",
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

/// A put_sensor racing batches of the same sensor (which write latest values, then take
/// the outbox lock for their alerts) never deadlocks: no lock on the sensor row is taken
/// before the outbox lock by a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_sensor_and_alert_batches_do_not_deadlock() {
    use vigia_core::SensorSpec;
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = Arc::new(db.open().await);
    let (tenant, sensor) = tenant_and_sensor(&*store).await;
    let writers: Vec<_> = (0..3)
        .map(|task| {
            let store = Arc::clone(&store);
            let tenant = tenant.id;
            tokio::spawn(async move {
                for round in 0..40 {
                    let rule = if round % 2 == 0 { "x" } else { "y" };
                    store
                        .write_batch(WriteBatch {
                            excursions: Vec::new(),
                            readings: vec![reading(sensor, task * 1000 + round, 1.0)],
                            alerts: vec![open_alert(tenant, sensor, rule)],
                        })
                        .await
                        .expect("batch commits");
                }
            })
        })
        .collect();
    let putter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let spec: SensorSpec = serde_json::from_str("{}").expect("spec");
            for i in 0..40 {
                store
                    .catalog()
                    .put_sensor(tenant.id, "CF-1", &spec, "ops", Timestamp(i))
                    .await
                    .expect("put commits");
            }
        })
    };
    for w in writers {
        w.await.expect("writer");
    }
    putter.await.expect("putter");
    store.close().await;
}

/// The watermark rows migration 3 seeds (InnoDB can only lock rows that exist) order
/// batches and roll-ups: while a batch is in flight (a session holding them LOCK IN SHARE
/// MODE, as a batch does first), another batch commits at once, but a roll-up waits for
/// it to commit; while a roll-up holds them, a batch waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_roll_ups_wait_for_each_other_but_batches_never_for_batches() {
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = Arc::new(db.open().await);
    let (_, sensor) = tenant_and_sensor(&*store).await;
    let mut in_flight = db.raw().await;
    let seeded: Vec<(i64, i64)> =
        sqlx::query_as("SELECT resolution, closed_before FROM rollup_watermarks ORDER BY 1")
            .fetch_all(&mut in_flight)
            .await
            .expect("watermarks");
    assert_eq!(
        seeded,
        [(60_000, i64::MIN), (3_600_000, i64::MIN)],
        "seeded as not rolled up yet"
    );
    sqlx::raw_sql("BEGIN")
        .execute(&mut in_flight)
        .await
        .expect("begin");
    sqlx::query("SELECT closed_before FROM rollup_watermarks LOCK IN SHARE MODE")
        .fetch_all(&mut in_flight)
        .await
        .expect("shared locks");
    let outcome = tokio::time::timeout(
        Duration::from_secs(3),
        store.write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: vec![reading(sensor, 1_000, 1.0)],
            alerts: vec![],
        }),
    )
    .await
    .expect("a batch does not wait for a batch in flight")
    .expect("batch");
    assert_eq!(outcome.readings_written, 1);
    let roll_up = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.roll_up(Timestamp(3_600_000), 1_000).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !roll_up.is_finished(),
        "the roll-up waits for the batch in flight"
    );
    sqlx::raw_sql("COMMIT")
        .execute(&mut in_flight)
        .await
        .expect("commit");
    let report = roll_up
        .await
        .expect("join")
        .expect("the roll-up runs once the batch committed");
    assert_eq!(report.watermark, Some(Timestamp(3_600_000)));
    assert_eq!(
        report.readings_scanned, 2,
        "the batch's reading, once per resolution"
    );

    // The other way round: while a roll-up holds the rows (FOR UPDATE, as it does first),
    // a batch waits for it to commit.
    let mut rolling = db.raw().await;
    sqlx::raw_sql("BEGIN")
        .execute(&mut rolling)
        .await
        .expect("begin");
    sqlx::query("SELECT closed_before FROM rollup_watermarks FOR UPDATE")
        .fetch_all(&mut rolling)
        .await
        .expect("exclusive locks");
    let batch = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .write_batch(WriteBatch {
                    excursions: Vec::new(),
                    readings: vec![reading(sensor, 2_000, 1.0)],
                    alerts: vec![],
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!batch.is_finished(), "the batch waits for the roll-up");
    sqlx::raw_sql("COMMIT")
        .execute(&mut rolling)
        .await
        .expect("commit");
    let late = batch.await.expect("join").expect("the batch commits after");
    assert_eq!(late.readings_written, 1);
    let report = store
        .roll_up(Timestamp(3_600_000), 1_000)
        .await
        .expect("roll up");
    assert_eq!(
        report.dirty_recomputed, 2,
        "the batch read the watermark the roll-up left and marked its reading"
    );
    store.close().await;
}

/// (sensor, metric, bucket, count, sum, newest ts) of every bucket of `resolution`, from
/// the raw readings (`from_raw`) or from the rollup table.
async fn buckets(
    conn: &mut MySqlConnection,
    resolution: Resolution,
    from_raw: bool,
) -> Vec<(i64, i64, i64, i64, f64, i64)> {
    let w = resolution.millis();
    let sql = if from_raw {
        format!(
            "SELECT sensor_id, metric_id, ts - MOD(MOD(ts, {w}) + {w}, {w}) AS b, COUNT(*),
                    SUM(value), MAX(ts)
             FROM readings GROUP BY sensor_id, metric_id, b ORDER BY 1, 2, 3"
        )
    } else {
        let table = match resolution {
            Resolution::Minute => "rollups_1m",
            Resolution::Hour => "rollups_1h",
        };
        format!(
            "SELECT sensor_id, metric_id, bucket, value_count, value_sum, last_ts FROM {table}
             ORDER BY 1, 2, 3"
        )
    };
    sqlx::query_as(&sql).fetch_all(conn).await.expect("buckets")
}

/// Writers race repeated roll-ups, many of their readings landing behind the watermark
/// by the time they commit: after a last roll-up every 1m and 1h rollup equals the raw
/// readings of its bucket, so no reading committed behind a watermark without its mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_batches_and_roll_ups_leave_no_bucket_stale() {
    use std::sync::atomic::AtomicI64;
    const MIN: i64 = 60_000;
    const T0: i64 = 1_699_999_200_000;
    if !available() {
        return;
    }
    let db = TestDb::create().await;
    let store = Arc::new(db.open().await);
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let keys: Vec<String> = (0..4).map(|i| format!("CF-{i}")).collect();
    let sensors: Vec<SensorId> = store
        .catalog()
        .provision_sensors(tenant.id, &keys)
        .await
        .expect("sensors")
        .iter()
        .map(|s| s.id)
        .collect();
    let clock = Arc::new(AtomicI64::new(T0 + 2 * MIN));
    let writers: Vec<_> = (0..3_i64)
        .map(|task| {
            let (store, clock, sensors) = (Arc::clone(&store), clock.clone(), sensors.clone());
            tokio::spawn(async move {
                for round in 0..60_i64 {
                    // Up to two minutes behind the roll-up clock: often behind the
                    // watermark (at most a minute behind it) already.
                    let now = clock.load(Ordering::SeqCst);
                    let readings = sensors
                        .iter()
                        .map(|&s| reading(s, now - (round * 7_919 + task * 101) % (2 * MIN), 1.0))
                        .collect();
                    store
                        .write_batch(WriteBatch {
                            excursions: Vec::new(),
                            readings,
                            alerts: vec![],
                        })
                        .await
                        .expect("batch commits");
                }
            })
        })
        .collect();
    let roller = {
        let (store, clock) = (Arc::clone(&store), clock.clone());
        tokio::spawn(async move {
            let mut dirty = 0;
            for _ in 0..40 {
                let now = clock.fetch_add(5_000, Ordering::SeqCst) + 5_000;
                dirty += store
                    .roll_up(Timestamp(now), 1_000)
                    .await
                    .expect("roll-up commits")
                    .dirty_recomputed;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            dirty
        })
    };
    for w in writers {
        w.await.expect("writer");
    }
    let dirty = roller.await.expect("roller");
    let last = store
        .roll_up(
            Timestamp(clock.load(Ordering::SeqCst) + 3 * 3_600_000),
            usize::MAX,
        )
        .await
        .expect("last roll-up");
    assert!(
        dirty + last.dirty_recomputed > 0,
        "some readings landed behind the watermark"
    );
    let mut raw = db.raw().await;
    for resolution in Resolution::ALL {
        let want = buckets(&mut raw, resolution, true).await;
        assert!(!want.is_empty());
        assert_eq!(
            buckets(&mut raw, resolution, false).await,
            want,
            "{resolution:?} rollups equal the raw readings"
        );
    }
    store.close().await;
}
