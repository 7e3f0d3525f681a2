//! The wire form of a rule: what a client writes, checked field by field before it
//! becomes a [`Rule`].

use serde::Deserialize;

use super::{default_metric, Condition, DurationMs, DurationWindow, Rule, DEFAULT_DURATION_WINDOW};
use crate::{parse_duration_ms, RateDirection, RuleKind, Severity};

/// An anomaly rule's `sensitivity` when it names none.
const DEFAULT_SENSITIVITY: f64 = 1.0;
/// An anomaly rule's `warmup` when it names none: an hour, as the example.
const DEFAULT_WARMUP: DurationMs = DurationMs(3_600_000);
/// An anomaly rule's `flatline` when it names none: half an hour of one repeated value is
/// 360 readings at 5 s, which a live sensor with any noise does not produce.
const DEFAULT_FLATLINE: DurationMs = DurationMs(1_800_000);
/// An offline rule's `grace` when it names none.
const DEFAULT_GRACE: DurationMs = DurationMs(60_000);

/// A rule as the client writes it: `severity` may be left out where the kind implies it.
#[derive(Deserialize)]
pub(super) struct RuleWire {
    #[serde(default)]
    name: String,
    #[serde(default = "default_metric")]
    metric: String,
    #[serde(default)]
    severity: Option<Severity>,
    #[serde(flatten)]
    condition: Condition,
}

impl TryFrom<RuleWire> for Rule {
    type Error = WireError;

    fn try_from(w: RuleWire) -> Result<Self, WireError> {
        let severity = match &w.condition {
            Condition::Duration {
                warn_after,
                critical_after,
                ..
            } => {
                let implied = match (warn_after, critical_after) {
                    (Some(_), None) => Some(Severity::Warning),
                    (None, Some(_)) => Some(Severity::Critical),
                    // Two stages: each gets its own when split. None: `normalise` says so.
                    _ => None,
                };
                match (w.severity, implied) {
                    (None, implied) => implied.unwrap_or(Severity::Critical),
                    (Some(given), Some(implied)) if given == implied => given,
                    (Some(given), None) if !w.condition.is_two_stage() => given,
                    (Some(_), _) => {
                        return Err(WireError(
                            "`severity` of a duration rule follows its stage (`warn_after`: \
                             warning, `critical_after`: critical); leave it out"
                                .into(),
                        ))
                    }
                }
            }
            Condition::Anomaly { .. } | Condition::Offline { .. } => {
                w.severity.unwrap_or(Severity::Warning)
            }
            Condition::Threshold { .. } | Condition::Rate { .. } => w
                .severity
                .ok_or_else(|| WireError("missing field `severity`".into()))?,
        };
        Ok(Rule {
            name: w.name,
            metric: w.metric,
            severity,
            condition: w.condition,
        })
    }
}

/// A condition as the client writes it: every field of every kind, each remembering
/// whether it was there, so fields of another kind are refused as unknown.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionWire {
    /// A name only: `RuleKind` is a plain enum, which refuses numbers.
    kind: RuleKind,
    #[serde(default)]
    min: Present<Option<f64>>,
    #[serde(default)]
    max: Present<Option<f64>>,
    #[serde(default)]
    max_per_min: Present<f64>,
    #[serde(default)]
    direction: Present<RateDirection>,
    #[serde(default)]
    warn_after: Present<String>,
    #[serde(default)]
    critical_after: Present<String>,
    #[serde(default)]
    window: Present<String>,
    #[serde(default)]
    sensitivity: Present<f64>,
    #[serde(default)]
    warmup: Present<String>,
    /// `null` turns flat-line detection off.
    #[serde(default)]
    flatline: Present<Option<String>>,
    #[serde(default)]
    expected: Present<String>,
    #[serde(default)]
    grace: Present<String>,
}

/// A field's value and whether the client wrote it at all.
#[derive(Default)]
struct Present<T> {
    given: bool,
    value: T,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Present<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|value| Present { given: true, value })
    }
}

impl Present<String> {
    /// The duration written, if any; an unreadable one is an error naming `field`.
    fn duration(&self, field: &str) -> Result<Option<DurationMs>, WireError> {
        if !self.given {
            return Ok(None);
        }
        span(field, &self.value).map(Some)
    }

    fn required_duration(&self, field: &str) -> Result<DurationMs, WireError> {
        self.duration(field)?
            .ok_or_else(|| WireError(format!("missing field `{field}`")))
    }
}

