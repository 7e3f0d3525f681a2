//! Stepped series (issue 14): which source answers a query — the 1-hour rollups, the
//! 1-minute rollups or raw readings — and how their rows become points.
//!
//! A step that is a whole number of hours reads the 1-hour rollups, a whole number of
//! minutes the 1-minute ones; any other step averages raw readings in the store. Rollups
//! cover closed buckets up to the `rollups` job's watermark (also after raw retention
//! deleted their readings); the newest part of a range, not rolled up yet, comes from
//! raw readings, and a bucket straddling the two is merged by count, so the answer is
//! the same whichever side of the watermark a reading lies. A point from rollups covers
//! its whole bucket even when `from` falls inside it.

use serde::Serialize;
use utoipa::ToSchema;
use vigia_core::Timestamp;
use vigia_store::{Point, ReadingQuery, Resolution, RollupPoint, RollupQuery};

/// Steps `auto` rounds up to: whole multiples of the rollup resolutions when large enough.
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// Raw readings past the newest rollup read one by one at most; past this many the
/// rollups are far behind and the store averages the tail itself.
pub const RAW_TAIL_CAP: usize = 20_000;

/// Rollup rows one query reads at most (a 10,000-point answer of 1-hour rows aggregated
/// to days is 240,000 rows; beyond that the caller asked for more points than exist).
const MAX_ROLLUP_ROWS: usize = 250_000;

/// How a series is stepped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesStep {
    /// Every reading.
    Raw,
    /// Buckets of this many milliseconds (at least 1).
    Every(i64),
    /// The smallest step giving at most this many points over the range.
    Auto { points: usize },
}

/// A series query of one sensor's metric.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRequest {
    pub metric: String,
    /// Inclusive.
    pub from: Timestamp,
    /// Inclusive.
    pub to: Timestamp,
    /// Most points, oldest first.
    pub limit: usize,
    pub step: SeriesStep,
}

/// Where the points of an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeriesSource {
    /// Raw readings (every one, or averaged per step by the store).
    Raw,
    /// 1-minute rollups (with the raw readings not rolled up yet).
    #[serde(rename = "1m")]
    Minute,
    /// 1-hour rollups (with the raw readings not rolled up yet).
    #[serde(rename = "1h")]
    Hour,
}

/// One point of a series: a reading, or a bucket's average.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct SeriesPoint {
    /// The reading's time, or the bucket's start.
    #[schema(value_type = String, format = DateTime)]
    pub ts: Timestamp,
    /// The reading, or the bucket's mean.
    pub value: f64,
    /// Bucket's lowest reading: present when the bucket comes from rollups (with the
    /// newest raw readings), absent for raw readings and for buckets the store averaged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Bucket's highest reading (present as `min` is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Readings in the bucket (present as `min` is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl From<Point> for SeriesPoint {
    fn from(point: Point) -> Self {
        Self {
            ts: point.ts,
            value: point.value,
            min: None,
            max: None,
            count: None,
        }
    }
}

/// A series answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesAnswer {
    pub points: Vec<SeriesPoint>,
    /// The bucket width used (`None`: raw readings).
    pub step_ms: Option<i64>,
    pub source: SeriesSource,
}

/// The bucket width a request asks for (`None`: raw readings).
pub fn step_of(request: &SeriesRequest) -> Option<i64> {
    match request.step {
        SeriesStep::Raw => None,
        SeriesStep::Every(ms) => Some(ms.max(1)),
        SeriesStep::Auto { points } => Some(auto_step(request.from, request.to, points)),
    }
}

/// The smallest step that splits `[from, to]` into at most `points` widths, rounded up
/// to whole hours or minutes once it reaches them (so rollups can answer). Buckets are
/// aligned to the epoch, not to `from`, so the answer may hold one point more (an hour
/// in 60 points is 61 one-minute buckets when `from` is not on a minute).
pub fn auto_step(from: Timestamp, to: Timestamp, points: usize) -> i64 {
    let span = i128::from(to.0) - i128::from(from.0);
    let points = i128::try_from(points.max(1)).unwrap_or(i128::MAX);
    let width = (span + points - 1) / points;
    let width = i64::try_from(width.max(1)).unwrap_or(i64::MAX);
    // Positive operands: a ceiling by hand (`i64::div_ceil` is not stable).
    let round_up = |unit: i64| (width / unit + i64::from(width % unit != 0)).saturating_mul(unit);
    if width >= HOUR {
        round_up(HOUR)
    } else if width >= MINUTE {
        round_up(MINUTE)
    } else {
        width
    }
}

