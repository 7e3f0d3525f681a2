//! The bus between ingest and the worker pool: the [`Bus`] trait and the embedded
//! durable backend.
//!
//! Contract (the conformance suite checks it against every backend):
//! - [`Bus::publish`] returns `Ok` only once the batch is durable: it survives `kill -9`
//!   of the process (and power loss with [`Durability::Full`]);
//! - delivery is at-least-once: a batch received but not acked is delivered again after
//!   a restart or a [`Bus::nack`]; consumers must be idempotent;
//! - the bus is bounded: past its capacity `publish` fails fast with [`BusError::Full`],
//!   it never blocks without bound nor grows memory without bound;
//! - order is FIFO per publisher on a healthy bus; after redelivery it may not be.

use std::time::Duration;

use async_trait::async_trait;
use vigia_core::IngestBatch;

pub mod embedded;
pub mod metrics;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use embedded::{EmbeddedBus, EmbeddedBusOptions};

/// Identifies one published batch within its bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub u64);

/// A batch handed to a consumer; ack it once its effects are committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// What to pass to [`Bus::ack`] or [`Bus::nack`]; meaningful only to the bus
    /// instance that handed it out.
    pub id: DeliveryId,
    /// The batch exactly as it was published.
    pub batch: IngestBatch,
}

/// Why a bus operation did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Too many readings are waiting; the caller should retry after the hint.
    #[error("bus is full: {pending} readings waiting (capacity {capacity})")]
    Full {
        /// Readings waiting (published, not acked) when the publish was refused.
        pending: u64,
        /// The most readings the bus holds.
        capacity: u64,
        /// When trying again is likely to succeed (from the observed drain rate).
        retry_after: Duration,
    },
    /// The bus was closed (shutting down) and, for `receive`, is drained.
    #[error("bus is closed")]
    Closed,
    /// The backend failed (disk, connection); the operation did not take effect.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

pub use vigia_core::Durability;

/// The durable, bounded queue between ingest (publishers) and the worker pool
/// (receivers); see the crate documentation for the contract.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Makes the batch durable, then returns. Many concurrent publishes share one commit.
    async fn publish(&self, batch: IngestBatch) -> Result<(), BusError>;

    /// Waits for at least one delivery and returns deliveries holding up to about
    /// `max_readings` readings (always at least one delivery, even if it alone is larger).
    /// Returns `Closed` once the bus is closed and nothing is left to deliver.
    async fn receive(&self, max_readings: usize) -> Result<Vec<Delivery>, BusError>;

    /// Marks deliveries done; they will not be delivered again.
    async fn ack(&self, ids: &[DeliveryId]) -> Result<(), BusError>;

    /// Hands deliveries back for redelivery (e.g. the store was unavailable).
    async fn nack(&self, ids: &[DeliveryId]) -> Result<(), BusError>;

    /// Readings published and not yet acked (the queue depth metric).
    fn depth(&self) -> u64;

    /// Cheap check that the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<(), BusError>;

    /// Stops accepting publishes (they get `Closed`); receivers drain what is left.
    fn close(&self);
}
