//! The outbox in memory: events appended under the same write lock as the change they
//! describe, and the consumers' cursors.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use vigia_core::{Alert, AlertChange, DomainEvent, Timestamp};

use super::VolatileStore;
use crate::{OutboxEntry, OutboxRepo, StoreResult};

/// Events by id, and where each consumer is.
#[derive(Default)]
pub(super) struct Outbox {
    events: BTreeMap<u64, OutboxEntry>,
    /// Ids are never reused, even when the newest events are pruned (as AUTOINCREMENT).
    last_id: u64,
    cursors: HashMap<String, u64>,
}

impl Outbox {
    /// Appends the event of an alert change (call with the change, under its lock).
    pub(super) fn alert_changed(&mut self, change: AlertChange, alert: &Alert, at: Timestamp) {
        self.last_id += 1;
        let event = DomainEvent::AlertChanged {
            tenant: alert.tenant,
            change,
            alert: alert.clone(),
        };
        self.events.insert(
            self.last_id,
            OutboxEntry {
                id: self.last_id,
                at,
                event,
            },
        );
    }
}

#[async_trait]
impl OutboxRepo for VolatileStore {
    async fn read_after(&self, after: u64, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
        let data = self.read()?;
        Ok(data
            .outbox
            .events
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn cursor(&self, consumer: &str) -> StoreResult<u64> {
        Ok(self
            .read()?
            .outbox
            .cursors
            .get(consumer)
            .copied()
            .unwrap_or(0))
    }

    async fn save_cursor(&self, consumer: &str, position: u64) -> StoreResult<()> {
        let mut data = self.write()?;
        let cursor = data.outbox.cursors.entry(consumer.to_string()).or_insert(0);
        *cursor = (*cursor).max(position);
        Ok(())
    }

    async fn prune(&self, before: Timestamp) -> StoreResult<u64> {
        let mut data = self.write()?;
        let events = &mut data.outbox.events;
        let old = events.len();
        events.retain(|_, e| e.at >= before);
        Ok((old - events.len()) as u64)
    }
}
