//! Pure rule evaluation with per-sensor state: thresholds, rates of change, cumulative
//! time out of range (duration), anomalies and silence (offline).
//!
//! This crate does no I/O, spawns nothing and never reads a clock: [`evaluate`] takes one
//! reading, the sensor's rules and its [`SensorState`], and appends the alert
//! [`Transition`]s it decides. The caller persists them and keeps one state per sensor.
//!
//! # Semantics
//!
//! - **Event time.** Readings are judged in event-time order per sensor; the caller sorts
//!   each batch by `ts`. A reading whose `ts` is not newer than the last one of its metric
//!   is *late*: it moves neither the live state nor the rate window. A late out-of-range
//!   reading still opens a threshold alert when none is active, so a replayed backlog
//!   cannot hide an excursion, unless it falls inside the rule's last excursion (a
//!   redelivered batch must not reopen what was already reported and resolved).
//! - **One alert per excursion.** A rule opens when it is breached and no alert of it is
//!   active; further breaches, even in the same millisecond, emit nothing.
//! - **Resolve after a hold.** When an active rule is satisfied again a hold starts; a new
//!   breach cancels it; the first reading at least `resolve_hold_ms` after the hold began
//!   resolves the alert (a hold of 0 resolves at the first good reading).
//! - **Threshold.** Breached when `value < min` or `value > max`.
//! - **Rate.** The change over the last `rate_window_ms`, per minute (see the `window`
//!   module for how the baseline is found): never between two readings milliseconds
//!   apart, robust to sensor noise, and identical whether readings arrive live or as a
//!   backlog with their own timestamps. Breached when rising faster than `max_per_min`
//!   (`rise`), falling faster (`fall`) or either (`both`). A reading that cannot tell a
//!   rate (too little history) neither opens, cancels a hold nor resolves. Late readings
//!   are ignored by rate rules.
//! - **Duration.** Time outside `[min, max]` added up over the rule's window in event
//!   time (see the `duration` module): from the first out-of-range reading to the first
//!   in-range one, a silence in between counting as out of range; one good reading never
//!   resets it. Breached while the total is at least the stage's limit (`warn_after` or
//!   `critical_after`), so the alert opens at the first reading that reaches it and
//!   resolves (after the hold) once time has left the window or a new lot began
//!   ([`SensorState::set_batch`], for a `batch` window). Late readings are not counted.
//!   After a restart the total comes from stored excursions
//!   ([`SensorState::seed_out_of_range`]): without them a rebuilt open alert resolves.
//! - **Anomaly.** A streaming model per metric (see the `anomaly` module) scores each
//!   live reading before learning from it: a deviation from the short-term level, a trend
//!   of the short-term level away from the long-term one, or a flat line. Breached when a
//!   score reaches `6 / sensitivity` spreads (a flat line: `flatline` long), and while
//!   open until it falls under 70 % of that (a hysteresis: a score hovering at the
//!   threshold while the model adapts to a shift makes one alert, not several); nothing is
//!   judged during `warmup` (and the first 30 readings), nor for late readings. The open
//!   carries [`AlertDetails::Anomaly`]: expected range, observed value, score.
//! - **Offline.** Opened by [`check_silence`], which a sweep calls with the wall clock,
//!   once no reading of the metric newer than `now - (expected + grace)` has been seen
//!   (by event time: device clocks are assumed right within the grace). Readings from the
//!   open on resolve it once they have kept coming, no two more than `expected + grace / 2`
//!   apart, for the resolve hold. The stricter spacing for resolving than for opening is a
//!   hysteresis: a sensor whose gaps jitter around `expected + grace` opens once and stays
//!   open instead of flapping. A sensor never heard from is not offline (nothing to
//!   compare with); after a restart, [`SensorState::seed_latest`] restores the last one.
//! - Rules on another metric than the reading's are skipped; state of rules that no longer
//!   exist is dropped lazily. Non-finite values are ignored (ingest refuses them anyway).

mod anomaly;
mod duration;
mod explain;
mod limits;
mod message;
mod offline;
mod window;

use std::collections::HashMap;

