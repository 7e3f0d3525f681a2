//! One phase of `vigia bench alerts`: a reading posted on every benchmark sensor, each
//! timed from request to 202 to the frame it causes on the WebSocket, one sample at a
//! time per worker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::StatusCode;
use tokio::task::JoinSet;
use vigia_core::Timestamp;

use super::feed::{Waiters, Watch};
use super::report::PhaseReport;
use super::REQUEST_TIMEOUT;
use crate::bench::load::Failures;
use crate::bench::LatencySummary;
use crate::http::{Connection, Target};

const READINGS_PATH: &str = "/api/v1/readings";
/// In range for the benchmark sensors' rule (`max 0`): the baseline's readings open nothing.
pub const IN_RANGE: f64 = -1.0;
/// Out of range: opens an alert.
pub const OUT_OF_RANGE: f64 = 1.0;
/// A phase stops after this many failed samples in a row on one worker: the server
/// is gone or broken, and waiting out every remaining sample tells nothing more.
const MAX_CONSECUTIVE_FAILURES: u32 = 5;

/// One reading as a `POST /api/v1/readings` body.
pub fn reading_body(sensor: &str, ts_ms: i64, value: f64) -> Bytes {
    Bytes::from(serde_json::json!({ "sensor": sensor, "ts": ts_ms, "value": value }).to_string())
}

/// What one phase posts and waits for.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// `baseline` or `alerts`.
    pub name: &'static str,
    /// The frame waited for, in words.
    pub frame: &'static str,
    /// The frame waited for.
    pub watch: Watch,
    /// The value posted.
    pub value: f64,
    /// Added to "now" for the reading's event time.
    pub ts_offset_ms: i64,
}

/// What every phase shares.
pub struct Phases<'a> {
    /// The server.
    pub target: &'a Target,
    /// Its API key.
    pub token: &'a str,
    /// One sensor per sample.
    pub keys: &'a Arc<Vec<String>>,
    /// The open feed's waiting list.
    pub waiters: &'a Arc<Waiters>,
    /// Samples in flight at once.
    pub concurrency: usize,
    /// How long after its 202 a sample waits for its frame.
    pub wait: Duration,
}

/// State shared by one phase's workers.
struct Shared {
    phase: Phase,
    keys: Arc<Vec<String>>,
    waiters: Arc<Waiters>,
    wait: Duration,
    next: AtomicUsize,
    /// Why the phase stopped early; the first reason wins.
    stop: OnceLock<String>,
}

impl Phases<'_> {
    /// Takes one sample per sensor; returns the phase's figures and the ids of the
    /// alerts it saw opened.
    pub async fn run(&self, phase: Phase) -> anyhow::Result<(PhaseReport, Vec<i64>)> {
        eprintln!(
            "{}: {} readings of {}, {} at a time, each timed to its {} frame",
            phase.name,
            self.keys.len(),
            phase.value,
            self.concurrency,
            phase.frame
        );
        let shared = Arc::new(Shared {
            phase,
            keys: self.keys.clone(),
            waiters: self.waiters.clone(),
            wait: self.wait,
            next: AtomicUsize::new(0),
            stop: OnceLock::new(),
        });
        let mut workers = JoinSet::new();
        for _ in 0..self.concurrency {
            let mut conn = Connection::new(self.target, Some(self.token), REQUEST_TIMEOUT)?;
            // The handshake is not part of any sample; a failure here is retried (and
            // counted) by the first request.
            let _ = conn.connect().await;
            workers.spawn(sample_worker(conn, shared.clone()));
        }
        let mut tally = Tally::default();
        while let Some(done) = workers.join_next().await {
            match done {
                Ok(t) => tally.merge(t),
                Err(e) => tally.failures.record("worker failed".into(), e.to_string()),
            }
        }
        let opened = std::mem::take(&mut tally.alert_ids);
        let stopped = shared.stop.get().cloned();
        Ok((
            tally.into_report(phase, self.keys.len() as u64, stopped),
            opened,
        ))
    }
}

/// One sample's three instants, as the report's durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub sent_to_202_us: u32,
    pub accepted_to_ws_us: u32,
    pub sent_to_ws_us: u32,
    /// The frame was read before the 202 was (the worker can beat the response).
    pub before_202: bool,
}

impl Timing {
    pub fn new(sent: Instant, accepted: Instant, frame: Instant) -> Self {
        let us = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        Self {
            sent_to_202_us: us(accepted.saturating_duration_since(sent)),
            accepted_to_ws_us: us(frame.saturating_duration_since(accepted)),
            sent_to_ws_us: us(frame.saturating_duration_since(sent)),
            before_202: frame < accepted,
        }
    }
}

/// How one sample ended.
#[derive(Debug)]
pub enum Outcome {
    Arrived(Timing, Option<i64>),
    /// 202, but no frame within the wait.
    Missing(u32),
    /// No 202: the status or transport failure, and the problem text.
    Failed {
        class: String,
        problem: String,
    },
    /// The feed ended: no frame can arrive any more.
    FeedGone(u32),
}

