//! `vigia bench soak`: a long run at a steady, paced rate — half of capacity is the
//! issue's setting — that samples the server over time, so drift shows: resident memory,
//! data-dir size (and how many bytes each stored reading costs), bus depth, and every
//! answer that was not 202.
//!
//! The load is open-loop: request `k` is due at `start + k × batch / rate`, whatever the
//! earlier answers took, so a server that slows down falls behind (bus depth grows,
//! requests go out late) instead of being offered less. Requests are never resent: a
//! 503 or 429 is counted as refused, and the verdict names it.
//!
//! Readings follow the wall clock: each sensor's timestamps advance by the same step,
//! chosen so that every (sensor, ts) is unique and the newest reading is close to now —
//! as a plant's gateways would send them, and within `ingest.max_age` however long the
//! run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;

use super::format::{count_u64, mb, spawned_line, TableReport};
use super::server::{ensure_vigia, on_server, Measured, SpawnArgs, TargetArgs};
use super::{scrape, sensor_key, READINGS_PATH};
use crate::http::Connection;
use crate::prometheus::{BUS_DEPTH_READINGS, RESIDENT_MEMORY_BYTES, STORE_READINGS_WRITTEN_TOTAL};
use crate::units::{parse_count, parse_duration};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `vigia bench soak`: a paced run over time, sampled.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchSoakArgs {
    /// The server to measure.
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long to send.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Readings offered per second (half of the measured capacity is the soak's point).
    #[arg(long, default_value = "100000", value_parser = parse_count)]
    pub rate: u64,
    /// Readings per request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Distinct sensors (raised when the rate needs more to keep each (sensor, ts) unique).
    #[arg(long, default_value_t = 100)]
    pub sensors: usize,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How often the server is sampled.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// Samples before this are warm-up: the drift figures start after it.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Or a server of its own.
    #[command(flatten)]
    pub server: SpawnArgs,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The answers of the run so far, by kind.
#[derive(Debug, Default)]
struct Answers {
    accepted_readings: AtomicU64,
    accepted: AtomicU64,
    too_many: AtomicU64,
    unavailable: AtomicU64,
    other_4xx: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
    /// Requests that went out more than 100 ms after they were due.
    late: AtomicU64,
}

/// One look at the server.
#[derive(Debug, Clone, Serialize)]
pub struct SoakSample {
    /// Seconds since the first request.
    pub at_s: f64,
    /// Readings answered 202 so far.
    pub accepted_readings: u64,
    /// Readings the store committed so far (the server's counter).
    pub committed_readings: Option<u64>,
    /// Readings on the bus, not yet committed.
    pub bus_depth: Option<u64>,
    /// Resident memory, bytes.
    pub rss_bytes: Option<f64>,
    /// Size of the data dir, bytes (spawned servers only).
    pub data_dir_bytes: Option<u64>,
    /// Answers other than 202 so far (429, 503, other 4xx, 5xx, transport errors).
    pub refused: u64,
    /// 5xx answers so far (503 included).
    pub server_errors: u64,
}

/// What `vigia bench soak` measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// The process the readings were posted to.
    pub url: String,
    /// Readings offered per second.
    pub rate: u64,
    /// Readings per request.
    pub batch_size: usize,
    /// Distinct sensors.
    pub sensors: usize,
    /// Seconds from the first request to the last sample.
    pub duration_s: f64,
    /// Seconds of warm-up left out of the drift figures.
    pub warmup_s: f64,
    /// The server over time.
    pub samples: Vec<SoakSample>,
    /// Requests answered 202.
    pub requests_accepted: u64,
    /// Requests answered 429.
    pub too_many_requests: u64,
    /// Requests answered 503.
    pub unavailable: u64,
    /// Requests answered with another 4xx.
    pub other_client_errors: u64,
    /// Requests answered with a 5xx other than 503.
    pub server_errors: u64,
    /// Requests that got no answer (connection or timeout).
    pub transport_errors: u64,
    /// Requests sent more than 100 ms after their due time (the client or server fell behind).
    pub late_requests: u64,
    /// Readings per second accepted over the run.
    pub accepted_per_second: f64,
    /// After warm-up: lowest and highest RSS, bytes, and last minus first.
    pub rss_after_warmup: Option<Drift>,
    /// After warm-up: data-dir bytes per committed reading, first and last sample.
    pub bytes_per_reading_after_warmup: Option<(f64, f64)>,
    /// After warm-up: highest bus depth seen.
    pub max_bus_depth_after_warmup: Option<u64>,
    /// The data dir of a server the benchmark started.
    pub spawned_data_dir: Option<PathBuf>,
}

/// How a figure moved after warm-up.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Drift {
    /// Lowest sample.
    pub min: f64,
    /// Highest sample.
    pub max: f64,
    /// The last sample minus the first.
    pub last_minus_first: f64,
}