use anomaly::{AnomalyModel, Score};
use duration::DurationAccumulator;
pub use duration::OutOfRange;
use explain::{describe, details};
pub use limits::{ExcursionRecord, GAP_FACTOR};
use limits::{OpenExcursion, Spacings};
pub use offline::check_silence;
use offline::offline_flow;
use vigia_core::{AlertDetails, AnomalySignal, Condition, RateDirection, Rule, RuleKind, Severity};
use window::RateWindow;

/// Tuning of the rule engine, shared by every sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Length of the window a rate of change is measured over, in milliseconds.
    /// Zero or negative disables rate rules.
    pub rate_window_ms: i64,
    /// The least history a rate is measured over when the window is not yet full,
    /// in milliseconds: no rate between two readings closer than this.
    pub rate_min_interval_ms: i64,
    /// How long a rule must stay satisfied before its alert resolves, in milliseconds.
    pub resolve_hold_ms: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            rate_window_ms: 60_000,
            rate_min_interval_ms: 4_000,
            resolve_hold_ms: 60_000,
        }
    }
}

/// A change to alerts decided by the engine, for the caller to persist.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Open an alert for `rule` (the engine emits at most one per excursion).
    Open {
        /// Name of the rule that fired.
        rule: String,
        /// The kind of the rule.
        kind: RuleKind,
        /// The rule's severity.
        severity: Severity,
        /// The metric of the reading that fired it.
        metric: String,
        /// The reading's value.
        value: f64,
        /// Event time of the reading, epoch milliseconds.
        ts: i64,
        /// Words for a person, e.g. "CF-1 temperature -16.0 above max -18.0".
        message: String,
        /// What the rule measured (duration, anomaly and offline rules), for the alert's
        /// `details`.
        details: Option<AlertDetails>,
    },
    /// Resolve the active alert of `rule`.
    Resolve {
        /// Name of the rule whose alert resolves.
        rule: String,
        /// Event time of the reading that completed the hold, epoch milliseconds.
        ts: i64,
    },
}

/// Everything the engine remembers about one sensor between readings.
#[derive(Debug, Clone, Default)]
pub struct SensorState {
    metrics: HashMap<String, MetricState>,
    /// Keyed by rule name; a sensor has few rules, so a scan beats hashing.
    excursions: Vec<(String, Excursion)>,
    /// Duration rules' accumulators, keyed by rule name.
    durations: Vec<(String, DurationAccumulator)>,
    /// The sensor's current product lot, for duration rules with a `batch` window.
    batch: Option<String>,
    /// Open excursions past the limits of threshold and duration rules, keyed by rule
    /// name (see the `limits` module).
    limit_excursions: Vec<(String, OpenExcursion)>,
}

#[derive(Debug, Clone, Default)]
struct MetricState {
    last: Option<(i64, f64)>,
    window: RateWindow,
    /// Only for metrics an anomaly rule watches (boxed: most metrics have none).
    anomaly: Option<Box<AnomalyModel>>,
    /// Recent spacings between readings, to tell a gap inside an excursion.
    spacings: Spacings,
}

/// One rule's alert state.
#[derive(Debug, Clone, Copy, Default)]
struct Excursion {
    active: bool,
    /// Start of the current hold towards resolving, if one is running.
    in_range_since: Option<i64>,
    /// Event-time span of the last resolved excursion, so late readings inside it
    /// do not reopen it.
    last_span: Option<(i64, i64)>,
    /// Event time of the reading that opened the active excursion, if known.
    opened_at: Option<i64>,
}

impl SensorState {
    /// An empty state: no history, no active alerts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `rule` as having an active alert (rebuild after a restart from the store's
    /// unresolved alerts), so the next breach does not open a duplicate.
    pub fn mark_open(&mut self, rule: &str) {
        let exc = self.excursion_entry(rule);
        exc.active = true;
        exc.in_range_since = None;
    }

    /// Forgets `rule`'s alert state (an operator resolved it by hand): the next breach
    /// opens a new alert.
    pub fn forget_excursion(&mut self, rule: &str) {
        self.excursions.retain(|(name, _)| name != rule);
    }

    /// Restores the last known reading of `metric` (rebuild after a restart), so older
    /// readings count as late and the rate window has a starting point. Ignored when
    /// the state already holds a newer reading.
    pub fn seed_latest(&mut self, metric: &str, ts: i64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let state = self.metric_entry(metric);
        if state.last.is_some_and(|(last, _)| last >= ts) {
            return;
        }
        state.last = Some((ts, value));
        state.window.seed(ts, value);
    }

