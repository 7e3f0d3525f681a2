//! Alert rules attached to a sensor: thresholds and rates of change.

use serde::{Deserialize, Serialize};

use crate::{longer_than, FieldError, DEFAULT_METRIC};

/// Longest rule name, in characters.
pub const MAX_RULE_NAME_LEN: usize = 64;

/// Longest metric name, in characters (rules, readings and series queries alike).
pub const MAX_METRIC_LEN: usize = 64;

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
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Threshold => "threshold",
            RuleKind::Rate => "rate",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "threshold" => Some(RuleKind::Threshold),
            "rate" => Some(RuleKind::Rate),
            _ => None,
        }
    }
}

/// What makes a reading an excursion.
///
/// Deserialized through [`ConditionWire`] rather than serde's internally tagged enum,
/// which also takes a variant's index as its tag (`"kind": 0` for a threshold): the API
/// takes only the names it documents.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
}

/// A condition as the client writes it: every field of every kind, each remembering
/// whether it was there, so fields of the other kind are refused as unknown.
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

/// Serde-worded errors, as the derived deserializer gave them before.
#[derive(Debug)]
struct WireError(String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<ConditionWire> for Condition {
    type Error = WireError;

    fn try_from(w: ConditionWire) -> Result<Self, WireError> {
        let unknown = |field: &str, expected: &str| {
            WireError(format!("unknown field `{field}`, expected {expected}"))
        };
        match w.kind {
            RuleKind::Threshold => {
                for (field, given) in [
                    ("max_per_min", w.max_per_min.given),
                    ("direction", w.direction.given),
                ] {
                    if given {
                        return Err(unknown(field, "`min` or `max`"));
                    }
                }
                Ok(Condition::Threshold {
                    min: w.min.value,
                    max: w.max.value,
                })
            }
            RuleKind::Rate => {
                for (field, given) in [("min", w.min.given), ("max", w.max.given)] {
                    if given {
                        return Err(unknown(field, "`max_per_min` or `direction`"));
                    }
                }
                if !w.max_per_min.given {
                    return Err(WireError("missing field `max_per_min`".into()));
                }
                Ok(Condition::Rate {
                    max_per_min: w.max_per_min.value,
                    direction: w.direction.value,
                })
            }
        }
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

impl Condition {
    pub fn kind(&self) -> RuleKind {
        match self {
            Condition::Threshold { .. } => RuleKind::Threshold,
            Condition::Rate { .. } => RuleKind::Rate,
        }
    }
}

/// One rule on one metric of a sensor. `name` identifies it among the sensor's rules
/// and in its alerts; at most one alert per (sensor, rule) is open at a time.
///
/// Its OpenAPI schema is written by hand (below): the derive cannot say that unknown
/// fields are refused through the flattened condition, nor that a threshold needs
/// `min` or `max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Defaults to `<kind>-<severity>` (plus `-<metric>` for a metric other than temperature).
    #[serde(default)]
    pub name: String,
    #[serde(default = "default_metric")]
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
        Self::named(severity, Condition::Threshold { min, max })
    }

    pub fn rate(severity: Severity, max_per_min: f64, direction: RateDirection) -> Self {
        Self::named(
            severity,
            Condition::Rate {
                max_per_min,
                direction,
            },
        )
    }

    fn named(severity: Severity, condition: Condition) -> Self {
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
    pub fn normalise(&mut self, path: &str, errors: &mut Vec<FieldError>) {
        if self.name.trim().is_empty() {
            self.name = self.default_name();
        } else if longer_than(&self.name, MAX_RULE_NAME_LEN) {
            errors.push(FieldError::new(
                format!("{path}.name"),
                "must be at most 64 characters",
            ));
        }
        if self.metric.is_empty() || longer_than(&self.metric, MAX_METRIC_LEN) {
            errors.push(FieldError::new(
                format!("{path}.metric"),
                "must be 1 to 64 characters",
            ));
        }
        match &self.condition {
            Condition::Threshold { min, max } => {
                if min.is_none() && max.is_none() {
                    errors.push(FieldError::new(
                        format!("{path}.max"),
                        "a threshold rule needs `min`, `max` or both",
                    ));
                }
                for (field, v) in [("min", min), ("max", max)] {
                    if let Some(v) = v {
                        if !v.is_finite() {
                            errors
                                .push(FieldError::new(format!("{path}.{field}"), "must be finite"));
                        }
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
            Condition::Rate { max_per_min, .. } => {
                if !max_per_min.is_finite() || *max_per_min <= 0.0 {
                    errors.push(FieldError::new(
                        format!("{path}.max_per_min"),
                        "must be a finite number greater than zero",
                    ));
                }
            }
        }
    }
}

/// The rule as the OpenAPI document states it: every constraint [`Rule::normalise`]
/// checks that JSON Schema can express. Three overlapping shapes (`anyOf`): a threshold
/// with `min`, a threshold with `max` (either or both), and a rate. Two rules' checks it
/// cannot express, so the descriptions say them: `min` ≤ `max`, and unique effective
/// names within a sensor.
impl utoipa::PartialSchema for Rule {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        rule_schema(false)
    }
}

impl utoipa::ToSchema for Rule {}

/// A rule as `PUT /api/v1/sensors/{key}` takes it: [`Rule`]'s schema, with the limit on
/// a given `name` (a default name may be longer, so answers carry no such limit).
/// Documentation only.
pub struct RuleSpec;

impl utoipa::PartialSchema for RuleSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        rule_schema(true)
    }
}

impl utoipa::ToSchema for RuleSpec {}

/// The rule's schema; `input` adds the limit on a given name.
fn rule_schema(input: bool) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, SchemaType, Type};

    let number = || ObjectBuilder::new().schema_type(Type::Number);
    let number_or_null =
        || ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::Number, Type::Null]));
    // The fields every rule has, then the condition's own.
    let base = |kind: &str| {
        ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::<
                    utoipa::openapi::schema::Schema,
                >::FreeForm(false)))
                .property(
                    "kind",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([kind])),
                )
                .required("kind")
                .property(
                    "name",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .max_length(input.then_some(MAX_RULE_NAME_LEN))
                        .description(Some(
                            "Unique among the sensor's rules. Empty or blank means \
                             `<kind>-<severity>` (plus `-<metric>` for a metric other than temperature).",
                        )),
                )
                .property(
                    "metric",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(MAX_METRIC_LEN))
                        .default(Some(DEFAULT_METRIC.into())),
                )
                .property("severity", <Severity as utoipa::PartialSchema>::schema())
                .required("severity")
    };
    let threshold = |bound: &str, other: &str| {
        base("threshold")
            .description(Some(
                "The value must stay within `[min, max]`; at least one bound, `min` ≤ `max`.",
            ))
            .property(bound, number())
            .required(bound)
            .property(other, number_or_null())
    };
    let rate = base("rate")
        .description(Some(
            "The value must not change faster than `max_per_min` units per minute.",
        ))
        .property("max_per_min", number().exclusive_minimum(Some(0)))
        .required("max_per_min")
        .property(
            "direction",
            <RateDirection as utoipa::PartialSchema>::schema(),
        );
    AnyOfBuilder::new()
        .item(threshold("min", "max"))
        .item(threshold("max", "min"))
        .item(rate)
        .description(Some(
            "A threshold (`kind: threshold`, `min` and/or `max`) or a rate of change \
                 (`kind: rate`, `max_per_min`) rule on one metric.",
        ))
        .into()
}

