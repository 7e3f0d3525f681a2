//! Write throughput of the MySQL/MariaDB store, mirroring `postgres_write.rs`: two ways of
//! getting a batch of readings into `readings` with `ON DUPLICATE KEY UPDATE`, measured on
//! the same rows, and the store's own `write_batch` (the one kept) end to end.
//!
//! - `prepared`: multi-row `INSERT … VALUES (?, ?, ?, ?), … ON DUPLICATE KEY UPDATE ts = ts`
//!   prepared once per shape and bound (binary protocol), 1,000 rows per statement;
//! - `literal`: the same multi-row INSERT with the values written into the text
//!   (integers and `{:e}` doubles), one text query of up to 4 MiB per statement, plus the
//!   duplicate count in the same round trip (the store's write path);
//! - `store`: `MysqlStore::write_batch` (sensor check, metric ids, sort, literal insert,
//!   latest-value upsert, one transaction), from one caller and from
//!   `VIGIA_BENCH_CALLERS` concurrent ones (default 2).
//!
//! The raw variants also upsert the latest values as the store does, each batch in one
//! transaction. Every run gets a fresh database, 1,000 sensors, readings stamped now, the
//! server's `innodb_flush_log_at_trx_commit` (1 here: the log flushed at every commit).
//!
//! Measured 2026-12-07 on the 2-core machine (MariaDB 10.11, other builds running),
//! readings/s, median of 3 runs of 200,000 readings, postgres_write in the same run:
//!
//! | batch  | prepared | literal | store   | store, 2 callers | PostgreSQL store (x1 / x2) |
//! |--------|----------|---------|---------|------------------|----------------------------|
//! | 1,000  | 182,428  | 162,649 | 153,601 | 224,604          | 159,720 / 138,203          |
//! | 10,000 | 486,895  | 407,916 | 368,271 | 568,920          | 298,142 / 403,277          |
//!
//! Prepared statements beat the literal text the store uses by ~12-19 % (no text to
//! format and parse for doubles), though this variant does not count duplicates: moving
//! the store to them is an open follow-up.
//!
//! Rollups (issue 14) added one statement to every batch with readings: the watermark
//! read, LOCK IN SHARE MODE (late readings add one dirty-mark INSERT; these have none).
//! Measured on its own at the end of the bench: 48, 55, 64 and 121 µs per batch in four
//! runs (2026-12-07, other builds running; an empty BEGIN/COMMIT 52, 51, 58 and 134 µs in
//! the same runs), under 1 % of a 1,000-reading batch (~7.5 ms) and ~0.2 % of a 10,000 one.
//! The bench before and after it, interleaved, moved by less than the machine's noise
//! (outside load halved some runs): store x1 in the quietest pair 132,195 → 126,896
//! readings/s at 1,000 a batch, 343,102 → 348,276 at 10,000 (medians of 5).
//!
//! `cargo bench -p vigia-store --bench mysql_write`. Prints readings/s, the median of
//! `VIGIA_BENCH_REPEAT` runs (default 3) of `VIGIA_BENCH_READINGS` readings (default
//! 200,000), for batches of 1,000 and 10,000. Never fails on a timing; skips when no
//! MariaDB answers at 127.0.0.1:3306.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, MySqlConnection, Row};
use vigia_core::{SensorId, Timestamp, DEFAULT_METRIC};
use vigia_store::mysql::{MysqlStore, MysqlStoreOptions};
use vigia_store::{Durability, SensorReading, Store, WriteBatch};

const ADMIN_URL: &str = "mysql://root@127.0.0.1:3306/mysql";
const SENSORS: usize = 1_000;
/// Rows per prepared statement (4,000 placeholders, far under the 65,535 limit).
const PREPARED_ROWS: usize = 1_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    Prepared,
    Literal,
    Store,
}

/// A database for one run, dropped at the end of it.
struct Db {
    name: String,
}

