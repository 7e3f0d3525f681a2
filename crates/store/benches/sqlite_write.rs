//! Write throughput of the SQLite store: `write_batch` with 500-reading batches from
//! 1, 100 and 10,000 sensors, at both durabilities, against a baseline of raw rusqlite
//! inserts of the same rows into an unindexed table in the same run.
//!
//! `cargo bench -p vigia-store --bench sqlite_write`. Prints figures; never fails on a
//! timing. `VIGIA_BENCH_READINGS` changes the 2,000,000 readings per run and
//! `VIGIA_BENCH_CALLERS` the concurrent callers (default "1,4,16"); `VIGIA_BENCH_SENSORS`
//! (default "1,100,10000") and `VIGIA_BENCH_DURABILITY` (default "full,os") narrow a run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use vigia_core::{SensorId, Timestamp, DEFAULT_METRIC};
use vigia_store::sqlite::{SqliteStore, SqliteStoreOptions};
use vigia_store::{Durability, SensorReading, Store, WriteBatch};

const BATCH: usize = 500;
const T0: i64 = 1_700_000_000_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|item| item.trim().parse().ok())
        .collect()
}

fn main() {
    let total: usize = env_or("VIGIA_BENCH_READINGS", 2_000_000);
    let callers: Vec<usize> = list("VIGIA_BENCH_CALLERS", "1,4,16");
    let sensor_counts: Vec<usize> = list("VIGIA_BENCH_SENSORS", "1,100,10000");
    let durabilities: Vec<Durability> = list::<String>("VIGIA_BENCH_DURABILITY", "full,os")
        .iter()
        .filter_map(|d| match d.as_str() {
            "full" => Some(Durability::Full),
            "os" => Some(Durability::Os),
            _ => None,
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("sqlite_write: {total} readings per run, {BATCH} per batch");
    for &durability in &durabilities {
        let base = baseline(durability, total);
        println!(
            "{durability:?}: baseline raw INSERT, no index, {BATCH}-row transactions: {:>9.0} rows/s \
             ({:.2} s, {:.2} µs CPU/row)",
            base.rate,
            base.elapsed.as_secs_f64(),
            base.cpu_us_per_reading
        );
        for &sensors in &sensor_counts {
            for &callers in &callers {
                let run = runtime.block_on(store_run(durability, sensors, callers, total));
                println!(
                    "{durability:?}: write_batch {sensors:>6} sensors {callers:>2} caller(s): {:>9.0} readings/s \
                     ({:.2} s, {:.2}x baseline; {:.2} µs CPU/reading, {:.2}x baseline)",
                    run.rate,
                    run.elapsed.as_secs_f64(),
                    run.rate / base.rate,
                    run.cpu_us_per_reading,
                    run.cpu_us_per_reading / base.cpu_us_per_reading
                );
            }
        }
    }
}

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat`;
/// the machine is shared, so CPU per reading is steadier than wall-clock rates.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Clock ticks are 100 per second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Reading `i` of a run: sensors report in turn, each once a second.
fn row(i: usize, sensors: usize) -> (usize, i64) {
    (i % sensors, T0 + (i / sensors) as i64 * 1000)
}

async fn store_run(durability: Durability, sensors: usize, callers: usize, total: usize) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(SqliteStoreOptions {
        durability,
        ..SqliteStoreOptions::new(dir.path().join("bench.db"))
    })
    .await
    .expect("open store");
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let keys: Vec<String> = (0..sensors).map(|i| format!("S-{i}")).collect();
    let ids: Vec<SensorId> = store
        .catalog()
        .provision_sensors(tenant.id, &keys)
        .await
        .expect("provision")
        .into_iter()
        .map(|s| s.id)
        .collect();

    // Batches are built before the clock starts: this measures the store, not the generator.
    let mut per_caller: Vec<Vec<WriteBatch>> = (0..callers).map(|_| Vec::new()).collect();
    for (n, start) in (0..total).step_by(BATCH).enumerate() {
        let readings = (start..(start + BATCH).min(total))
            .map(|i| {
                let (sensor, ts) = row(i, sensors);
                SensorReading {
                    sensor: ids[sensor],
                    metric: DEFAULT_METRIC.to_string(),
                    ts: Timestamp(ts),
                    value: (i % 400) as f64 / 10.0 - 20.0,
                }
            })
            .collect();
        per_caller[n % callers].push(WriteBatch {
            excursions: Vec::new(),
            readings,
            alerts: Vec::new(),
        });
    }

    let store = Arc::new(store);
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let tasks: Vec<_> = per_caller
        .into_iter()
        .map(|batches| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut written = 0;
                for batch in batches {
                    written += store
                        .write_batch(batch)
                        .await
                        .expect("write batch")
                        .readings_written;
                }
                written
            })
        })
        .collect();
    let mut written = 0;
    for task in tasks {
        written += task.await.expect("caller task");
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    assert_eq!(written, total, "every reading is new");
    store.close().await;
    Run {
        rate: total as f64 / elapsed.as_secs_f64(),
        elapsed,
        cpu_us_per_reading: cpu * 1e6 / total as f64,
    }
}

struct Run {
    rate: f64,
    elapsed: Duration,
    cpu_us_per_reading: f64,
}

/// Raw rusqlite: the same rows into a rowid table with no index, same journal and
/// synchronous settings, one transaction per batch, one thread.
fn baseline(durability: Durability, total: usize) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = Connection::open(dir.path().join("baseline.db")).expect("open baseline");
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
        .expect("WAL");
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Os => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .expect("synchronous");
    conn.execute_batch(
        "CREATE TABLE raw (ts INTEGER NOT NULL, sensor_id INTEGER NOT NULL,
         metric_id INTEGER NOT NULL, value REAL NOT NULL)",
    )
    .expect("create");
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    for start in (0..total).step_by(BATCH) {
        let tx = conn.transaction().expect("begin");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO raw (ts, sensor_id, metric_id, value) VALUES (?1, ?2, ?3, ?4)",
                )
                .expect("prepare");
            for i in start..(start + BATCH).min(total) {
                let (sensor, ts) = row(i, 100);
                insert
                    .execute(params![
                        ts,
                        sensor as i64,
                        1,
                        (i % 400) as f64 / 10.0 - 20.0
                    ])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    let elapsed = started.elapsed();
    Run {
        rate: total as f64 / elapsed.as_secs_f64(),
        elapsed,
        cpu_us_per_reading: (cpu_seconds() - cpu_before) * 1e6 / total as f64,
    }
}