/// What a phase's workers saw, merged.
#[derive(Debug, Default)]
pub struct Tally {
    sent_to_202: Vec<u32>,
    accepted_to_ws: Vec<u32>,
    sent_to_ws: Vec<u32>,
    pub arrived: u64,
    pub missing: u64,
    pub before_202: u64,
    pub failures: Failures,
    pub alert_ids: Vec<i64>,
}

pub const NO_FRAME: &str = "no frame in time";
pub const FEED_GONE: &str = "feed ended";

impl Tally {
    /// Records a sample; returns whether it failed.
    pub fn record(&mut self, outcome: Outcome, wait: Duration) -> bool {
        match outcome {
            Outcome::Arrived(t, alert) => {
                self.sent_to_202.push(t.sent_to_202_us);
                self.accepted_to_ws.push(t.accepted_to_ws_us);
                self.sent_to_ws.push(t.sent_to_ws_us);
                self.arrived += 1;
                self.before_202 += u64::from(t.before_202);
                self.alert_ids.extend(alert);
                false
            }
            Outcome::Missing(sent_to_202_us) => {
                self.sent_to_202.push(sent_to_202_us);
                self.missing += 1;
                self.failures.record(
                    NO_FRAME.into(),
                    format!("202, then no frame within {wait:?}"),
                );
                true
            }
            Outcome::FeedGone(sent_to_202_us) => {
                self.sent_to_202.push(sent_to_202_us);
                self.failures
                    .record(FEED_GONE.into(), "the WebSocket closed".into());
                true
            }
            Outcome::Failed { class, problem } => {
                self.failures.record(class, problem);
                true
            }
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.sent_to_202.extend(other.sent_to_202);
        self.accepted_to_ws.extend(other.accepted_to_ws);
        self.sent_to_ws.extend(other.sent_to_ws);
        self.arrived += other.arrived;
        self.missing += other.missing;
        self.before_202 += other.before_202;
        self.failures.merge(other.failures);
        self.alert_ids.extend(other.alert_ids);
    }

    pub fn into_report(self, phase: Phase, planned: u64, stopped: Option<String>) -> PhaseReport {
        PhaseReport {
            phase: phase.name.into(),
            frame: phase.frame.into(),
            planned,
            accepted: self.sent_to_202.len() as u64,
            arrived: self.arrived,
            missing: self.missing,
            frames_before_202: self.before_202,
            sent_to_202: LatencySummary::from_unsorted(self.sent_to_202),
            accepted_to_ws: LatencySummary::from_unsorted(self.accepted_to_ws),
            sent_to_ws: LatencySummary::from_unsorted(self.sent_to_ws),
            errors: self.failures.by_class,
            first_problem: self.failures.first_problem,
            stopped,
        }
    }
}

async fn sample_worker(mut conn: Connection, shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    let mut failures_in_a_row = 0;
    while shared.stop.get().is_none() {
        let Some(key) = shared.keys.get(shared.next.fetch_add(1, Ordering::Relaxed)) else {
            break;
        };
        let outcome = take_sample(&mut conn, &shared, key).await;
        let stop = match &outcome {
            Outcome::FeedGone(_) => Some("the WebSocket feed ended".to_string()),
            Outcome::Failed { class, .. } if class == "401" => {
                Some("the token was refused (401)".to_string())
            }
            _ => None,
        };
        if tally.record(outcome, shared.wait) {
            failures_in_a_row += 1;
        } else {
            failures_in_a_row = 0;
        }
        let stop = stop.or_else(|| {
            (failures_in_a_row >= MAX_CONSECUTIVE_FAILURES)
                .then(|| format!("{failures_in_a_row} samples in a row failed"))
        });
        if let Some(reason) = stop {
            let _ = shared.stop.set(reason);
        }
    }
    tally
}

async fn take_sample(conn: &mut Connection, shared: &Shared, key: &str) -> Outcome {
    let phase = shared.phase;
    let body = reading_body(
        key,
        Timestamp::now().millis() + phase.ts_offset_ms,
        phase.value,
    );
    // Registered before sending, so the frame cannot come before anyone waits for it.
    let arrival = shared.waiters.expect(phase.watch, key);
    let sent = Instant::now();
    let response = conn.post_json(READINGS_PATH, body).await;
    let accepted = Instant::now();
    let failed = match response {
        Ok(r) if r.status == StatusCode::ACCEPTED => None,
        Ok(r) => Some(Outcome::Failed {
            class: r.status.as_u16().to_string(),
            problem: r.body_text(),
        }),
        Err(e) => Some(Outcome::Failed {
            class: e.class().into(),
            problem: e.to_string(),
        }),
    };
    if let Some(failed) = failed {
        shared.waiters.forget(phase.watch, key);
        return failed;
    }
    let sent_to_202_us = Timing::new(sent, accepted, accepted).sent_to_202_us;
    match tokio::time::timeout_at((accepted + shared.wait).into(), arrival).await {
        Ok(Ok(a)) => Outcome::Arrived(Timing::new(sent, accepted, a.at), a.alert),
        Ok(Err(_)) => Outcome::FeedGone(sent_to_202_us),
        Err(_) => {
            shared.waiters.forget(phase.watch, key);
            Outcome::Missing(sent_to_202_us)
        }
    }
}
