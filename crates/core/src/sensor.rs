//! Sensors: what is measured, where, and which rules watch it.

use serde::{Deserialize, Serialize};

use crate::rule::normalise_rules;
use crate::{FieldError, Rule, SensorId, TenantId, Timestamp};

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
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Longest sensor key accepted.
pub const MAX_SENSOR_KEY_LEN: usize = 128;

/// Checks a sensor key: 1–128 characters, no control characters, no `/`
/// (it appears in URL paths).
pub fn validate_sensor_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("must not be empty");
    }
    if key.len() > MAX_SENSOR_KEY_LEN {
        return Err("must be at most 128 bytes");
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
            if name.len() > 200 {
                errors.push(FieldError::new("name", "must be at most 200 characters"));
            }
        }
        if let Some(unit) = &self.unit {
            if unit.len() > 32 {
                errors.push(FieldError::new("unit", "must be at most 32 characters"));
            }
        }
        if let Some(stock) = self.stock {
            if !stock.is_finite() || stock < 0.0 {
                errors.push(FieldError::new("stock", "must be a finite number ≥ 0"));
            }
        }
        if self.rules.len() > 32 {
            errors.push(FieldError::new("rules", "at most 32 rules per sensor"));
        }
        normalise_rules(&mut self.rules, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
