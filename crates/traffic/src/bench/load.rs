//! The load itself: `concurrency` workers, each on its own keep-alive connection,
//! sending back to back and timing every request; plus the latency statistics.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde::Serialize;
use tokio::sync::Barrier;

use super::workload::Body;
use crate::http::{Connection, HttpError, Target};

/// Wait used when a 503/429 carries no usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// A worker whose connection fails this many times in a row stops: the server is gone,
/// and grinding through the rest of the bodies (with a timeout each) tells nothing.
const MAX_CONSECUTIVE_TRANSPORT_ERRORS: u32 = 5;
/// Resends of one body after 503/429 before it counts as failed (by its status), so a
/// server stuck in backpressure ends the run instead of holding it forever.
const MAX_RESENDS: u32 = 60;

/// What the workers of one phase saw, merged.
#[derive(Debug, Default)]
pub struct Tally {
    /// Latency of every successful request, µs.
    pub latencies_us: Vec<u32>,
    /// Requests answered with the expected status.
    pub ok_requests: u64,
    /// Readings in those requests.
    pub ok_readings: u64,
    /// Requests resent after 503/429.
    pub retries: u64,
    /// Failed requests by status code or by transport failure.
    pub failures: Failures,
    /// The server answered 401: the token is wrong and the run is pointless.
    pub unauthorized: bool,
}

impl Tally {
    fn record_ok(&mut self, started: Instant, readings: u32) {
        let micros = started.elapsed().as_micros();
        self.latencies_us
            .push(u32::try_from(micros).unwrap_or(u32::MAX));
        self.ok_requests += 1;
        self.ok_readings += u64::from(readings);
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.ok_requests += other.ok_requests;
        self.ok_readings += other.ok_readings;
        self.retries += other.retries;
        self.failures.merge(other.failures);
        self.unauthorized |= other.unauthorized;
    }
}

/// Failed requests (or samples) counted by class, and what the first one said.
#[derive(Debug, Default)]
pub struct Failures {
    /// Failures by status code (`"400"`) or failure class (`"connect"`).
    pub by_class: BTreeMap<String, u64>,
    /// The first failure's class and problem body or error text.
    pub first_problem: Option<String>,
}

impl Failures {
    /// Counts one failure of `class`; `problem` is kept if it is the first.
    pub fn record(&mut self, class: String, problem: String) {
        self.first_problem
            .get_or_insert_with(|| format!("{class}: {problem}"));
        *self.by_class.entry(class).or_default() += 1;
    }

    /// Adds another worker's failures; its first problem counts only if there was none.
    pub fn merge(&mut self, other: Failures) {
        for (class, n) in other.by_class {
            *self.by_class.entry(class).or_default() += n;
        }
        if self.first_problem.is_none() {
            self.first_problem = other.first_problem;
        }
    }
}

/// A phase's result and timing: when the workers were released (the first request is
/// sent at once) and when the last answer came.
pub struct Phase {
    /// What the workers saw.
    pub tally: Tally,
    /// When the workers were released.
    pub started: Instant,
    /// When the last worker finished.
    pub finished: Instant,
}

impl Phase {
    /// Seconds from the first request sent to the last answer received.
    pub fn seconds(&self) -> f64 {
        (self.finished - self.started).as_secs_f64()
    }
}

/// Request latency percentiles, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Requests measured.
    pub count: u64,
    /// Median.
    pub p50_us: u32,
    /// 90th percentile.
    pub p90_us: u32,
    /// 99th percentile.
    pub p99_us: u32,
    /// Slowest.
    pub max_us: u32,
}

impl LatencySummary {
    /// Summarises latencies in any order; `None` when there are none.
    pub fn from_unsorted(mut latencies: Vec<u32>) -> Option<Self> {
        latencies.sort_unstable();
        Some(Self {
            count: latencies.len() as u64,
            p50_us: percentile(&latencies, 50.0)?,
            p90_us: percentile(&latencies, 90.0)?,
            p99_us: percentile(&latencies, 99.0)?,
            max_us: *latencies.last()?,
        })
    }
}

