//! Alert rules attached to a sensor: thresholds, rates of change, cumulative time out of
//! range (duration), anomalies and silence (offline).
//!
//! The wire form (what a client writes) is parsed in `wire`, the OpenAPI schema is written
//! in `schema`; this module holds the types and their validation.

mod schema;
mod wire;

use serde::{Deserialize, Serialize, Serializer};

use crate::sensor::MAX_RULES;
use crate::{longer_than, FieldError, DEFAULT_METRIC};

pub use schema::RuleSpec;

/// Longest rule name, in characters.
pub const MAX_RULE_NAME_LEN: usize = 64;

/// Longest metric name, in characters (rules, readings and series queries alike).
pub const MAX_METRIC_LEN: usize = 64;

/// The suffixes a two-stage duration rule's stages get (`<name>-warning`, `<name>-critical`).
const STAGE_SUFFIX_MAX_LEN: usize = "-critical".len();

/// Longest name a two-stage duration rule may be given: its stages add a suffix.
pub const MAX_STAGED_RULE_NAME_LEN: usize = MAX_RULE_NAME_LEN - STAGE_SUFFIX_MAX_LEN;

/// Least and greatest anomaly `sensitivity`.
pub const SENSITIVITY_RANGE: (f64, f64) = (0.1, 10.0);

/// How urgent an alert is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// Which way a rate-of-change rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateDirection {
    /// Only rising values (a freezer warming up).
    Rise,
    /// Only falling values.
    Fall,
    /// Either way.
    #[default]
    Both,
}

/// The kind of a rule, as stored with its alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Threshold,
    Rate,
    Duration,
    Anomaly,
    Offline,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Threshold => "threshold",
            RuleKind::Rate => "rate",
            RuleKind::Duration => "duration",
            RuleKind::Anomaly => "anomaly",
            RuleKind::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "threshold" => Some(RuleKind::Threshold),
            "rate" => Some(RuleKind::Rate),
            "duration" => Some(RuleKind::Duration),
            "anomaly" => Some(RuleKind::Anomaly),
            "offline" => Some(RuleKind::Offline),
            _ => None,
        }
    }
}

/// A length of time in a rule, in milliseconds. Written as text (`2h`, `90s`, `500ms`:
/// what [`crate::parse_duration_ms`] reads) and written back in the largest whole unit
/// up to hours (`24h`, not `1d`: rules speak of hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationMs(pub i64);

impl std::fmt::Display for DurationMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0;
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
            if ms != 0 && ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for DurationMs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Over what a duration rule adds up time out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DurationWindow {
    /// The last so long of event time (a rolling window, e.g. `24h`).
    Rolling(DurationMs),
    /// Since the sensor's current product lot (`batch`): a new lot starts from zero.
    Batch,
}

impl Serialize for DurationWindow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DurationWindow::Rolling(span) => span.serialize(s),
            DurationWindow::Batch => s.serialize_str("batch"),
        }
    }
}

/// The window a duration rule uses when it names none.
pub const DEFAULT_DURATION_WINDOW: DurationWindow = DurationWindow::Rolling(DurationMs(86_400_000));

/// What makes a reading an excursion.
///
/// Deserialized through `wire::ConditionWire` rather than serde's internally tagged enum,
/// which also takes a variant's index as its tag (`"kind": 0` for a threshold): the API
/// takes only the names it documents.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    /// The value must stay within `[min, max]`; either bound may be absent.
    Threshold {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
    /// The value must not change faster than `max_per_min` units per minute,
    /// measured over the rule engine's rate window (never between two readings
    /// milliseconds apart).
    Rate {
        max_per_min: f64,
        #[serde(default)]
        direction: RateDirection,
    },
    /// The time spent outside `[min, max]`, added up over `window`, must stay under a
    /// limit: `warn_after` for a warning, `critical_after` for a critical alert. One good
    /// reading does not reset it (the seed's 4-hour rule). A rule with both stages is
    /// split by [`normalise_rules`] into `<name>-warning` and `<name>-critical`, each
    /// with one stage, so that there is still one alert per (sensor, rule).
    Duration {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warn_after: Option<DurationMs>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        critical_after: Option<DurationMs>,
        window: DurationWindow,
    },
    /// The value must look like its own recent past: no spike, level shift, drift or flat
    /// line. `sensitivity` scales how far is too far (2 alerts at half the deviation of
    /// 1); nothing alerts during `warmup`; `flatline` (none: never) is how long an
    /// identical value may repeat on a sensor that normally varies.
    Anomaly {
        sensitivity: f64,
        warmup: DurationMs,
        /// Written as `null` when off: left out, it means the default.
        flatline: Option<DurationMs>,
    },
    /// Readings of the metric must keep arriving: an alert after `expected + grace` of
    /// silence on the wall clock.
    Offline {
        expected: DurationMs,
        grace: DurationMs,
    },
}

