//! Storage for Vigía: the [`Store`] trait every backend implements, and the embedded
//! SQLite backend.
//!
//! The store owns tenants, API key hashes, sensors, readings, the latest reading per
//! sensor and metric, and alerts. It is *not* where rules are evaluated or where
//! readings wait to be processed (that is `vigia-rules` and `vigia-bus`).
//!
//! Invariants every backend keeps (the conformance suite checks them):
//! - readings are unique on (sensor, metric, ts): writing the same reading twice stores it once;
//! - at most one alert per (sensor, rule) is open or acked at any time;
//! - [`Store::write_batch`] is atomic: readings, latest values and alert changes land together or not at all;
//! - every read that takes a tenant returns only that tenant's rows.

use async_trait::async_trait;
use vigia_core::{
    Alert, AlertChange, AlertId, AlertState, ApiKeyId, ApiKeyRecord, RuleKind, Sensor, SensorId,
    SensorSpec, Severity, Tenant, TenantId, Timestamp,
};

pub mod sqlite;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use sqlite::{SqliteStore, SqliteStoreOptions};

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
    /// Anything else: a bug or a corrupt database.
    #[error("store error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

pub use vigia_core::Durability;

/// A reading whose sensor has been resolved to its id.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorReading {
    pub sensor: SensorId,
    pub metric: String,
    pub ts: Timestamp,
    pub value: f64,
}

/// An alert the rule engine wants opened.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub tenant: TenantId,
    pub sensor: SensorId,
    pub rule: String,
    pub kind: RuleKind,
    pub severity: Severity,
    pub metric: String,
    pub value: f64,
    pub message: String,
    pub opened_at: Timestamp,
}

/// A change to alerts decided by the rule engine.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertTransition {
    /// Open an alert unless one is already open or acked for (sensor, rule).
    Open(NewAlert),
    /// Resolve the open or acked alert for (sensor, rule), if any, as `auto`.
    Resolve {
        tenant: TenantId,
        sensor: SensorId,
        rule: String,
        at: Timestamp,
    },
}

/// What a worker commits in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub readings: Vec<SensorReading>,
    pub alerts: Vec<AlertTransition>,
}

/// What a committed [`WriteBatch`] changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOutcome {
    /// Readings newly stored (duplicates of stored readings are not counted).
    pub readings_written: usize,
    /// Alerts that really changed, in order (an `Open` that found one already open is absent).
    pub alerts: Vec<(AlertChange, Alert)>,
}

/// The newest reading of one metric of one sensor.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LatestReading {
    pub sensor: SensorId,
    pub metric: String,
    pub ts: Timestamp,
    pub value: f64,
}

/// One point of a reading series (a bucket average when a step is asked for).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Point {
    pub ts: Timestamp,
    pub value: f64,
}

/// A time-range query over one sensor's metric.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingQuery {
    pub metric: String,
    /// Inclusive.
    pub from: Timestamp,
    /// Inclusive.
    pub to: Timestamp,
    /// Most points returned, oldest first.
    pub limit: usize,
    /// Average into buckets of this many milliseconds (bucket start as `ts`).
    pub step_ms: Option<i64>,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFilter {
    pub state: Option<AlertState>,
    pub sensor: Option<String>,
    /// Newest first; at most this many.
    pub limit: usize,
}

/// The storage contract. See the crate docs for the invariants.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip proving the backend answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// The `default` tenant, created on first call.
    async fn default_tenant(&self) -> StoreResult<Tenant>;
    /// The tenant with this slug, if any.
    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>>;
    /// Creates a tenant; `Conflict` if the slug exists.
    async fn create_tenant(&self, slug: &str, name: &str) -> StoreResult<Tenant>;

    /// Number of API keys across all tenants (bootstrap runs only when zero).
    async fn count_api_keys(&self) -> StoreResult<u64>;
    /// Stores a key's SHA-256 hash; the key itself is never given to the store.
    async fn insert_api_key(
        &self,
        tenant: TenantId,
        name: &str,
        hash: [u8; 32],
    ) -> StoreResult<ApiKeyId>;
    /// Looks a key up by its hash.
    async fn find_api_key(&self, hash: [u8; 32]) -> StoreResult<Option<ApiKeyRecord>>;

    /// Sensors of one tenant, ordered by key.
    async fn list_sensors(&self, tenant: TenantId) -> StoreResult<Vec<Sensor>>;
    /// Every sensor of every tenant (for warming worker caches).
    async fn all_sensors(&self) -> StoreResult<Vec<Sensor>>;
    async fn get_sensor(&self, tenant: TenantId, key: &str) -> StoreResult<Option<Sensor>>;
    /// Creates or replaces a sensor's writable fields; returns it and whether it was created.
    /// `spec` has been normalised by the caller.
    async fn put_sensor(
        &self,
        tenant: TenantId,
        key: &str,
        spec: &SensorSpec,
    ) -> StoreResult<(Sensor, bool)>;
    /// Creates every missing key with default settings; returns all of them (existing ones unchanged),
    /// in the order given.
    async fn provision_sensors(
        &self,
        tenant: TenantId,
        keys: &[String],
    ) -> StoreResult<Vec<Sensor>>;

    /// Commits readings, latest values and alert transitions atomically. Idempotent for readings.
    async fn write_batch(&self, batch: WriteBatch) -> StoreResult<WriteOutcome>;

    /// A series of one sensor (by key, within the tenant); `NotFound` for an unknown sensor.
    async fn readings(
        &self,
        tenant: TenantId,
        sensor_key: &str,
        query: &ReadingQuery,
    ) -> StoreResult<Vec<Point>>;
    /// Newest reading per (sensor, metric) of the tenant.
    async fn latest_readings(&self, tenant: TenantId) -> StoreResult<Vec<LatestReading>>;
    /// Newest reading per (sensor, metric) across tenants (for rebuilding rule state).
    async fn all_latest_readings(&self) -> StoreResult<Vec<LatestReading>>;
    /// Readings with event time at or after `since`, across tenants, oldest first; when
    /// there are more than `limit`, the newest `limit` of them (for rebuilding rate
    /// windows after a restart).
    async fn recent_readings(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<SensorReading>>;

    async fn alerts(&self, tenant: TenantId, filter: &AlertFilter) -> StoreResult<Vec<Alert>>;
    async fn get_alert(&self, tenant: TenantId, id: AlertId) -> StoreResult<Alert>;
    /// Open → acked. Acking an acked alert returns it unchanged; a resolved one is `Conflict`.
    async fn ack_alert(
        &self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert>;
    /// Open or acked → resolved. Resolving a resolved alert returns it unchanged.
    async fn resolve_alert(
        &self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert>;
    /// Open and acked alerts across tenants (for rebuilding rule state).
    async fn unresolved_alerts(&self) -> StoreResult<Vec<Alert>>;
}
