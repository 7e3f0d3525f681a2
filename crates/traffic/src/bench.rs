//! `vigia bench ingest`: end-to-end ingest throughput against a running server — first
//! request sent → last reading committed — for one-reading and batched requests, with
//! request latency, the server's memory, and an HTTP-floor baseline measured in the same
//! run so the figures can be read as ratios (DESIGN §7).
//!
//! Request bodies are generated before the clock starts. Commitment is observed through
//! the server's own `/metrics` (`vigia_store_readings_written_total`), polled every 5 ms
//! once the last request is answered.
//!
//! [`alerts`] holds `vigia bench alerts` (reading accepted → alert on the WebSocket).

pub mod alerts;
mod copy_baseline;
mod format;
mod load;
pub mod mqtt;
mod report;
pub mod series;
mod server;
pub mod soak;
mod workload;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use hyper::StatusCode;
use vigia_core::Timestamp;

pub use copy_baseline::CopyBaselineReport;
pub use format::TableReport;
pub use load::{percentile, LatencySummary};
pub use report::{
    BaselineReport, BenchReport, CommitReport, MemoryReport, ModeReport, ProcessReport,
};
pub use workload::{sensor_key, Body, ReadingGenerator};

use crate::http::{Connection, Target};
use crate::prometheus::{
    MetricsSnapshot, BUS_DEPTH_READINGS, PEAK_RESIDENT_MEMORY_BYTES, RESIDENT_MEMORY_BYTES,
    STORE_READINGS_WRITTEN_TOTAL,
};
use crate::units::{parse_count, parse_duration};
use load::{LoadTarget, Phase};
use server::Measured;
pub use server::{SpawnArgs, TargetArgs};

const READINGS_PATH: &str = "/api/v1/readings";
/// A batched request under full load can queue behind many others; give it room.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the store to commit what was accepted.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(120);
/// Give up waiting when the commit counter has not moved for this long (the server may
/// have deduplicated readings of an earlier run, or lost its store).
const COMMIT_STALL: Duration = if cfg!(test) {
    Duration::from_secs(1)
} else {
    Duration::from_secs(10)
};
const COMMIT_POLL: Duration = Duration::from_millis(5);
/// How often memory and bus depth are sampled while the requests are being sent.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Which request shapes to measure.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMode {
    /// One reading per request.
    Single,
    /// `--batch-size` readings per request.
    Batched,
    /// Both, single first.
    Both,
}

/// `vigia bench ingest`: readings/s from first request to last commit.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchIngestArgs {
    /// The server to measure.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Concurrent workers, one keep-alive connection each.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Readings sent in batched mode (accepts 2_000_000, 2M).
    #[arg(long, default_value = "2000000", value_parser = parse_count)]
    pub readings: u64,
    /// Requests sent in single mode, one reading each (accepts 200_000, 200k).
    #[arg(long, default_value = "200000", value_parser = parse_count)]
    pub single_requests: u64,
    /// Readings per request in batched mode.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Distinct sensor keys (`bench-0000`, …).
    #[arg(long, default_value_t = 100)]
    pub sensors: usize,
    /// Which request shapes to measure.
    #[arg(long, value_enum, default_value_t = BenchMode::Both)]
    pub mode: BenchMode,
    /// Length of the GET /healthz baseline (0s skips it).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub baseline: Duration,
    /// Or a server of its own.
    #[command(flatten)]
    pub server: SpawnArgs,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints its report (a table, or JSON with `--json`).
pub async fn run(args: BenchIngestArgs) -> anyhow::Result<()> {
    let json = args.json;
    let report = bench_ingest(args).await?;
    report.emit(json);
    Ok(())
}

/// Runs the benchmark and returns its figures. Progress goes to stderr.
pub async fn bench_ingest(args: BenchIngestArgs) -> anyhow::Result<BenchReport> {
    validate(&args)?;
    server::on_server(&args.target, &args.server, |server| measure(&args, server)).await
}

fn validate(args: &BenchIngestArgs) -> anyhow::Result<()> {
    if !(1..=10_000).contains(&args.concurrency) {
        bail!("--concurrency must be between 1 and 10,000");
    }
    if !(1..=100_000).contains(&args.batch_size) {
        bail!("--batch-size must be between 1 and 100,000");
    }
    if !(1..=1_000_000).contains(&args.sensors) {
        bail!("--sensors must be between 1 and 1,000,000");
    }
    if args.mode != BenchMode::Batched && args.single_requests == 0 {
        bail!("--single-requests must be at least 1 (or use --mode batched)");
    }
    if args.mode != BenchMode::Single && args.readings == 0 {
        bail!("--readings must be at least 1 (or use --mode single)");
    }
    Ok(())
}

