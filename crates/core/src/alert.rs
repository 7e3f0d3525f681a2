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
    /// What the rule measured when it opened the alert (duration, anomaly and offline
    /// rules); null for kinds whose value says it all.
    pub details: Option<AlertDetails>,
}

/// What happened to an alert, for live subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertChange {
    Opened,
    Acked,
    Resolved,
}

/// What a rule measured when it opened an alert, beyond the reading's value: the
/// alert's `details` (JSON), for the kinds whose reason a value alone cannot show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AlertDetails {
    Anomaly(AnomalyDetails),
    Duration(DurationDetails),
    Offline(OfflineDetails),
}

/// Why an anomaly rule fired: what it expected, what it saw, and how far apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AnomalyDetails {
    /// Which test fired.
    pub signal: AnomalySignal,
    /// The range the rule expected the value in, from its learned level and spread.
    pub expected_min: f64,
    pub expected_max: f64,
    /// The reading's value.
    pub observed: f64,
    /// How anomalous, in the rule's robust units (for a flat line: its length over
    /// `flatline`); the alert opened because it reached `threshold`.
    pub score: f64,
    pub threshold: f64,
}

/// The test of an anomaly rule that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnomalySignal {
    /// One reading far from the expected level: a spike, or the start of a level shift.
    Deviation,
    /// The short-term level moving away from the long-term one: a drift or a shift.
    Trend,
    /// The same value repeated for too long on a sensor that normally varies.
    Flatline,
}

/// Why a duration rule fired: time out of range against its limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DurationDetails {
    /// Time out of range within the window, in event time, milliseconds.
    pub out_of_range_ms: i64,
    /// The stage's limit (`warn_after` or `critical_after`), milliseconds.
    pub limit_ms: i64,
    /// The window it is added up over: a duration such as `24h`, or `batch`.
    pub window: String,
    /// The product lot, for a `batch` window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
}

/// Why an offline rule fired: how long nothing came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OfflineDetails {
    /// Wall-clock silence when the sweep saw it, milliseconds.
    pub silent_ms: i64,
    /// `expected + grace`, milliseconds.
    pub limit_ms: i64,
    /// Event time of the last reading seen.
    pub last_seen: Timestamp,
}
