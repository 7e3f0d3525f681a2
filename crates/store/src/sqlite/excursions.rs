//! The excursions table (see [`crate::ExcursionRepo`]); written by the unit of work.

use rusqlite::{params, Connection, Row};
use vigia_core::{SensorId, TenantId, Timestamp};

use crate::{Excursion, ExcursionQuery, ExcursionUpsert, StoreResult};

const COLUMNS: &str =
    "tenant_id, sensor_id, rule, metric, start_at, end_at, last_at, peak, out_ms, gaps, gap_ms";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Excursion> {
    Ok(Excursion {
        tenant: TenantId(row.get(0)?),
        sensor: SensorId(row.get(1)?),
        rule: row.get(2)?,
        metric: row.get(3)?,
        start: Timestamp(row.get(4)?),
        end: row.get::<_, Option<i64>>(5)?.map(Timestamp),
        last: Timestamp(row.get(6)?),
        peak: row.get(7)?,
        out_ms: row.get(8)?,
        gaps: row.get(9)?,
        gap_ms: row.get(10)?,
    })
}

/// Inserts or replaces the excursion of (sensor, start, rule), unless the stored one has
/// seen further. The caller has checked it (tenant, values).
pub(crate) fn upsert(conn: &Connection, e: &ExcursionUpsert) -> StoreResult<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO excursions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (sensor_id, start_at, rule) DO UPDATE SET
             metric = excluded.metric, end_at = excluded.end_at, last_at = excluded.last_at,
             peak = excluded.peak, out_ms = excluded.out_ms, gaps = excluded.gaps,
             gap_ms = excluded.gap_ms
         WHERE excluded.last_at >= excursions.last_at"
    ))?
    .execute(params![
        e.tenant.0,
        e.sensor.0,
        e.rule,
        e.metric,
        e.start.0,
        e.end.map(|t| t.0),
        e.last.0,
        e.peak,
        e.out_ms,
        e.gaps,
        e.gap_ms,
    ])?;
    Ok(())
}

pub(crate) fn list(conn: &Connection, q: &ExcursionQuery) -> StoreResult<Vec<Excursion>> {
    let (after_start, after_rule) = match &q.after {
        Some((start, rule)) => (start.0, rule.as_str()),
        None => (i64::MIN, ""),
    };
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM excursions
         WHERE sensor_id = ?1 AND tenant_id = ?2 AND start_at < ?3
           AND coalesce(end_at, last_at) >= ?4
           AND (start_at > ?5 OR (start_at = ?5 AND rule > ?6) OR ?7)
         ORDER BY start_at, rule LIMIT ?8"
    ))?;
    let rows = stmt.query_map(
        params![
            q.sensor.0,
            q.tenant.0,
            q.to.0,
            q.from.0,
            after_start,
            after_rule,
            q.after.is_none(),
            limit
        ],
        from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn ongoing(conn: &Connection) -> StoreResult<Vec<Excursion>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM excursions WHERE end_at IS NULL ORDER BY sensor_id, start_at, rule"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
