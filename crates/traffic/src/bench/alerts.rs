//! `vigia bench alerts`: how long from a reading being accepted (202) to its alert
//! arriving on the WebSocket live feed — DESIGN §7 budgets p99 ≤ 20 ms — with a
//! baseline measured in the same run: the same posts of in-range readings, timed to
//! the `readings` frame that carries them (the live-feed floor without an alert).
//!
//! Every sample is one reading on its own sensor (`alert-bench-0000`, …, each with one
//! threshold rule `max 0`), so each out-of-range reading opens a new alert. Samples run
//! one at a time by default, so the figure is latency and not queueing. One WebSocket
//! stays open for the whole run; see [`feed`] for how frames are matched to samples.
//!
//! Modules: `feed` (the WebSocket and frame matching), `phase` (the timed samples),
//! `setup` (untimed provisioning and cleanup), `report` (the figures).

mod feed;
mod phase;
mod report;
mod setup;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hyper::StatusCode;

pub use feed::{
    parse_frame, ws_url, Arrival, FeedError, FeedStats, Frame, FrameError, Watch, WS_PATH,
};
pub use report::{AlertsReport, PhaseReport, BUDGET_P99_MS};

use super::format::TableReport;
use super::server::{ensure_vigia, on_server, Measured, SpawnArgs, TargetArgs};
use crate::http::Connection;
use crate::units::{parse_count, parse_duration};
use feed::Feed;
use phase::{Phase, Phases, IN_RANGE, OUT_OF_RANGE};
use setup::{run_chores, Chore};

/// Sensor keys are this plus the sample number (`alert-bench-0042`).
pub const SENSOR_PREFIX: &str = "alert-bench-";
/// Per request; a sample is one small request, so this only catches a stuck server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// WebSocket handshake.
const FEED_TIMEOUT: Duration = Duration::from_secs(10);

/// `vigia bench alerts`: reading accepted → alert on the WebSocket, with a readings-frame
/// baseline.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchAlertsArgs {
    /// The server to measure.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Samples per phase, each on its own sensor (accepts 1_000, 1k).
    #[arg(long, default_value = "1000", value_parser = parse_count)]
    pub alerts: u64,
    /// Samples in flight at once (1 measures latency without queueing).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// How long after its 202 a sample waits for its frame before it counts as missing.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Or a server of its own.
    #[command(flatten)]
    pub server: SpawnArgs,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints its report (a table, or JSON with `--json`). Fails
/// after printing when a frame never arrived: a lost alert is a defect, not a figure.
pub async fn run(args: BenchAlertsArgs) -> anyhow::Result<()> {
    let json = args.json;
    let wait = args.wait;
    let report = bench_alerts(args).await?;
    report.emit(json);
    let (alerts, readings) = (report.alerts.missing, report.baseline.missing);
    if alerts + readings > 0 {
        bail!(
            "{alerts} alert frame(s) and {readings} readings frame(s) never arrived on the \
             WebSocket within {wait:?} of their 202"
        );
    }
    Ok(())
}

/// Runs the benchmark and returns its figures. Progress goes to stderr.
pub async fn bench_alerts(args: BenchAlertsArgs) -> anyhow::Result<AlertsReport> {
    validate(&args)?;
    on_server(&args.target, &args.server, |server| measure(&args, server)).await
}

fn validate(args: &BenchAlertsArgs) -> anyhow::Result<()> {
    if !(1..=100_000).contains(&args.alerts) {
        bail!("--alerts must be between 1 and 100,000");
    }
    if !(1..=256).contains(&args.concurrency) {
        bail!("--concurrency must be between 1 and 256");
    }
    if args.concurrency as u64 > args.alerts {
        bail!("--concurrency must not exceed --alerts");
    }
    if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&args.wait) {
        bail!("--wait must be between 10ms and 60s");
    }
    Ok(())
}

/// The key of sample `i`'s sensor.
pub fn sensor_key(i: usize) -> String {
    format!("{SENSOR_PREFIX}{i:04}")
}

async fn measure(args: &BenchAlertsArgs, server: Measured) -> anyhow::Result<AlertsReport> {
    let Measured {
        target,
        api,
        token,
        data_dir,
        ..
    } = server;
    let token = token.as_str();
    // A server we started ourselves holds nothing from earlier runs to clean up.
    let fresh = data_dir.is_some();
    let mut conn = Connection::new(&target, Some(token), REQUEST_TIMEOUT)?;
    ensure_vigia(&mut conn, &target).await?;
    let load_average_before = load_average();

    let feed = match Feed::open(&api, token, FEED_TIMEOUT).await {
        Err(FeedError::Refused { status, .. }) if status == StatusCode::UNAUTHORIZED => {
            bail!("the token was refused (401): check --token / VIGIA_TOKEN")
        }
        other => other.context("opening the live feed")?,
    };
    let keys: Arc<Vec<String>> = Arc::new((0..args.alerts as usize).map(sensor_key).collect());
    eprintln!(
        "provisioning {} sensors ({SENSOR_PREFIX}…, threshold max 0)",
        keys.len()
    );
    let chores: Vec<Chore> = keys.iter().cloned().map(Chore::Provision).collect();
    run_chores(&api, token, chores).await?;
    if !fresh {
        // A run that was cut short leaves open alerts behind; they would block the
        // new ones this run must open.
        let chores = keys.iter().cloned().map(Chore::ClearStale).collect();
        let cleared = run_chores(&api, token, chores).await?;
        if cleared > 0 {
            eprintln!("resolved {cleared} alerts left open by an earlier run");
        }
    }

    let phases = Phases {
        target: &target,
        token,
        keys: &keys,
        waiters: &feed.waiters,
        concurrency: args.concurrency,
        wait: args.wait,
    };
    let (baseline, _) = phases
        .run(Phase {
            name: "baseline",
            frame: "readings",
            watch: Watch::Readings,
            value: IN_RANGE,
            ts_offset_ms: 0,
        })
        .await?;
    // 1 ms later than a baseline reading sent in the same millisecond: the alert's
    // reading must be the sensor's newest, not a late one.
    let (alerts, opened) = phases
        .run(Phase {
            name: "alerts",
            frame: "alert opened",
            watch: Watch::AlertOpened,
            value: OUT_OF_RANGE,
            ts_offset_ms: 1,
        })
        .await?;
    let feed = feed.close().await;

    if !fresh && !opened.is_empty() {
        eprintln!("resolving the {} alerts this run opened", opened.len());
        let chores = opened.into_iter().map(Chore::Resolve).collect();
        if let Err(e) = run_chores(&api, token, chores).await {
            eprintln!("warning: could not resolve every benchmark alert: {e:#}");
        }
    }

    let mut report = AlertsReport {
        url: target.url(),
        samples: args.alerts,
        concurrency: args.concurrency,
        wait_seconds: args.wait.as_secs_f64(),
        spawned_data_dir: data_dir,
        load_average_before,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        alerts,
        baseline,
        alert_vs_baseline_p99: None,
        alert_vs_baseline_p50: None,
        feed,
        budget_p99_ms: BUDGET_P99_MS,
        within_budget: None,
    };
    report.conclude();
    Ok(report)
}

/// The 1/5/15-minute load averages, where the OS tells them.
fn load_average() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// Parses `/proc/loadavg` (`0.52 0.58 0.59 1/467 12345`).
fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    let mut take = || {
        fields
            .next()
            .flatten()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    Some([take()?, take()?, take()?])
}

#[cfg(test)]
mod tests;
