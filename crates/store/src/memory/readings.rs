//! Readings and latest values in memory, and the readings port over them.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use vigia_core::{SensorId, TenantId, Timestamp};

use super::VolatileStore;
use crate::{
    LatestReading, Point, ReadingQuery, ReadingRepo, SensorReading, SensorScope, StoreError,
    StoreResult,
};

/// A metric name's index in [`Readings::metric_names`], assigned in first-seen order like
/// SQLite's interned metric ids, so readings of one instant sort the same way.
pub(super) type MetricId = usize;

/// The readings key: time first (see the module docs of `memory`).
pub(super) type ReadingKey = (Timestamp, SensorId, MetricId);

/// The readings table, the latest value per (sensor, metric), and interned metric names
/// (a key holds a small integer, not a string).
#[derive(Default)]
pub(super) struct Readings {
    metric_ids: HashMap<String, MetricId>,
    metric_names: Vec<String>,
    pub(super) rows: BTreeMap<ReadingKey, f64>,
    latest: BTreeMap<(SensorId, MetricId), (Timestamp, f64)>,
}

impl Readings {
    /// The interned id of a metric name, if any reading used it.
    pub(super) fn metric_id(&self, metric: &str) -> Option<MetricId> {
        self.metric_ids.get(metric).copied()
    }

    fn intern(&mut self, metric: &str) -> MetricId {
        if let Some(&id) = self.metric_ids.get(metric) {
            return id;
        }
        let id = self.metric_names.len();
        self.metric_names.push(metric.to_string());
        self.metric_ids.insert(metric.to_string(), id);
        id
    }

    /// Stores a reading unless one of (ts, sensor, metric) is stored already (the first
    /// value stays, as with SQLite's `INSERT OR IGNORE`); returns whether it was new.
    /// The caller has checked the sensor exists and the value is finite.
    pub(super) fn insert(&mut self, reading: &SensorReading) -> bool {
        let metric = self.intern(&reading.metric);
        let key = (reading.ts, reading.sensor, metric);
        if self.rows.contains_key(&key) {
            return false;
        }
        self.rows.insert(key, reading.value);
        // The latest value is the newest *stored* reading: strictly newer only, so at an
        // equal instant the first stored value stays, as in the readings themselves.
        let slot = self
            .latest
            .entry((reading.sensor, metric))
            .or_insert((reading.ts, reading.value));
        if reading.ts > slot.0 {
            *slot = (reading.ts, reading.value);
        }
        true
    }

    /// Every sensor's readings with `from <= ts <= to`, in key order.
    fn range(&self, from: Timestamp, to: Timestamp) -> impl Iterator<Item = (&ReadingKey, &f64)> {
        let start = (from, SensorId(i64::MIN), MetricId::MIN);
        let end = (to, SensorId(i64::MAX), MetricId::MAX);
        self.rows.range(start..=end)
    }

    /// One sensor's series, as `sqlite/series.rs` computes it.
    pub(super) fn series(&self, sensor: SensorId, query: &ReadingQuery) -> Vec<Point> {
        let Some(&metric) = self.metric_ids.get(&query.metric) else {
            return Vec::new();
        };
        // Also guards `range`, which panics when its start is past its end.
        if query.limit == 0 || query.from > query.to {
            return Vec::new();
        }
        let points = self
            .range(query.from, query.to)
            .filter(|(&(_, s, m), _)| s == sensor && m == metric)
            .map(|(&(ts, _, _), &value)| Point { ts, value });
        // A 1 ms bucket holds at most one reading, so steps of 1 or less are the raw series.
        match query.step_ms.filter(|&step| step > 1) {
            None => points.take(query.limit).collect(),
            Some(step) => buckets(points, step, query.limit),
        }
    }