    /// Feeds back a stored reading without judging it (rebuild after a restart), oldest
    /// first, so the rate window spans the restart instead of starting empty. Readings
    /// not newer than the last one are ignored, as are non-finite values.
    pub fn replay(&mut self, cfg: &EngineConfig, metric: &str, ts: i64, value: f64) {
        self.replay_for(cfg, &[], metric, ts, value);
    }

    /// [`SensorState::replay`] that also teaches the anomaly model of `metric` when one of
    /// `rules` watches it for anomalies (rebuild after a restart: the model is learnt
    /// again from stored readings instead of warming up anew).
    pub fn replay_for(
        &mut self,
        cfg: &EngineConfig,
        rules: &[Rule],
        metric: &str,
        ts: i64,
        value: f64,
    ) {
        if !value.is_finite() {
            return;
        }
        let watches_anomaly = watches(rules, metric, |c| matches!(c, Condition::Anomaly { .. }));
        let state = self.metric_entry(metric);
        if state.last.is_some_and(|(last, _)| ts <= last) {
            return;
        }
        state.window.observe(cfg, ts, value);
        if watches_anomaly {
            observe_anomaly(&mut state.anomaly, ts, value);
        }
        state.last = Some((ts, value));
    }

    /// Sets the sensor's current product lot. Duration rules with a `batch` window count
    /// from zero when it changes (at their next reading); set it before seeding them.
    pub fn set_batch(&mut self, batch: Option<&str>) {
        if self.batch.as_deref() != batch {
            self.batch = batch.map(str::to_string);
        }
    }

    /// Rebuilds duration rule `rule`'s accumulator from stored excursions (the
    /// excursions table after a restart; raw readings may not reach back a whole window),
    /// counted for the current lot ([`SensorState::set_batch`] first). Replaces what it
    /// held; at most 64 intervals are kept, merged as the `duration` module says.
    pub fn seed_out_of_range(&mut self, rule: &str, excursions: &[OutOfRange]) {
        let seeded = DurationAccumulator::seed(excursions, self.batch.as_deref());
        *duration_entry(&mut self.durations, rule) = seeded;
    }

    /// Entries held (metrics, rate-window readings, alert states, out-of-range
    /// intervals): what the state's memory grows with, for bounds tests and metrics.
    pub fn footprint(&self) -> usize {
        let metrics: usize = self.metrics.values().map(|m| 1 + m.window.len()).sum();
        let intervals: usize = self.durations.iter().map(|(_, d)| 1 + d.len()).sum();
        metrics + intervals + self.excursions.len() + self.limit_excursions.len()
    }

    /// Appends the current record of every open excursion past a rule's limits that
    /// changed since the last call (closed ones are handed out by [`evaluate_recording`]
    /// as they close), and marks them collected.
    pub fn changed_excursions(&mut self, out: &mut Vec<ExcursionRecord>) {
        for (_, open) in &mut self.limit_excursions {
            if open.dirty {
                open.dirty = false;
                out.push(open.record().clone());
            }
        }
    }

    /// The open excursions past rules' limits, as records.
    pub fn open_excursions(&self) -> impl Iterator<Item = &ExcursionRecord> {
        self.limit_excursions.iter().map(|(_, open)| open.record())
    }

    /// Restores an open excursion from its stored record (rebuild after a restart), so
    /// the next readings extend it instead of starting another one. Ignored when the
    /// record has ended, when `rules` has no threshold or duration rule of its name, or
    /// when the state already holds an open excursion of that rule.
    pub fn restore_excursion(&mut self, rules: &[Rule], record: ExcursionRecord) {
        if record.is_closed() || self.limit_excursions.iter().any(|(n, _)| *n == record.rule) {
            return;
        }
        let limits = rules
            .iter()
            .find(|r| r.name == record.rule)
            .and_then(|r| match r.condition {
                Condition::Threshold { min, max } | Condition::Duration { min, max, .. } => {
                    Some((min, max))
                }
                _ => None,
            });
        if let Some((min, max)) = limits {
            let name = record.rule.clone();
            self.limit_excursions
                .push((name, limits::restore(record, min, max)));
        }
    }

