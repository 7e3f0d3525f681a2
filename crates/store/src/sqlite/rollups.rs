//! Rollups and retention on SQLite (see `crate::rollups` for the design). Everything
//! here runs on the writer connection, in one IMMEDIATE transaction per call, except the
//! series read.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use vigia_core::{TenantId, Timestamp};

use super::{catalog, series, SqliteStore};
use crate::{
    Resolution, RetentionScope, RollupPoint, RollupQuery, RollupRepo, RollupReport, StoreError,
    StoreResult,
};

fn table(resolution: Resolution) -> &'static str {
    match resolution {
        Resolution::Minute => "rollups_1m",
        Resolution::Hour => "rollups_1h",
    }
}

/// The watermarks, `None` before the first roll-up of a resolution.
pub(crate) fn watermarks(conn: &Connection) -> StoreResult<[Option<i64>; 2]> {
    let mut out = [None, None];
    for (slot, resolution) in out.iter_mut().zip(Resolution::ALL) {
        *slot = conn
            .prepare_cached("SELECT closed_before FROM rollup_watermarks WHERE resolution = ?1")?
            .query_row([resolution.millis()], |r| r.get(0))
            .optional()?;
    }
    Ok(out)
}

/// Marks the buckets of readings behind a watermark dirty (called by the unit of work, in
/// its transaction, with the watermarks it read once for the group).
pub(crate) fn mark_late(
    conn: &Connection,
    watermarks: &[Option<i64>; 2],
    readings: impl Iterator<Item = (i64, i64, i64)>,
) -> StoreResult<()> {
    for (sensor, metric, ts) in readings {
        for (watermark, resolution) in watermarks.iter().zip(Resolution::ALL) {
            if watermark.is_some_and(|w| ts < w) {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO rollup_dirty (resolution, sensor_id, metric_id, bucket)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    resolution.millis(),
                    sensor,
                    metric,
                    resolution.bucket_of(Timestamp(ts)).0
                ])?;
            }
        }
    }
    Ok(())
}

/// Replaces the rollups of `resolution` for readings in `[from, to)` (with `dirty_only`,
/// of the sensors and metrics marked dirty for the bucket starting at `from`: one scan of
/// the bucket's range for all of them, not one per key, since the readings key is time
/// first); `last` is found by primary key at the group's newest instant.
fn upsert(
    conn: &Connection,
    resolution: Resolution,
    from: i64,
    to: i64,
    dirty_only: bool,
) -> StoreResult<u64> {
    let filter = if dirty_only {
        "AND (sensor_id, metric_id) IN
             (SELECT sensor_id, metric_id FROM rollup_dirty WHERE resolution = ?3 AND bucket = ?1)"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO {table} (sensor_id, metric_id, bucket, value_count, value_min, value_max,
                               value_sum, value_last, last_ts)
         SELECT g.sensor_id, g.metric_id, g.bucket, g.n, g.lo, g.hi, g.total,
                (SELECT r.value FROM readings r
                 WHERE r.ts = g.last_ts AND r.sensor_id = g.sensor_id AND r.metric_id = g.metric_id),
                g.last_ts
         FROM (SELECT sensor_id, metric_id, ts - (((ts % ?3) + ?3) % ?3) AS bucket,
                      count(*) AS n, min(value) AS lo, max(value) AS hi, sum(value) AS total,
                      max(ts) AS last_ts
               FROM readings WHERE ts >= ?1 AND ts < ?2 {filter}
               GROUP BY sensor_id, metric_id, bucket) g
         WHERE true
         ON CONFLICT (sensor_id, metric_id, bucket) DO UPDATE SET
             value_count = excluded.value_count, value_min = excluded.value_min,
             value_max = excluded.value_max, value_sum = excluded.value_sum,
             value_last = excluded.value_last, last_ts = excluded.last_ts",
        table = table(resolution)
    );
    Ok(conn
        .prepare_cached(&sql)?
        .execute(params![from, to, resolution.millis()])? as u64)
}