    /// Latest values of `sensor` (or of every sensor) that `keep` accepts, ordered by
    /// sensor, then metric name.
    pub(super) fn latest(
        &self,
        sensor: Option<SensorId>,
        keep: impl Fn(SensorId) -> bool,
    ) -> Vec<LatestReading> {
        let rows: Box<dyn Iterator<Item = _>> = match sensor {
            Some(s) => Box::new(self.latest.range((s, MetricId::MIN)..=(s, MetricId::MAX))),
            None => Box::new(self.latest.iter()),
        };
        let mut latest: Vec<LatestReading> = rows
            .filter(|(&(s, _), _)| keep(s))
            .map(|(&(sensor, metric), &(ts, value))| LatestReading {
                sensor,
                metric: self.metric_names[metric].clone(),
                ts,
                value,
            })
            .collect();
        // Already by sensor; metric ids are in first-seen order, names are wanted.
        latest.sort_by(|a, b| (a.sensor, &a.metric).cmp(&(b.sensor, &b.metric)));
        latest
    }

    /// Readings at or after `since`, oldest first; the newest `limit` when more. One
    /// backwards scan of the time-first key, whatever the number of sensors.
    pub(super) fn recent(&self, since: Timestamp, limit: usize) -> Vec<SensorReading> {
        let mut recent: Vec<SensorReading> = self
            .rows
            .range((since, SensorId(i64::MIN), MetricId::MIN)..)
            .rev()
            .take(limit)
            .map(|(&(ts, sensor, metric), &value)| SensorReading {
                sensor,
                metric: self.metric_names[metric].clone(),
                ts,
                value,
            })
            .collect();
        recent.reverse();
        recent
    }
}

/// Averages `points` (in time order) into buckets of `step` ms aligned to multiples of
/// `step` (floor division, so a negative instant lands in the bucket below it), stamped
/// with the bucket start; at most `limit` buckets, oldest first.
fn buckets(points: impl Iterator<Item = Point>, step: i64, limit: usize) -> Vec<Point> {
    let mut out = Vec::new();
    let mut current: Option<(Timestamp, Average)> = None;
    for point in points {
        // Saturating: the bucket of an instant within `step` of i64::MIN starts below it.
        let start = Timestamp(point.ts.0.saturating_sub(point.ts.0.rem_euclid(step)));
        match &mut current {
            Some((bucket, average)) if *bucket == start => average.add(point.value),
            _ => {
                if let Some((bucket, average)) = current.take() {
                    out.push(Point {
                        ts: bucket,
                        value: average.value(),
                    });
                    if out.len() == limit {
                        return out;
                    }
                }
                let mut average = Average::default();
                average.add(point.value);
                current = Some((start, average));
            }
        }
    }
    if let Some((bucket, average)) = current {
        out.push(Point {
            ts: bucket,
            value: average.value(),
        });
    }
    out
}

/// SQLite's `avg()` over REAL values (3.43 and later): a Kahan–Babuška–Neumaier
/// compensated sum divided by the count, so bucket averages match the SQLite backend's
/// to the last bit rather than drifting with the summation order of a naive sum.
#[derive(Default)]
struct Average {
    sum: f64,
    error: f64,
    count: u64,
}

impl Average {
    fn add(&mut self, value: f64) {
        let total = self.sum + value;
        if self.sum.abs() > value.abs() {
            self.error += (self.sum - total) + value;
        } else {
            self.error += (value - total) + self.sum;
        }
        self.sum = total;
        self.count += 1;
    }

    fn value(&self) -> f64 {
        let mut sum = self.sum;
        if self.error.is_finite() {
            sum += self.error;
        }
        sum / self.count as f64
    }
}

#[async_trait]
impl ReadingRepo for VolatileStore {
    async fn series(
        &self,
        tenant: TenantId,
        sensor_key: &str,
        query: &ReadingQuery,
    ) -> StoreResult<Vec<Point>> {
        let data = self.read()?;
        let sensor = data
            .catalog
            .sensor_by_key(tenant, sensor_key)
            .ok_or(StoreError::NotFound)?;
        Ok(data.readings.series(sensor.id, query))
    }

    async fn latest(
        &self,
        tenant: TenantId,
        scope: &SensorScope,
    ) -> StoreResult<Vec<LatestReading>> {
        let data = self.read()?;
        let one = match scope {
            SensorScope::One(id) => Some(*id),
            _ => None,
        };
        let within = data.catalog.sensors_in(tenant, scope);
        Ok(data.readings.latest(one, |s| {
            data.catalog.sensor_tenant(s) == Some(tenant)
                && within.as_ref().is_none_or(|ids| ids.contains(&s))
        }))
    }

