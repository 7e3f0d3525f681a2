//! The catalog port: tenants, API keys and sensors — what a reading or a request is
//! resolved against.

use async_trait::async_trait;
use vigia_core::{
    Alert, ApiKeyId, ApiKeyInfo, ApiKeyRecord, Role, Sensor, SensorId, SensorSpec, Tenant,
    TenantId, Timestamp,
};

use crate::StoreResult;

/// What [`CatalogRepo::put_sensor`] did, in its one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorPut {
    /// The sensor as stored.
    pub sensor: Sensor,
    /// Whether the call created it.
    pub created: bool,
    /// Unresolved alerts of rules the new spec no longer has, now resolved: no reading
    /// could resolve them any more.
    pub resolved: Vec<Alert>,
}

/// A new API key to store: only its hash reaches the store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApiKey {
    pub tenant: TenantId,
    pub name: String,
    pub role: Role,
    pub hash: [u8; 32],
}

/// Tenants, API keys and sensors.
#[async_trait]
pub trait CatalogRepo: Send + Sync {
    /// The `default` tenant, created on first call.
    async fn default_tenant(&self) -> StoreResult<Tenant>;
    /// The tenant with this slug, if any.
    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>>;
    /// Creates a tenant; `Conflict` if the slug exists.
    async fn create_tenant(&self, slug: &str, name: &str) -> StoreResult<Tenant>;

    /// Number of API keys across all tenants, revoked ones included (bootstrap runs only
    /// when zero, so revoking the last key never re-opens the bootstrap).
    async fn count_api_keys(&self) -> StoreResult<u64>;
    /// Stores a key's SHA-256 hash; `Conflict` if the hash exists.
    async fn insert_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyInfo>;
    /// Looks a live (not revoked) key up by its hash.
    async fn find_api_key(&self, hash: [u8; 32]) -> StoreResult<Option<ApiKeyRecord>>;
    /// The tenant's live keys, oldest first.
    async fn list_api_keys(&self, tenant: TenantId) -> StoreResult<Vec<ApiKeyInfo>>;
    /// Revokes a live key of the tenant; `NotFound` for an unknown or already revoked one.
    /// Returns the hash, so caches holding it can drop it.
    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: Timestamp,
    ) -> StoreResult<[u8; 32]>;

    /// Sensors of one tenant ordered by key: at most `limit`, with keys after `after`
    /// (keyset paging: a page never repeats or skips a sensor, whatever is added meanwhile).
    async fn list_sensors(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Sensor>>;
    /// Every sensor of every tenant (for warming worker caches).
    async fn all_sensors(&self) -> StoreResult<Vec<Sensor>>;
    async fn get_sensor(&self, tenant: TenantId, key: &str) -> StoreResult<Option<Sensor>>;
    /// Creates or replaces a sensor's writable fields and resolves, as `resolved_by`, the
    /// unresolved alerts of rules the spec no longer has — all in one transaction.
    /// `spec` has been normalised by the caller.
    async fn put_sensor(
        &self,
        tenant: TenantId,
        key: &str,
        spec: &SensorSpec,
        resolved_by: &str,
        at: Timestamp,
    ) -> StoreResult<SensorPut>;
    /// Creates every missing key with default settings; returns all of them (existing
    /// ones unchanged), in the order given.
    async fn provision_sensors(
        &self,
        tenant: TenantId,
        keys: &[String],
    ) -> StoreResult<Vec<Sensor>>;
}

/// Which of a tenant's sensors a per-sensor read covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SensorScope {
    /// Every sensor of the tenant.
    All,
    /// One sensor (which must belong to the tenant, else nothing).
    One(SensorId),
    /// Sensors whose key is after `after` (all when `None`) and at most `through`: one page
    /// of [`CatalogRepo::list_sensors`], read with one indexed range scan.
    Keys {
        after: Option<String>,
        through: String,
    },
}
