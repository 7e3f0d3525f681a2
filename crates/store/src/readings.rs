//! The readings port: series, latest values and the recent history rule state is
//! rebuilt from. Readings are written only through the unit of work
//! ([`crate::Store::write_batch`]), with their alert changes.

use async_trait::async_trait;
use vigia_core::{SensorId, TenantId, Timestamp};

use crate::{SensorScope, StoreResult};

/// A reading whose sensor has been resolved to its id.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorReading {
    pub sensor: SensorId,
    pub metric: String,
    pub ts: Timestamp,
    pub value: f64,
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

/// Reading series and latest values.
#[async_trait]
pub trait ReadingRepo: Send + Sync {
    /// A series of one sensor (by key, within the tenant); `NotFound` for an unknown sensor.
    async fn series(
        &self,
        tenant: TenantId,
        sensor_key: &str,
        query: &ReadingQuery,
    ) -> StoreResult<Vec<Point>>;
    /// Newest reading per (sensor, metric) of the tenant's sensors in `scope`, ordered by
    /// sensor id and metric.
    async fn latest(
        &self,
        tenant: TenantId,
        scope: &SensorScope,
    ) -> StoreResult<Vec<LatestReading>>;
    /// Newest reading per (sensor, metric) across tenants (for rebuilding rule state).
    async fn all_latest(&self) -> StoreResult<Vec<LatestReading>>;
    /// Readings with event time at or after `since`, across tenants, oldest first; when
    /// there are more than `limit`, the newest `limit` of them (for rebuilding rate
    /// windows after a restart).
    async fn recent(&self, since: Timestamp, limit: usize) -> StoreResult<Vec<SensorReading>>;
}
