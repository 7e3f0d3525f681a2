//! The audit log in memory, aggregated per minute like the SQLite table, and the audit
//! port over it.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use vigia_core::{TenantId, Timestamp};

use super::VolatileStore;
use crate::{audit_minute, AuditEvent, AuditRecord, AuditRepo, StoreResult};

/// A row's id: insertion order, the tie-break of the listing within a minute.
type RowId = u64;

/// The audit rows and their indexes.
#[derive(Default)]
pub(super) struct AuditLog {
    rows: HashMap<RowId, AuditRecord>,
    /// Minute → event → row: the unique key (tenant, minute, client, actor, action,
    /// target, outcome), split so a lookup borrows the event instead of cloning it.
    by_event: HashMap<Timestamp, HashMap<AuditEvent, RowId>>,
    /// (tenant, minute, id): a tenant's listing, newest first, is a backwards range.
    /// `None` is the tenant of unidentified callers.
    by_tenant: BTreeSet<(Option<TenantId>, Timestamp, RowId)>,
    last_id: RowId,
}

/// The most a row counts: SQLite's column is a signed 64-bit integer.
const MAX_COUNT: u64 = i64::MAX as u64;

impl AuditLog {
    /// Adds `count` occurrences of each event at `at` into its minute's row.
    fn record(&mut self, events: &[(AuditEvent, u64)], at: Timestamp) {
        let minute = audit_minute(at);
        for (event, count) in events {
            let count = (*count).min(MAX_COUNT);
            let rows = self.by_event.entry(minute).or_default();
            if let Some(row) = rows.get(event).and_then(|id| self.rows.get_mut(id)) {
                row.count = row.count.saturating_add(count).min(MAX_COUNT);
                // The last call's instant, as SQLite's upsert sets it (not the maximum).
                row.last_at = at;
                continue;
            }
            self.last_id += 1;
            let id = self.last_id;
            rows.insert(event.clone(), id);
            self.by_tenant.insert((event.tenant, minute, id));
            self.rows.insert(
                id,
                AuditRecord {
                    tenant: event.tenant,
                    actor: event.actor.clone(),
                    action: event.action.clone(),
                    target: event.target.clone(),
                    outcome: event.outcome,
                    client: event.client.clone(),
                    minute,
                    count,
                    first_at: at,
                    last_at: at,
                },
            );
        }
    }

    /// Deletes the rows of minutes before `before`; returns how many.
    fn prune(&mut self, before: Timestamp) -> u64 {
        let old: Vec<RowId> = self
            .rows
            .iter()
            .filter(|(_, r)| r.minute < before)
            .map(|(id, _)| *id)
            .collect();
        for id in &old {
            if let Some(row) = self.rows.remove(id) {
                self.by_tenant.remove(&(row.tenant, row.minute, *id));
            }
        }
        self.by_event.retain(|minute, _| *minute >= before);
        old.len() as u64
    }

    /// The newest rows of one tenant (or of unidentified callers), newest minute first,
    /// then newest row first.
    fn list(&self, tenant: Option<TenantId>, limit: usize) -> Vec<AuditRecord> {
        let start = (tenant, Timestamp(i64::MIN), RowId::MIN);
        let end = (tenant, Timestamp(i64::MAX), RowId::MAX);
        self.by_tenant
            .range(start..=end)
            .rev()
            .take(limit)
            .filter_map(|(_, _, id)| self.rows.get(id).cloned())
            .collect()
    }
}

#[async_trait]
impl AuditRepo for VolatileStore {
    async fn record(&self, events: &[(AuditEvent, u64)], at: Timestamp) -> StoreResult<()> {
        self.lock(&self.audit)?.record(events, at);
        Ok(())
    }

    async fn list(&self, tenant: Option<TenantId>, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        Ok(self.lock(&self.audit)?.list(tenant, limit))
    }

    async fn prune(&self, before: Timestamp) -> StoreResult<u64> {
        Ok(self.lock(&self.audit)?.prune(before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuditOutcome;

    fn event(tenant: Option<i64>) -> AuditEvent {
        AuditEvent {
            tenant: tenant.map(TenantId),
            actor: "key:1:ops".into(),
            action: "key.revoke".into(),
            target: "key:2".into(),
            outcome: AuditOutcome::Allowed,
            client: "10.0.0.9".into(),
        }
    }

    #[test]
    fn counts_saturate_and_last_at_is_the_last_call() {
        let mut log = AuditLog::default();
        log.record(&[(event(Some(1)), u64::MAX)], Timestamp(59_000));
        log.record(&[(event(Some(1)), 5)], Timestamp(1_000));
        let rows = log.list(Some(TenantId(1)), 10);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].count,
            i64::MAX as u64,
            "saturates at the column's maximum"
        );
        assert_eq!(
            (rows[0].minute, rows[0].first_at, rows[0].last_at),
            (Timestamp(0), Timestamp(59_000), Timestamp(1_000))
        );
        assert!(
            log.list(None, 10).is_empty(),
            "a tenant's row is not anonymous"
        );
        assert!(log.list(Some(TenantId(1)), 0).is_empty());
    }

    #[test]
    fn a_negative_instant_lands_in_the_minute_below() {
        let mut log = AuditLog::default();
        log.record(&[(event(None), 1), (event(None), 2)], Timestamp(-1));
        let rows = log.list(None, 10);
        assert_eq!(rows.len(), 1, "identical events of one call share a row");
        assert_eq!((rows[0].minute, rows[0].count), (Timestamp(-60_000), 3));
    }
}
