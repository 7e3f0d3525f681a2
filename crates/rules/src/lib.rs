//! Pure rule evaluation with per-sensor state: thresholds and rates of change.
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
//! - Rules on another metric than the reading's are skipped; state of rules that no longer
//!   exist is dropped lazily. Non-finite values are ignored (ingest refuses them anyway).

mod message;
mod window;

use std::collections::HashMap;

use vigia_core::{Condition, RateDirection, Rule, RuleKind, Severity};
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
        /// Threshold or rate.
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
}

#[derive(Debug, Clone, Default)]
struct MetricState {
    last: Option<(i64, f64)>,
    window: RateWindow,
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
        if !value.is_finite() {
            return;
        }
        let state = self.metric_entry(metric);
        if state.last.is_some_and(|(last, _)| ts <= last) {
            return;
        }
        state.window.observe(cfg, ts, value);
        state.last = Some((ts, value));
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
    }
}

/// What one rule says about one reading.
enum Verdict {
    /// Breached; the message is built only if an alert actually opens.
    Breached,
    Satisfied,
    /// The reading cannot tell (a rate with too little history, or a late reading).
    Unknown,
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
    if !value.is_finite() {
        return;
    }
    state.prune(rules);
    let watches_rate = rules
        .iter()
        .any(|r| r.metric == metric && matches!(r.condition, Condition::Rate { .. }));
    let m = state.metric_entry(metric);
    let late = m.last.is_some_and(|(last, _)| ts <= last);
    let rate = if late || !watches_rate {
        None
    } else {
        m.window.observe(cfg, ts, value)
    };
    if !late {
        m.last = Some((ts, value));
    }

    for rule in rules.iter().filter(|r| r.metric == metric) {
        let verdict = match rule.condition {
            Condition::Threshold { min, max } => {
                if min.is_some_and(|lo| value < lo) || max.is_some_and(|hi| value > hi) {
                    Verdict::Breached
                } else {
                    Verdict::Satisfied
                }
            }
            Condition::Rate {
                max_per_min,
                direction,
            } => match rate {
                Some(r) if rate_breached(r, max_per_min, direction) => Verdict::Breached,
                Some(_) => Verdict::Satisfied,
                None => Verdict::Unknown,
            },
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
                message: describe(sensor_key, rule, value, rate),
            }),
            Some(Step::Resolve) => out.push(Transition::Resolve {
                rule: rule.name.clone(),
                ts,
            }),
            None => {}
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

fn describe(sensor: &str, rule: &Rule, value: f64, rate: Option<f64>) -> String {
    match rule.condition {
        Condition::Threshold { min, max } => match (min, max) {
            (_, Some(hi)) if value > hi => {
                message::threshold(sensor, &rule.metric, value, hi, true)
            }
            (Some(lo), _) => message::threshold(sensor, &rule.metric, value, lo, false),
            // Unreachable for a breached threshold; say something true anyway.
            _ => format!("{sensor} {} {value}", rule.metric),
        },
        Condition::Rate { max_per_min, .. } => {
            message::rate(sensor, &rule.metric, rate.unwrap_or(0.0), max_per_min)
        }
    }
}
