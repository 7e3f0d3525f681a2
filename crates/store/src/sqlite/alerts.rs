//! Alerts: reading them back with their sensor key, and their state changes.

use rusqlite::{params, Connection, OptionalExtension, Row};
use vigia_core::{Alert, AlertId, AlertState, RuleKind, SensorId, Severity, TenantId, Timestamp};

use super::catalog::bad_column;
use crate::{AlertFilter, NewAlert, SensorScope, StoreError, StoreResult};

/// Alert columns in the order [`alert_from_row`] reads them; `s` is the sensor.
const ALERT_SELECT: &str = "SELECT a.id, a.tenant_id, a.sensor_id, s.key, a.rule, a.kind,
    a.severity, a.state, a.metric, a.value, a.message, a.opened_at, a.acked_at, a.acked_by,
    a.resolved_at, a.resolved_by, a.details
    FROM alerts a JOIN sensors s ON s.id = a.sensor_id";

fn alert_from_row(row: &Row<'_>) -> rusqlite::Result<Alert> {
    let kind: String = row.get(5)?;
    let severity: String = row.get(6)?;
    let state: String = row.get(7)?;
    Ok(Alert {
        id: AlertId(row.get(0)?),
        tenant: TenantId(row.get(1)?),
        sensor_id: SensorId(row.get(2)?),
        sensor: row.get(3)?,
        rule: row.get(4)?,
        kind: RuleKind::parse(&kind)
            .ok_or_else(|| bad_column(5, format!("unknown rule kind `{kind}`")))?,
        severity: Severity::parse(&severity)
            .ok_or_else(|| bad_column(6, format!("unknown severity `{severity}`")))?,
        state: AlertState::parse(&state)
            .ok_or_else(|| bad_column(7, format!("unknown alert state `{state}`")))?,
        metric: row.get(8)?,
        value: row.get(9)?,
        message: row.get(10)?,
        opened_at: Timestamp(row.get(11)?),
        acked_at: row.get::<_, Option<i64>>(12)?.map(Timestamp),
        acked_by: row.get(13)?,
        resolved_at: row.get::<_, Option<i64>>(14)?.map(Timestamp),
        resolved_by: row.get(15)?,
        details: crate::alerts::details_from_json(row.get::<_, Option<String>>(16)?.as_deref())
            .map_err(|e| bad_column(16, e))?,
    })
}

pub(crate) fn get(conn: &Connection, tenant: TenantId, id: AlertId) -> StoreResult<Alert> {
    let sql = format!("{ALERT_SELECT} WHERE a.id = ?1 AND a.tenant_id = ?2");
    conn.prepare_cached(&sql)?
        .query_row(params![id.0, tenant.0], alert_from_row)
        .optional()?
        .ok_or(StoreError::NotFound)
}

pub(crate) fn list(
    conn: &Connection,
    tenant: TenantId,
    filter: &AlertFilter,
) -> StoreResult<Vec<Alert>> {
    // Four fixed shapes rather than `?n IS NULL OR ...`, which would hide the
    // (tenant_id, state, id) index from the planner.
    let mut sql = format!("{ALERT_SELECT} WHERE a.tenant_id = ?1");
    if filter.state.is_some() {
        sql.push_str(" AND a.state = ?2");
    }
    if filter.sensor.is_some() {
        sql.push_str(" AND s.key = ?3");
    }
    sql.push_str(" AND a.id < ?5 ORDER BY a.id DESC LIMIT ?4");
    let mut stmt = conn.prepare_cached(&sql)?;
    let state = filter.state.map(AlertState::as_str);
    let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
    // Each shape binds every parameter it names; the others do not appear in its SQL.
    stmt.raw_bind_parameter(1, tenant.0)?;
    if let Some(state) = state {
        stmt.raw_bind_parameter(2, state)?;
    }
    if let Some(sensor) = &filter.sensor {
        stmt.raw_bind_parameter(3, sensor)?;
    }
    stmt.raw_bind_parameter(4, limit)?;
    stmt.raw_bind_parameter(5, filter.before.map_or(i64::MAX, |id| id.0))?;
    let mut rows = stmt.raw_query();
    let mut alerts = Vec::new();
    while let Some(row) = rows.next()? {
        alerts.push(alert_from_row(row)?);
    }
    Ok(alerts)
}

