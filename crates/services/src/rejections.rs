//! The last messages a protocol front end refused, per tenant, so a device's owner can see
//! why its readings never arrived (a device that publishes over MQTT gets no error back).
//!
//! Protocol-neutral: MQTT records into it now; HTTP and line protocol may later. It is
//! bounded (a fixed number of entries per tenant and a fixed number of tenants) and held
//! in the memory of the process that refused the message: each ingest process lists its
//! own, and a restart forgets them.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use utoipa::ToSchema;
use vigia_core::{Permission, TenantId, Timestamp};

use crate::{Caller, ServiceError};

/// Entries kept per tenant.
pub const REJECTIONS_PER_TENANT: usize = 100;

/// Tenants with entries kept; past it, the tenant whose newest entry is oldest is dropped.
pub const REJECTION_TENANTS: usize = 1_000;

/// Longest detail kept, in characters (a payload's error can quote it).
const MAX_DETAIL_CHARS: usize = 500;

/// One refused message.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Rejection {
    /// The front end that refused it: `mqtt` (HTTP and line protocol may follow).
    pub protocol: String,
    /// What the message was addressed to: the MQTT topic.
    pub target: String,
    /// A short, stable label: `bad_topic`, `bad_payload`, `foreign_tenant`,
    /// `unprovisioned`, `forbidden`.
    pub reason: String,
    /// What was wrong, in words a person can act on.
    pub detail: String,
    /// When it was refused.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

/// The last [`REJECTIONS_PER_TENANT`] rejections of up to [`REJECTION_TENANTS`] tenants.
#[derive(Default)]
pub struct RejectionLog {
    tenants: Mutex<HashMap<TenantId, VecDeque<Rejection>>>,
}

impl RejectionLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `rejection` under `tenant`, forgetting the oldest past the bounds.
    pub fn record(&self, tenant: TenantId, mut rejection: Rejection) {
        if vigia_core::longer_than(&rejection.detail, MAX_DETAIL_CHARS) {
            rejection.detail = rejection.detail.chars().take(MAX_DETAIL_CHARS).collect();
            rejection.detail.push('…');
        }
        if vigia_core::longer_than(&rejection.target, MAX_DETAIL_CHARS) {
            rejection.target = rejection.target.chars().take(MAX_DETAIL_CHARS).collect();
            rejection.target.push('…');
        }
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if !tenants.contains_key(&tenant) && tenants.len() >= REJECTION_TENANTS {
            let stalest = tenants
                .iter()
                .min_by_key(|(_, entries)| entries.back().map(|r| r.at))
                .map(|(id, _)| *id);
            if let Some(id) = stalest {
                tenants.remove(&id);
            }
        }
        let entries = tenants.entry(tenant).or_default();
        if entries.len() >= REJECTIONS_PER_TENANT {
            entries.pop_front();
        }
        entries.push_back(rejection);
    }

    /// The caller's tenant's rejections, newest first (needs `read`).
    pub fn list(&self, caller: &Caller) -> Result<Vec<Rejection>, ServiceError> {
        caller.require(Permission::Read)?;
        Ok(self.of_tenant(caller.tenant))
    }

    /// A tenant's rejections, newest first.
    pub fn of_tenant(&self, tenant: TenantId) -> Vec<Rejection> {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants
            .get(&tenant)
            .map(|entries| entries.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigia_core::{ApiKeyId, Role};

    fn rejection(target: &str, at: i64) -> Rejection {
        Rejection {
            protocol: "mqtt".into(),
            target: target.into(),
            reason: "bad_payload".into(),
            detail: "x".repeat(1_000),
            at: Timestamp(at),
        }
    }

    #[test]
    fn bounded_per_tenant_and_in_tenants_newest_first() {
        let log = RejectionLog::new();
        for i in 0..250 {
            log.record(TenantId(1), rejection(&format!("t{i}"), i));
        }
        let listed = log.of_tenant(TenantId(1));
        assert_eq!(listed.len(), REJECTIONS_PER_TENANT);
        assert_eq!(listed[0].target, "t249");
        assert_eq!(listed[99].target, "t150");
        assert_eq!(listed[0].detail.chars().count(), MAX_DETAIL_CHARS + 1);
        for t in 2..=(REJECTION_TENANTS as i64 + 1) {
            log.record(TenantId(t), rejection("x", 1_000 + t));
        }
        // Tenant 1's newest entry was the oldest of all: it made room.
        assert!(log.of_tenant(TenantId(1)).is_empty());
        assert_eq!(log.of_tenant(TenantId(2)).len(), 1);
        assert_eq!(log.tenants.lock().unwrap().len(), REJECTION_TENANTS);
    }

    #[test]
    fn listing_needs_read_and_sees_only_its_tenant() {
        let log = RejectionLog::new();
        log.record(TenantId(1), rejection("mine", 1));
        log.record(TenantId(2), rejection("theirs", 2));
        let caller = |role| Caller {
            tenant: TenantId(1),
            key_id: ApiKeyId(1),
            key_name: "k".into(),
            role,
        };
        let mine = log.list(&caller(Role::Viewer)).unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].target, "mine");
        assert!(log.list(&caller(Role::Device)).is_err());
    }
}
