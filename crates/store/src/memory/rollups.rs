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

#[cfg(test)]
mod tests {
    use vigia_core::{RuleKind, Severity, DEFAULT_METRIC};

    use super::*;
    use crate::{AlertTransition, NewAlert, SensorReading, Store, WriteBatch};

    const MIN: i64 = 60_000;
    const HOUR: i64 = 3_600_000;
    /// An hour boundary well inside every backend's range.
    const T0: i64 = 1_699_999_200_000;

    fn reading(sensor: SensorId, ts: i64, value: f64) -> SensorReading {
        SensorReading {
            sensor,
            metric: DEFAULT_METRIC.into(),
            ts: Timestamp(ts),
            value,
        }
    }

    async fn write(store: &VolatileStore, readings: Vec<SensorReading>) {
        store
            .write_batch(WriteBatch {
                readings,
                alerts: Vec::new(),
            })
            .await
            .expect("write batch");
    }

    async fn setup(store: &VolatileStore, keys: &[&str]) -> (TenantId, Vec<SensorId>) {
        let tenant = store.catalog().default_tenant().await.expect("tenant").id;
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let sensors = store
            .catalog()
            .provision_sensors(tenant, &keys)
            .await
            .expect("provision");
        (tenant, sensors.iter().map(|s| s.id).collect())
    }

    fn query(resolution: Resolution, from: i64, to: i64) -> RollupQuery {
        RollupQuery {
            metric: DEFAULT_METRIC.into(),
            from: Timestamp(from),
            to: Timestamp(to),
            resolution,
            limit: 10_000,
        }
    }

    async fn series(
        store: &VolatileStore,
        tenant: TenantId,
        key: &str,
        q: &RollupQuery,
    ) -> Vec<RollupPoint> {
        RollupRepo::series(store, tenant, key, q)
            .await
            .expect("series")
    }

    #[tokio::test]
    async fn closed_ranges_roll_up_exactly_and_the_open_range_waits() {
        let store = VolatileStore::new();
        let (tenant, sensors) = setup(&store, &["a"]).await;
        // Minute 0: 1, 5, 3; minute 1: 10; minute 2 (open): 7.
        write(
            &store,
            vec![
                reading(sensors[0], T0 + 1_000, 1.0),
                reading(sensors[0], T0 + 20_000, 5.0),
                reading(sensors[0], T0 + 59_999, 3.0),
                reading(sensors[0], T0 + MIN, 10.0),
                reading(sensors[0], T0 + 2 * MIN + 5, 7.0),
            ],
        )
        .await;
        let report = store
            .roll_up(Timestamp(T0 + 2 * MIN + 30_000), 1_000)
            .await
            .expect("roll up");
        assert_eq!(report.watermark, Some(Timestamp(T0 + 2 * MIN)));
        let points = series(
            &store,
            tenant,
            "a",
            &query(Resolution::Minute, T0, T0 + HOUR),
        )
        .await;
        let summary: Vec<_> = points
            .iter()
            .map(|p| (p.ts.0 - T0, p.count, p.min, p.max, p.sum, p.last))
            .collect();
        assert_eq!(
            summary,
            [(0, 3, 1.0, 5.0, 9.0, 3.0), (MIN, 1, 10.0, 10.0, 10.0, 10.0)],
            "minute rollups of the closed range only"
        );
        // The hour holding `closed_before` is still open.
        assert!(
            series(&store, tenant, "a", &query(Resolution::Hour, T0, T0 + HOUR))
                .await
                .is_empty()
        );

        // Idempotent: the same run again changes nothing.
        let again = store
            .roll_up(Timestamp(T0 + 2 * MIN + 30_000), 1_000)
            .await
            .expect("roll up");
        assert_eq!(again.buckets_written, 0);
        assert_eq!(
            series(
                &store,
                tenant,
                "a",
                &query(Resolution::Minute, T0, T0 + HOUR)
            )
            .await,
            points
        );

        // The hour closes: one bucket of all five readings.
        store
            .roll_up(Timestamp(T0 + HOUR), 1_000)
            .await
            .expect("roll up");
        let hour = series(&store, tenant, "a", &query(Resolution::Hour, T0, T0 + HOUR)).await;
        assert_eq!(hour.len(), 1);
        assert_eq!((hour[0].count, hour[0].sum, hour[0].last), (5, 26.0, 7.0));
    }