/// The nearest-rank percentile of sorted values: the smallest value with at least `p`%
/// of the values at or below it.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Where the workers send and how long each waits for an answer.
#[derive(Clone)]
pub struct LoadTarget {
    /// The server.
    pub target: Target,
    /// Sent as `Authorization: Bearer …` when present.
    pub token: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Runs `concurrency` workers, each on its own connection. All connect first; the
/// phase's clock starts when they are released together.
async fn run_workers<F, Fut>(
    load: &LoadTarget,
    concurrency: usize,
    work: F,
) -> Result<Phase, HttpError>
where
    F: Fn(Connection) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let concurrency = concurrency.max(1);
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut conn = Connection::new(&load.target, load.token.as_deref(), load.timeout)?;
        let barrier = barrier.clone();
        let work = work.clone();
        workers.push(tokio::spawn(async move {
            // A failure to connect here is retried, and counted, by the first request.
            let _ = conn.connect().await;
            barrier.wait().await;
            work(conn).await
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut tally = Tally::default();
    for worker in workers {
        match worker.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.failures.record("worker failed".into(), e.to_string()),
        }
    }
    Ok(Phase {
        tally,
        started,
        finished: Instant::now(),
    })
}

/// POSTs every body once (resending after 503/429), shared out over the workers.
pub async fn post_all(
    load: &LoadTarget,
    concurrency: usize,
    path: &'static str,
    bodies: Arc<Vec<Body>>,
) -> Result<Phase, HttpError> {
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    run_workers(load, concurrency, move |conn| {
        post_worker(conn, path, bodies.clone(), next.clone(), stop.clone())
    })
    .await
}

async fn post_worker(
    mut conn: Connection,
    path: &'static str,
    bodies: Arc<Vec<Body>>,
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut transport_errors = 0;
    while !stop.load(Ordering::Relaxed) && transport_errors < MAX_CONSECUTIVE_TRANSPORT_ERRORS {
        let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) else {
            break;
        };
        let mut resends = 0;
        loop {
            let started = Instant::now();
            let response = match conn.post_json(path, body.bytes.clone()).await {
                Ok(response) => response,
                Err(error) => {
                    transport_errors += 1;
                    tally
                        .failures
                        .record(error.class().into(), error.to_string());
                    break;
                }
            };
            transport_errors = 0;
            match response.status {
                StatusCode::ACCEPTED => tally.record_ok(started, body.readings),
                _ if response.is_backpressure() && resends < MAX_RESENDS => {
                    resends += 1;
                    tally.retries += 1;
                    tokio::time::sleep(response.retry_after.unwrap_or(DEFAULT_RETRY_AFTER)).await;
                    continue;
                }
                status => {
                    if status == StatusCode::UNAUTHORIZED {
                        tally.unauthorized = true;
                        stop.store(true, Ordering::Relaxed);
                    }
                    tally
                        .failures
                        .record(status.as_u16().to_string(), response.body_text());
                }
            }
            break;
        }
    }
    tally
}

/// GETs `path` back to back on every worker for `how_long` (the HTTP floor baseline).
pub async fn get_for(
    load: &LoadTarget,
    concurrency: usize,
    path: &'static str,
    how_long: Duration,
) -> Result<Phase, HttpError> {
    let deadline = Arc::new(Instant::now() + how_long);
    run_workers(load, concurrency, move |conn| {
        get_worker(conn, path, deadline.clone())
    })
    .await
}

async fn get_worker(mut conn: Connection, path: &'static str, deadline: Arc<Instant>) -> Tally {
    let mut tally = Tally::default();
    let mut transport_errors = 0;
    while Instant::now() < *deadline && transport_errors < MAX_CONSECUTIVE_TRANSPORT_ERRORS {
        let started = Instant::now();
        match conn.get(path).await {
            Ok(r) if r.status == StatusCode::OK => {
                transport_errors = 0;
                tally.record_ok(started, 0);
            }
            Ok(r) => {
                transport_errors = 0;
                tally
                    .failures
                    .record(r.status.as_u16().to_string(), r.body_text());
            }
            Err(error) => {
                transport_errors += 1;
                tally
                    .failures
                    .record(error.class().into(), error.to_string());
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let hundred: Vec<u32> = (1..=100).collect();
        let cases: &[(&[u32], f64, Option<u32>)] = &[
            (&hundred, 50.0, Some(50)),
            (&hundred, 90.0, Some(90)),
            (&hundred, 99.0, Some(99)),
            (&hundred, 99.5, Some(100)),
            (&hundred, 100.0, Some(100)),
            (&hundred, 0.0, Some(1)),
            (&[7], 50.0, Some(7)),
            (&[7], 99.0, Some(7)),
            (&[1, 2], 50.0, Some(1)),
            (&[1, 2], 51.0, Some(2)),
            (&[], 50.0, None),
            (&hundred, 101.0, None),
            (&hundred, -1.0, None),
            (&hundred, f64::NAN, None),
        ];
        for (values, p, want) in cases {
            assert_eq!(
                percentile(values, *p),
                *want,
                "p{p} of {} values",
                values.len()
            );
        }
    }

    #[test]
    fn summary_sorts_first() {
        let summary = LatencySummary::from_unsorted(vec![900, 100, 500, 300, 700]).expect("some");
        assert_eq!(
            summary,
            LatencySummary {
                count: 5,
                p50_us: 500,
                p90_us: 900,
                p99_us: 900,
                max_us: 900
            }
        );
        assert_eq!(LatencySummary::from_unsorted(Vec::new()), None);
    }

    #[test]
    fn tallies_merge() {
        let mut a = Tally::default();
        a.record_ok(Instant::now(), 10);
        a.failures.record("503".into(), "busy".into());
        let mut b = Tally::default();
        b.record_ok(Instant::now(), 5);
        b.failures.record("503".into(), "later".into());
        b.failures.record("connect".into(), "refused".into());
        b.retries = 2;
        b.unauthorized = true;
        a.merge(b);
        assert_eq!((a.ok_requests, a.ok_readings, a.retries), (2, 15, 2));
        assert_eq!(a.failures.by_class.get("503"), Some(&2));
        assert_eq!(a.failures.by_class.get("connect"), Some(&1));
        assert_eq!(a.failures.first_problem.as_deref(), Some("503: busy"));
        assert!(a.unauthorized);
        assert_eq!(a.latencies_us.len(), 2);
    }
}
