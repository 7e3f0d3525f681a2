//! The alerts port: listing and the lifecycle actions of people (ack, resolve by hand).
//! Alerts opened and resolved by rules arrive through the unit of work
//! ([`crate::Store::write_batch`]) with the readings that caused them.

use async_trait::async_trait;
use vigia_core::{
    Alert, AlertDetails, AlertId, AlertState, RuleKind, SensorId, Severity, TenantId, Timestamp,
};

use crate::{SensorScope, StoreResult};

/// An alert the rule engine wants opened.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub tenant: TenantId,
    pub sensor: SensorId,
    pub rule: String,
    pub kind: RuleKind,
    pub severity: Severity,
    pub metric: String,
    pub value: f64,
    pub message: String,
    pub opened_at: Timestamp,
    /// What the rule measured (the alert's `details`), if its kind says more than a value.
    pub details: Option<AlertDetails>,
}

/// An alert's `details` as the stores keep them: JSON text, `None` for none.
pub(crate) fn details_to_json(details: &Option<AlertDetails>) -> StoreResult<Option<String>> {
    details
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| crate::StoreError::Internal(format!("alert details as JSON: {e}")))
}

/// The stored JSON of an alert's `details` back; the error says what is wrong with it.
pub(crate) fn details_from_json(json: Option<&str>) -> Result<Option<AlertDetails>, String> {
    json.map(serde_json::from_str)
        .transpose()
        .map_err(|e| format!("invalid alert details JSON: {e}"))
}

/// A change to alerts decided by the rule engine.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertTransition {
    /// Open an alert unless one is already open or acked for (sensor, rule).
    Open(NewAlert),
    /// Resolve the open or acked alert for (sensor, rule), if any, as `auto`.
    Resolve {
        tenant: TenantId,
        sensor: SensorId,
        rule: String,
        at: Timestamp,
    },
}

/// Which alerts to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFilter {
    pub state: Option<AlertState>,
    pub sensor: Option<String>,
    /// Newest first; at most this many.
    pub limit: usize,
    /// Only alerts older than this one (ids grow with time): the next page after it.
    pub before: Option<AlertId>,
}

/// Alerts: lists and the actions of people.
#[async_trait]
pub trait AlertRepo: Send + Sync {
    async fn list(&self, tenant: TenantId, filter: &AlertFilter) -> StoreResult<Vec<Alert>>;
    async fn get(&self, tenant: TenantId, id: AlertId) -> StoreResult<Alert>;
    /// Open → acked, in one transaction. Acking an acked alert returns it unchanged; a
    /// resolved one is `Conflict`.
    async fn ack(
        &self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert>;
    /// Open or acked → resolved, in one transaction. Resolving a resolved alert returns
    /// it unchanged.
    async fn resolve(
        &self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert>;
    /// Open and acked alerts across tenants (for rebuilding rule state).
    async fn unresolved(&self) -> StoreResult<Vec<Alert>>;
    /// Open plus acked alerts per sensor of the tenant's sensors in `scope` (only sensors
    /// that have any). Exact, whatever the number of alerts.
    async fn unresolved_counts(
        &self,
        tenant: TenantId,
        scope: &SensorScope,
    ) -> StoreResult<Vec<(SensorId, u64)>>;
}