    /// The newest reading of `metric` seen, as `(ts, value)`.
    pub fn latest(&self, metric: &str) -> Option<(i64, f64)> {
        self.metrics.get(metric).and_then(|m| m.last)
    }

    /// The rules with an active alert.
    pub fn open_rules(&self) -> impl Iterator<Item = &str> {
        self.excursions
            .iter()
            .filter(|(_, e)| e.active)
            .map(|(name, _)| name.as_str())
    }

    /// Whether `rule` has an active alert.
    pub fn is_open(&self, rule: &str) -> bool {
        self.excursion(rule).is_some_and(|e| e.active)
    }

    fn metric_entry(&mut self, metric: &str) -> &mut MetricState {
        // Two-step lookup so the common case (metric known) allocates nothing.
        if !self.metrics.contains_key(metric) {
            self.metrics
                .insert(metric.to_string(), MetricState::default());
        }
        self.metrics.get_mut(metric).expect("inserted just above")
    }

    fn excursion(&self, rule: &str) -> Option<&Excursion> {
        self.excursions
            .iter()
            .find(|(n, _)| n == rule)
            .map(|(_, e)| e)
    }

    fn excursion_entry(&mut self, rule: &str) -> &mut Excursion {
        let i = match self.excursions.iter().position(|(n, _)| n == rule) {
            Some(i) => i,
            None => {
                self.excursions
                    .push((rule.to_string(), Excursion::default()));
                self.excursions.len() - 1
            }
        };
        &mut self.excursions[i].1
    }

    /// Drops state of rules no longer configured. Entries are only created for present
    /// rules (or by `mark_open`), so there can be stale ones only when there are more
    /// entries than rules, or a bounded few left by a rename.
    fn prune(&mut self, rules: &[Rule]) {
        if self.excursions.len() > rules.len() {
            self.excursions
                .retain(|(name, _)| rules.iter().any(|r| &r.name == name));
        }
        if self.durations.len() > rules.len() {
            self.durations
                .retain(|(name, _)| rules.iter().any(|r| &r.name == name));
        }
        if self.limit_excursions.len() > rules.len() {
            self.limit_excursions
                .retain(|(name, _)| rules.iter().any(|r| &r.name == name));
        }
    }
}

/// What one rule says about one reading.
enum Verdict {
    /// Breached; the message is built only if an alert actually opens.
    Breached,
    Satisfied,
    /// The reading cannot tell (a rate with too little history, a late reading, an
    /// anomaly model still warming up, an offline rule with no alert).
    Unknown,
}

/// What a rule measured, to word its alert and fill its details if one opens.
#[derive(Clone, Copy)]
enum Measure {
    Nothing,
    Rate(f64),
    /// Time out of range within the window, and the stage's limit, milliseconds.
    Duration {
        out_ms: i64,
        limit_ms: i64,
    },
    /// The model's view, the signal that fired, its score and threshold.
    Anomaly(Score, AnomalySignal, f64, f64),
}

/// Whether a rule on `metric` has a condition `is` accepts.
fn watches(rules: &[Rule], metric: &str, is: impl Fn(&Condition) -> bool) -> bool {
    rules.iter().any(|r| r.metric == metric && is(&r.condition))
}

/// Judges a live reading with the metric's anomaly model (creating it at the first one,
/// which cannot be judged).
fn observe_anomaly(model: &mut Option<Box<AnomalyModel>>, ts: i64, value: f64) -> Option<Score> {
    match model {
        Some(m) if ts > m.last_ts() => Some(m.observe(ts, value)),
        Some(_) => None,
        None => {
            *model = Some(Box::new(AnomalyModel::new(ts, value)));
            None
        }
    }
}

fn duration_entry<'a>(
    durations: &'a mut Vec<(String, DurationAccumulator)>,
    rule: &str,
) -> &'a mut DurationAccumulator {
    let i = match durations.iter().position(|(n, _)| n == rule) {
        Some(i) => i,
        None => {
            durations.push((rule.to_string(), DurationAccumulator::default()));
            durations.len() - 1
        }
    };
    &mut durations[i].1
}

fn outside(min: Option<f64>, max: Option<f64>, value: f64) -> bool {
    min.is_some_and(|lo| value < lo) || max.is_some_and(|hi| value > hi)
}

