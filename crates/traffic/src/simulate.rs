//! The cold-room simulator behind `vigia simulate` and `vigia serve --demo`: it
//! provisions the seed-000 rooms (and more if asked), then posts one reading per room
//! every interval, like the devices of seed 000 would.
//!
//! It behaves like a well-mannered device: it honours `Retry-After` on 503/429, keeps
//! readings it could not deliver while the server restarts and sends them late (with
//! their original timestamps), and stops with a clear message when its token is refused.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::{Instant, MissedTickBehavior};
use vigia_core::{Timestamp, DEFAULT_METRIC};

use crate::chamber::Chamber;
use crate::http::{Connection, HttpError, Target, DEFAULT_TIMEOUT};
use crate::units::parse_duration;

const READINGS_PATH: &str = "/api/v1/readings";
/// Readings per request when a backlog is sent in batch mode; keeps bodies well under
/// any sensible server limit.
const MAX_READINGS_PER_REQUEST: usize = 1000;
/// Readings kept while the server is unreachable; the oldest are dropped beyond this
/// (about 4.6 hours of the three seed rooms at 5 s).
const MAX_BACKLOG: usize = 10_000;
/// Wait used when a 503/429 carries no usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_PROVISION_BACKOFF: Duration = Duration::from_secs(10);
/// Time allowed at shutdown to deliver readings still waiting (the tick in flight).
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// `vigia simulate`: simulated cold rooms posting readings to a server.
#[derive(clap::Args, Clone)]
pub struct SimulateArgs {
    /// Server to send readings to.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key or JWT sent as `Authorization: Bearer …`.
    #[arg(long, env = "VIGIA_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Number of rooms: the first three are the seed rooms CF-1, CF-2 and REF-3; more
    /// are SIM-0004, SIM-0005, … alternating freezers and fridges.
    #[arg(long, default_value_t = 3)]
    pub sensors: usize,
    /// Time between readings (e.g. 5s, 250ms, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Stop after this long (e.g. 10m); runs until Ctrl-C without it.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Send all rooms' readings of one tick in one request (`--batch false`: one request
    /// per reading).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub batch: bool,
    /// Create or update the sensors and their alert rules before sending readings.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub provision: bool,
    /// Seed for the room model (door openings, noise); random when absent.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SimulateArgs {
    /// The command line's defaults for a server at `url` (what `serve --demo` needs).
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            sensors: 3,
            interval: Duration::from_secs(5),
            duration: None,
            batch: true,
            provision: true,
            seed: None,
        }
    }
}

impl std::fmt::Debug for SimulateArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulateArgs")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("sensors", &self.sensors)
            .field("interval", &self.interval)
            .field("duration", &self.duration)
            .field("batch", &self.batch)
            .field("provision", &self.provision)
            .field("seed", &self.seed)
            .finish()
    }
}

/// What a simulator run did. `sent = accepted + failed + pending`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimulateReport {
    /// Ticks of the interval timer.
    pub ticks: u64,
    /// Readings measured and queued for the server.
    pub sent: u64,
    /// Readings the server acknowledged with 202.
    pub accepted: u64,
    /// Requests resent because the server answered 503/429.
    pub retried: u64,
    /// Readings given up: refused with a 4xx/5xx other than 503/429, or dropped from a
    /// full backlog while the server was unreachable.
    pub failed: u64,
    /// Readings still waiting to be delivered when the run stopped.
    pub pending: u64,
}

impl std::fmt::Display for SimulateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "simulated {} ticks: {} readings sent, {} accepted, {} retried, {} failed, {} still pending",
            self.ticks, self.sent, self.accepted, self.retried, self.failed, self.pending
        )
    }
}