/// The rollup resolution that can answer buckets of `step` ms, coarsest first.
pub fn resolution_for(step: i64) -> Option<Resolution> {
    [Resolution::Hour, Resolution::Minute]
        .into_iter()
        .find(|r| step % r.millis() == 0)
}

/// Floor of `ts` to a multiple of `step` (also before 1970).
fn floor_to(ts: i64, step: i64) -> i64 {
    ts.div_euclid(step) * step
}

/// The rollup query for a stepped request answered by `resolution`.
pub fn rollup_query(request: &SeriesRequest, step: i64, resolution: Resolution) -> RollupQuery {
    let per_point = usize::try_from(step / resolution.millis()).unwrap_or(usize::MAX);
    RollupQuery {
        metric: request.metric.clone(),
        from: Timestamp(floor_to(request.from.0, step)),
        to: request.to,
        resolution,
        limit: request
            .limit
            .saturating_mul(per_point)
            .clamp(1, MAX_ROLLUP_ROWS),
    }
}

/// The raw readings (one by one) after the newest rollup row, or `None` when there is
/// no rollup row to continue from.
pub fn tail_query(
    request: &SeriesRequest,
    rows: &[RollupPoint],
    resolution: Resolution,
) -> Option<ReadingQuery> {
    let covered_to = rows.last()?.ts.0.saturating_add(resolution.millis());
    Some(ReadingQuery {
        metric: request.metric.clone(),
        from: Timestamp(covered_to),
        to: request.to,
        limit: RAW_TAIL_CAP,
        step_ms: None,
    })
}

/// Store-averaged raw buckets from the bucket after the rollups' coverage, used when the
/// raw tail is too long to read one by one.
pub fn averaged_tail_query(
    request: &SeriesRequest,
    rows: &[RollupPoint],
    step: i64,
    resolution: Resolution,
) -> ReadingQuery {
    let covered_to = rows.last().map_or(request.from.0, |r| {
        r.ts.0.saturating_add(resolution.millis())
    });
    ReadingQuery {
        metric: request.metric.clone(),
        from: Timestamp(floor_to(covered_to, step).max(request.from.0)),
        to: request.to,
        limit: request.limit,
        step_ms: Some(step),
    }
}

/// Count-weighted buckets of `step` from rollup rows and raw readings, oldest first, at
/// most `limit`, with each bucket's lowest and highest reading.
pub fn merge(rows: &[RollupPoint], tail: &[Point], step: i64, limit: usize) -> Vec<SeriesPoint> {
    struct Bucket {
        start: i64,
        count: u64,
        sum: f64,
        min: f64,
        max: f64,
    }
    let mut buckets: Vec<Bucket> = Vec::new();
    let mut add = |ts: i64, count: u64, sum: f64, min: f64, max: f64| {
        let start = floor_to(ts, step);
        match buckets.last_mut() {
            Some(b) if b.start == start => {
                b.count += count;
                b.sum += sum;
                b.min = b.min.min(min);
                b.max = b.max.max(max);
            }
            _ => buckets.push(Bucket {
                start,
                count,
                sum,
                min,
                max,
            }),
        }
    };
    // Both inputs are oldest first and the tail starts after the last row.
    for row in rows {
        add(row.ts.0, row.count, row.sum, row.min, row.max);
    }
    for point in tail {
        add(point.ts.0, 1, point.value, point.value, point.value);
    }
    buckets
        .into_iter()
        .filter(|b| b.count > 0)
        .take(limit)
        .map(|b| SeriesPoint {
            ts: Timestamp(b.start),
            value: b.sum / b.count as f64,
            min: Some(b.min),
            max: Some(b.max),
            count: Some(b.count),
        })
        .collect()
}