fn roll_up(
    conn: &Connection,
    closed_before: Timestamp,
    max_rows: usize,
) -> StoreResult<RollupReport> {
    let mut report = RollupReport::default();
    let marks = watermarks(conn)?;
    for (mark, resolution) in marks.into_iter().zip(Resolution::ALL) {
        let width = resolution.millis();
        let end = resolution.bucket_of(closed_before).0;
        let start = match mark {
            Some(w) => w,
            None => conn
                .query_row("SELECT min(ts) FROM readings", [], |r| {
                    r.get::<_, Option<i64>>(0)
                })?
                .map_or(end, |ts| resolution.bucket_of(Timestamp(ts)).0),
        };
        let mut watermark = end.max(start);
        if start < end {
            // The row budget: stop at the bucket of the first reading past it, or (when
            // one bucket alone is bigger) right after that bucket, so the watermark moves.
            let past_budget: Option<i64> = conn
                .prepare_cached(
                    "SELECT ts FROM readings WHERE ts >= ?1 AND ts < ?2 ORDER BY ts LIMIT 1 OFFSET ?3",
                )?
                .query_row(params![start, end, max_rows as i64], |r| r.get(0))
                .optional()?;
            if let Some(ts) = past_budget {
                watermark = resolution.budget_stop(start, ts);
            }
            report.readings_scanned += conn
                .prepare_cached("SELECT count(*) FROM readings WHERE ts >= ?1 AND ts < ?2")?
                .query_row(params![start, watermark], |r| r.get::<_, i64>(0))?
                as u64;
            report.buckets_written += upsert(conn, resolution, start, watermark, false)?;
        }
        conn.prepare_cached(
            "INSERT INTO rollup_watermarks (resolution, closed_before) VALUES (?1, ?2)
             ON CONFLICT (resolution) DO UPDATE SET closed_before = excluded.closed_before",
        )?
        .execute(params![width, watermark])?;
        if resolution == Resolution::Minute {
            report.watermark = Some(Timestamp(watermark));
        }
    }
    let dirty: Vec<(i64, i64, u64)> = conn
        .prepare_cached(
            "SELECT resolution, bucket, count(*) FROM rollup_dirty GROUP BY resolution, bucket",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (width, bucket, keys) in dirty {
        let Some(resolution) = Resolution::from_millis(width) else {
            return Err(StoreError::Internal(format!(
                "rollup_dirty has resolution {width}"
            )));
        };
        upsert(conn, resolution, bucket, bucket + width, true)?;
        report.dirty_recomputed += keys;
    }
    conn.execute("DELETE FROM rollup_dirty", [])?;
    Ok(report)
}

fn series(
    conn: &Connection,
    tenant: TenantId,
    sensor_key: &str,
    query: &RollupQuery,
) -> StoreResult<Vec<RollupPoint>> {
    let sensor = catalog::sensor_id(conn, tenant, sensor_key)?.ok_or(StoreError::NotFound)?;
    let Some(metric) = series::metric_id(conn, &query.metric)? else {
        return Ok(Vec::new());
    };
    let sql = format!(
        "SELECT bucket, value_count, value_min, value_max, value_sum, value_last FROM {}
         WHERE sensor_id = ?1 AND metric_id = ?2 AND bucket >= ?3 AND bucket <= ?4
         ORDER BY bucket LIMIT ?5",
        table(query.resolution)
    );
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let points = conn
        .prepare_cached(&sql)?
        .query_map(
            params![sensor.0, metric, query.from.0, query.to.0, limit],
            |r| {
                Ok(RollupPoint {
                    ts: Timestamp(r.get(0)?),
                    count: r.get::<_, i64>(1)? as u64,
                    min: r.get(2)?,
                    max: r.get(3)?,
                    sum: r.get(4)?,
                    last: r.get(5)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    Ok(points)
}

/// The sensors retention may touch: in scope, and without an open or acked alert.
fn deletable(scope: RetentionScope) -> (&'static str, Option<i64>) {
    let tenant = match scope {
        RetentionScope::All => None,
        RetentionScope::Tenant(t) => Some(t.0),
    };
    (
        "sensor_id NOT IN (SELECT sensor_id FROM alerts WHERE state IN ('open', 'acked'))
         AND (?3 IS NULL OR sensor_id IN (SELECT id FROM sensors WHERE tenant_id = ?3))",
        tenant,
    )
}

fn delete_raw(
    conn: &Connection,
    scope: RetentionScope,
    before: Timestamp,
    chunk: usize,
) -> StoreResult<u64> {
    let (keep, tenant) = deletable(scope);
    let sql = format!(
        "DELETE FROM readings WHERE (ts, sensor_id, metric_id) IN (
             SELECT ts, sensor_id, metric_id FROM readings
             WHERE ts < ?1 AND {keep} ORDER BY ts LIMIT ?2)"
    );
    let chunk = i64::try_from(chunk).unwrap_or(i64::MAX);
    Ok(conn
        .prepare_cached(&sql)?
        .execute(params![before.0, chunk, tenant])? as u64)
}

fn delete_rollups(
    conn: &Connection,
    scope: RetentionScope,
    before: Timestamp,
    chunk: usize,
) -> StoreResult<u64> {
    let (keep, tenant) = deletable(scope);
    let mut deleted = 0_u64;
    for resolution in Resolution::ALL {
        let left = (chunk as u64).saturating_sub(deleted);
        if left == 0 {
            break;
        }
        let sql = format!(
            "DELETE FROM {t} WHERE (sensor_id, metric_id, bucket) IN (
                 SELECT sensor_id, metric_id, bucket FROM {t}
                 WHERE bucket < ?1 AND {keep} LIMIT ?2)",
            t = table(resolution)
        );
        let left = i64::try_from(left).unwrap_or(i64::MAX);
        deleted += conn
            .prepare_cached(&sql)?
            .execute(params![before.0, left, tenant])? as u64;
    }
    Ok(deleted)
}

#[async_trait]
impl RollupRepo for SqliteStore {
    async fn roll_up(
        &self,
        closed_before: Timestamp,
        max_rows: usize,
    ) -> StoreResult<RollupReport> {
        self.write(move |w| w.transaction(|tx| roll_up(tx, closed_before, max_rows)))
            .await
    }

    async fn series(
        &self,
        tenant: TenantId,
        sensor_key: &str,
        query: &RollupQuery,
    ) -> StoreResult<Vec<RollupPoint>> {
        let (key, query) = (sensor_key.to_string(), query.clone());
        self.reads
            .run(move |c| series(c, tenant, &key, &query))
            .await
    }

    async fn delete_raw_before(
        &self,
        scope: RetentionScope,
        before: Timestamp,
        chunk: usize,
    ) -> StoreResult<u64> {
        self.write(move |w| w.transaction(|tx| delete_raw(tx, scope, before, chunk)))
            .await
    }

    async fn delete_rollups_before(
        &self,
        scope: RetentionScope,
        before: Timestamp,
        chunk: usize,
    ) -> StoreResult<u64> {
        self.write(move |w| w.transaction(|tx| delete_rollups(tx, scope, before, chunk)))
            .await
    }
}
