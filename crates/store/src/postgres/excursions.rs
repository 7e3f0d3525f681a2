//! The excursions table on PostgreSQL (see [`crate::ExcursionRepo`]); written by the unit
//! of work.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use vigia_core::{SensorId, TenantId, Timestamp};

use super::error::PgResultExt;
use crate::{Excursion, ExcursionQuery, ExcursionUpsert, StoreResult};

const COLUMNS: &str =
    "tenant_id, sensor_id, rule, metric, start_at, end_at, last_at, peak, out_ms, gaps, gap_ms";

fn from_row(row: &PgRow) -> StoreResult<Excursion> {
    Ok(Excursion {
        tenant: TenantId(row.try_get(0).pg()?),
        sensor: SensorId(row.try_get(1).pg()?),
        rule: row.try_get(2).pg()?,
        metric: row.try_get(3).pg()?,
        start: Timestamp(row.try_get(4).pg()?),
        end: row.try_get::<Option<i64>, _>(5).pg()?.map(Timestamp),
        last: Timestamp(row.try_get(6).pg()?),
        peak: row.try_get(7).pg()?,
        out_ms: row.try_get(8).pg()?,
        gaps: row.try_get(9).pg()?,
        gap_ms: row.try_get(10).pg()?,
    })
}

/// Inserts or replaces the excursion of (sensor, start, rule), unless the stored one has
/// seen further. The caller has checked it (tenant, values). Call inside the batch's
/// transaction.
pub(crate) async fn upsert(conn: &mut PgConnection, e: &ExcursionUpsert) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO excursions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (sensor_id, start_at, rule) DO UPDATE SET
             metric = excluded.metric, end_at = excluded.end_at, last_at = excluded.last_at,
             peak = excluded.peak, out_ms = excluded.out_ms, gaps = excluded.gaps,
             gap_ms = excluded.gap_ms
         WHERE excluded.last_at >= excursions.last_at"
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
    .pg()?;
    Ok(())
}

pub(crate) async fn list(
    conn: &mut PgConnection,
    q: &ExcursionQuery,
) -> StoreResult<Vec<Excursion>> {
    let (after_start, after_rule) = match &q.after {
        Some((start, rule)) => (start.0, rule.as_str()),
        None => (i64::MIN, ""),
    };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM excursions
         WHERE sensor_id = $1 AND tenant_id = $2 AND start_at < $3
           AND coalesce(end_at, last_at) >= $4
           AND (start_at, rule) > ($5, $6)
         ORDER BY start_at, rule LIMIT $7"
    ))
    .bind(q.sensor.0)
    .bind(q.tenant.0)
    .bind(q.to.0)
    .bind(q.from.0)
    .bind(after_start)
    .bind(after_rule)
    .bind(i64::try_from(q.limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    rows.iter().map(from_row).collect()
}

pub(crate) async fn ongoing(conn: &mut PgConnection) -> StoreResult<Vec<Excursion>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM excursions WHERE end_at IS NULL ORDER BY sensor_id, start_at, rule"
    ))
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    rows.iter().map(from_row).collect()
}
