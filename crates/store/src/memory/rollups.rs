//! Rollups and retention in memory: the [`RollupRepo`] semantics the SQL backends follow
//! (see `crate::rollups` for the design: a watermark per resolution, dirty buckets marked
//! by late readings in their own write).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use vigia_core::{SensorId, TenantId, Timestamp};

use super::readings::{MetricId, Readings};
use super::VolatileStore;
use crate::{
    Resolution, RetentionScope, RollupPoint, RollupQuery, RollupRepo, RollupReport, StoreError,
    StoreResult,
};

/// Sensor first, as the SQL tables: one sensor's range is one contiguous scan.
type RollupKey = (Resolution, SensorId, MetricId, Timestamp);

/// The rollup tables, the dirty buckets and the watermarks.
#[derive(Default)]
pub(super) struct Rollups {
    rows: BTreeMap<RollupKey, RollupPoint>,
    dirty: BTreeSet<RollupKey>,
    watermarks: HashMap<Resolution, Timestamp>,
}

impl Rollups {
    /// Called by the unit of work for every newly stored reading: a reading behind a
    /// watermark marks its bucket of that resolution dirty (no rollup is touched here).
    pub(super) fn reading_stored(&mut self, sensor: SensorId, metric: MetricId, ts: Timestamp) {
        for resolution in Resolution::ALL {
            if self.watermarks.get(&resolution).is_some_and(|&w| ts < w) {
                self.dirty
                    .insert((resolution, sensor, metric, resolution.bucket_of(ts)));
            }
        }
    }

    fn roll_up(
        &mut self,
        readings: &Readings,
        closed_before: Timestamp,
        max_rows: usize,
    ) -> RollupReport {
        let mut report = RollupReport::default();
        for resolution in Resolution::ALL {
            // Only whole buckets are closed: the bucket holding `closed_before` waits.
            let end = resolution.bucket_of(closed_before);
            let start = match self.watermarks.get(&resolution) {
                Some(&w) => w,
                None => match readings.rows.keys().next() {
                    Some(&(ts, _, _)) => resolution.bucket_of(ts),
                    None => end,
                },
            };
            let mut watermark = end.max(start);
            let mut fresh: BTreeMap<RollupKey, RollupPoint> = BTreeMap::new();
            let mut scanned = 0_u64;
            if start < end {
                let from = (start, SensorId(i64::MIN), MetricId::MIN);
                let to = (end, SensorId(i64::MIN), MetricId::MIN);
                for (&(ts, sensor, metric), &value) in readings.rows.range(from..to) {
                    let bucket = resolution.bucket_of(ts);
                    // Past the row budget, stop at the next bucket boundary so every
                    // bucket behind the watermark is complete.
                    if scanned >= max_rows as u64
                        && fresh.keys().next_back().is_some_and(|k| k.3 < bucket)
                    {
                        watermark = bucket;
                        break;
                    }
                    scanned += 1;
                    add(&mut fresh, (resolution, sensor, metric, bucket), value);
                }
            }
            report.readings_scanned += scanned;
            report.buckets_written += fresh.len() as u64;
            // Replace, not add: a re-run over the same range changes nothing.
            self.rows.extend(fresh);
            self.watermarks.insert(resolution, watermark);
            if resolution == Resolution::Minute {
                report.watermark = Some(watermark);
            }
        }
        for key @ (resolution, sensor, metric, bucket) in std::mem::take(&mut self.dirty) {
            let mut fresh = BTreeMap::new();
            let from = (bucket, SensorId(i64::MIN), MetricId::MIN);
            let to = (
                Timestamp(bucket.0 + resolution.millis()),
                SensorId(i64::MIN),
                MetricId::MIN,
            );
            for (&(_, s, m), &value) in readings.rows.range(from..to) {
                if s == sensor && m == metric {
                    add(&mut fresh, key, value);
                }
            }
            match fresh.remove(&key) {
                Some(point) => self.rows.insert(key, point),
                // Its raw readings are gone (retention): keep what was rolled up.
                None => None,
            };
            report.dirty_recomputed += 1;
        }
        report
    }

