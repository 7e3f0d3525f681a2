//! The audit trail: records who did what, from where. Rare, important events (key
//! changes) are written at once; frequent ones (refused authentications) are counted in
//! memory per (tenant, client, actor, action, target, outcome) and flushed every second,
//! so a flood costs a hash-map increment per request and one upsert per distinct row.
//! The pending map is bounded; past it, new distinct rows are dropped and counted in
//! `vigia_audit_dropped_total` (the store's rows are per minute anyway).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;
use vigia_core::Timestamp;
use vigia_store::{AuditEvent, Store, StoreResult};

/// Most distinct rows waiting for the next flush.
const MAX_PENDING: usize = 10_000;

/// Counter: audit events dropped because too many distinct ones waited for a flush.
pub const AUDIT_DROPPED: &str = "vigia_audit_dropped_total";

/// Writes audit events to the store's audit log.
pub struct AuditTrail {
    store: Arc<dyn Store>,
    pending: Mutex<HashMap<AuditEvent, u64>>,
}

impl AuditTrail {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            store,
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// Writes one event now (for changes that must not wait, like key creation).
    pub async fn record_now(&self, event: AuditEvent) -> StoreResult<()> {
        self.store
            .audit()
            .record(&[(event, 1)], Timestamp::now())
            .await
    }

    /// Counts an event for the next flush; never blocks on the store.
    pub fn record(&self, event: AuditEvent) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let len = pending.len();
        match pending.get_mut(&event) {
            Some(count) => *count += 1,
            None if len < MAX_PENDING => {
                pending.insert(event, 1);
            }
            None => metrics::counter!(AUDIT_DROPPED).increment(1),
        }
    }

    /// Writes what was counted since the last flush.
    pub async fn flush(&self) -> StoreResult<()> {
        let batch: Vec<(AuditEvent, u64)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.store.audit().record(&batch, Timestamp::now()).await
    }

    /// Flushes every `every` until `stop` turns true, then once more.
    pub fn spawn_flusher(
        self: &Arc<Self>,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let trail = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                if let Err(e) = trail.flush().await {
                    warn!(error = %e, "could not write the audit log; retrying next tick");
                }
            }
            if let Err(e) = trail.flush().await {
                warn!(error = %e, "could not write the last audit events");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use vigia_store::{AuditOutcome, OpenContext};

    use super::*;

    fn refused(client: &str) -> AuditEvent {
        AuditEvent {
            tenant: None,
            actor: "anonymous".into(),
            action: "auth.refused".into(),
            target: "/api/v1/sensors".into(),
            outcome: AuditOutcome::Refused,
            client: client.into(),
        }
    }

    #[tokio::test]
    async fn a_flood_becomes_one_counted_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = vigia_store::open("sqlite", &OpenContext::new(dir.path()))
            .await
            .unwrap();
        let trail = AuditTrail::new(store.clone());
        for _ in 0..5_000 {
            trail.record(refused("10.1.1.1"));
        }
        trail.record(refused("10.1.1.2"));
        trail.flush().await.unwrap();
        trail.flush().await.unwrap();
        let rows = store.audit().list(None, 10).await.unwrap();
        let mut counts: Vec<(String, u64)> =
            rows.into_iter().map(|r| (r.client, r.count)).collect();
        counts.sort();
        assert_eq!(
            counts,
            [("10.1.1.1".to_string(), 5_000), ("10.1.1.2".to_string(), 1)]
        );
    }

    #[tokio::test]
    async fn pending_rows_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = vigia_store::open("sqlite", &OpenContext::new(dir.path()))
            .await
            .unwrap();
        let trail = AuditTrail::new(store);
        for i in 0..(MAX_PENDING + 500) {
            trail.record(refused(&format!("10.0.{}.{}", i / 256, i % 256)));
        }
        assert_eq!(trail.pending.lock().unwrap().len(), MAX_PENDING);
    }
}