impl Condition {
    pub fn kind(&self) -> RuleKind {
        match self {
            Condition::Threshold { .. } => RuleKind::Threshold,
            Condition::Rate { .. } => RuleKind::Rate,
            Condition::Duration { .. } => RuleKind::Duration,
            Condition::Anomaly { .. } => RuleKind::Anomaly,
            Condition::Offline { .. } => RuleKind::Offline,
        }
    }

    /// Whether this is a duration rule with both stages, which [`normalise_rules`] splits.
    pub fn is_two_stage(&self) -> bool {
        matches!(
            self,
            Condition::Duration {
                warn_after: Some(_),
                critical_after: Some(_),
                ..
            }
        )
    }
}

/// One rule on one metric of a sensor. `name` identifies it among the sensor's rules
/// and in its alerts; at most one alert per (sensor, rule) is open at a time.
///
/// `severity` is required for thresholds and rates; a duration rule's follows its stage
/// (`warn_after`: warning, `critical_after`: critical); anomaly and offline rules default
/// to a warning.
///
/// Its OpenAPI schema is written by hand (`schema`): the derive cannot say that unknown
/// fields are refused through the flattened condition, nor that a threshold needs
/// `min` or `max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "wire::RuleWire")]
pub struct Rule {
    /// Defaults to `<kind>-<severity>` (plus `-<metric>` for a metric other than temperature).
    pub name: String,
    pub metric: String,
    pub severity: Severity,
    #[serde(flatten)]
    pub condition: Condition,
}

fn default_metric() -> String {
    DEFAULT_METRIC.to_string()
}

impl Rule {
    pub fn threshold(severity: Severity, min: Option<f64>, max: Option<f64>) -> Self {
        Self::with_condition(severity, Condition::Threshold { min, max })
    }

    pub fn rate(severity: Severity, max_per_min: f64, direction: RateDirection) -> Self {
        Self::with_condition(
            severity,
            Condition::Rate {
                max_per_min,
                direction,
            },
        )
    }

    /// A rule on the default metric, with its default name.
    pub fn with_condition(severity: Severity, condition: Condition) -> Self {
        let mut rule = Rule {
            name: String::new(),
            metric: default_metric(),
            severity,
            condition,
        };
        rule.name = rule.default_name();
        rule
    }

    fn default_name(&self) -> String {
        let base = format!(
            "{}-{}",
            self.condition.kind().as_str(),
            self.severity.as_str()
        );
        if self.metric == DEFAULT_METRIC {
            base
        } else {
            format!("{base}-{}", self.metric)
        }
    }

    /// Fills defaults and checks one rule; `path` prefixes field names in errors.
    /// A two-stage duration rule keeps an empty name: its stages are named when split.
    pub fn normalise(&mut self, path: &str, errors: &mut Vec<FieldError>) {
        let two_stage = self.condition.is_two_stage();
        let name_limit = if two_stage {
            MAX_STAGED_RULE_NAME_LEN
        } else {
            MAX_RULE_NAME_LEN
        };
        if self.name.trim().is_empty() {
            self.name = if two_stage {
                String::new()
            } else {
                self.default_name()
            };
        } else if longer_than(&self.name, name_limit) {
            let why = if two_stage {
                " (its stages add `-warning` and `-critical`)"
            } else {
                ""
            };
            errors.push(FieldError::new(
                format!("{path}.name"),
                format!("must be at most {name_limit} characters{why}"),
            ));
        }
        if self.metric.is_empty() || longer_than(&self.metric, MAX_METRIC_LEN) {
            errors.push(FieldError::new(
                format!("{path}.metric"),
                "must be 1 to 64 characters",
            ));
        }
        let field = |name: &str| format!("{path}.{name}");
        match &self.condition {
            Condition::Threshold { min, max } => {
                check_bounds(path, "threshold", *min, *max, errors)
            }
            Condition::Rate { max_per_min, .. } => {
                if !max_per_min.is_finite() || *max_per_min <= 0.0 {
                    errors.push(FieldError::new(
                        field("max_per_min"),
                        "must be a finite number greater than zero",
                    ));
                }
            }
            Condition::Duration {
                min,
                max,
                warn_after,
                critical_after,
                window,
            } => {
                check_bounds(path, "duration", *min, *max, errors);
                if warn_after.is_none() && critical_after.is_none() {
                    errors.push(FieldError::new(
                        field("warn_after"),
                        "a duration rule needs `warn_after`, `critical_after` or both",
                    ));
                }
                check_positive(&field("warn_after"), *warn_after, errors);
                check_positive(&field("critical_after"), *critical_after, errors);
                match window {
                    DurationWindow::Rolling(span) if span.0 <= 0 => {
                        check_positive(&field("window"), Some(*span), errors)
                    }
                    DurationWindow::Rolling(span) => {
                        for (name, stage) in [
                            ("warn_after", warn_after),
                            ("critical_after", critical_after),
                        ] {
                            if stage.is_some_and(|s| s > *span) {
                                errors.push(FieldError::new(
                                field(name),
                                format!("must not be longer than `window` ({span}): the time out of range within it can never reach it"),
                            ));
                            }
                        }
                    }
                    DurationWindow::Batch => {}
                }
                if let (Some(warn), Some(critical)) = (warn_after, critical_after) {
                    if warn >= critical {
                        errors.push(FieldError::new(
                            field("warn_after"),
                            format!("must be shorter than `critical_after` ({critical})"),
                        ));
                    }
                }
            }
            Condition::Anomaly {
                sensitivity,
                warmup,
                flatline,
            } => {
                let (lo, hi) = SENSITIVITY_RANGE;
                if !(lo..=hi).contains(sensitivity) {
                    errors.push(FieldError::new(
                        field("sensitivity"),
                        format!("must be a number from {lo} to {hi}"),
                    ));
                }
                check_positive(&field("warmup"), Some(*warmup), errors);
                check_positive(&field("flatline"), *flatline, errors);
            }
            Condition::Offline { expected, grace } => {
                check_positive(&field("expected"), Some(*expected), errors);
                check_positive(&field("grace"), Some(*grace), errors);
            }
        }
    }