    fn series(&self, sensor: SensorId, metric: MetricId, query: &RollupQuery) -> Vec<RollupPoint> {
        if query.from > query.to {
            return Vec::new();
        }
        let r = query.resolution;
        self.rows
            .range((r, sensor, metric, query.from)..=(r, sensor, metric, query.to))
            .take(query.limit)
            .map(|(_, point)| *point)
            .collect()
    }
}

/// Folds one reading into its bucket; readings come oldest first (one per instant), so
/// the last one folded is the newest.
fn add(buckets: &mut BTreeMap<RollupKey, RollupPoint>, key: RollupKey, value: f64) {
    buckets
        .entry(key)
        .and_modify(|p| {
            p.count += 1;
            p.min = p.min.min(value);
            p.max = p.max.max(value);
            p.sum += value;
            p.last = value;
        })
        .or_insert(RollupPoint {
            ts: key.3,
            count: 1,
            min: value,
            max: value,
            sum: value,
            last: value,
        });
}

/// Whether retention may delete rows of this sensor.
fn in_scope(
    scope: RetentionScope,
    tenant_of: impl Fn(SensorId) -> Option<TenantId>,
    sensor: SensorId,
) -> bool {
    match scope {
        RetentionScope::All => true,
        RetentionScope::Tenant(t) => tenant_of(sensor) == Some(t),
    }
}

#[async_trait]
impl RollupRepo for VolatileStore {
    async fn roll_up(
        &self,
        closed_before: Timestamp,
        max_rows: usize,
    ) -> StoreResult<RollupReport> {
        let mut data = self.write()?;
        let super::Data {
            readings, rollups, ..
        } = &mut *data;
        Ok(rollups.roll_up(readings, closed_before, max_rows))
    }

    async fn series(
        &self,
        tenant: TenantId,
        sensor_key: &str,
        query: &RollupQuery,
    ) -> StoreResult<Vec<RollupPoint>> {
        let data = self.read()?;
        let sensor = data
            .catalog
            .sensor_by_key(tenant, sensor_key)
            .ok_or(StoreError::NotFound)?;
        Ok(match data.readings.metric_id(&query.metric) {
            Some(metric) => data.rollups.series(sensor.id, metric, query),
            None => Vec::new(),
        })
    }

    async fn delete_raw_before(
        &self,
        scope: RetentionScope,
        before: Timestamp,
        chunk: usize,
    ) -> StoreResult<u64> {
        let mut data = self.write()?;
        let doomed: Vec<_> = data
            .readings
            .rows
            .range(..(before, SensorId(i64::MIN), MetricId::MIN))
            .map(|(key, _)| *key)
            .filter(|&(_, sensor, _)| {
                in_scope(scope, |s| data.catalog.sensor_tenant(s), sensor)
                    && !data.alerts.has_unresolved(sensor)
            })
            .take(chunk)
            .collect();
        for key in &doomed {
            data.readings.rows.remove(key);
        }
        Ok(doomed.len() as u64)
    }

    async fn delete_rollups_before(
        &self,
        scope: RetentionScope,
        before: Timestamp,
        chunk: usize,
    ) -> StoreResult<u64> {
        let mut data = self.write()?;
        let doomed: Vec<RollupKey> = data
            .rollups
            .rows
            .keys()
            .copied()
            .filter(|&(_, sensor, _, bucket)| {
                bucket < before
                    && in_scope(scope, |s| data.catalog.sensor_tenant(s), sensor)
                    && !data.alerts.has_unresolved(sensor)
            })
            .take(chunk)
            .collect();
        for key in &doomed {
            data.rollups.rows.remove(key);
        }
        Ok(doomed.len() as u64)
    }
}
