//! Write throughput of the PostgreSQL store: the two ways of getting a batch of readings
//! into `readings` with `ON CONFLICT DO NOTHING`, measured on the same rows, and the
//! store's own `write_batch` (the one kept) end to end.
//!
//! - `copy`: COPY (binary) into a temporary staging table, then `INSERT INTO readings
//!   SELECT … FROM staging ON CONFLICT DO NOTHING` (kept here only, for comparison);
//! - `unnest`: one `INSERT INTO readings SELECT * FROM UNNEST($1::bigint[], …) ON
//!   CONFLICT DO NOTHING` (the store's write path);
//! - `store`: `PostgresStore::write_batch` (sensor check, metric ids, sort, UNNEST
//!   insert, latest-value upsert, one transaction), from one caller and from
//!   `VIGIA_BENCH_CALLERS` concurrent ones (default 2, as two workers would).
//!
//! Both raw variants also upsert the latest values as the store does, each batch in one
//! transaction, so the three do the same database work. Every run gets a fresh database
//! (no index grown by an earlier run), 1,000 sensors, readings stamped now (today's
//! partition), `synchronous_commit = on`.
//!
//! Measured 2026-12-06 on the 2-core machine (PostgreSQL 15 shared with other builds,
//! load average ~1.8), readings/s, median of 3 runs of 200,000 readings:
//!
//! | batch  | copy    | unnest  | store   | store, 2 callers |
//! |--------|---------|---------|---------|------------------|
//! | 1,000  | 133,844 | 162,550 | 150,070 | 138,866          |
//! | 10,000 | 285,793 | 292,264 | 270,282 | 369,505          |
//!
//! (under load average ~5 the same ranking held: 1,000 → copy 79,901, unnest 90,211.)
//! UNNEST is ~20 % faster at 1,000 readings a batch (one statement, no staging table to
//! fill and truncate at commit, no second pass) and level at 10,000, so the store writes
//! with it. Two callers with 1,000-reading batches of the SAME 1,000 sensors gain
//! nothing: each transaction waits for the other's row locks on `latest_readings`;
//! with 10,000-reading batches the lock wait is amortised and two callers reach ~370k/s.
//!
//! `cargo bench -p vigia-store --bench postgres_write`. Prints readings/s, the median of
//! `VIGIA_BENCH_REPEAT` runs (default 3) of `VIGIA_BENCH_READINGS` readings (default
//! 200,000), for batches of 1,000 and 10,000. Never fails on a timing; skips when no
//! PostgreSQL answers at 127.0.0.1:5432.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use vigia_core::{SensorId, Timestamp, DEFAULT_METRIC};
use vigia_store::postgres::{PostgresStore, PostgresStoreOptions};
use vigia_store::{Durability, SensorReading, Store, WriteBatch};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const SENSORS: usize = 1_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    Copy,
    Unnest,
    Store,
}

/// A database for one run, dropped at the end of it.
struct Db {
    name: String,
}

