//! Reading series and latest values, as read back by the API and the rule engine.

use rusqlite::{params, Connection, OptionalExtension};
use vigia_core::{SensorId, TenantId, Timestamp};

use super::catalog;
use crate::{
    LatestReading, Point, ReadingQuery, SensorReading, SensorScope, StoreError, StoreResult,
};

pub(crate) fn metric_id(conn: &Connection, name: &str) -> StoreResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM metrics WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

/// One sensor's series. The time-first key makes this a range scan over every sensor's
/// rows in `[from, to]`, filtered to this one: cheap for recent windows, the price paid
/// for fast appends (see the module docs of `sqlite`).
pub(crate) fn readings(
    conn: &Connection,
    tenant: TenantId,
    sensor_key: &str,
    query: &ReadingQuery,
) -> StoreResult<Vec<Point>> {
    let sensor = catalog::sensor_id(conn, tenant, sensor_key)?.ok_or(StoreError::NotFound)?;
    let Some(metric) = metric_id(conn, &query.metric)? else {
        return Ok(Vec::new());
    };
    if query.limit == 0 || query.from > query.to {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let (from, to) = (query.from.0, query.to.0);
    let point = |r: &rusqlite::Row<'_>| {
        Ok(Point {
            ts: Timestamp(r.get(0)?),
            value: r.get(1)?,
        })
    };
    // A 1 ms bucket holds at most one reading, so steps of 1 or less are the raw series.
    let points = match query.step_ms.filter(|&step| step > 1) {
        None => conn
            .prepare_cached(
                "SELECT ts, value FROM readings
                 WHERE ts BETWEEN ?1 AND ?2 AND sensor_id = ?3 AND metric_id = ?4
                 ORDER BY ts LIMIT ?5",
            )?
            .query_map(params![from, to, sensor.0, metric, limit], point)?
            .collect::<Result<Vec<_>, _>>()?,
        // Floor division, so a negative timestamp lands in the bucket below it.
        Some(step) => conn
            .prepare_cached(
                "SELECT ts - (((ts % ?6) + ?6) % ?6) AS bucket, avg(value) FROM readings
                 WHERE ts BETWEEN ?1 AND ?2 AND sensor_id = ?3 AND metric_id = ?4
                 GROUP BY bucket ORDER BY bucket LIMIT ?5",
            )?
            .query_map(params![from, to, sensor.0, metric, limit, step], point)?
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(points)
}

/// Latest value per (sensor, metric): of the tenant's sensors in `scope`, or of all
/// tenants' sensors.
pub(crate) fn latest(
    conn: &Connection,
    tenant: Option<TenantId>,
    scope: &SensorScope,
) -> StoreResult<Vec<LatestReading>> {
    let row = |r: &rusqlite::Row<'_>| {
        Ok(LatestReading {
            sensor: SensorId(r.get(0)?),
            metric: r.get(1)?,
            ts: Timestamp(r.get(2)?),
            value: r.get(3)?,
        })
    };
    const SELECT: &str = "SELECT l.sensor_id, m.name, l.ts, l.value FROM latest_readings l
        JOIN metrics m ON m.id = l.metric_id JOIN sensors s ON s.id = l.sensor_id";
    const ORDER: &str = "ORDER BY l.sensor_id, m.name";
    let latest = match (tenant, scope) {
        (Some(tenant), SensorScope::One(sensor)) => conn
            .prepare_cached(&format!(
                "{SELECT} WHERE s.tenant_id = ?1 AND l.sensor_id = ?2 {ORDER}"
            ))?
            .query_map(params![tenant.0, sensor.0], row)?
            .collect::<Result<Vec<_>, _>>()?,
        (Some(tenant), SensorScope::Keys { after, through }) => conn
            .prepare_cached(&format!(
                "{SELECT} WHERE s.tenant_id = ?1 AND s.key > ?2 AND s.key <= ?3 {ORDER}"
            ))?
            .query_map(
                params![tenant.0, after.as_deref().unwrap_or(""), through],
                row,
            )?
            .collect::<Result<Vec<_>, _>>()?,
        (Some(tenant), SensorScope::All) => conn
            .prepare_cached(&format!("{SELECT} WHERE s.tenant_id = ?1 {ORDER}"))?
            .query_map([tenant.0], row)?
            .collect::<Result<Vec<_>, _>>()?,
        (None, _) => conn
            .prepare_cached(&format!("{SELECT} {ORDER}"))?
            .query_map([], row)?
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(latest)
}

/// Every tenant's readings since `since`, oldest first, at most the newest `limit`.
/// Walking the time-first key backwards from its end is one range scan, whatever the
/// number of sensors.
pub(crate) fn recent(
    conn: &Connection,
    since: Timestamp,
    limit: usize,
) -> StoreResult<Vec<SensorReading>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = conn
        .prepare_cached(
            "SELECT r.sensor_id, m.name, r.ts, r.value FROM readings r
             JOIN metrics m ON m.id = r.metric_id
             WHERE r.ts >= ?1
             ORDER BY r.ts DESC, r.sensor_id DESC, r.metric_id DESC LIMIT ?2",
        )?
        .query_map(params![since.0, limit], |r| {
            Ok(SensorReading {
                sensor: SensorId(r.get(0)?),
                metric: r.get(1)?,
                ts: Timestamp(r.get(2)?),
                value: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.reverse();
    Ok(rows)
}
