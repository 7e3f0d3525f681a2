//! Rollups and retention on MariaDB (see `crate::rollups` for the design; the same
//! semantics as the PostgreSQL store's `rollups.rs`).
//!
//! # Watermarks and concurrent writers
//!
//! Several processes may write at once. PostgreSQL can lock the whole watermark table;
//! InnoDB locks rows, and cannot lock a row that does not exist. So migration 0003 seeds
//! one row per resolution, with `closed_before = i64::MIN` standing for "no roll-up yet"
//! ([`NOT_ROLLED_UP`], read as `None`), and the rows are never deleted:
//!
//! - a batch with readings reads both rows `LOCK IN SHARE MODE` as the first statement of
//!   its transaction (shared row locks: batches never wait for each other) and marks the
//!   buckets of its readings behind a watermark dirty before it commits;
//! - a roll-up takes both rows `FOR UPDATE` as the first statement of its transaction: it
//!   waits for the batches in flight to commit, and batches that start meanwhile wait for
//!   it, so no reading ever commits behind a watermark without its dirty mark.
//!
//! A batch holds no lock when it asks for the watermarks and both sides lock the two rows
//! in key order, so the two cannot deadlock on them. A batch waits for a roll-up at most
//! `innodb_lock_wait_timeout` (then `Unavailable`; retrying works); a roll-up's time is
//! bounded by its row budget.
//!
//! If a watermark row is missing (deleted by hand), a roll-up refuses to run, so batches
//! treat a missing row as "no roll-up yet": there is nothing for them to mark.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use async_trait::async_trait;
use sqlx::{Executor, MySqlConnection};
use vigia_core::{TenantId, Timestamp};

use super::batch::Row4;
use super::error::MyResultExt;
use super::queries::{self, sql_limit};
use super::MysqlStore;
use crate::{
    Resolution, RetentionScope, RollupPoint, RollupQuery, RollupRepo, RollupReport, StoreError,
    StoreResult,
};

/// The stored watermark of a resolution not rolled up yet (the seed of migration 0003).
pub(crate) const NOT_ROLLED_UP: i64 = i64::MIN;

/// How a transaction locks the watermark rows it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatermarkLock {
    /// A batch: shared row locks, so batches do not wait for each other.
    Shared,
    /// A roll-up: exclusive row locks, waiting for the batches in flight.
    Exclusive,
}

fn table(resolution: Resolution) -> &'static str {
    match resolution {
        Resolution::Minute => "rollups_1m",
        Resolution::Hour => "rollups_1h",
    }
}

/// `ts`'s bucket start in SQL (floor, also before 1970: MOD takes the dividend's sign).
/// The width is a constant of this code, so it is written into the text.
fn bucket_sql(resolution: Resolution) -> String {
    let w = resolution.millis();
    format!("ts - MOD(MOD(ts, {w}) + {w}, {w})")
}

/// The watermarks, locked as asked: stored rows as they are, `None` for a resolution not
/// rolled up yet or without a row (see the module docs).
async fn read_watermarks(
    conn: &mut MySqlConnection,
    lock: WatermarkLock,
) -> StoreResult<[Option<Option<i64>>; 2]> {
    let sql = match lock {
        WatermarkLock::Shared => {
            "SELECT resolution, closed_before FROM rollup_watermarks ORDER BY resolution
             LOCK IN SHARE MODE"
        }
        WatermarkLock::Exclusive => {
            "SELECT resolution, closed_before FROM rollup_watermarks ORDER BY resolution
             FOR UPDATE"
        }
    };
    let rows: Vec<(i64, i64)> = sqlx::query_as(sql).fetch_all(&mut *conn).await.my()?;
    let mut out = [None, None];
    for (slot, resolution) in out.iter_mut().zip(Resolution::ALL) {
        *slot = rows
            .iter()
            .find(|(r, _)| *r == resolution.millis())
            .map(|&(_, w)| (w != NOT_ROLLED_UP).then_some(w));
    }
    Ok(out)
}

/// The watermarks a batch marks its late readings against, read with shared locks held
/// to its commit (`None`: not rolled up yet).
pub(crate) async fn watermarks_for_batch(
    conn: &mut MySqlConnection,
) -> StoreResult<[Option<i64>; 2]> {
    let rows = read_watermarks(conn, WatermarkLock::Shared).await?;
    Ok(rows.map(Option::flatten))
}