pub(crate) fn unresolved(conn: &Connection) -> StoreResult<Vec<Alert>> {
    let sql = format!("{ALERT_SELECT} WHERE a.state IN ('open', 'acked') ORDER BY a.id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], alert_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Opens an alert unless one is open or acked for (sensor, rule); the partial unique
/// index decides, so this holds across processes too. `None` when one already was.
pub(crate) fn open(conn: &Connection, new: &NewAlert) -> StoreResult<Option<Alert>> {
    let id: Option<i64> = conn
        .prepare_cached(
            "INSERT INTO alerts (tenant_id, sensor_id, rule, kind, severity, state, metric, value,
             message, opened_at, details)
             VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT DO NOTHING RETURNING id",
        )?
        .query_row(
            params![
                new.tenant.0,
                new.sensor.0,
                new.rule,
                new.kind.as_str(),
                new.severity.as_str(),
                new.metric,
                new.value,
                new.message,
                new.opened_at.0,
                crate::alerts::details_to_json(&new.details)?
            ],
            |r| r.get(0),
        )
        .optional()?;
    id.map(|id| get(conn, new.tenant, AlertId(id))).transpose()
}

/// Resolves the unresolved alert of (sensor, rule) as `auto`; `None` when there is none.
pub(crate) fn auto_resolve(
    conn: &Connection,
    tenant: TenantId,
    sensor: SensorId,
    rule: &str,
    at: Timestamp,
) -> StoreResult<Option<Alert>> {
    let id: Option<i64> = conn
        .prepare_cached(
            "UPDATE alerts SET state = 'resolved', resolved_at = ?1, resolved_by = 'auto'
             WHERE tenant_id = ?2 AND sensor_id = ?3 AND rule = ?4 AND state IN ('open', 'acked')
             RETURNING id",
        )?
        .query_row(params![at.0, tenant.0, sensor.0, rule], |r| r.get(0))
        .optional()?;
    id.map(|id| get(conn, tenant, AlertId(id))).transpose()
}

/// Open → acked; acked stays as it is; resolved is a `Conflict`. Call inside a transaction.
pub(crate) fn ack(
    conn: &Connection,
    tenant: TenantId,
    id: AlertId,
    by: &str,
    at: Timestamp,
) -> StoreResult<Alert> {
    let alert = get(conn, tenant, id)?;
    match alert.state {
        AlertState::Acked => Ok(alert),
        AlertState::Resolved => Err(StoreError::Conflict(format!(
            "alert {id} is already resolved"
        ))),
        AlertState::Open => {
            conn.prepare_cached(
                "UPDATE alerts SET state = 'acked', acked_at = ?2, acked_by = ?3 WHERE id = ?1",
            )?
            .execute(params![id.0, at.0, by])?;
            get(conn, tenant, id)
        }
    }
}

/// Open or acked → resolved by `by`; resolved stays as it is. Call inside a transaction.
pub(crate) fn resolve(
    conn: &Connection,
    tenant: TenantId,
    id: AlertId,
    by: &str,
    at: Timestamp,
) -> StoreResult<Alert> {
    let alert = get(conn, tenant, id)?;
    if alert.state == AlertState::Resolved {
        return Ok(alert);
    }
    conn.prepare_cached(
        "UPDATE alerts SET state = 'resolved', resolved_at = ?2, resolved_by = ?3 WHERE id = ?1",
    )?
    .execute(params![id.0, at.0, by])?;
    get(conn, tenant, id)
}

/// Resolves, as `by`, the sensor's unresolved alerts whose rule is not in `rules`. Call
/// inside the transaction that changed the rules.
pub(crate) fn resolve_removed_rules(
    conn: &Connection,
    sensor: &vigia_core::Sensor,
    by: &str,
    at: Timestamp,
) -> StoreResult<Vec<Alert>> {
    let sql = format!(
        "{ALERT_SELECT} WHERE a.sensor_id = ?1 AND a.state IN ('open', 'acked') ORDER BY a.id"
    );
    let unresolved = conn
        .prepare_cached(&sql)?
        .query_map([sensor.id.0], alert_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut resolved = Vec::new();
    for alert in unresolved {
        if sensor.rules.iter().any(|r| r.name == alert.rule) {
            continue;
        }
        resolved.push(resolve(conn, sensor.tenant, alert.id, by, at)?);
    }
    Ok(resolved)
}

/// Open plus acked alerts per sensor of the tenant's sensors in `scope`.
pub(crate) fn unresolved_counts(
    conn: &Connection,
    tenant: TenantId,
    scope: &SensorScope,
) -> StoreResult<Vec<(SensorId, u64)>> {
    let row = |r: &Row<'_>| Ok((SensorId(r.get(0)?), r.get::<_, i64>(1)?.max(0) as u64));
    let counts = match scope {
        SensorScope::One(sensor) => conn
            .prepare_cached(
                "SELECT sensor_id, count(*) FROM alerts
                 WHERE tenant_id = ?1 AND sensor_id = ?2 AND state IN ('open', 'acked')
                 GROUP BY sensor_id",
            )?
            .query_map(params![tenant.0, sensor.0], row)?
            .collect::<Result<Vec<_>, _>>()?,
        SensorScope::Keys { after, through } => conn
            .prepare_cached(
                "SELECT a.sensor_id, count(*) FROM alerts a JOIN sensors s ON s.id = a.sensor_id
                 WHERE a.tenant_id = ?1 AND s.key > ?2 AND s.key <= ?3
                   AND a.state IN ('open', 'acked')
                 GROUP BY a.sensor_id",
            )?
            .query_map(
                params![tenant.0, after.as_deref().unwrap_or(""), through],
                row,
            )?
            .collect::<Result<Vec<_>, _>>()?,
        SensorScope::All => conn
            .prepare_cached(
                "SELECT sensor_id, count(*) FROM alerts
                 WHERE tenant_id = ?1 AND state IN ('open', 'acked') GROUP BY sensor_id",
            )?
            .query_map([tenant.0], row)?
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(counts)
}
