//! Storage for Vigía: one port (trait) per aggregate, a [`Store`] that hands them out
//! (as InfluxDB IOx's `RepoCollection` does), the backends, and the registry that opens a
//! backend from a URL.
//!
//! Ports: [`CatalogRepo`] (tenants, keys, sensors), [`ReadingRepo`], [`AlertRepo`],
//! [`AuditRepo`], [`LeaseRepo`], [`OutboxRepo`] (domain events written in the same
//! transaction as the change they describe), [`RollupRepo`] (rollups and retention), [`RobotRepo`] (robots, their attempts,
//! modules and instances), [`ProductRepo`] and [`PriceRepo`] (products, their cold-chain
//! limits and their prices per kg), [`ExcursionRepo`] (each time a sensor left a rule's limits).
//! Writes that must be atomic across aggregates — readings, latest values and the alert
//! changes they cause — go through the unit of work, [`Store::write_batch`]. A new aggregate is a new port module, its conformance suite
//! and its tables; no existing trait grows.
//!
//! Backends: `sqlite` (embedded, the default), `postgres` (PostgreSQL 15+, for several
//! processes on one database; `postgresql` too), `mysql` (MariaDB 10.6+/MySQL, the same
//! role; `mariadb` too) and `volatile` (in memory, for tests and
//! experiments), opened by [`open`] from a URL. Nothing outside a backend and the
//! registry names a concrete backend type.
//!
//! Invariants every backend keeps (the conformance suites check them):
//! - readings are unique on (sensor, metric, ts): writing the same reading twice stores it once;
//! - at most one alert per (sensor, rule) is open or acked at any time;
//! - [`Store::write_batch`] is atomic: readings, latest values, alert changes and excursions land together or not at all;
//! - excursions are unique on (sensor, rule, start), and a write never moves one back (see [`excursions`]);
//! - every read that takes a tenant returns only that tenant's rows.

use async_trait::async_trait;
use vigia_core::{Alert, AlertChange};

pub mod alerts;
pub mod audit;
pub mod catalog;
pub mod dead_letters;
pub mod excursions;
pub mod leases;
pub mod memory;
pub mod mysql;
pub mod outbox;
pub mod postgres;
pub mod prices;
pub mod products;
pub mod readings;
pub mod registry;
pub mod robots;
pub mod rollups;
pub mod sqlite;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "conformance"))]
pub mod testkit;

pub use alerts::{AlertFilter, AlertRepo, AlertTransition, NewAlert};
pub use audit::{audit_minute, AuditEvent, AuditOutcome, AuditRecord, AuditRepo};
pub use catalog::{CatalogRepo, NewApiKey, SensorPut, SensorScope};
pub use dead_letters::{DeadLetter, DeadLetterRepo, DeadLetterSummary, NewDeadLetter};
pub use excursions::{Excursion, ExcursionQuery, ExcursionRepo, ExcursionUpsert};
pub use leases::LeaseRepo;
pub use outbox::{OutboxEntry, OutboxRepo};
pub use prices::{ImportCounts, NewPrice, Price, PriceFilter, PricePerKg, PriceRepo};
pub use products::{Product, ProductPut, ProductRepo};
pub use readings::{LatestReading, Point, ReadingQuery, ReadingRepo, SensorReading};
pub use registry::{open, supported_schemes, OpenContext, StoreFactory, StoreRegistry};
pub use robots::{
    AttemptEnd, Claim, Created, Heartbeat, Idempotency, NewRobot, RobotError, RobotFilter,
    RobotRepo, RobotResult,
};
pub use rollups::{Resolution, RetentionScope, RollupPoint, RollupQuery, RollupRepo, RollupReport};
pub use vigia_core::Durability;

/// Errors a store reports. Backends map their driver errors onto these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The addressed row does not exist (in this tenant).
    #[error("not found")]
    NotFound,
    /// The operation conflicts with the row's state (e.g. acking a resolved alert).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend cannot be reached or is shutting down; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store URL or options are wrong; the message says what to change.
    #[error("{0}")]
    Config(String),
    /// Anything else: a bug or a corrupt database.
    #[error("store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether retrying the same call later may succeed: only `Unavailable` (the backend
    /// is down, locked, full or closing). Every other error is the store's verdict on the
    /// call itself, and repeating it gets the same answer.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What a worker commits in one transaction (the unit of work).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub readings: Vec<SensorReading>,
    pub alerts: Vec<AlertTransition>,
    /// Excursions the readings opened, extended or closed, upserted by (sensor, rule, start).
    pub excursions: Vec<ExcursionUpsert>,
}

/// What a committed [`WriteBatch`] changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOutcome {
    /// Readings newly stored (duplicates of stored readings are not counted).
    pub readings_written: usize,
    /// Alerts that really changed, in order (an `Open` that found one already open is absent).
    pub alerts: Vec<(AlertChange, Alert)>,
}

/// A storage backend: hands out one port per aggregate, plus the unit of work.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn catalog(&self) -> &dyn CatalogRepo;
    fn readings(&self) -> &dyn ReadingRepo;
    fn alerts(&self) -> &dyn AlertRepo;
    fn audit(&self) -> &dyn AuditRepo;
    fn leases(&self) -> &dyn LeaseRepo;
    fn outbox(&self) -> &dyn OutboxRepo;
    fn rollups(&self) -> &dyn RollupRepo;
    fn dead_letters(&self) -> &dyn DeadLetterRepo;
    fn robots(&self) -> &dyn RobotRepo;
    fn products(&self) -> &dyn ProductRepo;
    fn prices(&self) -> &dyn PriceRepo;
    fn excursions(&self) -> &dyn ExcursionRepo;

    /// Commits readings, latest values, alert transitions and excursions atomically.
    /// Idempotent for readings and excursions.
    async fn write_batch(&self, batch: WriteBatch) -> StoreResult<WriteOutcome>;

    /// Cheap round trip proving the backend answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Routine upkeep the backend needs (SQLite: checkpoint and truncate the WAL, drop
    /// long-expired leases); returns a one-line summary. Run by the scheduler.
    async fn housekeep(&self) -> StoreResult<String>;

    /// Finishes queued writes and releases the backend; later calls fail with
    /// `Unavailable`. Idempotent.
    async fn close(&self);
}
