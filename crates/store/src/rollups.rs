//! The rollups port (issue 14): 1-minute and 1-hour summaries of raw readings, and the
//! retention that deletes old raw readings and old rollups.
//!
//! Design (see docs/ARCHITECTURE.md, "Rollups: watermark and dirty buckets"): per
//! resolution the store keeps a watermark, the end of the closed raw range already rolled
//! up. [`RollupRepo::roll_up`] summarises `[watermark, closed_before)` with one contiguous
//! scan of the time-first readings key and moves the watermark. A reading written later
//! with `ts < watermark` marks its 1m and 1h buckets dirty in the same transaction as the
//! reading (the ingest path only inserts a dirty key, it never upserts a rollup); the next
//! roll-up recomputes dirty buckets from raw and clears them.
//!
//! The tables exist on every backend (sqlite `0003_rollups.sql`, postgres and mysql
//! `0002_rollups.sql`).

use async_trait::async_trait;
use vigia_core::{TenantId, Timestamp};

use crate::StoreResult;

/// A rollup bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Resolution {
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "1h")]
    Hour,
}

impl Resolution {
    /// Every resolution, finest first.
    pub const ALL: [Resolution; 2] = [Resolution::Minute, Resolution::Hour];

    /// The bucket width in milliseconds (also the `resolution` column's value).
    pub const fn millis(self) -> i64 {
        match self {
            Resolution::Minute => 60_000,
            Resolution::Hour => 3_600_000,
        }
    }

    /// The start of the bucket holding `ts` (floor, also for instants before 1970).
    pub const fn bucket_of(self, ts: Timestamp) -> Timestamp {
        Timestamp(ts.0.div_euclid(self.millis()) * self.millis())
    }

    /// The resolution `millis` wide (a `resolution` column's value read back).
    pub fn from_millis(millis: i64) -> Option<Resolution> {
        Resolution::ALL.into_iter().find(|r| r.millis() == millis)
    }

    /// Where a roll-up from `start` (a bucket boundary) stops when `first_past_budget` is
    /// the instant of the first reading past its row budget: at that reading's bucket, so
    /// every bucket behind the watermark is complete, or right after it when it is still
    /// the first bucket (one bucket alone is over the budget), so the watermark moves.
    pub const fn budget_stop(self, start: i64, first_past_budget: i64) -> i64 {
        let bucket = self.bucket_of(Timestamp(first_past_budget)).0;
        if bucket > start {
            bucket
        } else {
            bucket + self.millis()
        }
    }

    /// The name used in the API and the tables (`1m`, `1h`).
    pub const fn name(self) -> &'static str {
        match self {
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
        }
    }
}

/// One bucket of one sensor's metric.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RollupPoint {
    /// Start of the bucket.
    pub ts: Timestamp,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    /// The value of the newest reading in the bucket.
    pub last: f64,
}

impl RollupPoint {
    /// A point from a rollup row's (bucket, count, min, max, sum, last) columns.
    pub(crate) fn from_columns(
        (bucket, count, min, max, sum, last): (i64, i64, f64, f64, f64, f64),
    ) -> RollupPoint {
        RollupPoint {
            ts: Timestamp(bucket),
            count: count.max(0) as u64,
            min,
            max,
            sum,
            last,
        }
    }

    /// The bucket average.
    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// What one [`RollupRepo::roll_up`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupReport {
    /// Raw readings scanned past the old watermark.
    pub readings_scanned: u64,
    /// Rollup rows written (new or replaced), all resolutions.
    pub buckets_written: u64,
    /// Dirty buckets recomputed from raw and cleared.
    pub dirty_recomputed: u64,
    /// The 1-minute watermark afterwards (`None` before the first roll-up).
    pub watermark: Option<Timestamp>,
}

/// Which rows a retention call may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionScope {
    /// Every tenant.
    All,
    /// One tenant's sensors only (a per-tenant override).
    Tenant(TenantId),
}

/// A rollup series query over one sensor's metric.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupQuery {
    pub metric: String,
    /// Inclusive (bucket start).
    pub from: Timestamp,
    /// Inclusive (bucket start).
    pub to: Timestamp,
    pub resolution: Resolution,
    /// Most points returned, oldest first.
    pub limit: usize,
}

/// Rollups and retention.
#[async_trait]
pub trait RollupRepo: Send + Sync {
    /// Rolls up the raw range `[watermark, closed_before)` (from the oldest reading on the
    /// first run) for every resolution, scanning at most about `max_rows` raw readings
    /// (the watermark then stops at a bucket boundary inside the range), then recomputes
    /// every dirty bucket from raw and clears it. Idempotent: a re-run with the same
    /// `closed_before` changes nothing.
    async fn roll_up(&self, closed_before: Timestamp, max_rows: usize)
        -> StoreResult<RollupReport>;

    /// Rollup points of one sensor (by key, within the tenant), oldest first;
    /// `NotFound` for an unknown sensor.
    async fn series(
        &self,
        tenant: TenantId,
        sensor_key: &str,
        query: &RollupQuery,
    ) -> StoreResult<Vec<RollupPoint>>;

    /// Deletes at most `chunk` raw readings older than `before` in `scope`, never those
    /// of a sensor with an open or acked alert; returns how many it deleted (call again
    /// while it returns `chunk`).
    async fn delete_raw_before(
        &self,
        scope: RetentionScope,
        before: Timestamp,
        chunk: usize,
    ) -> StoreResult<u64>;

    /// As [`RollupRepo::delete_raw_before`], for rollup rows (bucket start older than
    /// `before`) of every resolution.
    async fn delete_rollups_before(
        &self,
        scope: RetentionScope,
        before: Timestamp,
        chunk: usize,
    ) -> StoreResult<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_floor_to_the_resolution_also_before_1970() {
        assert_eq!(
            Resolution::Minute.bucket_of(Timestamp(119_999)),
            Timestamp(60_000)
        );
        assert_eq!(
            Resolution::Hour.bucket_of(Timestamp(3_600_000)),
            Timestamp(3_600_000)
        );
        // Truncating division would put -1 ms in the bucket starting at 0.
        assert_eq!(
            Resolution::Minute.bucket_of(Timestamp(-1)),
            Timestamp(-60_000)
        );
        assert_eq!(
            Resolution::Hour.bucket_of(Timestamp(-1)),
            Timestamp(-3_600_000)
        );
    }

    #[test]
    fn resolutions_are_named_as_the_api_names_them() {
        let names: Vec<&str> = Resolution::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["1m", "1h"]);
        assert_eq!(
            serde_json::to_string(&Resolution::Hour).expect("serialize"),
            "\"1h\""
        );
    }

    #[test]
    fn the_budget_stops_at_a_bucket_boundary_and_always_moves() {
        let m = Resolution::Minute;
        assert_eq!(
            m.budget_stop(0, 185_000),
            180_000,
            "at the reading's bucket"
        );
        assert_eq!(
            m.budget_stop(0, 59_999),
            60_000,
            "past a first bucket too big"
        );
        assert_eq!(m.budget_stop(-60_000, -1), 0);
        assert_eq!(Resolution::from_millis(3_600_000), Some(Resolution::Hour));
        assert_eq!(Resolution::from_millis(1), None);
    }

    #[test]
    fn a_point_averages_its_sum() {
        let point = RollupPoint {
            ts: Timestamp(0),
            count: 4,
            min: 1.0,
            max: 4.0,
            sum: 10.0,
            last: 4.0,
        };
        assert_eq!(point.mean(), 2.5);
    }
}