impl TableReport for SoakReport {
    fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "soak at {} readings/s offered ({} a request, {} sensors) for {:.0} s at {}",
            count_u64(self.rate),
            self.batch_size,
            self.sensors,
            self.duration_s,
            self.url
        );
        spawned_line(&mut out, self.spawned_data_dir.as_deref());
        let _ = writeln!(
            out,
            "{:>8} {:>14} {:>14} {:>10} {:>9} {:>10} {:>8} {:>6}",
            "at s", "accepted", "committed", "bus depth", "RSS MB", "data MB", "refused", "5xx"
        );
        let opt = |v: Option<u64>| v.map_or("—".to_string(), count_u64);
        for s in &self.samples {
            let _ = writeln!(
                out,
                "{:>8.0} {:>14} {:>14} {:>10} {:>9} {:>10} {:>8} {:>6}",
                s.at_s,
                count_u64(s.accepted_readings),
                opt(s.committed_readings),
                opt(s.bus_depth),
                mb(s.rss_bytes),
                s.data_dir_bytes
                    .map_or("—".into(), |b| format!("{:.1}", b as f64 / 1e6)),
                s.refused,
                s.server_errors
            );
        }
        let _ = writeln!(
            out,
            "accepted {:.0} readings/s; answers: {} accepted, {} 429, {} 503, {} other 4xx, {} 5xx, {} transport errors; {} requests late (> 100 ms)",
            self.accepted_per_second,
            self.requests_accepted,
            self.too_many_requests,
            self.unavailable,
            self.other_client_errors,
            self.server_errors,
            self.transport_errors,
            self.late_requests
        );
        if let Some(d) = self.rss_after_warmup {
            let _ = writeln!(
                out,
                "after warm-up ({:.0} s): RSS {:.1}–{:.1} MB, last − first {:+.1} MB",
                self.warmup_s,
                d.min / 1e6,
                d.max / 1e6,
                d.last_minus_first / 1e6
            );
        }
        if let Some((first, last)) = self.bytes_per_reading_after_warmup {
            let _ = writeln!(
                out,
                "data dir per committed reading: {first:.1} B at the first sample after warm-up, {last:.1} B at the last"
            );
        }
        if let Some(depth) = self.max_bus_depth_after_warmup {
            let _ = writeln!(out, "highest bus depth after warm-up: {}", count_u64(depth));
        }
        out
    }
}

/// Runs the soak and prints its report.
pub async fn run(args: BenchSoakArgs) -> anyhow::Result<()> {
    if args.rate == 0 || args.batch_size == 0 || args.concurrency == 0 {
        bail!("--rate, --batch-size and --concurrency must be at least 1");
    }
    if args.sample_every.is_zero() || args.duration.is_zero() {
        bail!("--duration and --sample-every must be longer than zero");
    }
    let json = args.json;
    let report = on_server(&args.target, &args.server, |server| soak(&args, server)).await?;
    report.emit(json);
    Ok(())
}

/// Sensors and the per-sensor timestamp step (ms) so that `rate` readings a second keep
/// every (sensor, ts) unique: each sensor gets at most one reading a millisecond.
fn clock_plan(rate: u64, sensors: usize) -> (usize, f64) {
    let sensors = sensors.max(rate.div_ceil(1000) as usize).max(1);
    let step_ms = 1000.0 * sensors as f64 / rate as f64;
    (sensors, step_ms)
}

/// Body `k`: readings `k × batch …`, round-robin over the sensors, timestamps from `t0_ms`.
fn body(k: u64, batch: usize, sensors: &[String], t0_ms: i64, step_ms: f64) -> Bytes {
    use std::io::Write;
    let mut out = Vec::with_capacity(batch * 64 + 2);
    out.push(b'[');
    let first = k * batch as u64;
    for i in 0..batch as u64 {
        let n = first + i;
        let sensor = (n % sensors.len() as u64) as usize;
        let ts = t0_ms + ((n / sensors.len() as u64) as f64 * step_ms) as i64;
        let value = -20.0 + (n % 17) as f64 * 0.13;
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(
            out,
            r#"{{"sensor":"{}","ts":{ts},"value":{value:.2}}}"#,
            sensors[sensor]
        );
    }
    out.push(b']');
    Bytes::from(out)
}