/// Why the simulator stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// 401: the key is wrong or revoked; retrying cannot help.
    #[error("the token was refused: check --token / VIGIA_TOKEN")]
    TokenRefused,
    /// The server refused a sensor definition (a contract mismatch, not a hiccup).
    #[error("the server refused sensor `{key}` ({status}): {body}")]
    ProvisionRefused {
        /// The sensor key.
        key: String,
        /// The HTTP status.
        status: u16,
        /// The problem body, cut to a readable length.
        body: String,
    },
    /// `--interval 0s` would spin.
    #[error("--interval must be greater than zero")]
    ZeroInterval,
    /// Nothing to simulate.
    #[error("--sensors must be at least 1")]
    NoSensors,
    /// The URL or token cannot be used.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// One simulated room and the `PUT /api/v1/sensors/{key}` body that describes it.
struct SimulatedSensor {
    chamber: Chamber,
    spec: Value,
}

/// Seed-000 names, stock (kg) and product of the demo rooms.
const SEED_ROOMS: [(&str, &str, f64, &str); 3] = [
    ("CF-1", "Freezer CF-1", 1200.0, "frozen salmon"),
    ("CF-2", "Freezer CF-2", 800.0, "frozen shrimp"),
    ("REF-3", "Fridge REF-3", 350.0, "fresh cheese"),
];

/// The three seed-000 rooms as `(key, PUT /api/v1/sensors/{key} body)`: freezers CF-1
/// and CF-2 (critical above −18 °C, warning when rising faster than 1 °C/min) and fridge
/// REF-3 (critical outside 0–5 °C, warning when changing faster than 1 °C/min either
/// way), with the stock (kg) and product each holds. `serve --demo` provisions these.
pub fn seed_000_sensors() -> Vec<(String, Value)> {
    fleet(3)
        .into_iter()
        .map(|s| (s.chamber.key().to_string(), s.spec))
        .collect()
}

/// The rooms of a run of `n` sensors: the seed rooms first, then SIM-0004… alternating
/// freezers and fridges.
fn fleet(n: usize) -> Vec<SimulatedSensor> {
    let mut sensors: Vec<SimulatedSensor> = Chamber::seed_000()
        .into_iter()
        .zip(SEED_ROOMS)
        .take(n)
        .map(|(chamber, (_, name, stock, product))| SimulatedSensor {
            spec: sensor_spec(&chamber, name, Some((stock, product))),
            chamber,
        })
        .collect();
    for number in 4..=n {
        let key = format!("SIM-{number:04}");
        let (chamber, what) = if number % 2 == 0 {
            (Chamber::freezer(key), "freezer")
        } else {
            (Chamber::fridge(key), "fridge")
        };
        let name = format!("Simulated {what} {}", chamber.key());
        sensors.push(SimulatedSensor {
            spec: sensor_spec(&chamber, &name, None),
            chamber,
        });
    }
    sensors
}

fn sensor_spec(chamber: &Chamber, name: &str, stock: Option<(f64, &str)>) -> Value {
    let p = chamber.profile();
    let threshold = match p.safe_min {
        Some(min) => {
            json!({"kind": "threshold", "min": min, "max": p.safe_max, "severity": "critical"})
        }
        None => json!({"kind": "threshold", "max": p.safe_max, "severity": "critical"}),
    };
    // A freezer only spoils by warming; a fridge also by freezing, so it watches both ways.
    let direction = if p.safe_min.is_some() { "both" } else { "rise" };
    let rate =
        json!({"kind": "rate", "max_per_min": 1.0, "direction": direction, "severity": "warning"});
    let mut spec = json!({
        "name": name,
        "kind": p.kind.as_str(),
        "unit": "°C",
        "rules": [threshold, rate],
    });
    if let Some((stock, product)) = stock {
        spec["stock"] = json!(stock);
        spec["product"] = json!(product);
    }
    spec
}

/// Percent-encodes one URL path segment (sensor keys may hold spaces or accents).
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One reading waiting to be delivered.
struct PendingReading {
    sensor: usize,
    ts: Timestamp,
    value: f64,
}

#[derive(Serialize)]
struct WireReading<'a> {
    sensor: &'a str,
    metric: &'static str,
    ts: Timestamp,
    value: f64,
}