impl Db {
    async fn create(tag: &str) -> Db {
        let name = format!("vigia_bench_{tag}_{}", std::process::id());
        let mut admin = MySqlConnection::connect(ADMIN_URL).await.expect("admin");
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"
        ))
        .execute(&mut admin)
        .await
        .expect("create");
        Db { name }
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }

    async fn drop(self) {
        let mut admin = MySqlConnection::connect(ADMIN_URL).await.expect("admin");
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {}", self.name))
            .execute(&mut admin)
            .await
            .expect("drop");
    }
}

/// (ts, sensor, metric, value) rows of a batch, sorted, and the newest per sensor.
struct RawBatch {
    rows: Vec<(i64, i64, i64, f64)>,
    latest: Vec<(i64, i64, i64, f64)>,
}

fn raw_batch(readings: &[SensorReading], metric: i64) -> RawBatch {
    let mut newest = std::collections::BTreeMap::new();
    for r in readings {
        let slot = newest.entry(r.sensor.0).or_insert((r.ts.0, r.value));
        if r.ts.0 > slot.0 {
            *slot = (r.ts.0, r.value);
        }
    }
    let mut rows: Vec<_> = readings
        .iter()
        .map(|r| (r.ts.0, r.sensor.0, metric, r.value))
        .collect();
    rows.sort_by_key(|&(ts, s, m, _)| (ts, s, m));
    RawBatch {
        rows,
        latest: newest
            .into_iter()
            .map(|(s, (ts, v))| (s, metric, ts, v))
            .collect(),
    }
}

const LATEST_UPDATE: &str = "ON DUPLICATE KEY UPDATE
    value = IF(VALUES(ts) > ts, VALUES(value), value), ts = GREATEST(ts, VALUES(ts))";

async fn write_raw(conn: &mut MySqlConnection, method: Method, b: &RawBatch) -> u64 {
    let mut tx = conn.begin().await.expect("begin");
    let mut written = 0u64;
    match method {
        Method::Prepared => {
            for chunk in b.rows.chunks(PREPARED_ROWS) {
                let sql = format!(
                    "INSERT INTO readings (ts, sensor_id, metric_id, value) VALUES {}
                     ON DUPLICATE KEY UPDATE ts = ts",
                    vec!["(?, ?, ?, ?)"; chunk.len()].join(", ")
                );
                let mut q = sqlx::query(&sql);
                for &(ts, s, m, v) in chunk {
                    q = q.bind(ts).bind(s).bind(m).bind(v);
                }
                // All rows are new in this bench: affected rows = rows written.
                written += q.execute(&mut *tx).await.expect("insert").rows_affected();
            }
            for chunk in b.latest.chunks(PREPARED_ROWS) {
                let sql = format!(
                    "INSERT INTO latest_readings (sensor_id, metric_id, ts, value) VALUES {} {LATEST_UPDATE}",
                    vec!["(?, ?, ?, ?)"; chunk.len()].join(", ")
                );
                let mut q = sqlx::query(&sql);
                for &(s, m, ts, v) in chunk {
                    q = q.bind(s).bind(m).bind(ts).bind(v);
                }
                q.execute(&mut *tx).await.expect("latest");
            }
        }
        Method::Literal => {
            let mut values = String::with_capacity(b.rows.len() * 40);
            for (i, &(ts, s, m, v)) in b.rows.iter().enumerate() {
                if i > 0 {
                    values.push(',');
                }
                let _ = write!(values, "({ts},{s},{m},{v:e})");
            }
            let sql = format!(
                "SET @vigia_dups = 0;
                 INSERT INTO readings (ts, sensor_id, metric_id, value) VALUES {values}
                 ON DUPLICATE KEY UPDATE ts = IF((@vigia_dups := @vigia_dups + 1) > 0, ts, ts);
                 SELECT @vigia_dups"
            );
            let sql: &str = &sql;
            let rows = (&mut *tx).fetch_all(sql).await.expect("insert");
            let dups: i64 = rows.last().expect("count").try_get(0).expect("dups");
            written += b.rows.len() as u64 - dups as u64;
            let mut latest = String::with_capacity(b.latest.len() * 40);
            for (i, &(s, m, ts, v)) in b.latest.iter().enumerate() {
                if i > 0 {
                    latest.push(',');
                }
                let _ = write!(latest, "({s},{m},{ts},{v:e})");
            }
            let sql = format!(
                "INSERT INTO latest_readings (sensor_id, metric_id, ts, value) VALUES {latest} {LATEST_UPDATE}"
            );
            let sql: &str = &sql;
            (&mut *tx).execute(sql).await.expect("latest");
        }
        Method::Store => unreachable!("the store writes through write_batch"),
    }
    tx.commit().await.expect("commit");
    written
}

