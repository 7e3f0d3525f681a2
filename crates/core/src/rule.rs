//! Alert rules attached to a sensor: thresholds and rates of change.

use serde::{Deserialize, Serialize};

use crate::{FieldError, DEFAULT_METRIC};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
        } else if self.name.len() > 64 {
            errors.push(FieldError::new(
                format!("{path}.name"),
                "must be at most 64 characters",
            ));
        }
        if self.metric.is_empty() || self.metric.len() > 64 {
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
    }
}
