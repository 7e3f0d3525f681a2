//! `vigia bench series`: how long a year of hourly points for one sensor among many
//! takes to answer (`step=1h`, read from the 1-hour rollups) — issue 14 budgets p95 ≤
//! 20 ms — with two baselines measured in the same run: the same range averaged from raw
//! readings by the store (`step=3599999ms`, a width no rollup can answer: what the query
//! would cost without rollups) and the `GET /healthz` floor of the HTTP stack.
//!
//! Setup (untimed): `--sensors` sensors (`series-bench-000`, …) each get one reading an
//! hour for `--days` days, ending at the last whole hour, posted in large batches; then
//! the benchmark waits until the server's `rollups` job has covered every hour (the
//! answer says `"source": "1h"` with every point). A spawned server gets `ingest.max_age`
//! and retention long enough for the history; a server named by `--url` must have them.
//! Against a server named by `--url`
//! the sensors and their readings stay (readings are idempotent, so a rerun re-posts
//! the same rows and stores nothing new).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Serialize;

use super::format::{count, ms, spawned_line, TableReport};
use super::load::LatencySummary;
use super::server::{ensure_vigia, on_server, Measured, SpawnArgs, TargetArgs};
use crate::http::{Connection, Target};
use crate::units::parse_count;

/// Sensor keys are this plus the sensor number (`series-bench-042`).
pub const SENSOR_PREFIX: &str = "series-bench-";
/// The issue's budget for the rollups phase.
pub const BUDGET_P95_MS: f64 = 20.0;
const HOUR_MS: i64 = 3_600_000;
/// Readings per seeding request (well under the default `ingest.max_batch_rows`).
const SEED_BATCH: usize = 10_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// `vigia bench series`: a year of hourly points from the rollups, against raw
/// averaging and the `/healthz` floor.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchSeriesArgs {
    /// The server to measure.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Sensors seeded; queries pick them in turn.
    #[arg(long, default_value = "100", value_parser = parse_count)]
    pub sensors: u64,
    /// Days of hourly readings per sensor.
    #[arg(long, default_value = "365", value_parser = parse_count)]
    pub days: u64,
    /// Queries of the rollups phase (and of the floor).
    #[arg(long, default_value = "1000", value_parser = parse_count)]
    pub queries: u64,
    /// Queries of the raw-averaging baseline (each scans the whole range of readings).
    #[arg(long, default_value = "20", value_parser = parse_count)]
    pub raw_queries: u64,
    /// How long to wait for the `rollups` job to cover the seeded range.
    #[arg(long, default_value = "600", value_parser = parse_count)]
    pub wait_s: u64,
    /// Or a server of its own.
    #[command(flatten)]
    pub server: SpawnArgs,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One timed phase.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesPhase {
    /// What was asked.
    pub name: String,
    /// The first request's path.
    pub query: String,
    /// Request sent → whole body read, one request at a time.
    pub latency: LatencySummary,
    /// 95th percentile, µs.
    pub p95_us: u32,
    /// Points in the first answer (0 for `/healthz`).
    pub points_per_answer: usize,
    /// Sequential queries per second.
    pub queries_per_second: f64,
}

/// What `vigia bench series` measured.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesReport {
    /// The API process measured.
    pub url: String,
    /// Sensors seeded.
    pub sensors: u64,
    /// Days of hourly readings per sensor.
    pub days: u64,
    /// Readings posted in all.
    pub readings_seeded: u64,
    /// Seconds the posting took (202s, not commits).
    pub seed_seconds: f64,
    /// Seconds from the last 202 until the rollups covered the range.
    pub rollup_wait_seconds: f64,
    /// `step=1h` over the whole range.
    pub rollups: SeriesPhase,
    /// The same range averaged from raw readings by the store.
    pub raw_averaged: SeriesPhase,
    /// The HTTP floor.
    pub healthz: SeriesPhase,
    /// Raw-averaging p95 over rollups p95.
    pub raw_vs_rollups_p95: f64,
    /// The issue's budget for the rollups p95.
    pub budget_p95_ms: f64,
    /// Whether the rollups p95 met it.
    pub within_budget: bool,
    /// The data dir of a server the benchmark started.
    pub spawned_data_dir: Option<std::path::PathBuf>,
}

