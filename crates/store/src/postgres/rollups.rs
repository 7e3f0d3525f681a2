//! Rollups and retention on PostgreSQL (see `crate::rollups` for the design).
//!
//! Several processes may write at once, so a batch reads the watermarks `FOR SHARE` in
//! its transaction (a ROW SHARE table lock) and a roll-up locks the table EXCLUSIVE: a
//! roll-up waits for the batches in flight, so no reading can commit behind a watermark
//! without its dirty mark, and batches never wait on each other for it.

use async_trait::async_trait;
use sqlx::PgConnection;
use vigia_core::{TenantId, Timestamp};

use super::error::PgResultExt;
use super::{queries, PostgresStore};
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

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The watermarks (`None` before a resolution's first roll-up), locked as asked.
pub(crate) async fn watermarks(
    conn: &mut PgConnection,
    lock: &str,
) -> StoreResult<[Option<i64>; 2]> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT resolution, closed_before FROM rollup_watermarks ORDER BY resolution {lock}"
    ))
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    let mut out = [None, None];
    for (slot, resolution) in out.iter_mut().zip(Resolution::ALL) {
        *slot = rows
            .iter()
            .find(|(r, _)| *r == resolution.millis())
            .map(|&(_, w)| w);
    }
    Ok(out)
}

/// Marks the buckets of readings (ts, sensor, metric) behind a watermark dirty, in the
/// batch's transaction.
pub(crate) async fn mark_late(
    conn: &mut PgConnection,
    watermarks: &[Option<i64>; 2],
    readings: &[(i64, i64, i64)],
) -> StoreResult<()> {
    let (mut res, mut sensors, mut metrics, mut buckets) = (vec![], vec![], vec![], vec![]);
    for &(ts, sensor, metric) in readings {
        for (watermark, resolution) in watermarks.iter().zip(Resolution::ALL) {
            if watermark.is_some_and(|w| ts < w) {
                res.push(resolution.millis());
                sensors.push(sensor);
                metrics.push(metric);
                buckets.push(resolution.bucket_of(Timestamp(ts)).0);
            }
        }
    }
    if res.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO rollup_dirty (resolution, sensor_id, metric_id, bucket)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
         ON CONFLICT DO NOTHING",
    )
    .bind(res)
    .bind(sensors)
    .bind(metrics)
    .bind(buckets)
    .execute(&mut *conn)
    .await
    .pg()?;
    Ok(())
}

/// Replaces the rollups of `resolution` for readings in `[from, to)` (of one sensor and
/// metric when given); `last` is found by primary key at the group's newest instant.
async fn upsert(
    conn: &mut PgConnection,
    resolution: Resolution,
    from: i64,
    to: i64,
    dirty_only: bool,
) -> StoreResult<u64> {
    let filter = if dirty_only {
        "AND (sensor_id, metric_id) IN
             (SELECT sensor_id, metric_id FROM rollup_dirty WHERE resolution = $3 AND bucket = $1)"
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
         FROM (SELECT sensor_id, metric_id, ts - (((ts % $3) + $3) % $3) AS bucket,
                      count(*) AS n, min(value) AS lo, max(value) AS hi, sum(value) AS total,
                      max(ts) AS last_ts
               FROM readings
               WHERE ts >= $1 AND ts < $2 {filter}
               GROUP BY sensor_id, metric_id, bucket) g
         ON CONFLICT (sensor_id, metric_id, bucket) DO UPDATE SET
             value_count = excluded.value_count, value_min = excluded.value_min,
             value_max = excluded.value_max, value_sum = excluded.value_sum,
             value_last = excluded.value_last, last_ts = excluded.last_ts",
        table = table(resolution)
    );
    Ok(sqlx::query(&sql)
        .bind(from)
        .bind(to)
        .bind(resolution.millis())
        .execute(&mut *conn)
        .await
        .pg()?
        .rows_affected())
}

