//! The audit port: who did what to what, from where, with what outcome. Rows are
//! aggregated per (tenant, minute, client address, actor, action, target, outcome) with
//! a count, so a flood of refused requests grows a counter, not the table.

use async_trait::async_trait;
use vigia_core::{TenantId, Timestamp};

use crate::StoreResult;

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// It was done.
    Allowed,
    /// It was refused (unknown key, missing permission, rate limited…).
    Refused,
}

impl AuditOutcome {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Allowed => "allowed",
            AuditOutcome::Refused => "refused",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allowed" => Some(AuditOutcome::Allowed),
            "refused" => Some(AuditOutcome::Refused),
            _ => None,
        }
    }
}

/// One audited action (or `count` identical ones within the same minute).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuditEvent {
    /// The tenant acted in; `None` when the caller could not be identified.
    pub tenant: Option<TenantId>,
    /// Who: `key:<id>:<name>`, or `anonymous` for an unidentified caller.
    pub actor: String,
    /// What, e.g. `key.create`, `key.revoke`, `auth.refused`.
    pub action: String,
    /// On what, e.g. `key:12`, or the request path.
    pub target: String,
    pub outcome: AuditOutcome,
    /// The client's address as the server saw it.
    pub client: String,
}

/// An aggregated audit row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    #[schema(value_type = Option<i64>)]
    pub tenant: Option<TenantId>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: AuditOutcome,
    pub client: String,
    /// The minute the row aggregates (its start).
    #[schema(value_type = String, format = DateTime)]
    pub minute: Timestamp,
    /// How many times it happened in that minute.
    pub count: u64,
    #[schema(value_type = String, format = DateTime)]
    pub first_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub last_at: Timestamp,
}

/// The start of the minute `at` falls in: the aggregation bucket.
pub fn audit_minute(at: Timestamp) -> Timestamp {
    Timestamp(at.0.div_euclid(60_000) * 60_000)
}

/// The audit log.
#[async_trait]
pub trait AuditRepo: Send + Sync {
    /// Adds `count` occurrences of each event at `at`, into its minute's row.
    async fn record(&self, events: &[(AuditEvent, u64)], at: Timestamp) -> StoreResult<()>;
    /// The newest rows first: of one tenant, or (`None`) the rows of unidentified callers.
    async fn list(&self, tenant: Option<TenantId>, limit: usize) -> StoreResult<Vec<AuditRecord>>;
    /// Deletes the rows of minutes before `before` (retention); returns how many.
    async fn prune(&self, before: Timestamp) -> StoreResult<u64>;
}
