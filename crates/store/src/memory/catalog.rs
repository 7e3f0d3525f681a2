//! Tenants, API keys and sensors in memory, and the catalog port over them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use vigia_core::{
    AlertChange, ApiKeyId, ApiKeyInfo, ApiKeyRecord, Role, Sensor, SensorId, SensorKind,
    SensorSpec, Tenant, TenantId, Timestamp,
};

use super::{Data, VolatileStore};
use crate::{CatalogRepo, NewApiKey, SensorPut, SensorScope, StoreError, StoreResult};

/// Slug of the tenant that exists on every installation.
const DEFAULT_TENANT_SLUG: &str = "default";

/// Hands out ids from 1 up, like SQLite's AUTOINCREMENT: never reused, and a refused
/// insert takes none (it is counted only once the row goes in).
#[derive(Default)]
pub(super) struct IdCounter(i64);

impl IdCounter {
    pub(super) fn next(&mut self) -> i64 {
        self.0 += 1;
        self.0
    }
}

/// A stored key: the hash and who it belongs to, never the key itself.
struct KeyRow {
    tenant: TenantId,
    name: String,
    role: Role,
    hash: [u8; 32],
    created_at: Timestamp,
    /// A revoked key stays (it is still counted) but no longer authenticates.
    revoked_at: Option<Timestamp>,
}