impl Db {
    async fn create(tag: &str) -> Db {
        let name = format!("vigia_bench_{tag}_{}", std::process::id());
        let mut admin = PgConnection::connect(ADMIN_URL).await.expect("admin");
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .expect("drop old");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create");
        Db { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    async fn drop(self) {
        let mut admin = PgConnection::connect(ADMIN_URL).await.expect("admin");
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .expect("drop");
    }
}

/// One batch as columns, plus its newest reading per sensor (one metric here).
struct RawBatch {
    ts: Vec<i64>,
    sensor: Vec<i64>,
    metric: Vec<i64>,
    value: Vec<f64>,
    latest: (Vec<i64>, Vec<i64>, Vec<i64>, Vec<f64>),
}

fn raw_batch(readings: &[SensorReading], metric: i64) -> RawBatch {
    let mut newest = std::collections::BTreeMap::new();
    for r in readings {
        let slot = newest.entry(r.sensor.0).or_insert((r.ts.0, r.value));
        if r.ts.0 > slot.0 {
            *slot = (r.ts.0, r.value);
        }
    }
    let mut latest = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (sensor, (ts, value)) in newest {
        latest.0.push(sensor);
        latest.1.push(metric);
        latest.2.push(ts);
        latest.3.push(value);
    }
    RawBatch {
        ts: readings.iter().map(|r| r.ts.0).collect(),
        sensor: readings.iter().map(|r| r.sensor.0).collect(),
        metric: vec![metric; readings.len()],
        value: readings.iter().map(|r| r.value).collect(),
        latest,
    }
}

/// COPY's binary format: header, one tuple of four 8-byte fields per reading, trailer.
fn copy_binary(b: &RawBatch) -> Vec<u8> {
    let mut buf = Vec::with_capacity(19 + b.ts.len() * 50 + 2);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes()); // flags
    buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for i in 0..b.ts.len() {
        buf.extend_from_slice(&4i16.to_be_bytes());
        for field in [
            b.ts[i].to_be_bytes(),
            b.sensor[i].to_be_bytes(),
            b.metric[i].to_be_bytes(),
            b.value[i].to_bits().to_be_bytes(),
        ] {
            buf.extend_from_slice(&8i32.to_be_bytes());
            buf.extend_from_slice(&field);
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf
}

const UPSERT_LATEST: &str = "INSERT INTO latest_readings (sensor_id, metric_id, ts, value)
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::float8[])
     ON CONFLICT (sensor_id, metric_id) DO UPDATE SET ts = excluded.ts, value = excluded.value
     WHERE excluded.ts > latest_readings.ts";

async fn write_raw(conn: &mut PgConnection, method: Method, b: &RawBatch) -> u64 {
    let mut tx = conn.begin().await.expect("begin");
    let written = match method {
        Method::Copy => {
            let mut copy = (*tx)
                .copy_in_raw(
                    "COPY readings_staging (ts, sensor_id, metric_id, value) FROM STDIN (FORMAT binary)",
                )
                .await
                .expect("copy in");
            copy.send(copy_binary(b)).await.expect("copy data");
            copy.finish().await.expect("copy finish");
            sqlx::query(
                "INSERT INTO readings (ts, sensor_id, metric_id, value)
                 SELECT ts, sensor_id, metric_id, value FROM readings_staging
                 ON CONFLICT DO NOTHING",
            )
            .execute(&mut *tx)
            .await
            .expect("insert from staging")
            .rows_affected()
        }
        Method::Unnest => sqlx::query(
            "INSERT INTO readings (ts, sensor_id, metric_id, value)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::float8[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&b.ts)
        .bind(&b.sensor)
        .bind(&b.metric)
        .bind(&b.value)
        .execute(&mut *tx)
        .await
        .expect("unnest insert")
        .rows_affected(),
        Method::Store => unreachable!("the store writes through write_batch"),
    };
    sqlx::query(UPSERT_LATEST)
        .bind(&b.latest.0)
        .bind(&b.latest.1)
        .bind(&b.latest.2)
        .bind(&b.latest.3)
        .execute(&mut *tx)
        .await
        .expect("latest");
    tx.commit().await.expect("commit");
    written
}

/// Readings/s of one run: `total` readings in batches of `batch`, on a fresh database;
/// the store variant from `callers` concurrent tasks (batch i to task i % callers).
async fn run(method: Method, batch: usize, total: usize, callers: usize) -> f64 {
    let db = Db::create(&format!("{method:?}_{batch}").to_lowercase()).await;
    let store = std::sync::Arc::new(
        PostgresStore::open(PostgresStoreOptions {
            durability: Durability::Full,
            ..PostgresStoreOptions::new(db.url())
        })
        .await
        .expect("open store"),
    );
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let keys: Vec<String> = (0..SENSORS).map(|i| format!("S-{i:05}")).collect();
    let sensors: Vec<SensorId> = store
        .catalog()
        .provision_sensors(tenant.id, &keys)
        .await
        .expect("sensors")
        .iter()
        .map(|s| s.id)
        .collect();
    // Interns the metric (far in the past: the default partition, out of the way).
    store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: vec![SensorReading {
                sensor: sensors[0],
                metric: DEFAULT_METRIC.into(),
                ts: Timestamp(0),
                value: 0.0,
            }],
            alerts: vec![],
        })
        .await
        .expect("intern metric");
    let base = Timestamp::now().0;
    // SENSORS readings per millisecond, sensor order within it: time-ordered, as ingest
    // delivers them.
    let batches: Vec<Vec<SensorReading>> = (0..total)
        .map(|i| SensorReading {
            sensor: sensors[i % SENSORS],
            metric: DEFAULT_METRIC.into(),
            ts: Timestamp(base + (i / SENSORS) as i64),
            value: (i % 97) as f64 / 4.0,
        })
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(<[SensorReading]>::to_vec)
        .collect();

    let mut conn = PgConnection::connect(&db.url())
        .await
        .expect("raw connection");
    let metric: i64 = sqlx::query_scalar("SELECT id FROM metrics WHERE name = $1")
        .bind(DEFAULT_METRIC)
        .fetch_one(&mut conn)
        .await
        .expect("metric id");
    sqlx::raw_sql(
        "CREATE TEMP TABLE readings_staging (ts bigint, sensor_id bigint, metric_id bigint,
             value float8) ON COMMIT DELETE ROWS",
    )
    .execute(&mut conn)
    .await
    .expect("staging table");
    // Column conversion is the caller's work in both raw variants; done before timing.
    let raw: Vec<RawBatch> = match method {
        Method::Store => Vec::new(),
        _ => batches.iter().map(|b| raw_batch(b, metric)).collect(),
    };

