//! The in-process directory of provisioned sensors, shared by ingest (which may refuse
//! unknown sensors) and the workers (which need each sensor's id and rules). Changes made
//! through the API reach it as `Control::SensorChanged` over the fan-out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use vigia_core::{Sensor, TenantId};
use vigia_store::{Store, StoreResult};

/// Sensors by (tenant, key). Reads are lock-shared and cheap; writes are rare
/// (provisioning, `PUT /api/v1/sensors/{key}`).
#[derive(Default)]
pub struct SensorDirectory {
    by_key: RwLock<HashMap<(TenantId, String), Arc<Sensor>>>,
}

impl SensorDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads every sensor of every tenant from the store.
    pub async fn warm(&self, store: &dyn Store) -> StoreResult<usize> {
        let sensors = store.catalog().all_sensors().await?;
        let count = sensors.len();
        for sensor in sensors {
            self.insert(sensor);
        }
        Ok(count)
    }

    pub fn get(&self, tenant: TenantId, key: &str) -> Option<Arc<Sensor>> {
        // A poisoned lock only means a panic elsewhere mid-insert of a whole entry;
        // the map itself is still consistent, so keep serving it.
        let map = self.by_key.read().unwrap_or_else(|e| e.into_inner());
        map.get(&(tenant, key.to_string())).cloned()
    }

    pub fn contains(&self, tenant: TenantId, key: &str) -> bool {
        self.get(tenant, key).is_some()
    }

    /// Every sensor of every tenant.
    pub fn all(&self) -> Vec<Arc<Sensor>> {
        let map = self.by_key.read().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// Adds or replaces a sensor (after provisioning, or a `SensorChanged` control message).
    pub fn insert(&self, sensor: impl Into<Arc<Sensor>>) -> Arc<Sensor> {
        let sensor: Arc<Sensor> = sensor.into();
        let mut map = self.by_key.write().unwrap_or_else(|e| e.into_inner());
        map.insert((sensor.tenant, sensor.key.clone()), sensor.clone());
        sensor
    }

    /// Returns the sensors for `keys` (same order), creating the missing ones in the store.
    pub async fn resolve_or_provision(
        &self,
        store: &dyn Store,
        tenant: TenantId,
        keys: &[&str],
    ) -> StoreResult<Vec<Arc<Sensor>>> {
        let mut missing: Vec<String> = Vec::new();
        {
            let map = self.by_key.read().unwrap_or_else(|e| e.into_inner());
            for key in keys {
                if !map.contains_key(&(tenant, key.to_string()))
                    && !missing.iter().any(|m| m == key)
                {
                    missing.push(key.to_string());
                }
            }
        }
        if !missing.is_empty() {
            for sensor in store.catalog().provision_sensors(tenant, &missing).await? {
                self.insert(sensor);
            }
        }
        let map = self.by_key.read().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .map(|key| {
                map.get(&(tenant, key.to_string())).cloned().ok_or_else(|| {
                    vigia_store::StoreError::Internal(format!(
                        "sensor {key} missing right after provisioning"
                    ))
                })
            })
            .collect()
    }
}