impl KeyRow {
    fn live(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// The catalog tables, with the unique indexes SQLite has on them.
#[derive(Default)]
pub(super) struct Catalog {
    tenants: BTreeMap<TenantId, Tenant>,
    tenant_slugs: HashMap<String, TenantId>,
    tenant_ids: IdCounter,
    keys: BTreeMap<ApiKeyId, KeyRow>,
    /// Unique over every key, revoked ones included, as the SQLite column is.
    key_hashes: HashMap<[u8; 32], ApiKeyId>,
    key_ids: IdCounter,
    /// By id: every reading of a batch looks its sensor up here.
    sensors: HashMap<SensorId, Sensor>,
    /// Tenant → key → id, ordered, as the listings are; nested so a lookup by `&str`
    /// needs no owned key.
    sensor_keys: BTreeMap<TenantId, BTreeMap<String, SensorId>>,
    sensor_ids: IdCounter,
}

impl Catalog {
    fn tenant_by_slug(&self, slug: &str) -> Option<&Tenant> {
        self.tenant_slugs
            .get(slug)
            .and_then(|id| self.tenants.get(id))
    }

    fn create_tenant(&mut self, slug: &str, name: &str) -> StoreResult<Tenant> {
        if self.tenant_slugs.contains_key(slug) {
            return Err(StoreError::Conflict(format!(
                "tenant `{slug}` already exists"
            )));
        }
        let tenant = Tenant {
            id: TenantId(self.tenant_ids.next()),
            slug: slug.to_string(),
            name: name.to_string(),
        };
        self.tenant_slugs.insert(tenant.slug.clone(), tenant.id);
        self.tenants.insert(tenant.id, tenant.clone());
        Ok(tenant)
    }

    fn default_tenant(&mut self) -> StoreResult<Tenant> {
        match self.tenant_by_slug(DEFAULT_TENANT_SLUG) {
            Some(tenant) => Ok(tenant.clone()),
            None => self.create_tenant(DEFAULT_TENANT_SLUG, "Default"),
        }
    }

    /// `NotFound` unless the tenant exists, as SQLite checks before writing.
    pub(super) fn require_tenant(&self, tenant: TenantId) -> StoreResult<()> {
        if self.tenants.contains_key(&tenant) {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    fn insert_api_key(&mut self, key: &NewApiKey, now: Timestamp) -> StoreResult<ApiKeyInfo> {
        self.require_tenant(key.tenant)?;
        if self.key_hashes.contains_key(&key.hash) {
            return Err(StoreError::Conflict(
                "an API key with this hash already exists".into(),
            ));
        }
        let id = ApiKeyId(self.key_ids.next());
        self.key_hashes.insert(key.hash, id);
        self.keys.insert(
            id,
            KeyRow {
                tenant: key.tenant,
                name: key.name.clone(),
                role: key.role,
                hash: key.hash,
                created_at: now,
                revoked_at: None,
            },
        );
        Ok(ApiKeyInfo {
            id,
            name: key.name.clone(),
            role: key.role,
            created_at: now,
        })
    }

    fn find_api_key(&self, hash: &[u8; 32]) -> Option<ApiKeyRecord> {
        let id = *self.key_hashes.get(hash)?;
        let row = self.keys.get(&id).filter(|row| row.live())?;
        Some(ApiKeyRecord {
            id,
            tenant: row.tenant,
            name: row.name.clone(),
            role: row.role,
        })
    }

    fn list_api_keys(&self, tenant: TenantId) -> Vec<ApiKeyInfo> {
        self.keys
            .iter()
            .filter(|(_, row)| row.tenant == tenant && row.live())
            .map(|(&id, row)| ApiKeyInfo {
                id,
                name: row.name.clone(),
                role: row.role,
                created_at: row.created_at,
            })
            .collect()
    }

    fn revoke_api_key(
        &mut self,
        tenant: TenantId,
        id: ApiKeyId,
        at: Timestamp,
    ) -> StoreResult<[u8; 32]> {
        let row = self
            .keys
            .get_mut(&id)
            .filter(|row| row.tenant == tenant && row.live())
            .ok_or(StoreError::NotFound)?;
        row.revoked_at = Some(at);
        Ok(row.hash)
    }

    /// A sensor by id, whatever its tenant.
    pub(super) fn sensor(&self, id: SensorId) -> Option<&Sensor> {
        self.sensors.get(&id)
    }

    /// The tenant a sensor belongs to, if the sensor exists.
    pub(super) fn sensor_tenant(&self, id: SensorId) -> Option<TenantId> {
        self.sensor(id).map(|s| s.tenant)
    }

    /// A sensor by key within a tenant.
    pub(super) fn sensor_by_key(&self, tenant: TenantId, key: &str) -> Option<&Sensor> {
        self.sensor_keys
            .get(&tenant)
            .and_then(|keys| keys.get(key))
            .and_then(|id| self.sensors.get(id))
    }

    fn list_sensors(&self, tenant: TenantId, after: Option<&str>, limit: usize) -> Vec<Sensor> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, |key| Excluded(key.to_string()));
        self.sensor_keys
            .get(&tenant)
            .into_iter()
            .flat_map(|keys| keys.range((from.clone(), Unbounded)).map(|(_, id)| id))
            .take(limit)
            .filter_map(|id| self.sensors.get(id).cloned())
            .collect()
    }

    /// The ids of the tenant's sensors in `scope`; `None` for every sensor.
    pub(super) fn sensors_in(
        &self,
        tenant: TenantId,
        scope: &SensorScope,
    ) -> Option<BTreeSet<SensorId>> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        match scope {
            SensorScope::All => None,
            SensorScope::One(id) => Some(
                (self.sensor_tenant(*id) == Some(tenant))
                    .then_some(*id)
                    .into_iter()
                    .collect(),
            ),
            SensorScope::Keys { after, through } => {
                let from = after.clone().map_or(Unbounded, Excluded);
                Some(
                    self.sensor_keys
                        .get(&tenant)
                        .into_iter()
                        .flat_map(|keys| keys.range((from.clone(), Included(through.clone()))))
                        .map(|(_, id)| *id)
                        .collect(),
                )
            }
        }
    }

    fn all_sensors(&self) -> Vec<Sensor> {
        self.sensor_keys
            .values()
            .flat_map(|keys| keys.values())
            .filter_map(|id| self.sensors.get(id).cloned())
            .collect()
    }

    fn insert_sensor(&mut self, sensor: Sensor) {
        self.sensor_keys
            .entry(sensor.tenant)
            .or_default()
            .insert(sensor.key.clone(), sensor.id);
        self.sensors.insert(sensor.id, sensor);
    }

    /// Creates or replaces the writable fields; returns the sensor and whether it is new.
    fn put_sensor(
        &mut self,
        tenant: TenantId,
        key: &str,
        spec: &SensorSpec,
        now: Timestamp,
    ) -> StoreResult<(Sensor, bool)> {
        self.require_tenant(tenant)?;
        let existing = self
            .sensor_by_key(tenant, key)
            .map(|s| (s.id, s.created_at));
        let (id, created_at) = existing.unwrap_or_else(|| (SensorId(self.sensor_ids.next()), now));
        let sensor = Sensor {
            id,
            tenant,
            key: key.to_string(),
            name: spec.name.clone().unwrap_or_else(|| key.to_string()),
            kind: spec.kind,
            unit: spec.unit.clone(),
            rules: spec.rules.clone(),
            // SQLite stores a NaN as NULL; the caller's normalise() refuses one anyway.
            stock: spec.stock.filter(|s| !s.is_nan()),
            product: spec.product.clone(),
            created_at,
        };
        self.insert_sensor(sensor.clone());
        Ok((sensor, existing.is_none()))
    }

    /// Creates every missing key with defaults (name = key, generic, no rules); returns
    /// the sensors in the order of `keys`.
    fn provision_sensors(
        &mut self,
        tenant: TenantId,
        keys: &[String],
        now: Timestamp,
    ) -> StoreResult<Vec<Sensor>> {
        self.require_tenant(tenant)?;
        let mut sensors = Vec::with_capacity(keys.len());
        for key in keys {
            let sensor = match self.sensor_by_key(tenant, key) {
                Some(sensor) => sensor.clone(),
                None => {
                    let sensor = Sensor {
                        id: SensorId(self.sensor_ids.next()),
                        tenant,
                        key: key.clone(),
                        name: key.clone(),
                        kind: SensorKind::Generic,
                        unit: None,
                        rules: Vec::new(),
                        stock: None,
                        product: None,
                        created_at: now,
                    };
                    self.insert_sensor(sensor.clone());
                    sensor
                }
            };
            sensors.push(sensor);
        }
        Ok(sensors)
    }
}

#[async_trait]
impl CatalogRepo for VolatileStore {
    async fn default_tenant(&self) -> StoreResult<Tenant> {
        if let Some(tenant) = self.read()?.catalog.tenant_by_slug(DEFAULT_TENANT_SLUG) {
            return Ok(tenant.clone());
        }
        // Another caller may create it between the two locks; default_tenant() on the
        // write side checks again.
        self.write()?.catalog.default_tenant()
    }

    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>> {
        Ok(self.read()?.catalog.tenant_by_slug(slug).cloned())
    }

