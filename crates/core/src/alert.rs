//! Alerts: one per excursion of one sensor past one rule.

use serde::{Deserialize, Serialize};

use crate::{AlertId, RuleKind, SensorId, Severity, TenantId, Timestamp};

/// Lifecycle of an alert. `Acked` is still an open incident: it blocks duplicates
/// until it resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Open,
    Acked,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acked => "acked",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(AlertState::Open),
            "acked" => Some(AlertState::Acked),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// An alert as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: AlertId,
    #[serde(skip)]
    pub tenant: TenantId,
    pub sensor_id: SensorId,
    /// Sensor key.
    pub sensor: String,
    /// Name of the rule that fired.
    pub rule: String,
    pub kind: RuleKind,
    pub severity: Severity,
    pub state: AlertState,
    pub metric: String,
    /// The reading that opened it.
    pub value: f64,
    /// Words for a person: what happened and against which limit.
    pub message: String,
    /// Event time of the reading that opened it.
    pub opened_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// `auto` when the rule engine resolved it, else the API key's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
}

/// What happened to an alert, for live subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertChange {
    Opened,
    Acked,
    Resolved,
}