/// Normalises a sensor's rule list: defaults, per-rule checks, unique names.
pub fn normalise_rules(rules: &mut [Rule], errors: &mut Vec<FieldError>) {
    for (i, rule) in rules.iter_mut().enumerate() {
        rule.normalise(&format!("rules[{i}]"), errors);
    }
    for i in 0..rules.len() {
        if rules[..i].iter().any(|r| r.name == rules[i].name) {
            errors.push(FieldError::new(
                format!("rules[{i}].name"),
                format!("duplicate rule name `{}`", rules[i].name),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_rule_json_and_names_it() {
        let mut rules: Vec<Rule> = serde_json::from_str(
            r#"[{"kind":"threshold","max":-18,"severity":"critical"},
                {"kind":"rate","max_per_min":1.5,"direction":"rise","severity":"warning"},
                {"kind":"threshold","min":20,"max":80,"metric":"humidity","severity":"warning"}]"#,
        )
        .unwrap();
        let mut errors = vec![];
        normalise_rules(&mut rules, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<_> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "threshold-critical",
                "rate-warning",
                "threshold-warning-humidity"
            ]
        );
    }

    #[test]
    fn rejects_bad_rules_naming_fields() {
        let cases: &[(&str, &str)] = &[
            (
                r#"[{"kind":"threshold","severity":"critical"}]"#,
                "rules[0].max",
            ),
            (
                r#"[{"kind":"threshold","min":5,"max":1,"severity":"critical"}]"#,
                "rules[0].min",
            ),
            (
                r#"[{"kind":"rate","max_per_min":0,"severity":"warning"}]"#,
                "rules[0].max_per_min",
            ),
            (
                r#"[{"kind":"rate","max_per_min":1,"severity":"warning"},{"kind":"rate","max_per_min":2,"severity":"warning"}]"#,
                "rules[1].name",
            ),
        ];
        for (json, field) in cases {
            let mut rules: Vec<Rule> = serde_json::from_str(json).unwrap();
            let mut errors = vec![];
            normalise_rules(&mut rules, &mut errors);
            assert_eq!(errors.len(), 1, "{json}: {errors:?}");
            assert_eq!(errors[0].field, *field, "{json}");
        }
        assert!(
            serde_json::from_str::<Vec<Rule>>(r#"[{"kind":"median","severity":"warning"}]"#)
                .is_err()
        );
        assert!(serde_json::from_str::<Vec<Rule>>(
            r#"[{"kind":"threshold","max":1,"severity":"meh"}]"#
        )
        .is_err());
        // Only documented names: serde's tagged enums would take the variant index too.
        for json in [
            r#"[{"kind":0,"max":1,"severity":"warning"}]"#,
            r#"[{"kind":1,"max_per_min":1,"severity":"warning"}]"#,
            r#"[{"kind":"rate","max_per_min":1,"min":null,"severity":"warning"}]"#,
            r#"[{"kind":"rate","max_per_min":null,"severity":"warning"}]"#,
            r#"[{"kind":"rate","direction":null,"max_per_min":1,"severity":"warning"}]"#,
            r#"[{"kind":"rate","severity":"warning"}]"#,
            r#"[{"kind":"threshold","max":1,"direction":"rise","severity":"warning"}]"#,
            r#"[{"kind":"threshold","max":1,"colour":"red","severity":"warning"}]"#,
        ] {
            assert!(serde_json::from_str::<Vec<Rule>>(json).is_err(), "{json}");
        }
        let rules: Vec<Rule> = serde_json::from_str(
            r#"[{"kind":"threshold","min":null,"max":1,"severity":"warning"},
                {"kind":"rate","max_per_min":2,"severity":"critical"}]"#,
        )
        .unwrap();
        assert_eq!(
            rules[0].condition,
            Condition::Threshold {
                min: None,
                max: Some(1.0)
            }
        );
        assert_eq!(
            rules[1].condition,
            Condition::Rate {
                max_per_min: 2.0,
                direction: RateDirection::Both
            }
        );
    }
}