/// The dirty keys (resolution, sensor, metric, bucket) of `readings` behind a watermark,
/// sorted (concurrent batches take their key locks in the same order) and distinct.
fn late_buckets(watermarks: &[Option<i64>; 2], readings: &[Row4]) -> BTreeSet<[i64; 4]> {
    let mut dirty = BTreeSet::new();
    for &(ts, sensor, metric, _) in readings {
        for (watermark, resolution) in watermarks.iter().zip(Resolution::ALL) {
            if watermark.is_some_and(|w| ts < w) {
                dirty.insert([
                    resolution.millis(),
                    sensor,
                    metric,
                    resolution.bucket_of(Timestamp(ts)).0,
                ]);
            }
        }
    }
    dirty
}

/// `INSERT … VALUES` texts of the dirty keys, each at most `budget` bytes (one key at
/// least): integers only, written by Rust, so nothing can be injected.
fn dirty_statements(dirty: &BTreeSet<[i64; 4]>, budget: usize) -> Vec<String> {
    const HEAD: &str =
        "INSERT INTO rollup_dirty (resolution, sensor_id, metric_id, bucket) VALUES ";
    // A key already dirty stays as it is. Not INSERT IGNORE: that would also turn any
    // other error into a warning and a silently skipped mark.
    const TAIL: &str = " ON DUPLICATE KEY UPDATE bucket = bucket";
    let mut statements = Vec::new();
    let mut sql = String::new();
    for [resolution, sensor, metric, bucket] in dirty {
        // A tuple is at most 4 × 20 digits plus punctuation.
        if !sql.is_empty() && sql.len() + 90 + TAIL.len() > budget {
            sql.push_str(TAIL);
            statements.push(std::mem::take(&mut sql));
        }
        if sql.is_empty() {
            sql.push_str(HEAD);
        } else {
            sql.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(sql, "({resolution},{sensor},{metric},{bucket})");
    }
    if !sql.is_empty() {
        sql.push_str(TAIL);
        statements.push(sql);
    }
    statements
}

/// Marks the buckets of `readings` behind a watermark dirty, in the batch's transaction
/// (no statement at all when none is late, the usual case).
pub(crate) async fn mark_late(
    conn: &mut MySqlConnection,
    watermarks: &[Option<i64>; 2],
    readings: &[Row4],
    budget: usize,
) -> StoreResult<()> {
    if watermarks.iter().all(Option::is_none) {
        return Ok(());
    }
    for sql in dirty_statements(&late_buckets(watermarks, readings), budget) {
        let sql: &str = &sql;
        (&mut *conn).execute(sql).await.my()?;
    }
    Ok(())
}

/// Replaces the rollups of `resolution` for readings in `[from, to)` (of one sensor and
/// metric when given); `last` is found by primary key at the group's newest instant.
async fn upsert(
    conn: &mut MySqlConnection,
    resolution: Resolution,
    from: i64,
    to: i64,
    dirty_only: bool,
) -> StoreResult<()> {
    // With `dirty_only`, the keys marked dirty for the bucket starting at `from`: one scan
    // of the bucket's range for all of them, not one per key (the readings key is time
    // first).
    let filter = if dirty_only {
        "AND (sensor_id, metric_id) IN
             (SELECT sensor_id, metric_id FROM rollup_dirty WHERE resolution = ? AND bucket = ?)"
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
         FROM (SELECT sensor_id, metric_id, {bucket} AS bucket, COUNT(*) AS n,
                      MIN(value) AS lo, MAX(value) AS hi, SUM(value) AS total, MAX(ts) AS last_ts
               FROM readings WHERE ts >= ? AND ts < ? {filter}
               GROUP BY sensor_id, metric_id, bucket) g
         ON DUPLICATE KEY UPDATE
             value_count = VALUES(value_count), value_min = VALUES(value_min),
             value_max = VALUES(value_max), value_sum = VALUES(value_sum),
             value_last = VALUES(value_last), last_ts = VALUES(last_ts)",
        table = table(resolution),
        bucket = bucket_sql(resolution),
    );
    let mut query = sqlx::query(&sql).bind(from).bind(to);
    if dirty_only {
        query = query.bind(resolution.millis()).bind(from);
    }
    query.execute(&mut *conn).await.my()?;
    Ok(())
}

/// (readings, buckets) of `resolution` in `[from, to)`. Counted by a query of its own:
/// under CLIENT_FOUND_ROWS (always on in sqlx) the affected rows of an upsert count a
/// replaced row as 1 or 2 depending on whether it changed, so they count neither.
async fn count_range(
    conn: &mut MySqlConnection,
    resolution: Resolution,
    from: i64,
    to: i64,
) -> StoreResult<(u64, u64)> {
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED), COUNT(*) FROM (
             SELECT COUNT(*) AS n FROM readings WHERE ts >= ? AND ts < ?
             GROUP BY sensor_id, metric_id, {bucket}) g",
        bucket = bucket_sql(resolution)
    );
    let (readings, buckets): (i64, i64) = sqlx::query_as(&sql)
        .bind(from)
        .bind(to)
        .fetch_one(&mut *conn)
        .await
        .my()?;
    Ok((readings.max(0) as u64, buckets.max(0) as u64))
}

