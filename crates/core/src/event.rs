//! Live events pushed to WebSocket and SSE subscribers.

use std::sync::Arc;

use serde::Serialize;

use crate::{Alert, AlertChange, Reading, TenantId};

/// One event on the live feed. Each carries its tenant so the feed can be
/// filtered per subscriber; the tenant is never serialised.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// Readings just committed, in one batch (shared, serialised lazily per subscriber).
    Readings {
        #[serde(skip)]
        tenant: TenantId,
        readings: Arc<Vec<Reading>>,
    },
    /// An alert opened, was acknowledged or resolved.
    Alert {
        #[serde(skip)]
        tenant: TenantId,
        change: AlertChange,
        alert: Box<Alert>,
    },
}

impl LiveEvent {
    pub fn tenant(&self) -> TenantId {
        match self {
            LiveEvent::Readings { tenant, .. } | LiveEvent::Alert { tenant, .. } => *tenant,
        }
    }
}