    #[tokio::test]
    async fn late_readings_fix_their_buckets_and_tenants_stay_apart() {
        let store = VolatileStore::new();
        let (tenant, sensors) = setup(&store, &["a"]).await;
        write(&store, vec![reading(sensors[0], T0 + 10, 2.0)]).await;
        store
            .roll_up(Timestamp(T0 + HOUR), 1_000)
            .await
            .expect("roll up");
        // Behind both watermarks: marked dirty, recomputed by the next run.
        write(&store, vec![reading(sensors[0], T0 + 20, 4.0)]).await;
        let report = store
            .roll_up(Timestamp(T0 + HOUR), 1_000)
            .await
            .expect("roll up");
        assert_eq!(report.dirty_recomputed, 2, "one 1m and one 1h bucket");
        for resolution in Resolution::ALL {
            let points = series(&store, tenant, "a", &query(resolution, T0, T0 + HOUR)).await;
            assert_eq!(points.len(), 1, "{resolution:?}");
            assert_eq!(
                (points[0].count, points[0].sum, points[0].last),
                (2, 6.0, 4.0)
            );
        }
        let other = store
            .catalog()
            .create_tenant("other", "Other")
            .await
            .expect("tenant");
        assert!(matches!(
            RollupRepo::series(
                &store,
                other.id,
                "a",
                &query(Resolution::Minute, T0, T0 + HOUR)
            )
            .await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn the_row_budget_stops_at_a_bucket_boundary() {
        let store = VolatileStore::new();
        let (tenant, sensors) = setup(&store, &["a"]).await;
        let readings = (0..10)
            .map(|i| reading(sensors[0], T0 + i * MIN, 1.0))
            .collect();
        write(&store, readings).await;
        let first = store
            .roll_up(Timestamp(T0 + HOUR), 3)
            .await
            .expect("roll up");
        assert_eq!(first.watermark, Some(Timestamp(T0 + 3 * MIN)));
        while store
            .roll_up(Timestamp(T0 + HOUR), 3)
            .await
            .expect("roll up")
            .readings_scanned
            > 0
        {}
        let points = series(
            &store,
            tenant,
            "a",
            &query(Resolution::Minute, T0, T0 + HOUR),
        )
        .await;
        assert_eq!(points.len(), 10);
        assert!(points.iter().all(|p| p.count == 1));
    }

    #[tokio::test]
    async fn retention_deletes_what_is_older_in_chunks_and_keeps_alerted_sensors() {
        let store = VolatileStore::new();
        let (tenant, sensors) = setup(&store, &["a", "b"]).await;
        let readings = (0..5)
            .flat_map(|i| {
                [
                    reading(sensors[0], T0 + i * HOUR, 1.0),
                    reading(sensors[1], T0 + i * HOUR, 1.0),
                ]
            })
            .collect();
        write(&store, readings).await;
        store
            .roll_up(Timestamp(T0 + 5 * HOUR), 1_000)
            .await
            .expect("roll up");
        store
            .write_batch(WriteBatch {
                readings: Vec::new(),
                alerts: vec![AlertTransition::Open(NewAlert {
                    tenant,
                    sensor: sensors[1],
                    rule: "r".into(),
                    kind: RuleKind::Threshold,
                    severity: Severity::Critical,
                    metric: DEFAULT_METRIC.into(),
                    value: 1.0,
                    message: "m".into(),
                    opened_at: Timestamp(T0),
                })],
            })
            .await
            .expect("open alert");
        let before = Timestamp(T0 + 3 * HOUR);
        // Sensor a has 3 raw readings older than 3 h; b has an open alert.
        assert_eq!(
            store
                .delete_raw_before(RetentionScope::All, before, 2)
                .await
                .expect("delete"),
            2
        );
        assert_eq!(
            store
                .delete_raw_before(RetentionScope::All, before, 2)
                .await
                .expect("delete"),
            1
        );
        assert_eq!(
            store
                .delete_raw_before(RetentionScope::All, before, 2)
                .await
                .expect("delete"),
            0
        );
        // 1m and 1h rollups of a older than 3 h: 3 + 3.
        assert_eq!(
            store
                .delete_rollups_before(RetentionScope::Tenant(tenant), before, 100)
                .await
                .expect("delete"),
            6
        );
        let a = series(
            &store,
            tenant,
            "a",
            &query(Resolution::Hour, T0, T0 + 5 * HOUR),
        )
        .await;
        assert_eq!(
            a.iter().map(|p| p.ts.0 - T0).collect::<Vec<_>>(),
            [3 * HOUR, 4 * HOUR]
        );
        let b = series(
            &store,
            tenant,
            "b",
            &query(Resolution::Hour, T0, T0 + 5 * HOUR),
        )
        .await;
        assert_eq!(b.len(), 5, "a sensor with an open alert keeps its rollups");
        let raw = store
            .readings()
            .recent(Timestamp(0), 100)
            .await
            .expect("recent");
        assert_eq!(raw.iter().filter(|r| r.sensor == sensors[0]).count(), 2);
        assert_eq!(raw.iter().filter(|r| r.sensor == sensors[1]).count(), 5);
    }
}