    async fn all_latest(&self) -> StoreResult<Vec<LatestReading>> {
        Ok(self.read()?.readings.latest(None, |_| true))
    }

    async fn recent(&self, since: Timestamp, limit: usize) -> StoreResult<Vec<SensorReading>> {
        Ok(self.read()?.readings.recent(since, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ts: i64, value: f64) -> Point {
        Point {
            ts: Timestamp(ts),
            value,
        }
    }

    fn reading(sensor: i64, metric: &str, ts: i64, value: f64) -> SensorReading {
        SensorReading {
            sensor: SensorId(sensor),
            metric: metric.into(),
            ts: Timestamp(ts),
            value,
        }
    }

    #[test]
    fn buckets_average_align_and_stop_at_limit() {
        let points = [(-7, 1.0), (-1, 3.0), (0, 10.0), (4, 20.0), (25, 5.0)];
        let points = || points.iter().map(|&(ts, v)| point(ts, v));
        assert_eq!(
            buckets(points(), 5, 100),
            [
                point(-10, 1.0),
                point(-5, 3.0),
                point(0, 15.0),
                point(25, 5.0)
            ]
        );
        assert_eq!(buckets(points(), 5, 2), [point(-10, 1.0), point(-5, 3.0)]);
        assert_eq!(
            buckets(points(), 100, 100),
            [point(-100, 2.0), point(0, 35.0 / 3.0)]
        );
        assert!(buckets(std::iter::empty(), 5, 10).is_empty());
        assert_eq!(
            buckets([point(i64::MIN, 1.0)].into_iter(), 3, 10),
            [point(i64::MIN, 1.0)],
            "a bucket below i64::MIN saturates instead of overflowing"
        );
    }

    #[test]
    fn average_compensates_like_sqlite() {
        // A naive sum loses the 1.0 entirely: 1e16 + 1 == 1e16 in f64.
        let mut average = Average::default();
        for v in [1e16, 1.0, -1e16] {
            average.add(v);
        }
        assert_eq!(average.value(), 1.0 / 3.0);
    }

    #[test]
    fn first_value_stays_and_latest_only_moves_forward() {
        let mut readings = Readings::default();
        assert!(readings.insert(&reading(1, "t", 10, 1.0)));
        assert!(!readings.insert(&reading(1, "t", 10, 2.0)), "duplicate");
        assert!(
            readings.insert(&reading(1, "t", 5, 0.5)),
            "late reading is stored"
        );
        assert!(readings.insert(&reading(1, "h", 7, 70.0)), "other metric");
        let latest = readings.latest(None, |_| true);
        let got: Vec<(&str, i64, f64)> = latest
            .iter()
            .map(|l| (l.metric.as_str(), l.ts.0, l.value))
            .collect();
        assert_eq!(
            got,
            [("h", 7, 70.0), ("t", 10, 1.0)],
            "by name, newest kept"
        );
        assert!(readings.latest(Some(SensorId(2)), |_| true).is_empty());
        assert!(readings.latest(None, |_| false).is_empty());
    }

    #[test]
    fn series_of_an_inverted_or_empty_range_is_empty() {
        let mut readings = Readings::default();
        readings.insert(&reading(1, "t", 10, 1.0));
        let query = |from, to, limit, step_ms| ReadingQuery {
            metric: "t".into(),
            from: Timestamp(from),
            to: Timestamp(to),
            limit,
            step_ms,
        };
        let s = SensorId(1);
        assert!(readings.series(s, &query(11, 9, 10, None)).is_empty());
        assert!(readings.series(s, &query(0, 20, 0, Some(5))).is_empty());
        assert_eq!(
            readings.series(s, &query(10, 10, 1, Some(1))),
            [point(10, 1.0)]
        );
        assert_eq!(
            readings.series(s, &query(10, 10, 1, Some(-5))),
            [point(10, 1.0)]
        );
        assert!(readings
            .series(SensorId(2), &query(0, 20, 10, None))
            .is_empty());
    }
}