impl TableReport for SeriesReport {
    fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "series of one sensor among {} ({} days hourly, {} readings seeded in {:.1} s; rollups ready {:.1} s later) at {}",
            self.sensors,
            self.days,
            count(self.readings_seeded as f64),
            self.seed_seconds,
            self.rollup_wait_seconds,
            self.url
        );
        spawned_line(&mut out, self.spawned_data_dir.as_deref());
        let _ = writeln!(
            out,
            "{:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "phase", "queries", "points", "p50", "p95", "p99", "max", "q/s"
        );
        for phase in [&self.rollups, &self.raw_averaged, &self.healthz] {
            let _ = writeln!(
                out,
                "{:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8.0}",
                phase.name,
                phase.latency.count,
                phase.points_per_answer,
                ms(phase.latency.p50_us),
                ms(phase.p95_us),
                ms(phase.latency.p99_us),
                ms(phase.latency.max_us),
                phase.queries_per_second
            );
        }
        let _ = writeln!(
            out,
            "raw averaging p95 / rollups p95: {:.1}×; budget rollups p95 ≤ {} ms: {}",
            self.raw_vs_rollups_p95,
            self.budget_p95_ms,
            if self.within_budget { "met" } else { "NOT met" }
        );
        out
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchSeriesArgs) -> anyhow::Result<()> {
    if !(1..=10_000).contains(&args.sensors) {
        bail!("--sensors must be between 1 and 10,000");
    }
    // One answer holds at most 10,000 points.
    if !(1..=416).contains(&args.days) {
        bail!("--days must be between 1 and 416 (an answer holds at most 10,000 hourly points)");
    }
    if args.queries == 0 || args.raw_queries == 0 {
        bail!("--queries and --raw-queries must be at least 1");
    }
    let json = args.json;
    let mut spawn = args.server.clone();
    // The seeded history must be accepted (`ingest.max_age`) and kept while measured.
    let keep = format!("{}d", args.days + 2);
    for key in ["INGEST__MAX_AGE", "RETENTION__RAW", "RETENTION__ROLLUPS"] {
        spawn.settings.push((format!("VIGIA_{key}"), keep.clone()));
    }
    let report = on_server(&args.target, &spawn, |server| measure(&args, server)).await?;
    report.emit(json);
    Ok(())
}

