//! Vigía's domain vocabulary, shared by every other crate.
//!
//! This crate does no I/O and owns no runtime: it is plain data, validation and the
//! conversions between wire formats (RFC 3339 / epoch milliseconds) and internal ones.
//! Everything here is cheap to construct in tests.

pub mod alert;
pub mod domain_event;
pub mod durability;
pub mod event;
pub mod fanout_wire;
pub mod ids;
pub mod partition;
pub mod reading;
pub mod registry;
pub mod robot;
pub mod role;
pub mod rule;
pub mod sensor;
pub mod services;
pub mod time;

pub use alert::{
    Alert, AlertChange, AlertDetails, AlertState, AnomalyDetails, AnomalySignal, DurationDetails,
    OfflineDetails,
};
pub use domain_event::DomainEvent;
pub use durability::Durability;
pub use event::{Control, LiveEvent};
pub use fanout_wire::{FanoutEnvelope, FanoutMessage, FANOUT_WIRE_VERSION};
pub use ids::{AlertId, ApiKeyId, SensorId, TenantId};
pub use reading::{IngestBatch, Reading, DEFAULT_METRIC};
pub use robot::{
    BreakerPosition, Execution, ExecutionStatus, InstanceHealth, Module, ModuleInstance, Robot,
    RobotId, RobotStatus,
};
pub use role::{Permission, Role};
pub use rule::{Condition, DurationMs, DurationWindow, RateDirection, Rule, RuleKind, Severity};
pub use sensor::{Sensor, SensorKind, SensorSpec};
pub use time::{parse_duration_ms, Timestamp};

/// Whether `text` is longer than `max` characters (Unicode scalar values, as JSON Schema's
/// `maxLength` counts them, not bytes). Counts only when the byte length could exceed it.
pub fn longer_than(text: &str, max: usize) -> bool {
    text.len() > max && text.chars().count() > max
}

/// One field that failed validation, named the way the client wrote it
/// (`value`, `rules[1].max`, `[42].ts`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON-path-like name of the offending field.
    pub field: String,
    /// What is wrong with it, in words a person can act on.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A tenant: the unit of isolation. Every sensor, reading, alert and key belongs to one.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: String,
    pub name: String,
}

/// What a presented API key resolves to. The key itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub tenant: TenantId,
    pub name: String,
    pub role: Role,
}

/// An API key as listed to an admin: never the key, never its hash.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ApiKeyInfo {
    pub id: ApiKeyId,
    pub name: String,
    pub role: Role,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}
