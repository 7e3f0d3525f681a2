//! Daily range partitions of `readings` on `ts` (epoch ms), created ahead of time.
//!
//! # Why one partition per UTC day
//!
//! - Retention (seed 001: raw readings 7 days) becomes dropping whole partitions instead
//!   of a DELETE that rewrites and bloats the table; a day is fine-grained enough that
//!   at most one extra day is kept, where monthly partitions would keep up to a month.
//! - Writes go to the newest partition: its time-first B-tree is small and its right
//!   edge stays in shared buffers.
//! - Dashboards ask for the last hours or days, which the planner prunes to one or two
//!   partitions; at 7–30 days of retention there are few enough partitions that planning
//!   cost stays negligible (hourly partitions would mean hundreds).
//!
//! # Never refusing a reading
//!
//! `readings_default` (the DEFAULT partition) takes every reading whose day has no
//! partition: far in the past, far in the future, or a day not yet created because
//! housekeeping did not run. Creating a partition whose range already has rows in the
//! default moves those rows in the SAME transaction (create a standalone table, move the
//! rows, attach it), so nothing is lost or duplicated and no reader sees a gap.
//! Partitions are created for today and [`DEFAULT_PARTITIONS_AHEAD`] days ahead, at open and
//! by every `housekeep()`, so the default normally stays empty of current data. Creation
//! runs under an advisory lock (processes do not race) with a `lock_timeout`, so a long
//! query holding `readings` makes maintenance give up and retry at the next run instead of
//! queueing every reader and writer behind it.

use sqlx::{PgConnection, PgPool};
use vigia_core::Timestamp;

use super::error::PgResultExt;
use crate::StoreResult;

/// Width of one partition: a UTC day, in milliseconds.
pub const PARTITION_WIDTH_MS: i64 = 86_400_000;

/// Days after today that get their partition ahead of time.
pub const DEFAULT_PARTITIONS_AHEAD: u32 = 7;

/// Advisory lock key of partition maintenance ("vigiaprt").
const PARTITION_LOCK: i64 = 0x7669_6769_6170_7274;

/// What one maintenance run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionReport {
    /// Names of the partitions created.
    pub created: Vec<String>,
    /// Readings moved out of the default partition into a created one.
    pub moved: u64,
}

/// The start of the partition `ts` falls in.
pub fn partition_start(ts: i64) -> i64 {
    ts.div_euclid(PARTITION_WIDTH_MS) * PARTITION_WIDTH_MS
}

/// `readings_pYYYYMMDD` of the UTC day starting at `start`.
pub fn partition_name(start: i64) -> String {
    let (y, m, d) = civil_from_days(start.div_euclid(PARTITION_WIDTH_MS));
    format!("readings_p{y:04}{m:02}{d:02}")
}

/// (year, month, day) of a count of days since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The partitions of `readings`, default included, by name.
pub(crate) async fn list(pool: &PgPool) -> StoreResult<Vec<String>> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'readings'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .pg()
}

/// Creates the partitions of today and `ahead` days after it that do not exist yet.
pub(crate) async fn ensure(
    pool: &PgPool,
    now: Timestamp,
    ahead: u32,
) -> StoreResult<PartitionReport> {
    let existing = list(pool).await?;
    let today = partition_start(now.0);
    let mut report = PartitionReport::default();
    for day in 0..=i64::from(ahead) {
        let start = today + day * PARTITION_WIDTH_MS;
        let name = partition_name(start);
        if existing.contains(&name) {
            continue;
        }
        let mut tx = pool.begin().await.pg()?;
        if let Some(moved) = create(&mut tx, start, &name).await? {
            tx.commit().await.pg()?;
            tracing::info!(partition = %name, moved, "created readings partition");
            report.created.push(name);
            report.moved += moved;
        }
    }
    Ok(report)
}

/// Creates one partition in the caller's transaction, moving the default partition's
/// rows of its range into it; `None` when another process created it first.
async fn create(conn: &mut PgConnection, start: i64, name: &str) -> StoreResult<Option<u64>> {
    let end = start + PARTITION_WIDTH_MS;
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *conn)
        .await
        .pg()?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK)
        .execute(&mut *conn)
        .await
        .pg()?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .pg()?;
    if exists {
        return Ok(None);
    }
    // Writers of out-of-range readings wait (readers do not) until the rows of this
    // range have moved and the partition is attached; ATTACH would lock it anyway.
    sqlx::query("LOCK TABLE readings_default IN EXCLUSIVE MODE")
        .execute(&mut *conn)
        .await
        .pg()?;
    // `name` is built from a number by partition_name, never from input.
    // Not `persistent`: a statement run once a day is no use in the statement cache.
    sqlx::query(&format!(
        "CREATE TABLE {name} (LIKE readings INCLUDING DEFAULTS)"
    ))
    .persistent(false)
    .execute(&mut *conn)
    .await
    .pg()?;
    let moved = sqlx::query(&format!(
        "WITH moved AS (
             DELETE FROM readings_default WHERE ts >= $1 AND ts < $2
             RETURNING ts, sensor_id, metric_id, value)
         INSERT INTO {name} (ts, sensor_id, metric_id, value)
         SELECT ts, sensor_id, metric_id, value FROM moved"
    ))
    .persistent(false)
    .bind(start)
    .bind(end)
    .execute(&mut *conn)
    .await
    .pg()?
    .rows_affected();
    sqlx::query(&format!(
        "ALTER TABLE readings ATTACH PARTITION {name} FOR VALUES FROM ({start}) TO ({end})"
    ))
    .persistent(false)
    .execute(&mut *conn)
    .await
    .pg()?;
    Ok(Some(moved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_starts_follow_utc_days() {
        assert_eq!(partition_name(0), "readings_p19700101");
        // 2023-11-14T22:13:20Z
        let t = 1_700_000_000_000;
        assert_eq!(partition_start(t), 1_699_920_000_000);
        assert_eq!(partition_name(partition_start(t)), "readings_p20231114");
        assert_eq!(partition_name(partition_start(-1)), "readings_p19691231");
        assert_eq!(partition_start(-1), -PARTITION_WIDTH_MS);
        // 2024-02-29 (leap day) and the day after.
        let leap = 1_709_164_800_000;
        assert_eq!(partition_name(leap), "readings_p20240229");
        assert_eq!(
            partition_name(leap + PARTITION_WIDTH_MS),
            "readings_p20240301"
        );
    }
}