    let started = Instant::now();
    let mut written = 0u64;
    match method {
        Method::Store => {
            let mut shares: Vec<Vec<Vec<SensorReading>>> = vec![Vec::new(); callers];
            for (i, b) in batches.into_iter().enumerate() {
                shares[i % callers].push(b);
            }
            let tasks: Vec<_> = shares
                .into_iter()
                .map(|share| {
                    let store = std::sync::Arc::clone(&store);
                    tokio::spawn(async move {
                        let mut written = 0u64;
                        for b in share {
                            written += store
                                .write_batch(WriteBatch {
                                    excursions: Vec::new(),
                                    readings: b,
                                    alerts: vec![],
                                })
                                .await
                                .expect("write_batch")
                                .readings_written as u64;
                        }
                        written
                    })
                })
                .collect();
            for t in tasks {
                written += t.await.expect("caller");
            }
        }
        _ => {
            for b in &raw {
                written += write_raw(&mut conn, method, b).await;
            }
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(written, total as u64, "every reading new, counted once");
    conn.close().await.ok();
    store.close().await;
    db.drop().await;
    total as f64 / elapsed.max(Duration::from_micros(1)).as_secs_f64()
}

fn main() {
    if !vigia_core::services::service_available("postgres", "127.0.0.1:5432") {
        return;
    }
    let total: usize = env_or("VIGIA_BENCH_READINGS", 200_000);
    let repeat: usize = env_or("VIGIA_BENCH_REPEAT", 3).max(1);
    let callers: usize = env_or("VIGIA_BENCH_CALLERS", 2).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for batch in [1_000usize, 10_000] {
            let mut runs = vec![(Method::Copy, 1), (Method::Unnest, 1), (Method::Store, 1)];
            if callers > 1 {
                runs.push((Method::Store, callers));
            }
            for (method, callers) in runs {
                let mut rates = Vec::with_capacity(repeat);
                for _ in 0..repeat {
                    rates.push(run(method, batch, total, callers).await);
                }
                rates.sort_by(f64::total_cmp);
                let median = rates[rates.len() / 2];
                let all: Vec<String> = rates.iter().map(|r| format!("{:.0}", r)).collect();
                println!(
                    "postgres_write {:<6} x{callers} batch {batch:>6}: {median:>9.0} readings/s (median of {repeat}: {}; {total} readings, synchronous_commit=on)",
                    format!("{method:?}").to_lowercase(),
                    all.join(", ")
                );
            }
        }
    });
}