    async fn create_tenant(&self, slug: &str, name: &str) -> StoreResult<Tenant> {
        self.write()?.catalog.create_tenant(slug, name)
    }

    async fn count_api_keys(&self) -> StoreResult<u64> {
        Ok(self.read()?.catalog.keys.len() as u64)
    }

    async fn insert_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyInfo> {
        self.write()?.catalog.insert_api_key(key, Timestamp::now())
    }

    async fn find_api_key(&self, hash: [u8; 32]) -> StoreResult<Option<ApiKeyRecord>> {
        Ok(self.read()?.catalog.find_api_key(&hash))
    }

    async fn list_api_keys(&self, tenant: TenantId) -> StoreResult<Vec<ApiKeyInfo>> {
        Ok(self.read()?.catalog.list_api_keys(tenant))
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: Timestamp,
    ) -> StoreResult<[u8; 32]> {
        self.write()?.catalog.revoke_api_key(tenant, id, at)
    }

    async fn list_sensors(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Sensor>> {
        Ok(self.read()?.catalog.list_sensors(tenant, after, limit))
    }

    async fn all_sensors(&self) -> StoreResult<Vec<Sensor>> {
        Ok(self.read()?.catalog.all_sensors())
    }

    async fn get_sensor(&self, tenant: TenantId, key: &str) -> StoreResult<Option<Sensor>> {
        Ok(self.read()?.catalog.sensor_by_key(tenant, key).cloned())
    }

    async fn put_sensor(
        &self,
        tenant: TenantId,
        key: &str,
        spec: &SensorSpec,
        resolved_by: &str,
        at: Timestamp,
    ) -> StoreResult<SensorPut> {
        let mut guard = self.write()?;
        let Data {
            catalog,
            alerts,
            outbox,
            ..
        } = &mut *guard;
        // put_sensor fails (unknown tenant) before changing anything, and resolving
        // cannot fail, so the pair is atomic.
        let (sensor, created) = catalog.put_sensor(tenant, key, spec, at)?;
        let resolved = alerts.resolve_removed_rules(&sensor, resolved_by, at);
        for alert in &resolved {
            outbox.alert_changed(AlertChange::Resolved, alert, at);
        }
        Ok(SensorPut {
            sensor,
            created,
            resolved,
        })
    }

    async fn provision_sensors(
        &self,
        tenant: TenantId,
        keys: &[String],
    ) -> StoreResult<Vec<Sensor>> {
        if keys.is_empty() {
            self.check_open()?;
            return Ok(Vec::new());
        }
        self.write()?
            .catalog
            .provision_sensors(tenant, keys, Timestamp::now())
    }
}

#[cfg(test)]
mod tests {
    use vigia_core::{Rule, Severity};

    use super::*;

    #[test]
    fn put_sensor_keeps_id_and_creation_time() {
        let mut catalog = Catalog::default();
        let tenant = catalog.default_tenant().expect("tenant").id;
        let spec = SensorSpec {
            rules: vec![Rule::threshold(Severity::Warning, Some(0.0), None)],
            stock: Some(f64::NAN),
            ..SensorSpec::default()
        };
        let (first, created) = catalog
            .put_sensor(tenant, "CF-1", &spec, Timestamp(10))
            .expect("create");
        assert!(created);
        assert_eq!(
            first.stock, None,
            "a NaN stock is stored as none, as in SQLite"
        );
        let (second, created) = catalog
            .put_sensor(tenant, "CF-1", &SensorSpec::default(), Timestamp(20))
            .expect("update");
        assert!(!created);
        assert_eq!((second.id, second.created_at), (first.id, Timestamp(10)));
        assert!(second.rules.is_empty());
        assert_eq!(catalog.all_sensors(), [second]);
    }

    #[test]
    fn revoked_hashes_stay_taken() {
        let mut catalog = Catalog::default();
        let tenant = catalog.default_tenant().expect("tenant").id;
        let key = NewApiKey {
            tenant,
            name: "k".into(),
            role: Role::Operator,
            hash: [3; 32],
        };
        let info = catalog.insert_api_key(&key, Timestamp(1)).expect("insert");
        assert_eq!(
            catalog
                .revoke_api_key(tenant, info.id, Timestamp(2))
                .expect("revoke"),
            [3; 32]
        );
        assert!(catalog.find_api_key(&[3; 32]).is_none(), "revoked");
        assert!(matches!(
            catalog.insert_api_key(&key, Timestamp(3)),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(catalog.keys.len(), 1);
    }
}