async fn roll_up(
    conn: &mut MySqlConnection,
    closed_before: Timestamp,
    max_rows: usize,
) -> StoreResult<RollupReport> {
    // First statement of the transaction: waits for the batches in flight (see the
    // module docs), holds new ones until the commit.
    let rows = read_watermarks(conn, WatermarkLock::Exclusive).await?;
    let mut report = RollupReport::default();
    for (row, resolution) in rows.into_iter().zip(Resolution::ALL) {
        let Some(mark) = row else {
            return Err(StoreError::Internal(format!(
                "rollup_watermarks has no row for resolution {} (MariaDB migration 3 seeds \
                 it; without it concurrent batches cannot be ordered with a roll-up)",
                resolution.name()
            )));
        };
        let width = resolution.millis();
        let end = resolution.bucket_of(closed_before).0;
        let start = match mark {
            Some(w) => w,
            None => sqlx::query_scalar::<_, Option<i64>>("SELECT MIN(ts) FROM readings")
                .fetch_one(&mut *conn)
                .await
                .my()?
                .map_or(end, |ts| resolution.bucket_of(Timestamp(ts)).0),
        };
        let mut watermark = end.max(start);
        if start < end {
            // The row budget: stop at the bucket of the first reading past it, or (when
            // one bucket alone is bigger) right after that bucket, so the watermark moves.
            let past_budget: Option<i64> = sqlx::query_scalar(
                "SELECT ts FROM readings WHERE ts >= ? AND ts < ? ORDER BY ts LIMIT 1 OFFSET ?",
            )
            .bind(start)
            .bind(end)
            .bind(sql_limit(max_rows))
            .fetch_optional(&mut *conn)
            .await
            .my()?;
            if let Some(ts) = past_budget {
                watermark = resolution.budget_stop(start, ts);
            }
            let (scanned, buckets) = count_range(conn, resolution, start, watermark).await?;
            report.readings_scanned += scanned;
            report.buckets_written += buckets;
            upsert(conn, resolution, start, watermark, false).await?;
        }
        sqlx::query("UPDATE rollup_watermarks SET closed_before = ? WHERE resolution = ?")
            .bind(watermark)
            .bind(width)
            .execute(&mut *conn)
            .await
            .my()?;
        if resolution == Resolution::Minute {
            report.watermark = Some(Timestamp(watermark));
        }
    }
    // No batch can add a mark meanwhile: marking takes a shared lock on the watermarks.
    let dirty: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT resolution, sensor_id, metric_id, bucket FROM rollup_dirty FOR UPDATE",
    )
    .fetch_all(&mut *conn)
    .await
    .my()?;
    let mut buckets: std::collections::BTreeMap<(i64, i64), u64> = Default::default();
    for &(width, _, _, bucket) in &dirty {
        *buckets.entry((width, bucket)).or_default() += 1;
    }
    for (&(width, bucket), &keys) in &buckets {
        let Some(resolution) = Resolution::from_millis(width) else {
            return Err(StoreError::Internal(format!(
                "rollup_dirty has resolution {width}"
            )));
        };
        upsert(conn, resolution, bucket, bucket + width, true).await?;
        report.dirty_recomputed += keys;
    }
    if !dirty.is_empty() {
        sqlx::query("DELETE FROM rollup_dirty")
            .execute(&mut *conn)
            .await
            .my()?;
    }
    Ok(report)
}

/// The condition on `sensor_id` of the rows retention may delete: without an open or
/// acked alert, and in the tenant when one is named (then one `?` to bind).
fn deletable(scope: RetentionScope) -> (&'static str, Option<i64>) {
    match scope {
        RetentionScope::All => (
            "sensor_id NOT IN (SELECT sensor_id FROM alerts WHERE state IN ('open', 'acked'))",
            None,
        ),
        RetentionScope::Tenant(t) => (
            "sensor_id NOT IN (SELECT sensor_id FROM alerts WHERE state IN ('open', 'acked'))
             AND sensor_id IN (SELECT id FROM sensors WHERE tenant_id = ?)",
            Some(t.0),
        ),
    }
}