/// The store URL of spawned processes when it is PostgreSQL.
fn postgres_store(spawn: &SpawnArgs) -> Option<&str> {
    spawn
        .store
        .as_deref()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
}

/// Largest values seen by the samplers.
#[derive(Debug, Default, Clone, Copy)]
struct Peaks {
    bus_depth: Option<f64>,
    rss: Option<f64>,
}

impl Peaks {
    fn update(&mut self, m: &MetricsSnapshot) {
        let max = |old: Option<f64>, new: Option<f64>| match (old, new) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.bus_depth = max(self.bus_depth, m.get(BUS_DEPTH_READINGS));
        self.rss = max(self.rss, m.get(RESIDENT_MEMORY_BYTES));
    }
}

/// Scrapes `/metrics`; `None` when the server does not answer it with 200.
async fn scrape(conn: &mut Connection) -> Option<MetricsSnapshot> {
    match conn.get("/metrics").await {
        Ok(r) if r.status == StatusCode::OK => {
            Some(MetricsSnapshot::parse(&String::from_utf8_lossy(&r.body)))
        }
        _ => None,
    }
}

struct Bench<'a> {
    args: &'a BenchIngestArgs,
    load: LoadTarget,
    /// The loaded process's metrics (memory, bus depth).
    metrics: Connection,
    /// Every process's metrics, for commits summed over the workers.
    all_metrics: Vec<Connection>,
    /// Which of `all_metrics` is the loaded process.
    load_index: usize,
    rss_max: Option<f64>,
}

/// Every process's metrics, in process order (`None` where one did not answer).
async fn scrape_all(conns: &mut [Connection]) -> Vec<Option<MetricsSnapshot>> {
    let mut out = Vec::with_capacity(conns.len());
    for conn in conns {
        out.push(scrape(conn).await);
    }
    out
}

/// Readings committed so far, summed over every process that exports the counter;
/// `None` when none does (or none answered).
fn committed_total(snapshots: &[Option<MetricsSnapshot>]) -> Option<f64> {
    snapshots
        .iter()
        .flatten()
        .filter_map(|m| m.get(STORE_READINGS_WRITTEN_TOTAL))
        .reduce(|a, b| a + b)
}

