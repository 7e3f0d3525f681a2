//! The outbox port: domain events (an alert opened, acknowledged, resolved) appended in
//! the SAME transaction as the change they describe, so no change is committed without
//! its event and no event exists for a change that was rolled back. Consumers read in
//! id order after a cursor they persist here by name (at-least-once: save the cursor
//! after handling). Old events are pruned by age (retention); a consumer that falls
//! further behind than the retention misses them, as with any log.
//!
//! Every store backend writes it; the events topic of a broker bus (scale-out) and the
//! notification dispatcher (cold chain) read from it.

use async_trait::async_trait;
use vigia_core::{DomainEvent, Timestamp};

use crate::StoreResult;

/// One event of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Increasing, without reuse: the consumers' cursor.
    pub id: u64,
    /// When it was committed.
    pub at: Timestamp,
    pub event: DomainEvent,
}

/// The outbox: read after a cursor, persisted cursors, retention.
#[async_trait]
pub trait OutboxRepo: Send + Sync {
    /// Up to `limit` events with an id above `after`, oldest first.
    async fn read_after(&self, after: u64, limit: usize) -> StoreResult<Vec<OutboxEntry>>;
    /// Where `consumer` is (0 for a new consumer).
    async fn cursor(&self, consumer: &str) -> StoreResult<u64>;
    /// Moves `consumer`'s cursor to `position`; a cursor never moves back.
    async fn save_cursor(&self, consumer: &str, position: u64) -> StoreResult<()>;
    /// Deletes events committed before `before`; returns how many.
    async fn prune(&self, before: Timestamp) -> StoreResult<u64>;
}
