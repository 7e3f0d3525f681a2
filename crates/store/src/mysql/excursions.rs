//! The excursions table on MariaDB (see [`crate::ExcursionRepo`]); written by the unit of
//! work.

use sqlx::mysql::MySqlRow;
use sqlx::{MySqlConnection, Row};
use vigia_core::{SensorId, TenantId, Timestamp};

use super::error::MyResultExt;
use crate::{Excursion, ExcursionQuery, ExcursionUpsert, StoreError, StoreResult};

const COLUMNS: &str =
    "tenant_id, sensor_id, rule, metric, start_at, end_at, last_at, peak, out_ms, gaps, gap_ms";

/// A name column, read as bytes (the table's binary collation) and checked as UTF-8.
fn text(row: &MySqlRow, index: usize) -> StoreResult<String> {
    let bytes: Vec<u8> = row.try_get(index).my()?;
    String::from_utf8(bytes).map_err(|_| {
        StoreError::Internal(format!(
            "a stored value cannot be read: column {index} is not UTF-8"
        ))
    })
}

fn from_row(row: &MySqlRow) -> StoreResult<Excursion> {
    Ok(Excursion {
        tenant: TenantId(row.try_get(0).my()?),
        sensor: SensorId(row.try_get(1).my()?),
        rule: text(row, 2)?,
        metric: text(row, 3)?,
        start: Timestamp(row.try_get(4).my()?),
        end: row.try_get::<Option<i64>, _>(5).my()?.map(Timestamp),
        last: Timestamp(row.try_get(6).my()?),
        peak: row.try_get(7).my()?,
        out_ms: row.try_get(8).my()?,
        gaps: row.try_get(9).my()?,
        gap_ms: row.try_get(10).my()?,
    })
}

/// Inserts or replaces the excursion of (sensor, start, rule), unless the stored one has
/// seen further. The caller has checked it (tenant, values). Call inside the batch's
/// transaction. MariaDB applies the assignments left to right, each seeing the ones
/// before, so `last_at` is assigned last: the others compare against the stored one.
pub(crate) async fn upsert(conn: &mut MySqlConnection, e: &ExcursionUpsert) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO excursions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE
             metric = IF(VALUES(last_at) >= last_at, VALUES(metric), metric),
             end_at = IF(VALUES(last_at) >= last_at, VALUES(end_at), end_at),
             peak = IF(VALUES(last_at) >= last_at, VALUES(peak), peak),
             out_ms = IF(VALUES(last_at) >= last_at, VALUES(out_ms), out_ms),
             gaps = IF(VALUES(last_at) >= last_at, VALUES(gaps), gaps),
             gap_ms = IF(VALUES(last_at) >= last_at, VALUES(gap_ms), gap_ms),
             last_at = GREATEST(VALUES(last_at), last_at)"
    ))
    .bind(e.tenant.0)
    .bind(e.sensor.0)
    .bind(&e.rule)
    .bind(&e.metric)
    .bind(e.start.0)
    .bind(e.end.map(|t| t.0))
    .bind(e.last.0)
    .bind(e.peak)
    .bind(e.out_ms)
    .bind(e.gaps)
    .bind(e.gap_ms)
    .execute(&mut *conn)
    .await
    .my()?;
    Ok(())
}

pub(crate) async fn list(
    conn: &mut MySqlConnection,
    q: &ExcursionQuery,
) -> StoreResult<Vec<Excursion>> {
    let (after_start, after_rule) = match &q.after {
        Some((start, rule)) => (start.0, rule.as_str()),
        None => (i64::MIN, ""),
    };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM excursions
         WHERE sensor_id = ? AND tenant_id = ? AND start_at < ?
           AND coalesce(end_at, last_at) >= ?
           AND (start_at > ? OR (start_at = ? AND rule > ?))
         ORDER BY start_at, rule LIMIT ?"
    ))
    .bind(q.sensor.0)
    .bind(q.tenant.0)
    .bind(q.to.0)
    .bind(q.from.0)
    .bind(after_start)
    .bind(after_start)
    .bind(after_rule)
    .bind(super::queries::sql_limit(q.limit))
    .fetch_all(&mut *conn)
    .await
    .my()?;
    rows.iter().map(from_row).collect()
}

pub(crate) async fn ongoing(conn: &mut MySqlConnection) -> StoreResult<Vec<Excursion>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM excursions WHERE end_at IS NULL ORDER BY sensor_id, start_at, rule"
    ))
    .fetch_all(&mut *conn)
    .await
    .my()?;
    rows.iter().map(from_row).collect()
}
