//! Live events pushed to WebSocket and SSE subscribers.

use std::sync::Arc;

use serde::Serialize;

use crate::{Alert, AlertChange, Reading, TenantId};

/// One event on the live feed. Each carries its tenant so the feed can be
/// filtered per subscriber; the tenant is never serialised: this `Serialize` is the
/// subscribers' JSON. Between processes the event travels as [`crate::fanout_wire`]
/// says, tenant included.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// A control message between processes: what one process changed that others cache.
/// Carried by the fan-out (in process, or Redis pub/sub or NATS subjects when roles run
/// in several processes, encoded as [`crate::fanout_wire`] says), applied by each
/// process's handlers.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// A sensor was created or its spec replaced: directories refresh it.
    SensorChanged(Arc<crate::Sensor>),
    /// An alert was resolved by hand (or because its rule was removed): the worker forgets
    /// the excursion, so the next out-of-range reading opens a new alert.
    ExcursionForgotten {
        sensor: crate::SensorId,
        rule: String,
    },
    /// An API key was revoked: authentication caches drop it at once.
    KeyRevoked { hash: [u8; 32] },
}