async fn roll_up(
    conn: &mut PgConnection,
    closed_before: Timestamp,
    max_rows: usize,
) -> StoreResult<RollupReport> {
    // EXCLUSIVE conflicts with the ROW SHARE lock every batch takes by reading the
    // watermarks FOR SHARE (whether or not the rows exist yet): the roll-up waits for the
    // batches in flight and holds new ones until it commits.
    sqlx::query("LOCK TABLE rollup_watermarks IN EXCLUSIVE MODE")
        .execute(&mut *conn)
        .await
        .pg()?;
    let marks = watermarks(conn, "").await?;
    let mut report = RollupReport::default();
    for (mark, resolution) in marks.into_iter().zip(Resolution::ALL) {
        let width = resolution.millis();
        let end = resolution.bucket_of(closed_before).0;
        let start = match mark {
            Some(w) => w,
            None => sqlx::query_scalar::<_, Option<i64>>("SELECT min(ts) FROM readings")
                .fetch_one(&mut *conn)
                .await
                .pg()?
                .map_or(end, |ts| resolution.bucket_of(Timestamp(ts)).0),
        };
        let mut watermark = end.max(start);
        if start < end {
            // The row budget: stop at the bucket of the first reading past it, or (when
            // one bucket alone is bigger) right after that bucket, so the watermark moves.
            let past_budget: Option<i64> = sqlx::query_scalar(
                "SELECT ts FROM readings WHERE ts >= $1 AND ts < $2 ORDER BY ts LIMIT 1 OFFSET $3",
            )
            .bind(start)
            .bind(end)
            .bind(limit(max_rows))
            .fetch_optional(&mut *conn)
            .await
            .pg()?;
            if let Some(ts) = past_budget {
                watermark = resolution.budget_stop(start, ts);
            }
            let scanned: i64 =
                sqlx::query_scalar("SELECT count(*) FROM readings WHERE ts >= $1 AND ts < $2")
                    .bind(start)
                    .bind(watermark)
                    .fetch_one(&mut *conn)
                    .await
                    .pg()?;
            report.readings_scanned += scanned as u64;
            report.buckets_written += upsert(conn, resolution, start, watermark, false).await?;
        }
        sqlx::query(
            "INSERT INTO rollup_watermarks (resolution, closed_before) VALUES ($1, $2)
             ON CONFLICT (resolution) DO UPDATE SET closed_before = excluded.closed_before",
        )
        .bind(width)
        .bind(watermark)
        .execute(&mut *conn)
        .await
        .pg()?;
        if resolution == Resolution::Minute {
            report.watermark = Some(Timestamp(watermark));
        }
    }
    // No batch adds a mark meanwhile: each holds the watermarks FOR SHARE, which the
    // EXCLUSIVE lock above waits out and keeps out.
    let dirty: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT resolution, bucket, count(*) FROM rollup_dirty GROUP BY resolution, bucket",
    )
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    for &(width, bucket, keys) in &dirty {
        let Some(resolution) = Resolution::from_millis(width) else {
            return Err(StoreError::Internal(format!(
                "rollup_dirty has resolution {width}"
            )));
        };
        upsert(conn, resolution, bucket, bucket + width, true).await?;
        report.dirty_recomputed += keys as u64;
    }
    if !dirty.is_empty() {
        sqlx::query("DELETE FROM rollup_dirty")
            .execute(&mut *conn)
            .await
            .pg()?;
    }
    Ok(report)
}

/// Sensors retention may touch: in scope ($3, a tenant or NULL) and without an open or
/// acked alert.
const DELETABLE: &str =
    "sensor_id NOT IN (SELECT sensor_id FROM alerts WHERE state IN ('open', 'acked'))
     AND ($3::bigint IS NULL OR sensor_id IN (SELECT id FROM sensors WHERE tenant_id = $3))";

fn tenant_of(scope: RetentionScope) -> Option<i64> {
    match scope {
        RetentionScope::All => None,
        RetentionScope::Tenant(t) => Some(t.0),
    }
}

#[async_trait]
impl RollupRepo for PostgresStore {
    async fn roll_up(
        &self,
        closed_before: Timestamp,
        max_rows: usize,
    ) -> StoreResult<RollupReport> {
        let mut tx = self.write.begin().await.pg()?;
        let report = roll_up(&mut tx, closed_before, max_rows).await?;
        tx.commit().await.pg()?;
        Ok(report)
    }

    async fn series(
        &self,
        tenant: TenantId,
        sensor_key: &str,
        query: &RollupQuery,
    ) -> StoreResult<Vec<RollupPoint>> {
        let mut conn = self.replica().await?;
        let sensor = queries::sensor_id(&mut conn, tenant, sensor_key)
            .await?
            .ok_or(StoreError::NotFound)?;
        let Some(metric) = queries::metric_id(&mut conn, &query.metric).await? else {
            return Ok(Vec::new());
        };
        let rows: Vec<(i64, i64, f64, f64, f64, f64)> = sqlx::query_as(&format!(
            "SELECT bucket, value_count, value_min, value_max, value_sum, value_last FROM {}
             WHERE sensor_id = $1 AND metric_id = $2 AND bucket >= $3 AND bucket <= $4
             ORDER BY bucket LIMIT $5",
            table(query.resolution)
        ))
        .bind(sensor.0)
        .bind(metric)
        .bind(query.from.0)
        .bind(query.to.0)
        .bind(limit(query.limit))
        .fetch_all(&mut *conn)
        .await
        .pg()?;
        Ok(rows.into_iter().map(RollupPoint::from_columns).collect())
    }

    async fn delete_raw_before(
        &self,
        scope: RetentionScope,
        before: Timestamp,
        chunk: usize,
    ) -> StoreResult<u64> {
        let sql = format!(
            "DELETE FROM readings WHERE (ts, sensor_id, metric_id) IN (
                 SELECT ts, sensor_id, metric_id FROM readings
                 WHERE ts < $1 AND {DELETABLE} ORDER BY ts LIMIT $2)"
        );
        Ok(sqlx::query(&sql)
            .bind(before.0)
            .bind(limit(chunk))
            .bind(tenant_of(scope))
            .execute(&self.write)
            .await
            .pg()?
            .rows_affected())
    }

    async fn delete_rollups_before(
        &self,
        scope: RetentionScope,
        before: Timestamp,
        chunk: usize,
    ) -> StoreResult<u64> {
        let mut deleted = 0_u64;
        for resolution in Resolution::ALL {
            let left = (chunk as u64).saturating_sub(deleted);
            if left == 0 {
                break;
            }
            let sql = format!(
                "DELETE FROM {t} WHERE (sensor_id, metric_id, bucket) IN (
                     SELECT sensor_id, metric_id, bucket FROM {t}
                     WHERE bucket < $1 AND {DELETABLE} LIMIT $2)",
                t = table(resolution)
            );
            deleted += sqlx::query(&sql)
                .bind(before.0)
                .bind(i64::try_from(left).unwrap_or(i64::MAX))
                .bind(tenant_of(scope))
                .execute(&self.write)
                .await
                .pg()?
                .rows_affected();
        }
        Ok(deleted)
    }
}