async fn soak(args: &BenchSoakArgs, server: Measured) -> anyhow::Result<SoakReport> {
    let Measured {
        target,
        token,
        data_dir,
        ..
    } = server;
    let mut metrics = Connection::new(&target, Some(&token), REQUEST_TIMEOUT)?;
    ensure_vigia(&mut metrics, &target).await?;
    let (sensor_count, step_ms) = clock_plan(args.rate, args.sensors);
    let sensors: Arc<Vec<String>> = Arc::new((0..sensor_count).map(sensor_key).collect());
    let interval = Duration::from_secs_f64(args.batch_size as f64 / args.rate as f64);
    let total_requests = (args.duration.as_secs_f64() / interval.as_secs_f64())
        .ceil()
        .max(1.0) as u64;
    let answers = Arc::new(Answers::default());
    let next = Arc::new(AtomicU64::new(0));
    let t0_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let start = tokio::time::Instant::now();
    eprintln!(
        "soak: {} requests of {} readings, one every {:.2} ms, {} sensors",
        total_requests,
        args.batch_size,
        interval.as_secs_f64() * 1000.0,
        sensor_count
    );

    let mut senders = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let mut conn = Connection::new(&target, Some(&token), REQUEST_TIMEOUT)?;
        let (answers, next, sensors) = (answers.clone(), next.clone(), sensors.clone());
        let batch = args.batch_size;
        senders.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total_requests {
                    break;
                }
                let due = start + interval.mul_f64(k as f64);
                let now = tokio::time::Instant::now();
                if now < due {
                    tokio::time::sleep_until(due).await;
                } else if now - due > Duration::from_millis(100) {
                    answers.late.fetch_add(1, Ordering::Relaxed);
                }
                let bytes = body(k, batch, &sensors, t0_ms, step_ms);
                let counter = match conn.post_json(READINGS_PATH, bytes).await {
                    Ok(r) if r.status == StatusCode::ACCEPTED => {
                        answers
                            .accepted_readings
                            .fetch_add(batch as u64, Ordering::Relaxed);
                        &answers.accepted
                    }
                    Ok(r) if r.status == StatusCode::TOO_MANY_REQUESTS => &answers.too_many,
                    Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE => &answers.unavailable,
                    Ok(r) if r.status.is_server_error() => &answers.server_errors,
                    Ok(_) => &answers.other_4xx,
                    Err(_) => &answers.transport_errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(args.sample_every);
    ticker.tick().await;
    loop {
        let sending = senders.iter().any(|s| !s.is_finished());
        let sample = take_sample(&mut metrics, &answers, data_dir.as_deref(), start).await;
        eprintln!(
            "soak {:>6.0} s: accepted {} committed {} bus {} RSS {} MB data {} refused {} 5xx {}",
            sample.at_s,
            sample.accepted_readings,
            sample.committed_readings.unwrap_or(0),
            sample.bus_depth.unwrap_or(0),
            mb(sample.rss_bytes),
            sample.data_dir_bytes.unwrap_or(0) / 1_000_000,
            sample.refused,
            sample.server_errors
        );
        samples.push(sample);
        if !sending {
            break;
        }
        ticker.tick().await;
    }
    for sender in senders {
        sender.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(summarise(
        args,
        &target.url(),
        samples,
        &answers,
        elapsed,
        data_dir,
    ))
}

async fn take_sample(
    metrics: &mut Connection,
    answers: &Answers,
    data_dir: Option<&Path>,
    start: tokio::time::Instant,
) -> SoakSample {
    let snapshot = scrape(metrics).await;
    let get = |name| snapshot.as_ref().and_then(|m| m.get(name));
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let server_errors = load(&answers.server_errors) + load(&answers.unavailable);
    SoakSample {
        at_s: start.elapsed().as_secs_f64(),
        accepted_readings: load(&answers.accepted_readings),
        committed_readings: get(STORE_READINGS_WRITTEN_TOTAL).map(|v| v as u64),
        bus_depth: get(BUS_DEPTH_READINGS).map(|v| v as u64),
        rss_bytes: get(RESIDENT_MEMORY_BYTES),
        data_dir_bytes: data_dir.map(dir_size),
        refused: server_errors
            + load(&answers.too_many)
            + load(&answers.other_4xx)
            + load(&answers.transport_errors),
        server_errors,
    }
}

/// Bytes of every file under `dir` (0 for what cannot be read: files come and go).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => dir_size(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn summarise(
    args: &BenchSoakArgs,
    url: &str,
    samples: Vec<SoakSample>,
    answers: &Answers,
    elapsed: f64,
    data_dir: Option<PathBuf>,
) -> SoakReport {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let warm: Vec<&SoakSample> = samples
        .iter()
        .filter(|s| s.at_s >= args.warmup.as_secs_f64())
        .collect();
    let rss: Vec<f64> = warm.iter().filter_map(|s| s.rss_bytes).collect();
    let rss_after_warmup = (!rss.is_empty()).then(|| Drift {
        min: rss.iter().copied().fold(f64::INFINITY, f64::min),
        max: rss.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        last_minus_first: rss[rss.len() - 1] - rss[0],
    });
    let per_reading = |s: &SoakSample| match (s.data_dir_bytes, s.committed_readings) {
        (Some(bytes), Some(n)) if n > 0 => Some(bytes as f64 / n as f64),
        _ => None,
    };
    let per: Vec<f64> = warm.iter().filter_map(|s| per_reading(s)).collect();
    SoakReport {
        url: url.to_string(),
        rate: args.rate,
        batch_size: args.batch_size,
        sensors: clock_plan(args.rate, args.sensors).0,
        duration_s: elapsed,
        warmup_s: args.warmup.as_secs_f64(),
        requests_accepted: load(&answers.accepted),
        too_many_requests: load(&answers.too_many),
        unavailable: load(&answers.unavailable),
        other_client_errors: load(&answers.other_4xx),
        server_errors: load(&answers.server_errors),
        transport_errors: load(&answers.transport_errors),
        late_requests: load(&answers.late),
        accepted_per_second: load(&answers.accepted_readings) as f64 / elapsed.max(1e-9),
        rss_after_warmup,
        bytes_per_reading_after_warmup: (!per.is_empty()).then(|| (per[0], per[per.len() - 1])),
        max_bus_depth_after_warmup: warm.iter().filter_map(|s| s.bus_depth).max(),
        samples,
        spawned_data_dir: data_dir,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sensor_gets_at_most_one_reading_a_millisecond() {
        assert_eq!(clock_plan(100_000, 100), (100, 1.0));
        assert_eq!(clock_plan(50_000, 100), (100, 2.0));
        // 500k readings/s need 500 sensors to stay one a millisecond each.
        assert_eq!(clock_plan(500_000, 100), (500, 1.0));
        assert_eq!(clock_plan(10, 100), (100, 10_000.0));
    }

    #[test]
    fn bodies_never_repeat_a_sensor_and_timestamp() {
        let sensors: Vec<String> = (0..7).map(sensor_key).collect();
        let mut seen = std::collections::HashSet::new();
        for k in 0..20 {
            let bytes = body(k, 10, &sensors, 1_000, 1.0);
            let rows: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(rows.len(), 10);
            for row in rows {
                let key = (row["sensor"].to_string(), row["ts"].as_i64().unwrap());
                assert!(seen.insert(key.clone()), "{key:?} twice");
            }
        }
        assert_eq!(seen.len(), 200);
    }

    #[test]
    fn drift_is_measured_after_the_warm_up_only() {
        let args = BenchSoakArgs {
            target: TargetArgs {
                url: "http://127.0.0.1:1".into(),
                token: None,
            },
            duration: Duration::from_secs(30),
            rate: 1000,
            batch_size: 10,
            sensors: 1,
            concurrency: 1,
            sample_every: Duration::from_secs(10),
            warmup: Duration::from_secs(10),
            server: SpawnArgs {
                store: None,
                bus: None,
                fanout: None,
                processes: "all".into(),
                spawn: false,
                keep_data: false,
                server_bin: None,
                settings: vec![],
            },
            json: false,
        };
        let sample = |at_s, rss: f64, bytes, committed| SoakSample {
            at_s,
            accepted_readings: committed,
            committed_readings: Some(committed),
            bus_depth: Some(0),
            rss_bytes: Some(rss),
            data_dir_bytes: Some(bytes),
            refused: 0,
            server_errors: 0,
        };
        let samples = vec![
            sample(0.0, 100e6, 0, 0),
            sample(10.0, 30e6, 2_500, 100),
            sample(20.0, 32e6, 5_000, 200),
            sample(30.0, 31e6, 7_600, 300),
        ];
        let report = summarise(&args, "u", samples, &Answers::default(), 30.0, None);
        let drift = report.rss_after_warmup.unwrap();
        assert_eq!((drift.min, drift.max), (30e6, 32e6));
        assert_eq!(drift.last_minus_first, 1e6);
        let (first, last) = report.bytes_per_reading_after_warmup.unwrap();
        assert_eq!(first, 25.0);
        assert!((last - 25.33).abs() < 0.01, "{last}");
        assert!(report.render().contains("RSS 30.0–32.0 MB"));
    }
}