/// The limit of a duration rule's stage: the one its severity names, else the other
/// (a rule with both stages is split by `normalise_rules`, but may reach here unsplit).
fn stage_limit(severity: Severity, warn_after: Option<i64>, critical_after: Option<i64>) -> i64 {
    let limit = match severity {
        Severity::Warning => warn_after.or(critical_after),
        Severity::Critical => critical_after.or(warn_after),
    };
    limit.unwrap_or(i64::MAX)
}

/// Evaluates one reading of `sensor_key` against its `rules`, updating `state` and
/// appending any alert changes to `out` (see the crate doc for the semantics).
#[allow(clippy::too_many_arguments)] // the worker's call site reads best with them flat
pub fn evaluate(
    cfg: &EngineConfig,
    state: &mut SensorState,
    sensor_key: &str,
    rules: &[Rule],
    metric: &str,
    ts: i64,
    value: f64,
    out: &mut Vec<Transition>,
) {
    let mut closed = Vec::new();
    evaluate_recording(
        cfg,
        state,
        sensor_key,
        rules,
        metric,
        ts,
        value,
        out,
        &mut closed,
    );
}

/// [`evaluate`] that also appends to `closed` the record of every excursion past a
/// threshold or duration rule's limits this reading ended (see the `limits` module);
/// open ones that moved are collected with [`SensorState::changed_excursions`].
#[allow(clippy::too_many_arguments)] // the worker's call site reads best with them flat
pub fn evaluate_recording(
    cfg: &EngineConfig,
    state: &mut SensorState,
    sensor_key: &str,
    rules: &[Rule],
    metric: &str,
    ts: i64,
    value: f64,
    out: &mut Vec<Transition>,
    closed: &mut Vec<ExcursionRecord>,
) {
    if !value.is_finite() {
        return;
    }
    state.prune(rules);
    let judges_gaps = !state.limit_excursions.is_empty();
    let watches_rate = watches(rules, metric, |c| matches!(c, Condition::Rate { .. }));
    let watches_anomaly = watches(rules, metric, |c| matches!(c, Condition::Anomaly { .. }));
    let m = state.metric_entry(metric);
    let previous = m.last;
    let late = previous.is_some_and(|(last, _)| ts <= last);
    let rate = if late || !watches_rate {
        None
    } else {
        m.window.observe(cfg, ts, value)
    };
    let anomaly = if late || !watches_anomaly {
        None
    } else {
        observe_anomaly(&mut m.anomaly, ts, value)
    };
    // The spacing before this reading, judged against the ones before it.
    let typical = if judges_gaps && !late {
        m.spacings.typical()
    } else {
        None
    };
    if !late {
        if let Some((prev, _)) = previous {
            m.spacings.push(ts.saturating_sub(prev));
        }
        m.last = Some((ts, value));
    }

    for rule in rules.iter().filter(|r| r.metric == metric) {
        let (verdict, measure) = match rule.condition {
            Condition::Threshold { min, max } => {
                if !late {
                    track_limits(state, rule, min, max, typical, ts, value, closed);
                }
                if outside(min, max, value) {
                    (Verdict::Breached, Measure::Nothing)
                } else {
                    (Verdict::Satisfied, Measure::Nothing)
                }
            }
            Condition::Rate {
                max_per_min,
                direction,
            } => match rate {
                Some(r) if rate_breached(r, max_per_min, direction) => {
                    (Verdict::Breached, Measure::Rate(r))
                }
                Some(_) => (Verdict::Satisfied, Measure::Nothing),
                None => (Verdict::Unknown, Measure::Nothing),
            },
            Condition::Duration { .. } if late => (Verdict::Unknown, Measure::Nothing),
            Condition::Duration {
                min,
                max,
                warn_after,
                critical_after,
                window,
            } => {
                track_limits(state, rule, min, max, typical, ts, value, closed);
                let acc = duration_entry(&mut state.durations, &rule.name);
                let out_ms =
                    acc.observe(ts, outside(min, max, value), window, state.batch.as_deref());
                let limit_ms = stage_limit(
                    rule.severity,
                    warn_after.map(|d| d.0),
                    critical_after.map(|d| d.0),
                );
                let verdict = if out_ms >= limit_ms {
                    Verdict::Breached
                } else {
                    Verdict::Satisfied
                };
                (verdict, Measure::Duration { out_ms, limit_ms })
            }
            Condition::Anomaly {
                sensitivity,
                warmup,
                flatline,
            } => match anomaly {
                Some(score)
                    if ts.saturating_sub(score.since) >= warmup.0
                        && score.samples >= anomaly::MIN_SAMPLES =>
                {
                    let mut threshold = anomaly::BASE_THRESHOLD / sensitivity;
                    if state.is_open(&rule.name) {
                        threshold *= anomaly::STAY_OPEN_FRACTION;
                    }
                    match score.breach(threshold, flatline.map(|f| f.0)) {
                        Some((signal, value, limit)) => (
                            Verdict::Breached,
                            Measure::Anomaly(score, signal, value, limit),
                        ),
                        None => (Verdict::Satisfied, Measure::Nothing),
                    }
                }
                _ => (Verdict::Unknown, Measure::Nothing),
            },
            Condition::Offline { expected, grace } => (
                offline_flow(
                    state.excursion(&rule.name),
                    previous,
                    ts,
                    expected.0,
                    grace.0,
                ),
                Measure::Nothing,
            ),
        };
        let exc = state.excursion_entry(&rule.name);
        match step(exc, verdict, late, ts, cfg.resolve_hold_ms) {
            Some(Step::Open) => out.push(Transition::Open {
                rule: rule.name.clone(),
                kind: rule.condition.kind(),
                severity: rule.severity,
                metric: metric.to_string(),
                value,
                ts,
                message: describe(sensor_key, rule, value, measure, state.batch.as_deref()),
                details: details(rule, value, measure, state.batch.as_deref()),
            }),
            Some(Step::Resolve) => out.push(Transition::Resolve {
                rule: rule.name.clone(),
                ts,
            }),
            None => {}
        }
    }
}