/// Deletes at most `chunk` rows of `table` whose `column` is before `before`, oldest
/// first when `oldest_first`, among the sensors `scope` lets retention touch. One
/// single-table DELETE … LIMIT: MariaDB takes no LIMIT in an IN subquery.
async fn delete_chunk(
    conn: &mut MySqlConnection,
    table: &str,
    column: &str,
    order: &str,
    scope: RetentionScope,
    before: Timestamp,
    chunk: u64,
) -> StoreResult<u64> {
    let (keep, tenant) = deletable(scope);
    let sql = format!("DELETE FROM {table} WHERE {column} < ? AND {keep} {order} LIMIT ?");
    let mut query = sqlx::query(&sql).bind(before.0);
    if let Some(tenant) = tenant {
        query = query.bind(tenant);
    }
    Ok(query
        .bind(i64::try_from(chunk).unwrap_or(i64::MAX))
        .execute(&mut *conn)
        .await
        .my()?
        .rows_affected())
}

#[async_trait]
impl RollupRepo for MysqlStore {
    async fn roll_up(
        &self,
        closed_before: Timestamp,
        max_rows: usize,
    ) -> StoreResult<RollupReport> {
        let mut tx = self.write.begin().await.my()?;
        let report = roll_up(&mut tx, closed_before, max_rows).await?;
        tx.commit().await.my()?;
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
             WHERE sensor_id = ? AND metric_id = ? AND bucket >= ? AND bucket <= ?
             ORDER BY bucket LIMIT ?",
            table(query.resolution)
        ))
        .bind(sensor.0)
        .bind(metric)
        .bind(query.from.0)
        .bind(query.to.0)
        .bind(sql_limit(query.limit))
        .fetch_all(&mut *conn)
        .await
        .my()?;
        Ok(rows.into_iter().map(RollupPoint::from_columns).collect())
    }

    async fn delete_raw_before(
        &self,
        scope: RetentionScope,
        before: Timestamp,
        chunk: usize,
    ) -> StoreResult<u64> {
        let mut conn = self.primary().await?;
        delete_chunk(
            &mut conn,
            "readings",
            "ts",
            "ORDER BY ts",
            scope,
            before,
            chunk as u64,
        )
        .await
    }

    async fn delete_rollups_before(
        &self,
        scope: RetentionScope,
        before: Timestamp,
        chunk: usize,
    ) -> StoreResult<u64> {
        let mut conn = self.primary().await?;
        let mut deleted = 0_u64;
        for resolution in Resolution::ALL {
            let left = (chunk as u64).saturating_sub(deleted);
            if left == 0 {
                break;
            }
            deleted += delete_chunk(
                &mut conn,
                table(resolution),
                "bucket",
                "",
                scope,
                before,
                left,
            )
            .await?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_readings_behind_a_watermark_mark_their_buckets() {
        let minute = 60_000;
        let hour = 3_600_000;
        // Minute watermark at 2 min, hour watermark at 1 h.
        let marks = [Some(2 * minute), Some(hour)];
        let readings = [
            (minute + 5, 1, 1, 0.0), // behind both
            (minute + 6, 1, 1, 0.0), // same buckets again
            (3 * minute, 2, 1, 0.0), // behind the hour one only
            (hour, 3, 1, 0.0),       // behind neither
            (-1, 4, 1, 0.0),         // before 1970: floors to the previous bucket
        ];
        let dirty: Vec<[i64; 4]> = late_buckets(&marks, &readings).into_iter().collect();
        assert_eq!(
            dirty,
            [
                [minute, 1, 1, minute],
                [minute, 4, 1, -minute],
                [hour, 1, 1, 0],
                [hour, 2, 1, 0],
                [hour, 4, 1, -hour],
            ]
        );
        assert!(late_buckets(&[None, None], &readings).is_empty());
    }

    #[test]
    fn dirty_statements_respect_the_budget_and_keep_every_key() {
        let dirty: BTreeSet<[i64; 4]> = (0..500)
            .map(|i| [3_600_000, i, i64::MAX, i64::MIN])
            .collect();
        let statements = dirty_statements(&dirty, 2048);
        assert!(statements.len() > 1);
        assert!(
            statements.iter().all(|s| s.len() <= 2048),
            "under the budget"
        );
        assert!(statements
            .iter()
            .all(|s| s.ends_with("ON DUPLICATE KEY UPDATE bucket = bucket")));
        let tuples: usize = statements
            .iter()
            .map(|s| s.bytes().filter(|&b| b == b'(').count() - 1)
            .sum();
        assert_eq!(
            tuples, 500,
            "every key once (minus the column list's parenthesis)"
        );
        assert!(dirty_statements(&BTreeSet::new(), 2048).is_empty());
    }
}