/// Longest duration text a rule takes, as its schema says (`maxLength`): enough for any
/// sensible span (`36h`, `86400000`) and far from overflowing milliseconds.
const MAX_DURATION_TEXT: usize = 8;

/// Reads the duration in `field`; an unreadable one is an error naming it.
fn span(field: &str, text: &str) -> Result<DurationMs, WireError> {
    if text.chars().count() > MAX_DURATION_TEXT {
        return Err(WireError(format!(
            "invalid `{field}`: at most {MAX_DURATION_TEXT} characters (write `36h`, not `129600000ms`)"
        )));
    }
    parse_duration_ms(text)
        .map(DurationMs)
        .map_err(|e| WireError(format!("invalid `{field}`: {e}")))
}

/// Serde-worded errors, as the derived deserializer gave them before.
#[derive(Debug)]
pub(super) struct WireError(String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fields each kind takes, beside `kind`, `name`, `metric` and `severity`.
fn fields_of(kind: RuleKind) -> &'static [&'static str] {
    match kind {
        RuleKind::Threshold => &["min", "max"],
        RuleKind::Rate => &["max_per_min", "direction"],
        RuleKind::Duration => &["min", "max", "warn_after", "critical_after", "window"],
        RuleKind::Anomaly => &["sensitivity", "warmup", "flatline"],
        RuleKind::Offline => &["expected", "grace"],
    }
}

/// "`a`, `b` or `c`".
fn one_of(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl TryFrom<ConditionWire> for Condition {
    type Error = WireError;

    fn try_from(w: ConditionWire) -> Result<Self, WireError> {
        let allowed = fields_of(w.kind);
        for (field, given) in [
            ("min", w.min.given),
            ("max", w.max.given),
            ("max_per_min", w.max_per_min.given),
            ("direction", w.direction.given),
            ("warn_after", w.warn_after.given),
            ("critical_after", w.critical_after.given),
            ("window", w.window.given),
            ("sensitivity", w.sensitivity.given),
            ("warmup", w.warmup.given),
            ("flatline", w.flatline.given),
            ("expected", w.expected.given),
            ("grace", w.grace.given),
        ] {
            if given && !allowed.contains(&field) {
                return Err(WireError(format!(
                    "unknown field `{field}`, expected {}",
                    one_of(allowed)
                )));
            }
        }
        Ok(match w.kind {
            RuleKind::Threshold => Condition::Threshold {
                min: w.min.value,
                max: w.max.value,
            },
            RuleKind::Rate => {
                if !w.max_per_min.given {
                    return Err(WireError("missing field `max_per_min`".into()));
                }
                Condition::Rate {
                    max_per_min: w.max_per_min.value,
                    direction: w.direction.value,
                }
            }
            RuleKind::Duration => Condition::Duration {
                min: w.min.value,
                max: w.max.value,
                warn_after: w.warn_after.duration("warn_after")?,
                critical_after: w.critical_after.duration("critical_after")?,
                window: if !w.window.given {
                    DEFAULT_DURATION_WINDOW
                } else if w.window.value.trim() == "batch" {
                    DurationWindow::Batch
                } else {
                    DurationWindow::Rolling(w.window.required_duration("window")?)
                },
            },
            RuleKind::Anomaly => Condition::Anomaly {
                sensitivity: if w.sensitivity.given {
                    w.sensitivity.value
                } else {
                    DEFAULT_SENSITIVITY
                },
                warmup: w.warmup.duration("warmup")?.unwrap_or(DEFAULT_WARMUP),
                flatline: match (w.flatline.given, w.flatline.value) {
                    (false, _) => Some(DEFAULT_FLATLINE),
                    (true, None) => None,
                    (true, Some(text)) => Some(span("flatline", &text)?),
                },
            },
            RuleKind::Offline => Condition::Offline {
                expected: w.expected.required_duration("expected")?,
                grace: w.grace.duration("grace")?.unwrap_or(DEFAULT_GRACE),
            },
        })
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};

        // Through a map, not a struct: flattened into `Rule`, a struct request would be
        // handed only the fields it names, and unknown ones would pass unseen.
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = ConditionWire;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a rule condition")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ConditionWire, A::Error> {
                ConditionWire::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        let wire = d.deserialize_map(Fields)?;
        Condition::try_from(wire).map_err(D::Error::custom)
    }
}