/// Moves `rule`'s excursion past `[min, max]` by one live reading.
#[allow(clippy::too_many_arguments)] // two call sites, read best flat
fn track_limits(
    state: &mut SensorState,
    rule: &Rule,
    min: Option<f64>,
    max: Option<f64>,
    typical: Option<i64>,
    ts: i64,
    value: f64,
    closed: &mut Vec<ExcursionRecord>,
) {
    let entries = &mut state.limit_excursions;
    let i = entries.iter().position(|(n, _)| *n == rule.name);
    let open = i.map(|i| &mut entries[i].1);
    match limits::observe(open, &rule.name, &rule.metric, min, max, typical, ts, value) {
        limits::Step::Nothing => {}
        limits::Step::Opened(exc) => entries.push((rule.name.clone(), exc)),
        limits::Step::Closed => {
            let i = i.expect("only an open excursion closes");
            closed.push(entries.swap_remove(i).1.into_record());
        }
    }
}

fn rate_breached(rate: f64, limit: f64, direction: RateDirection) -> bool {
    match direction {
        RateDirection::Rise => rate > limit,
        RateDirection::Fall => -rate > limit,
        RateDirection::Both => rate.abs() > limit,
    }
}

enum Step {
    Open,
    Resolve,
}

/// Advances one rule's excursion by one verdict.
fn step(exc: &mut Excursion, verdict: Verdict, late: bool, ts: i64, hold_ms: i64) -> Option<Step> {
    match (exc.active, verdict) {
        (_, Verdict::Unknown) => None,
        (false, Verdict::Breached) => {
            let already_reported = late && exc.last_span.is_some_and(|(a, b)| a <= ts && ts <= b);
            if already_reported {
                return None;
            }
            exc.active = true;
            exc.in_range_since = None;
            exc.opened_at = Some(ts);
            Some(Step::Open)
        }
        (false, Verdict::Satisfied) => None,
        // A late reading says nothing about the present, so it neither cancels nor advances a hold.
        (true, _) if late => None,
        (true, Verdict::Breached) => {
            exc.in_range_since = None;
            None
        }
        (true, Verdict::Satisfied) => {
            let since = *exc.in_range_since.get_or_insert(ts);
            if ts.saturating_sub(since) < hold_ms {
                return None;
            }
            exc.active = false;
            exc.in_range_since = None;
            // A late open may predate the live readings; the span covers both ends.
            let opened = exc.opened_at.take().unwrap_or(ts).min(ts);
            exc.last_span = Some((opened, ts));
            Some(Step::Resolve)
        }
    }
}