/// Rollup-answered buckets strictly before the averaged tail's first bucket, followed by
/// the tail, at most `limit`.
pub fn concat(
    rows: &[RollupPoint],
    averaged_tail: Vec<Point>,
    step: i64,
    limit: usize,
    tail_from: Timestamp,
) -> Vec<SeriesPoint> {
    let split = floor_to(tail_from.0, step);
    let before: Vec<RollupPoint> = rows
        .iter()
        .copied()
        .filter(|r| floor_to(r.ts.0, step) < split)
        .collect();
    let mut points = merge(&before, &[], step, limit);
    points.extend(averaged_tail.into_iter().map(SeriesPoint::from));
    points.truncate(limit);
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts: i64, count: u64, sum: f64) -> RollupPoint {
        let mean = sum / count as f64;
        RollupPoint {
            ts: Timestamp(ts),
            count,
            min: mean - 1.0,
            max: mean + 1.0,
            sum,
            last: mean,
        }
    }

    fn bucket(ts: i64, value: f64, min: f64, max: f64, count: u64) -> SeriesPoint {
        SeriesPoint {
            ts: Timestamp(ts),
            value,
            min: Some(min),
            max: Some(max),
            count: Some(count),
        }
    }

    fn point(ts: i64, value: f64) -> Point {
        Point {
            ts: Timestamp(ts),
            value,
        }
    }

    #[test]
    fn auto_steps_round_to_the_rollup_resolutions() {
        let day = 24 * HOUR;
        // A year in 60 points: whole hours.
        let step = auto_step(Timestamp(0), Timestamp(365 * day), 60);
        assert_eq!(step % HOUR, 0);
        assert_eq!(step, 146 * HOUR);
        // The page's sparkline: an hour in 60 points is one a minute.
        assert_eq!(auto_step(Timestamp(7), Timestamp(7 + HOUR), 60), MINUTE);
        assert_eq!(auto_step(Timestamp(0), Timestamp(HOUR + 1), 60), 2 * MINUTE);
        // Ten seconds in 10 points: raw averaging over a second.
        assert_eq!(auto_step(Timestamp(0), Timestamp(10_000), 10), 1_000);
        // Degenerate inputs never give a zero step.
        assert_eq!(auto_step(Timestamp(5), Timestamp(5), 1), 1);
        assert!(auto_step(Timestamp(i64::MIN), Timestamp(i64::MAX), 1) > 0);
    }

    #[test]
    fn an_auto_step_gives_at_most_one_point_more_than_asked() {
        for (span, points) in [
            (HOUR, 60),
            (365 * 24 * HOUR, 60),
            (7_777, 3),
            (MINUTE * 59, 2),
        ] {
            let step = auto_step(Timestamp(13), Timestamp(13 + span), points);
            let buckets = floor_to(13 + span, step) / step - floor_to(13, step) / step + 1;
            assert!(
                buckets as usize <= points + 1,
                "span {span}: {buckets} > {points} + 1"
            );
        }
    }

    #[test]
    fn steps_pick_the_coarsest_resolution_that_divides_them() {
        assert_eq!(resolution_for(HOUR), Some(Resolution::Hour));
        assert_eq!(resolution_for(24 * HOUR), Some(Resolution::Hour));
        assert_eq!(resolution_for(90 * MINUTE), Some(Resolution::Minute));
        assert_eq!(resolution_for(MINUTE), Some(Resolution::Minute));
        assert_eq!(resolution_for(90_000), None);
        assert_eq!(resolution_for(1), None);
    }

    #[test]
    fn merging_weights_rows_and_raw_readings_by_count() {
        // Two 1-minute rows in one 2-minute bucket, then a raw reading in that same
        // bucket and one in the next.
        let rows = [row(0, 2, 10.0), row(MINUTE, 1, 8.0)];
        let tail = [point(MINUTE + 1, 2.0), point(2 * MINUTE, 9.0)];
        let points = merge(&rows, &tail, 2 * MINUTE, 10);
        assert_eq!(
            points,
            [
                bucket(0, 20.0 / 4.0, 2.0, 9.0, 4),
                bucket(2 * MINUTE, 9.0, 9.0, 9.0, 1)
            ]
        );
        assert_eq!(merge(&rows, &tail, 2 * MINUTE, 1).len(), 1);
    }

    #[test]
    fn the_tail_starts_where_the_newest_row_ends() {
        let request = SeriesRequest {
            metric: "t".into(),
            from: Timestamp(0),
            to: Timestamp(10 * HOUR),
            limit: 10,
            step: SeriesStep::Every(HOUR),
        };
        assert!(tail_query(&request, &[], Resolution::Hour).is_none());
        let tail = tail_query(&request, &[row(2 * HOUR, 1, 1.0)], Resolution::Hour).unwrap();
        assert_eq!(tail.from, Timestamp(3 * HOUR));
        assert_eq!(tail.step_ms, None);
        let q = rollup_query(&request, 2 * HOUR, Resolution::Hour);
        assert_eq!((q.from, q.limit), (Timestamp(0), 20));
    }

    #[test]
    fn concatenation_drops_rows_the_averaged_tail_covers() {
        let rows = [row(0, 1, 1.0), row(HOUR, 1, 3.0), row(2 * HOUR, 1, 5.0)];
        let tail = vec![point(2 * HOUR, 6.0)];
        let points = concat(&rows, tail, 2 * HOUR, 10, Timestamp(3 * HOUR));
        assert_eq!(
            points,
            [
                bucket(0, 2.0, 0.0, 4.0, 2),
                SeriesPoint::from(point(2 * HOUR, 6.0))
            ]
        );
    }
}