async fn measure(args: &BenchSeriesArgs, server: Measured) -> anyhow::Result<SeriesReport> {
    let Measured {
        target,
        api,
        token,
        data_dir,
        ..
    } = server;
    let mut conn = Connection::new(&target, Some(&token), REQUEST_TIMEOUT)?;
    ensure_vigia(&mut conn, &target).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let end = now.div_euclid(HOUR_MS) * HOUR_MS;
    let hours = (args.days * 24) as i64;
    let start = end - hours * HOUR_MS;
    let keys: Vec<String> = (0..args.sensors)
        .map(|i| format!("{SENSOR_PREFIX}{i:03}"))
        .collect();

    eprintln!("seeding {} sensors × {hours} hourly readings", keys.len());
    let seeded = Instant::now();
    seed(&target, &token, &keys, start, hours).await?;
    let seed_seconds = seeded.elapsed().as_secs_f64();

    let year = |key: &str, step: &str| {
        format!(
            "/api/v1/sensors/{key}/readings?step={step}&from={start}&to={}&limit=10000",
            end - 1
        )
    };
    eprintln!("waiting for the rollups job to cover the range");
    let waited = Instant::now();
    let mut api_conn = Connection::new(&api, Some(&token), REQUEST_TIMEOUT)?;
    for key in [&keys[0], &keys[keys.len() - 1]] {
        loop {
            let res = api_conn.get(&year(key, "1h")).await?;
            if res.status.is_success() {
                let body: serde_json::Value = serde_json::from_slice(&res.body)?;
                let n = body["points"].as_array().map_or(0, Vec::len);
                if body["source"] == "1h" && n as i64 == hours {
                    break;
                }
            }
            if waited.elapsed() > Duration::from_secs(args.wait_s) {
                bail!(
                    "the rollups did not cover {key}'s range within {} s (last answer {}: {})",
                    args.wait_s,
                    res.status,
                    res.body_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let rollup_wait_seconds = waited.elapsed().as_secs_f64();

    let rollups = phase(&mut api_conn, "rollups 1h", args.queries, |i| {
        year(&keys[i % keys.len()], "1h")
    })
    .await?;
    let raw_averaged = phase(&mut api_conn, "raw averaged", args.raw_queries, |i| {
        year(&keys[i % keys.len()], "3599999ms")
    })
    .await?;
    let healthz = phase(&mut api_conn, "GET /healthz", args.queries, |_| {
        "/healthz".to_string()
    })
    .await?;
    if rollups.points_per_answer as i64 != hours {
        bail!(
            "a rollups answer held {} points, not {hours}",
            rollups.points_per_answer
        );
    }
    Ok(SeriesReport {
        url: api.url(),
        sensors: args.sensors,
        days: args.days,
        readings_seeded: args.sensors * hours as u64,
        seed_seconds,
        rollup_wait_seconds,
        raw_vs_rollups_p95: f64::from(raw_averaged.p95_us) / f64::from(rollups.p95_us.max(1)),
        within_budget: f64::from(rollups.p95_us) / 1_000.0 <= BUDGET_P95_MS,
        budget_p95_ms: BUDGET_P95_MS,
        rollups,
        raw_averaged,
        healthz,
        spawned_data_dir: data_dir,
    })
}

/// Posts every sensor's hourly readings, four requests in flight.
async fn seed(
    target: &Target,
    token: &str,
    keys: &[String],
    start: i64,
    hours: i64,
) -> anyhow::Result<()> {
    let mut bodies: Vec<Bytes> = Vec::new();
    let mut batch = String::from("[");
    let mut in_batch = 0;
    for (k, key) in keys.iter().enumerate() {
        for h in 0..hours {
            if in_batch > 0 {
                batch.push(',');
            }
            // A daily wave, different per sensor, so averages are not all equal.
            let value = 4.0 + ((h + k as i64) % 24) as f64 * 0.25;
            batch.push_str(&format!(
                r#"{{"sensor":"{key}","ts":{},"value":{value}}}"#,
                start + h * HOUR_MS + 30 * 60_000
            ));
            in_batch += 1;
            if in_batch == SEED_BATCH {
                batch.push(']');
                bodies.push(Bytes::from(std::mem::replace(&mut batch, "[".into())));
                in_batch = 0;
            }
        }
    }
    if in_batch > 0 {
        batch.push(']');
        bodies.push(Bytes::from(batch));
    }
    let queue = std::sync::Arc::new(std::sync::Mutex::new(bodies));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (queue, target, token) = (queue.clone(), target.clone(), token.to_string());
        workers.push(tokio::spawn(async move {
            let mut conn = Connection::new(&target, Some(&token), REQUEST_TIMEOUT)?;
            loop {
                let Some(body) = queue.lock().expect("queue").pop() else {
                    return anyhow::Ok(());
                };
                loop {
                    let res = conn.post_json("/api/v1/readings", body.clone()).await?;
                    if res.is_backpressure() {
                        tokio::time::sleep(res.retry_after.unwrap_or(Duration::from_secs(1))).await;
                        continue;
                    }
                    if res.status.as_u16() != 202 {
                        bail!("seeding got {}: {}", res.status, res.body_text());
                    }
                    break;
                }
            }
        }));
    }
    for worker in workers {
        worker.await.context("seeding task")??;
    }
    Ok(())
}

/// `n` sequential GETs on one open connection, each timed to its whole body.
async fn phase(
    conn: &mut Connection,
    name: &str,
    n: u64,
    path: impl Fn(usize) -> String,
) -> anyhow::Result<SeriesPhase> {
    conn.connect().await?;
    let mut latencies = Vec::with_capacity(n as usize);
    let mut points = 0;
    let started = Instant::now();
    for i in 0..n as usize {
        let path = path(i);
        let sent = Instant::now();
        let res = conn.get(&path).await?;
        latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        if !res.status.is_success() {
            bail!("{name}: GET {path} got {}: {}", res.status, res.body_text());
        }
        if i == 0 && path.contains("/readings") {
            let body: serde_json::Value = serde_json::from_slice(&res.body)?;
            points = body["points"].as_array().map_or(0, Vec::len);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut sorted = latencies.clone();
    sorted.sort_unstable();
    Ok(SeriesPhase {
        name: name.into(),
        query: path(0),
        p95_us: super::load::percentile(&sorted, 95.0).unwrap_or(0),
        latency: LatencySummary::from_unsorted(latencies).context("no queries")?,
        points_per_answer: points,
        queries_per_second: n as f64 / seconds,
    })
}