async fn measure(args: &BenchIngestArgs, server: Measured) -> anyhow::Result<BenchReport> {
    let Measured {
        target,
        token,
        data_dir,
        processes,
        ..
    } = server;
    let mut metrics = Connection::new(&target, None, Duration::from_secs(5))?;
    server::ensure_vigia(&mut metrics, &target).await?;
    let load_index = processes
        .iter()
        .position(|(_, t)| t.url() == target.url())
        .unwrap_or(0);
    let all_metrics = processes
        .iter()
        .map(|(_, t)| Connection::new(t, None, Duration::from_secs(5)))
        .collect::<Result<Vec<_>, _>>()?;

    let started = Instant::now();
    let single_requests = match args.mode {
        BenchMode::Batched => 0,
        _ => args.single_requests,
    };
    let batched_readings = match args.mode {
        BenchMode::Single => 0,
        _ => args.readings,
    };
    // Each sensor's clock advances 1 ms a reading; ending at "now" keeps the benchmark
    // from leaving readings in the future (reports take the latest reading as "now").
    let span_ms = (single_requests + batched_readings).div_ceil(args.sensors as u64) as i64;
    let mut generator = ReadingGenerator::new(
        args.sensors,
        Timestamp::now().millis() - span_ms,
        rand::random(),
    );
    let single = (single_requests > 0).then(|| Arc::new(generator.bodies(single_requests, 1)));
    let batched = (batched_readings > 0)
        .then(|| Arc::new(generator.bodies(batched_readings, args.batch_size)));
    eprintln!(
        "request bodies generated in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let before = scrape(&mut metrics).await;
    let mut bench = Bench {
        args,
        load: LoadTarget {
            target: target.clone(),
            token: Some(token),
            timeout: REQUEST_TIMEOUT,
        },
        metrics,
        all_metrics,
        load_index,
        rss_max: None,
    };
    let baseline = match args.baseline.is_zero() {
        true => None,
        false => Some(bench.baseline().await?),
    };
    let single = match single {
        Some(bodies) => Some(bench.mode("single", 1, bodies).await?),
        None => None,
    };
    // The PostgreSQL floor: the same rows by COPY, prepared before and run after the
    // batched mode so neither competes with the other for the machine.
    let copy_input = match (&batched, postgres_store(&args.server)) {
        (Some(bodies), Some(_)) => Some(copy_baseline::csv_of(bodies)?),
        _ => None,
    };
    let batched = match batched {
        Some(bodies) => Some(bench.mode("batched", args.batch_size, bodies).await?),
        None => None,
    };
    let copy_baseline = match (copy_input, postgres_store(&args.server)) {
        (Some((csv, rows)), Some(url)) => {
            eprintln!("baseline: COPY of the same {rows} rows into PostgreSQL with psql");
            Some(copy_baseline::copy_into_postgres(url, &csv, rows).await?)
        }
        _ => None,
    };
    let batched_vs_copy = match (&batched, &copy_baseline) {
        (Some(b), Some(c)) => b
            .commit
            .end_to_end_readings_per_sec
            .map(|r| r / c.rows_per_sec.max(f64::EPSILON)),
        _ => None,
    };
    let after = scrape(&mut bench.metrics).await;
    let mut process_reports = Vec::new();
    for ((roles, t), conn) in processes.iter().zip(bench.all_metrics.iter_mut()) {
        let m = scrape(conn).await;
        process_reports.push(ProcessReport {
            roles: roles.clone(),
            url: t.url(),
            peak_rss_bytes: m.as_ref().and_then(|m| m.get(PEAK_RESIDENT_MEMORY_BYTES)),
            readings_written: m.as_ref().and_then(|m| m.get(STORE_READINGS_WRITTEN_TOTAL)),
        });
    }

    let single_vs_baseline = match (&single, &baseline) {
        (Some(s), Some(b)) if b.requests_per_sec > 0.0 => {
            Some(s.requests_per_sec / b.requests_per_sec)
        }
        _ => None,
    };
    let get = |m: &Option<MetricsSnapshot>, name| m.as_ref().and_then(|m| m.get(name));
    Ok(BenchReport {
        url: target.url(),
        concurrency: args.concurrency,
        sensors: args.sensors,
        spawned_data_dir: data_dir,
        processes: process_reports,
        copy_baseline,
        batched_vs_copy,
        baseline,
        single,
        batched,
        single_vs_baseline,
        memory: MemoryReport {
            rss_before_bytes: get(&before, RESIDENT_MEMORY_BYTES),
            peak_rss_before_bytes: get(&before, PEAK_RESIDENT_MEMORY_BYTES),
            rss_after_bytes: get(&after, RESIDENT_MEMORY_BYTES),
            peak_rss_after_bytes: get(&after, PEAK_RESIDENT_MEMORY_BYTES),
            rss_max_seen_bytes: bench.rss_max,
        },
    })
}

impl Bench<'_> {
    async fn baseline(&mut self) -> anyhow::Result<BaselineReport> {
        eprintln!(
            "baseline: GET /healthz on {} connections for {:?}",
            self.args.concurrency, self.args.baseline
        );
        let load = LoadTarget {
            token: None,
            ..self.load.clone()
        };
        let phase =
            load::get_for(&load, self.args.concurrency, "/healthz", self.args.baseline).await?;
        let seconds = phase.seconds();
        Ok(BaselineReport {
            path: "/healthz".into(),
            seconds,
            requests: phase.tally.ok_requests,
            requests_per_sec: phase.tally.ok_requests as f64 / seconds.max(f64::EPSILON),
            errors: phase.tally.failures.by_class,
            latency: LatencySummary::from_unsorted(phase.tally.latencies_us),
        })
    }

    async fn mode(
        &mut self,
        name: &str,
        readings_per_request: usize,
        bodies: Arc<Vec<Body>>,
    ) -> anyhow::Result<ModeReport> {
        let planned = bodies.len() as u64;
        let readings: u64 = bodies.iter().map(|b| u64::from(b.readings)).sum();
        eprintln!(
            "{name}: {} requests, {} readings, {} connections",
            planned, readings, self.args.concurrency
        );
        let written_before = committed_total(&scrape_all(&mut self.all_metrics).await);

        let peaks = Arc::new(Mutex::new(Peaks::default()));
        let sampler = tokio::spawn(sample(self.load.target.clone(), peaks.clone()));
        let phase = load::post_all(&self.load, self.args.concurrency, READINGS_PATH, bodies).await;
        sampler.abort();
        let phase = phase?;
        if phase.tally.unauthorized {
            bail!("the token was refused (401): check --token / VIGIA_TOKEN");
        }
        let commit = self.wait_for_commit(written_before, &phase, &peaks).await;
        eprintln!(
            "{name}: sent in {:.2} s, committed {} of {} readings{}",
            phase.seconds(),
            commit.committed,
            phase.tally.ok_readings,
            commit
                .seconds
                .map(|s| format!(" in {s:.2} s"))
                .unwrap_or_default()
        );

        let peaks = *peaks.lock().expect("sampler never panics holding the lock");
        self.rss_max = [self.rss_max, peaks.rss]
            .into_iter()
            .flatten()
            .reduce(f64::max);
        let send_seconds = phase.seconds().max(f64::EPSILON);
        let tally = phase.tally;
        Ok(ModeReport {
            mode: name.to_string(),
            readings_per_request,
            requests_planned: planned,
            requests_accepted: tally.ok_requests,
            readings_accepted: tally.ok_readings,
            send_seconds,
            requests_per_sec: tally.ok_requests as f64 / send_seconds,
            readings_accepted_per_sec: tally.ok_readings as f64 / send_seconds,
            commit,
            retries: tally.retries,
            errors: tally.failures.by_class,
            first_problem: tally.failures.first_problem,
            bus_depth_peak: peaks.bus_depth,
            latency: LatencySummary::from_unsorted(tally.latencies_us),
        })
    }

    /// Polls `/metrics` until the store has committed every reading the phase got a
    /// 202 for, it stalls, or [`COMMIT_TIMEOUT`] passes.
    async fn wait_for_commit(
        &mut self,
        written_before: Option<f64>,
        phase: &Phase,
        peaks: &Mutex<Peaks>,
    ) -> CommitReport {
        let expected = phase.tally.ok_readings;
        // A counter is often exported only once it has been incremented: absent before
        // the first commit means zero, not "unsupported" — unless it never shows up.
        let mut seen_counter = written_before.is_some();
        let before = written_before.unwrap_or(0.0);
        let waiting_since = Instant::now();
        let mut committed = 0_u64;
        let mut last_growth = waiting_since;
        let mut committed_at = None;
        let note = loop {
            // One scrape per process and poll: the loaded process's snapshot also feeds
            // the memory and bus-depth peaks.
            let snapshots = scrape_all(&mut self.all_metrics).await;
            if let Some(Some(m)) = snapshots.get(self.load_index) {
                peaks
                    .lock()
                    .expect("sampler never panics holding the lock")
                    .update(m);
            }
            if let Some(written) = committed_total(&snapshots) {
                seen_counter = true;
                let now_committed = (written - before).max(0.0) as u64;
                if now_committed > committed {
                    committed = now_committed;
                    last_growth = Instant::now();
                    committed_at = Some(last_growth);
                }
            }
            if committed >= expected {
                break None;
            }
            if waiting_since.elapsed() > COMMIT_TIMEOUT {
                break Some(format!(
                    "timed out after {COMMIT_TIMEOUT:?} waiting for the store"
                ));
            }
            if last_growth.elapsed() > COMMIT_STALL && !seen_counter {
                break Some(format!(
                    "/metrics has no {STORE_READINGS_WRITTEN_TOTAL}: commit time unknown"
                ));
            }
            if last_growth.elapsed() > COMMIT_STALL {
                break Some(format!(
                    "the store's commit count stopped growing for {COMMIT_STALL:?} \
                     (readings deduplicated against an earlier run, or the store is stuck)"
                ));
            }
            tokio::time::sleep(COMMIT_POLL).await;
        };
        let seconds = committed_at.map(|at| (at - phase.started).as_secs_f64());
        CommitReport {
            committed,
            complete: note.is_none(),
            seconds,
            end_to_end_readings_per_sec: seconds.map(|s| committed as f64 / s.max(f64::EPSILON)),
            note,
        }
    }
}

/// Samples memory and bus depth while the load runs; aborted when it ends.
async fn sample(target: Target, peaks: Arc<Mutex<Peaks>>) {
    let Ok(mut conn) = Connection::new(&target, None, Duration::from_secs(5)) else {
        return;
    };
    loop {
        if let Some(m) = scrape(&mut conn).await {
            peaks
                .lock()
                .expect("no panic while holding the lock")
                .update(&m);
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

#[cfg(test)]
#[path = "bench_tests.rs"]
mod tests;