    /// Splits a two-stage duration rule into its `-warning` and `-critical` stages (each
    /// with one stage and that severity); any other rule is pushed as it is.
    fn expand_into(self, out: &mut Vec<Rule>) {
        let Condition::Duration {
            min,
            max,
            warn_after: Some(warn),
            critical_after: Some(critical),
            window,
        } = self.condition
        else {
            out.push(self);
            return;
        };
        for (severity, warn_after, critical_after) in [
            (Severity::Warning, Some(warn), None),
            (Severity::Critical, None, Some(critical)),
        ] {
            let mut stage = Rule {
                name: String::new(),
                metric: self.metric.clone(),
                severity,
                condition: Condition::Duration {
                    min,
                    max,
                    warn_after,
                    critical_after,
                    window,
                },
            };
            stage.name = if self.name.is_empty() {
                stage.default_name()
            } else {
                format!("{}-{}", self.name, severity.as_str())
            };
            out.push(stage);
        }
    }
}

/// `min`/`max` of a threshold or duration rule: at least one, finite, `min` ≤ `max`.
fn check_bounds(
    path: &str,
    kind: &str,
    min: Option<f64>,
    max: Option<f64>,
    errors: &mut Vec<FieldError>,
) {
    if min.is_none() && max.is_none() {
        errors.push(FieldError::new(
            format!("{path}.max"),
            format!("a {kind} rule needs `min`, `max` or both"),
        ));
    }
    for (field, v) in [("min", min), ("max", max)] {
        if v.is_some_and(|v| !v.is_finite()) {
            errors.push(FieldError::new(format!("{path}.{field}"), "must be finite"));
        }
    }
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            errors.push(FieldError::new(
                format!("{path}.min"),
                "must not be greater than `max`",
            ));
        }
    }
}

/// A duration that must be longer than zero (parsing already refuses negative ones).
fn check_positive(field: &str, span: Option<DurationMs>, errors: &mut Vec<FieldError>) {
    if span.is_some_and(|s| s.0 <= 0) {
        errors.push(FieldError::new(field, "must be longer than zero"));
    }
}

/// Normalises a sensor's rule list: defaults, per-rule checks, two-stage duration rules
/// split into their stages, unique names, and at most [`MAX_RULES`] rules both as written
/// and after the split (so a sensor holds at most 32 effective rules, whatever their
/// kinds). Errors name the rule as the client wrote it (`rules[<index given>]`).
pub fn normalise_rules(rules: &mut Vec<Rule>, errors: &mut Vec<FieldError>) {
    let given = std::mem::take(rules);
    if given.len() > MAX_RULES {
        errors.push(FieldError::new("rules", "at most 32 rules per sensor"));
    }
    let given_len = given.len();
    // For each effective rule, the index of the rule it came from.
    let mut origin = Vec::with_capacity(given.len());
    for (i, mut rule) in given.into_iter().enumerate() {
        rule.normalise(&format!("rules[{i}]"), errors);
        let before = rules.len();
        rule.expand_into(rules);
        origin.extend(std::iter::repeat_n(i, rules.len() - before));
    }
    for i in 0..rules.len() {
        if rules[..i].iter().any(|r| r.name == rules[i].name) {
            errors.push(FieldError::new(
                format!("rules[{}].name", origin[i]),
                format!("duplicate rule name `{}`", rules[i].name),
            ));
        }
    }
    if given_len <= MAX_RULES && rules.len() > MAX_RULES {
        errors.push(FieldError::new(
            "rules",
            format!(
                "at most {MAX_RULES} rules per sensor, counting a duration rule with \
                 `warn_after` and `critical_after` as two ({} here)",
                rules.len()
            ),
        ));
    }
}

#[cfg(test)]
mod tests;
