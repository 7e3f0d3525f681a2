//! The bus between the processes' parts: accepted readings on their way to the workers,
//! domain events on their way to whoever reacts to them. The [`Bus`] trait, its
//! backends (the embedded durable log, a volatile in-memory bus, Redis Streams in
//! [`redis`]), the registry that opens one from a URL ([`open`]) and typed helpers per
//! topic ([`readings`], [`events`]).
//!
//! Contract (the conformance suite checks it against every backend):
//! - messages are published on a [`Topic`]; topics are independent (their own
//!   consumers, lag and capacity);
//! - [`Bus::publish`] returns `Ok` only once the message is durable: it survives
//!   `kill -9` of the process (and power loss with [`Durability::Full`]); the volatile
//!   bus is the one exception, by design;
//! - delivery is at-least-once: a delivery not acked is handed out again after a
//!   restart or a [`Bus::nack`]; consumers must be idempotent;
//! - deliveries are settled through opaque [`DeliveryToken`]s that only the handle that
//!   handed them out understands;
//! - the bus is bounded by lag: past a topic's capacity (weight published and not acked)
//!   `publish` fails fast with [`BusError::Full`], so the bound holds even on a broker
//!   shared by several processes; it never blocks without bound nor grows memory;
//! - order is FIFO per publisher and topic on a healthy bus; after redelivery it may not
//!   be.

use std::time::Duration;

use async_trait::async_trait;

mod drain;
pub mod embedded;
pub mod events;
mod message;
pub mod metrics;
pub mod nats;
mod queue;
pub mod readings;
pub mod redis;
mod registry;
mod typed;
pub mod volatile;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use embedded::{EmbeddedBus, EmbeddedBusOptions};
pub use message::{
    Delivery, DeliveryToken, Local, Message, Topic, MAX_READINGS_PARTITIONS, TOPIC_COUNT,
};
pub use registry::{
    open, supported_schemes, validate_url, BusFactory, BusRegistry, BusUrl, OpenContext, OpenError,
};
pub use typed::Received;
pub use vigia_core::Durability;
pub use volatile::{VolatileBus, VolatileState};

/// Why a bus operation did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The topic's lag is at its capacity; the caller should retry after the hint.
    #[error("bus is full: {pending} waiting (capacity {capacity})")]
    Full {
        /// Weight published on the topic and not acked when the publish was refused.
        pending: u64,
        /// The most weight the topic holds.
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

/// A delivery's payload is not what its topic carries. The typed helpers reject such a
/// delivery to dead letters rather than hand it back forever.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable {topic} payload: {reason}")]
pub struct DecodeError {
    /// The topic the delivery came from.
    pub topic: Topic,
    /// What is wrong with the bytes.
    pub reason: String,
}

/// Per-topic capacity: the lag (weight published and not acked) past which `publish`
/// answers [`BusError::Full`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity([u64; TOPIC_COUNT]);

impl Capacity {
    /// Default for [`Topic::READINGS`]: one million readings.
    pub const DEFAULT_READINGS: u64 = 1_000_000;
    /// Default for [`Topic::EVENTS`]: events wait only while their consumers catch up.
    pub const DEFAULT_EVENTS: u64 = 100_000;

    /// The same capacity for every topic.
    pub fn uniform(capacity: u64) -> Self {
        Self([capacity; TOPIC_COUNT])
    }

    /// This capacity with `topic`'s set to `capacity`.
    pub fn with(mut self, topic: Topic, capacity: u64) -> Self {
        self.0[topic.index()] = capacity;
        self
    }

    /// This capacity with `total` readings shared out over the first `partitions`
    /// readings partitions (rounded up, at least 1 each): the bound on readings waiting
    /// holds for the whole family, and each partition refuses past its share.
    pub fn with_readings(mut self, total: u64, partitions: usize) -> Self {
        let partitions = partitions.clamp(1, MAX_READINGS_PARTITIONS);
        let share = total.div_ceil(partitions as u64).max(1);
        for topic in Topic::readings_partitions(partitions) {
            self.0[topic.index()] = share;
        }
        self
    }

    /// The capacity of `topic`.
    pub fn of(&self, topic: Topic) -> u64 {
        self.0[topic.index()]
    }
}

impl Default for Capacity {
    fn default() -> Self {
        Self::uniform(Self::DEFAULT_READINGS).with(Topic::EVENTS, Self::DEFAULT_EVENTS)
    }
}

/// A durable, bounded, topic-addressed queue between publishers (ingest, the store's
/// outbox) and consumers (the worker pool, event handlers); see the crate documentation
/// for the contract. Object safe: processes hold an `Arc<dyn Bus>` from [`open`].
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Makes the message durable on `topic`, then returns. Concurrent publishes may share
    /// one commit. Fails fast with `Full` when the topic's lag is at its capacity (a
    /// message heavier than the whole capacity is still let into an empty topic, so it is
    /// never refused forever).
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError>;

    /// Waits for at least one message on `topic` and returns deliveries weighing up to
    /// about `max_weight` (always at least one delivery, even if it alone is heavier).
    /// Returns `Closed` once the bus is closed and the topic has nothing left to deliver.
    async fn receive(&self, topic: Topic, max_weight: usize) -> Result<Vec<Delivery>, BusError>;

    /// Marks deliveries done: they are not delivered again. Tokens this handle did not
    /// hand out, or already settled, are ignored.
    async fn ack(&self, tokens: Vec<DeliveryToken>) -> Result<(), BusError>;

    /// Hands deliveries back for redelivery (e.g. the store was unavailable). Tokens this
    /// handle did not hand out, or already settled, are ignored.
    async fn nack(&self, tokens: Vec<DeliveryToken>) -> Result<(), BusError>;

    /// Settles a delivery that can never be processed (its payload cannot be decoded) by
    /// moving it to the bus's dead letters with `reason`, for a person to inspect,
    /// instead of redelivering it forever. Like `ack`, it leaves the lag.
    async fn reject(&self, token: DeliveryToken, reason: String) -> Result<(), BusError>;

    /// Weight published on `topic` and not yet acked or rejected (the queue depth metric,
    /// and what capacity is measured against).
    async fn lag(&self, topic: Topic) -> Result<u64, BusError>;

    /// Cheap check that the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<(), BusError>;

    /// Stops accepting publishes (they get `Closed`); receivers drain what is left.
    fn close(&self);
}
