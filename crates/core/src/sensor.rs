//! Sensors: what is measured, where, and which rules watch it.

use serde::{Deserialize, Serialize};

use crate::rule::normalise_rules;
use crate::{longer_than, FieldError, Rule, SensorId, TenantId, Timestamp};

/// What a sensor watches; decides the defaults a demo or a UI offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    Freezer,
    Fridge,
    #[default]
    Generic,
}

impl SensorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SensorKind::Freezer => "freezer",
            SensorKind::Fridge => "fridge",
            SensorKind::Generic => "generic",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "freezer" => Some(SensorKind::Freezer),
            "fridge" => Some(SensorKind::Fridge),
            "generic" => Some(SensorKind::Generic),
            _ => None,
        }
    }
}

/// A provisioned sensor.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Sensor {
    pub id: SensorId,
    #[serde(skip)]
    pub tenant: TenantId,
    /// Key the devices use, unique within the tenant.
    pub key: String,
    /// Human-friendly name; defaults to the key.
    pub name: String,
    pub kind: SensorKind,
    /// Unit of the main metric, e.g. `°C`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub rules: Vec<Rule>,
    /// Stock held in the room (units of `product`), for cost-at-risk reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stock: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    pub created_at: Timestamp,
}

/// The writable part of a sensor, as `PUT /api/v1/sensors/{key}` takes it.
/// Its OpenAPI schema is written by hand (below) to state [`SensorSpec::normalise`]'s limits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: SensorKind,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub stock: Option<f64>,
    #[serde(default)]
    pub product: Option<String>,
}

/// The OpenAPI schema of a sensor key, in paths and bodies alike.
pub fn sensor_key_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_SENSOR_KEY_LEN))
        .pattern(Some(SENSOR_KEY_PATTERN))
        .description(Some(
            "Sensor key, unique within the tenant: 1–128 characters, no control characters, no `/`.",
        ))
        .build()
}

/// The spec as the OpenAPI document states it: unknown fields refused, and every length,
/// count and range [`SensorSpec::normalise`] checks.
impl utoipa::PartialSchema for SensorSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type,
        };
        use utoipa::openapi::Ref;

        let nullable =
            |t: Type| ObjectBuilder::new().schema_type(SchemaType::from_iter([t, Type::Null]));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
            .property(
                "name",
                nullable(Type::String)
                    .max_length(Some(MAX_SENSOR_NAME_LEN))
                    .description(Some("Human-friendly name; defaults to the key.")),
            )
            .property("kind", <SensorKind as utoipa::PartialSchema>::schema())
            .property(
                "unit",
                nullable(Type::String)
                    .max_length(Some(MAX_UNIT_LEN))
                    .description(Some("Unit of the main metric, e.g. `°C`.")),
            )
            .property(
                "rules",
                ArrayBuilder::new()
                    .items(Ref::from_schema_name("RuleSpec"))
                    .max_items(Some(MAX_RULES))
                    .description(Some(
                        "The sensor's rules; their effective names must be unique.",
                    )),
            )
            .property(
                "stock",
                nullable(Type::Number).minimum(Some(0)).description(Some(
                    "Stock held in the room (units of `product`), for cost-at-risk reports.",
                )),
            )
            .property("product", nullable(Type::String))
            .into()
    }
}

impl utoipa::ToSchema for SensorSpec {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use crate::rule::RuleSpec;
        schemas.push((
            <RuleSpec as utoipa::ToSchema>::name().into_owned(),
            <RuleSpec as utoipa::PartialSchema>::schema(),
        ));
    }
}

/// Longest sensor key accepted, in characters.
pub const MAX_SENSOR_KEY_LEN: usize = 128;

/// The characters a sensor key may hold, as the OpenAPI document states it (ECMA-262):
/// anything but control characters (Unicode `Cc`, what `char::is_control` tests) and `/`.
pub const SENSOR_KEY_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F/]*$";

/// Longest sensor name, in characters.
pub const MAX_SENSOR_NAME_LEN: usize = 200;

/// Longest unit, in characters.
pub const MAX_UNIT_LEN: usize = 32;

/// Most rules on one sensor, as written and once two-stage duration rules are split
/// (checked by [`crate::rule::normalise_rules`]).
pub const MAX_RULES: usize = 32;

/// Checks a sensor key: 1–128 characters, no control characters, no `/`
/// (it appears in URL paths).
pub fn validate_sensor_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("must not be empty");
    }
    if longer_than(key, MAX_SENSOR_KEY_LEN) {
        return Err("must be at most 128 characters");
    }
    if key.chars().any(|c| c.is_control() || c == '/') {
        return Err("must not contain control characters or `/`");
    }
    Ok(())
}

impl SensorSpec {
    /// Fills defaults and validates; every problem is reported, not just the first.
    pub fn normalise(&mut self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Some(name) = &self.name {
            if longer_than(name, MAX_SENSOR_NAME_LEN) {
                errors.push(FieldError::new("name", "must be at most 200 characters"));
            }
        }
        if let Some(unit) = &self.unit {
            if longer_than(unit, MAX_UNIT_LEN) {
                errors.push(FieldError::new("unit", "must be at most 32 characters"));
            }
        }
        if let Some(stock) = self.stock {
            if !stock.is_finite() || stock < 0.0 {
                errors.push(FieldError::new("stock", "must be a finite number ≥ 0"));
            }
        }
        normalise_rules(&mut self.rules, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Severity;

    #[test]
    fn key_length_counts_characters_not_bytes() {
        // JSON Schema's maxLength counts characters; the server must agree with the document.
        assert_eq!(validate_sensor_key(&"é".repeat(128)), Ok(()));
        assert_eq!(validate_sensor_key(&"s".repeat(128)), Ok(()));
        assert!(validate_sensor_key(&"é".repeat(129)).is_err());
        assert!(validate_sensor_key(&"s".repeat(129)).is_err());
        assert!(validate_sensor_key("").is_err());
        for bad in ["a/b", "a\u{7}", "a\u{9f}", "\u{0}"] {
            assert!(validate_sensor_key(bad).is_err(), "{bad:?}");
        }
        // U+00A0 (no-break space) is not a control character.
        assert_eq!(validate_sensor_key("a\u{a0}b"), Ok(()));
    }

    #[test]
    fn spec_lengths_count_characters() {
        let mut spec = SensorSpec {
            name: Some("ñ".repeat(MAX_SENSOR_NAME_LEN)),
            unit: Some("°".repeat(MAX_UNIT_LEN)),
            rules: vec![Rule {
                name: "é".repeat(crate::rule::MAX_RULE_NAME_LEN),
                metric: "µ".repeat(crate::rule::MAX_METRIC_LEN),
                ..Rule::threshold(Severity::Warning, None, Some(1.0))
            }],
            ..SensorSpec::default()
        };
        assert_eq!(spec.normalise(), Ok(()));

        let mut spec = SensorSpec {
            name: Some("ñ".repeat(MAX_SENSOR_NAME_LEN + 1)),
            unit: Some("°".repeat(MAX_UNIT_LEN + 1)),
            rules: vec![Rule {
                name: "é".repeat(crate::rule::MAX_RULE_NAME_LEN + 1),
                metric: "µ".repeat(crate::rule::MAX_METRIC_LEN + 1),
                ..Rule::threshold(Severity::Warning, None, Some(1.0))
            }],
            ..SensorSpec::default()
        };
        let fields: Vec<String> = spec
            .normalise()
            .expect_err("every field is one character too long")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["name", "unit", "rules[0].name", "rules[0].metric"]);
    }
}
