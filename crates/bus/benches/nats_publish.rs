//! Publish throughput of the NATS JetStream bus on the readings topic against the shared
//! NATS (127.0.0.1:4222, under a stream prefix of its own whose streams are deleted at
//! the end), with a consumer on a second handle receiving (through the typed helper)
//! and acking, as ingest and a worker in another process would. Each publish waits for
//! its PubAck; concurrent publishers pipeline theirs on the one connection.
//!
//! Run: `cargo bench -p vigia-bus --bench nats_publish`. `VIGIA_BENCH_SECS` sets the
//! seconds per case (default 1.5); `VIGIA_BENCH_ONLY` picks cases (`1/64,100/64`,
//! readings per batch / publishers). It prints figures; it never fails on a timing, and
//! says so and stops when nothing answers on 4222.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use vigia_bus::nats::{NatsBus, NatsConfig};
use vigia_bus::{readings, Bus, BusError, Capacity, OpenContext};
use vigia_core::{IngestBatch, Reading, TenantId, Timestamp};

const ADDR: &str = "127.0.0.1:4222";

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

async fn open(prefix: &str) -> NatsBus {
    let config = NatsConfig::parse(&format!("nats://{ADDR}/?stream_prefix={prefix}")).unwrap();
    let mut context = OpenContext::new(std::env::temp_dir());
    context.capacity = Capacity::default();
    NatsBus::open(config, &context).await.expect("open bus")
}

/// Publishes `readings_per_batch` batches from `publishers` tasks for `run_for`; returns
/// (batches published, elapsed, Full answers).
async fn run(
    prefix: &str,
    readings_per_batch: usize,
    publishers: usize,
    run_for: Duration,
) -> (u64, Duration, u64) {
    let ingest = Arc::new(open(prefix).await);
    let worker = Arc::new(open(prefix).await);
    let consumer = {
        let worker = Arc::clone(&worker);
        tokio::spawn(async move {
            let mut consumed = 0u64;
            loop {
                match readings::receive(&*worker, 5_000).await {
                    Ok(received) => {
                        consumed += received
                            .iter()
                            .map(|r| r.value.readings.len() as u64)
                            .sum::<u64>();
                        let tokens = received.iter().map(|r| r.token.clone()).collect();
                        worker.ack(tokens).await.expect("ack");
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
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..publishers {
        let (bus, stop, published, full) = (
            Arc::clone(&ingest),
            Arc::clone(&stop),
            Arc::clone(&published),
            Arc::clone(&full),
        );
        let template = batch(readings_per_batch, p);
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
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
    while let Some(done) = tasks.join_next().await {
        done.expect("publisher task");
    }
    let elapsed = started.elapsed();
    worker.close();
    let consumed = consumer.await.expect("consumer task");
    let batches = published.load(Ordering::Relaxed);
    assert_eq!(
        consumed,
        batches * readings_per_batch as u64,
        "everything published is consumed"
    );
    (batches, elapsed, full.load(Ordering::Relaxed))
}

/// Deletes the streams of `prefix` on the shared NATS.
async fn delete_streams(prefix: &str) {
    let deleted = async {
        let client = async_nats::connect(ADDR).await?;
        let js = async_nats::jetstream::new(client);
        let mut names = js.stream_names();
        let mut mine = Vec::new();
        while let Some(name) = names.next().await {
            let name = name?;
            if name.starts_with(&format!("{prefix}_")) {
                mine.push(name);
            }
        }
        for name in mine {
            js.delete_stream(&name).await?;
        }
        Ok::<(), async_nats::Error>(())
    };
    if let Err(e) = deleted.await {
        eprintln!("could not delete the streams of {prefix}: {e}");
    }
}

fn main() {
    if TcpStream::connect_timeout(&ADDR.parse().unwrap(), Duration::from_secs(1)).is_err() {
        println!("nats_publish: nothing answers at {ADDR}; no figures");
        return;
    }
    let secs: f64 = std::env::var("VIGIA_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.5);
    let only = std::env::var("VIGIA_BENCH_ONLY").ok();
    let cases = [(1usize, 1usize), (1, 64), (100, 1), (100, 64), (1000, 16)];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let run_id = format!("bench-{}", std::process::id());
    println!("readings/batch publishers  batches/s  readings/s  full");
    for (n, (readings_per_batch, publishers)) in cases.into_iter().enumerate() {
        let name = format!("{readings_per_batch}/{publishers}");
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|c| c == name))
        {
            continue;
        }
        let prefix = format!("{run_id}-{n}");
        let (batches, elapsed, full) = runtime.block_on(run(
            &prefix,
            readings_per_batch,
            publishers,
            Duration::from_secs_f64(secs),
        ));
        let per_sec = batches as f64 / elapsed.as_secs_f64();
        println!(
            "{readings_per_batch:>14} {publishers:>10} {per_sec:>10.0} {:>11.0} {full:>5}",
            per_sec * readings_per_batch as f64
        );
        runtime.block_on(delete_streams(&prefix));
    }
}
