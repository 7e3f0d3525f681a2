//! Publish throughput of the embedded bus on the readings topic, with a consumer receiving
//! (through the typed helper) and acking as ingest's worker pool would, against a baseline of bare SQLite inserts in group-commit
//! transactions of the same size (no channel, no encoding, no queue, no acks).
//!
//! Run: `cargo bench -p vigia-bus --bench embedded_publish`. `VIGIA_BENCH_SECS` sets the
//! seconds per case (default 1.5); `VIGIA_BENCH_ONLY` picks cases (`Os/1/64,Full/1/1`). It prints figures; it never fails on a timing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use vigia_bus::{readings, Bus, BusError, Durability, EmbeddedBus, EmbeddedBusOptions};
use vigia_core::{IngestBatch, Reading, TenantId, Timestamp};

/// One measured configuration.
#[derive(Debug, Clone, Copy)]
struct Case {
    durability: Durability,
    readings_per_batch: usize,
    publishers: usize,
}

/// What the bus run achieved.
struct Figures {
    batches: u64,
    elapsed: Duration,
    cpu: Duration,
    full: u64,
}

fn batch(readings: usize, seed: usize) -> IngestBatch {
    IngestBatch {
        tenant: TenantId(1),
        received_ms: 1_700_000_000_000,
        readings: (0..readings)
            .map(|i| Reading {
                sensor: format!("CF-{}", (seed + i) % 50),
                metric: "temperature".into(),
                ts: Timestamp(1_700_000_000_000 + i as i64),
                value: -19.5 + (i % 10) as f64 * 0.1,
            })
            .collect(),
    }
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct we hand it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Restarts the peak-RSS count (Linux), so each case reports its own peak.
fn reset_peak_rss() {
    // Hand freed memory back first, or the previous case's heap counts as this one's.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
    // Best effort: without it the figure is the peak so far, which only overstates.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size in MiB (Linux), for the memory budget.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn run_bus(case: Case, run_for: Duration) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = EmbeddedBusOptions::new(dir.path().join("bus.sqlite3"));
    options.durability = case.durability;
    let bus = Arc::new(EmbeddedBus::open(options).expect("open bus"));

    let consumer = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move {
            let mut consumed = 0u64;
            loop {
                match readings::receive(&*bus, 5_000).await {
                    Ok(received) => {
                        let tokens: Vec<_> = received.iter().map(|r| r.token.clone()).collect();
                        consumed += received
                            .iter()
                            .map(|r| r.value.readings.len() as u64)
                            .sum::<u64>();
                        bus.ack(tokens).await.expect("ack");
                    }
                    Err(BusError::Closed) => return consumed,
                    Err(e) => panic!("receive: {e}"),
                }
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let full = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut publishers = tokio::task::JoinSet::new();
    for p in 0..case.publishers {
        let (bus, stop, published, full) = (
            Arc::clone(&bus),
            Arc::clone(&stop),
            Arc::clone(&published),
            Arc::clone(&full),
        );
        let template = batch(case.readings_per_batch, p);
        publishers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // The clone stands for the batch ingest would have just parsed.
                match readings::publish(&*bus, template.clone()).await {
                    Ok(()) => {
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(BusError::Full { retry_after, .. }) => {
                        full.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(retry_after.min(Duration::from_millis(10))).await;
                    }
                    Err(e) => panic!("publish: {e}"),
                }
            }
        });
    }
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = publishers.join_next().await {
        done.expect("publisher task");
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    bus.close();
    let consumed = consumer.await.expect("consumer task");
    let batches = published.load(Ordering::Relaxed);
    assert_eq!(
        consumed,
        batches * case.readings_per_batch as u64,
        "everything published is consumed"
    );
    let bus = Arc::try_unwrap(bus).unwrap_or_else(|_| panic!("bus still shared"));
    tokio::task::spawn_blocking(move || drop(bus))
        .await
        .expect("drop bus");
    Figures {
        batches,
        elapsed,
        cpu,
        full: full.load(Ordering::Relaxed),
    }
}

/// The same rows written by hand: `batches` inserts of the encoded payload, committed in
/// transactions of `group` rows, with the bus's pragmas.
fn run_baseline(case: Case, batches: u64) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = Connection::open(dir.path().join("baseline.sqlite3")).expect("open baseline");
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .expect("WAL");
    let synchronous = match case.durability {
        Durability::Full => "FULL",
        Durability::Os => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .expect("synchronous");
    conn.execute_batch(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, readings INTEGER NOT NULL, payload BLOB NOT NULL)",
    )
    .expect("schema");
    let payload = batch(case.readings_per_batch, 0).encode();
    let group = case.publishers as u64;
    let started = Instant::now();
    let mut id = 0i64;
    let mut left = batches;
    while left > 0 {
        let n = left.min(group);
        let tx = conn.unchecked_transaction().expect("begin");
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO messages (id, readings, payload) VALUES (?1, ?2, ?3)")
                .expect("prepare");
            for _ in 0..n {
                id += 1;
                insert
                    .execute(params![id, case.readings_per_batch as i64, payload])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
        left -= n;
    }
    started.elapsed()
}

fn main() {
    let run_for = std::env::var("VIGIA_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(Duration::from_millis(1500), Duration::from_secs_f64);
    // `VIGIA_BENCH_ONLY=Os/1/64,Full/1000/256` runs only those cases (durability/readings/publishers).
    let only = std::env::var("VIGIA_BENCH_ONLY").ok();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "embedded bus publish, {:.1} s per case, 2 runtime workers, consumer receiving + acking",
        run_for.as_secs_f64()
    );
    println!(
        "{:<5} {:>9} {:>6} {:>12} {:>13} {:>7} {:>9} {:>6} {:>14} {:>6}",
        "dur",
        "readings",
        "pubs",
        "batches/s",
        "readings/s",
        "cpu %",
        "peak MiB",
        "full",
        "baseline b/s",
        "ratio"
    );
    for durability in [Durability::Full, Durability::Os] {
        for readings_per_batch in [1usize, 1000] {
            for publishers in [1usize, 64, 256] {
                let case = Case {
                    durability,
                    readings_per_batch,
                    publishers,
                };
                let name = format!("{durability:?}/{readings_per_batch}/{publishers}");
                if only
                    .as_deref()
                    .is_some_and(|only| !only.split(',').any(|o| o == name))
                {
                    continue;
                }
                reset_peak_rss();
                let figures = runtime.block_on(run_bus(case, run_for));
                let peak = peak_rss_mib().unwrap_or(f64::NAN);
                let secs = figures.elapsed.as_secs_f64();
                let rate = figures.batches as f64 / secs;
                let baseline = run_baseline(case, figures.batches.max(1));
                let baseline_rate = figures.batches.max(1) as f64 / baseline.as_secs_f64();
                println!(
                    "{:<5} {:>9} {:>6} {:>12.0} {:>13.0} {:>7.0} {:>9.0} {:>6} {:>14.0} {:>6.2}",
                    format!("{durability:?}"),
                    readings_per_batch,
                    publishers,
                    rate,
                    rate * readings_per_batch as f64,
                    figures.cpu.as_secs_f64() / secs * 100.0,
                    peak,
                    figures.full,
                    baseline_rate,
                    rate / baseline_rate,
                );
            }
        }
    }
    println!(
        "cpu % is of one core (the machine has 2); peak MiB includes the bench's own batch \
         templates and clones (about 0.13 MiB per 1,000-reading publisher, twice)"
    );
}