enum Delivery {
    Accepted,
    Refused,
    Unreachable,
}

struct Simulation {
    conn: Connection,
    sensors: Vec<SimulatedSensor>,
    rng: StdRng,
    interval: Duration,
    batch: bool,
    provision: bool,
    backlog: VecDeque<PendingReading>,
    reachable: bool,
}

/// Runs the simulator until `shutdown` completes or `--duration` elapses. Errors only
/// for what retrying cannot fix (bad arguments, a refused token, a refused sensor);
/// an unreachable or overloaded server is waited out.
pub async fn simulate(
    args: SimulateArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<SimulateReport> {
    if args.interval.is_zero() {
        return Err(SimulateError::ZeroInterval.into());
    }
    if args.sensors == 0 {
        return Err(SimulateError::NoSensors.into());
    }
    let target = Target::parse(&args.url).map_err(SimulateError::from)?;
    let conn = Connection::new(&target, Some(&args.token), DEFAULT_TIMEOUT)
        .map_err(SimulateError::from)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut sim = Simulation {
        conn,
        sensors: fleet(args.sensors),
        rng: StdRng::seed_from_u64(seed),
        interval: args.interval,
        batch: args.batch,
        provision: args.provision,
        backlog: VecDeque::new(),
        reachable: true,
    };
    tracing::info!(
        url = %target.url(),
        sensors = args.sensors,
        interval = ?args.interval,
        batch = args.batch,
        seed,
        "simulator starting"
    );

    let mut report = SimulateReport::default();
    let deadline = args.duration.map(|d| Instant::now() + d);
    let stop = async move {
        match deadline {
            Some(at) => tokio::select! {
                () = shutdown => {}
                () = tokio::time::sleep_until(at) => {}
            },
            None => shutdown.await,
        }
    };
    // Stopping mid-request drops that request; its readings stay in the backlog, get
    // one short last chance below, and are otherwise counted as pending.
    let outcome = tokio::select! {
        result = sim.run(&mut report) => result,
        () = stop => Ok(()),
    };
    if outcome.is_ok() && sim.reachable && !sim.backlog.is_empty() {
        if let Ok(Err(error)) = tokio::time::timeout(FINAL_FLUSH, sim.flush(&mut report)).await {
            tracing::warn!(%error, "last readings not sent");
        }
    }
    report.pending = sim.backlog.len() as u64;
    outcome?;
    tracing::info!(?report, "simulator stopped");
    Ok(report)
}

impl Simulation {
    async fn run(&mut self, report: &mut SimulateReport) -> Result<(), SimulateError> {
        if self.provision {
            self.provision_sensors().await?;
        }
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_tick: Option<Instant> = None;
        loop {
            let now = ticker.tick().await;
            // The model advances by the time that really passed, so a tick delayed by a
            // slow server does not slow down the rooms' physics.
            let dt = last_tick.map_or(self.interval, |last| now - last);
            last_tick = Some(now);
            report.ticks += 1;
            self.measure(dt, report);
            self.flush(report).await?;
        }
    }

    fn measure(&mut self, dt: Duration, report: &mut SimulateReport) {
        let ts = Timestamp::now();
        for (index, sensor) in self.sensors.iter_mut().enumerate() {
            let was_open = sensor.chamber.door_open();
            let value = sensor.chamber.step(dt, &mut self.rng);
            match (was_open, sensor.chamber.door_open()) {
                (false, true) => {
                    tracing::info!(sensor = sensor.chamber.key(), value, "door opened")
                }
                (true, false) => {
                    tracing::info!(sensor = sensor.chamber.key(), value, "door closed")
                }
                _ => {}
            }
            self.backlog.push_back(PendingReading {
                sensor: index,
                ts,
                value,
            });
            report.sent += 1;
        }
        let overflow = self.backlog.len().saturating_sub(MAX_BACKLOG);
        if overflow > 0 {
            self.backlog.drain(..overflow);
            report.failed += overflow as u64;
            tracing::warn!(
                dropped = overflow,
                "backlog full while the server is unreachable; oldest readings dropped"
            );
        }
    }

    /// Sends the backlog, oldest first, until it is empty or the server is unreachable.
    async fn flush(&mut self, report: &mut SimulateReport) -> Result<(), SimulateError> {
        while !self.backlog.is_empty() {
            let take = if self.batch {
                self.backlog.len().min(MAX_READINGS_PER_REQUEST)
            } else {
                1
            };
            let body = self.encode(take);
            match self.deliver(body, report).await? {
                Delivery::Accepted => report.accepted += take as u64,
                Delivery::Refused => report.failed += take as u64,
                Delivery::Unreachable => return Ok(()),
            }
            self.backlog.drain(..take);
        }
        Ok(())
    }

    fn encode(&self, take: usize) -> Bytes {
        let wire: Vec<WireReading<'_>> = self
            .backlog
            .iter()
            .take(take)
            .map(|r| WireReading {
                sensor: self.sensors[r.sensor].chamber.key(),
                metric: DEFAULT_METRIC,
                ts: r.ts,
                value: r.value,
            })
            .collect();
        let json = if self.batch {
            serde_json::to_vec(&wire)
        } else {
            serde_json::to_vec(&wire[0])
        };
        Bytes::from(json.expect("readings are plain data and always serialise"))
    }

    async fn deliver(
        &mut self,
        body: Bytes,
        report: &mut SimulateReport,
    ) -> Result<Delivery, SimulateError> {
        loop {
            let response = match self.conn.post_json(READINGS_PATH, body.clone()).await {
                Ok(response) => response,
                Err(error) => {
                    if self.reachable {
                        tracing::warn!(%error, "server unreachable; keeping readings to send later");
                    }
                    self.reachable = false;
                    return Ok(Delivery::Unreachable);
                }
            };
            if !self.reachable {
                tracing::info!(
                    backlog = self.backlog.len(),
                    "server reachable again; sending the backlog"
                );
                self.reachable = true;
            }
            match response.status {
                s if s.is_success() => return Ok(Delivery::Accepted),
                StatusCode::UNAUTHORIZED => return Err(SimulateError::TokenRefused),
                _ if response.is_backpressure() => {
                    let wait = response.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
                    tracing::debug!(status = %response.status, ?wait, "server busy; resending after Retry-After");
                    report.retried += 1;
                    tokio::time::sleep(wait).await;
                }
                status => {
                    tracing::warn!(%status, problem = %response.body_text(), "readings refused");
                    return Ok(Delivery::Refused);
                }
            }
        }
    }

    async fn provision_sensors(&mut self) -> Result<(), SimulateError> {
        for sensor in &self.sensors {
            let key = sensor.chamber.key();
            let path = format!("/api/v1/sensors/{}", path_segment(key));
            let body = Bytes::from(sensor.spec.to_string());
            let mut backoff = Duration::from_secs(1);
            loop {
                match self.conn.put_json(&path, body.clone()).await {
                    Ok(r) if r.status.is_success() => {
                        tracing::info!(sensor = key, status = %r.status, "sensor provisioned");
                        break;
                    }
                    Ok(r) if r.status == StatusCode::UNAUTHORIZED => {
                        return Err(SimulateError::TokenRefused)
                    }
                    Ok(r) if r.is_backpressure() => {
                        tokio::time::sleep(r.retry_after.unwrap_or(DEFAULT_RETRY_AFTER)).await;
                    }
                    Ok(r) => {
                        return Err(SimulateError::ProvisionRefused {
                            key: key.to_string(),
                            status: r.status.as_u16(),
                            body: r.body_text(),
                        })
                    }
                    Err(error) => {
                        tracing::warn!(sensor = key, %error, retry_in = ?backoff, "cannot provision yet");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_PROVISION_BACKOFF);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "simulate_tests.rs"]
mod tests;