/// Readings/s of one run: `total` readings in batches of `batch`, on a fresh database;
/// the store variant from `callers` concurrent tasks (batch i to task i % callers).
async fn run(method: Method, batch: usize, total: usize, callers: usize) -> f64 {
    let db = Db::create(&format!("{method:?}_{batch}").to_lowercase()).await;
    let store = std::sync::Arc::new(
        MysqlStore::open(MysqlStoreOptions {
            durability: Durability::Full,
            ..MysqlStoreOptions::new(db.url())
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
    // Interns the metric (far in the past, out of the way).
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

    let mut conn = MySqlConnection::connect(&db.url())
        .await
        .expect("raw connection");
    sqlx::raw_sql("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut conn)
        .await
        .expect("isolation");
    let metric: i64 = sqlx::query_scalar("SELECT id FROM metrics WHERE name = ?")
        .bind(DEFAULT_METRIC)
        .fetch_one(&mut conn)
        .await
        .expect("metric id");
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

/// Microseconds one batch transaction pays for reading the rollup watermarks LOCK IN
/// SHARE MODE (what `write_batch` does first since the rollups): the median, over rounds
/// of `n` transactions each, of (BEGIN; the read; COMMIT) minus (BEGIN; COMMIT), the two
/// alternating round by round so load from other processes hits both alike.
async fn watermark_read_cost(n: usize, rounds: usize) -> (f64, f64) {
    let db = Db::create("watermarks").await;
    // Opening migrates: the watermark rows are seeded.
    MysqlStore::open(MysqlStoreOptions::new(db.url()))
        .await
        .expect("open store")
        .close()
        .await;
    let mut conn = MySqlConnection::connect(&db.url()).await.expect("connect");
    sqlx::raw_sql("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut conn)
        .await
        .expect("isolation");
    let mut with_read = Vec::with_capacity(rounds);
    let mut without = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        for read in [true, false] {
            let started = Instant::now();
            for _ in 0..n {
                let mut tx = conn.begin().await.expect("begin");
                if read {
                    let rows: Vec<(i64, i64)> = sqlx::query_as(
                        "SELECT resolution, closed_before FROM rollup_watermarks
                         ORDER BY resolution LOCK IN SHARE MODE",
                    )
                    .fetch_all(&mut *tx)
                    .await
                    .expect("watermarks");
                    assert_eq!(rows.len(), 2, "seeded by migration 3");
                }
                tx.commit().await.expect("commit");
            }
            let micros = started.elapsed().as_secs_f64() * 1e6 / n as f64;
            if read {
                with_read.push(micros);
            } else {
                without.push(micros);
            }
        }
    }
    conn.close().await.ok();
    db.drop().await;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (with_read, without) = (median(with_read), median(without));
    (with_read - without, without)
}

fn main() {
    if !vigia_core::services::service_available("mariadb", "127.0.0.1:3306") {
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
            let mut runs = vec![
                (Method::Prepared, 1),
                (Method::Literal, 1),
                (Method::Store, 1),
            ];
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
                    "mysql_write {:<8} x{callers} batch {batch:>6}: {median:>9.0} readings/s (median of {repeat}: {}; {total} readings, innodb_flush_log_at_trx_commit=1)",
                    format!("{method:?}").to_lowercase(),
                    all.join(", ")
                );
            }
        }
        let (cost, empty) = watermark_read_cost(1_000, 7).await;
        println!(
            "mysql_write watermark read: {cost:.0} µs per batch (median of 7 rounds of 1,000 \
             transactions; an empty BEGIN/COMMIT takes {empty:.0} µs)"
        );
    });
}
