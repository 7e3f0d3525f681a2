//! The SQL of every port but the unit of work (see `batch.rs`). Functions take a
//! `&mut PgConnection`, so they run the same on a pooled connection or inside a
//! transaction (`&mut *tx`); the caller picks the pool (primary or replica) and the
//! transaction.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use vigia_core::{
    Alert, AlertChange, AlertId, AlertState, ApiKeyId, ApiKeyInfo, ApiKeyRecord, DomainEvent, Role,
    Rule, RuleKind, Sensor, SensorId, SensorKind, SensorSpec, Severity, Tenant, TenantId,
    Timestamp,
};

use super::error::PgResultExt;
use crate::{
    audit_minute, AlertFilter, AuditEvent, AuditOutcome, AuditRecord, LatestReading, NewAlert,
    NewApiKey, OutboxEntry, Point, ReadingQuery, SensorReading, SensorScope, StoreError,
    StoreResult,
};

/// Column `index` of `row`.
fn col<'r, T>(row: &'r PgRow, index: usize) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(index).pg()
}

fn bad_column(what: String) -> StoreError {
    StoreError::Internal(format!("a stored value cannot be read: {what}"))
}

/// A `usize` limit as SQL `LIMIT` takes it.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------- tenants and keys

const DEFAULT_TENANT_SLUG: &str = "default";

fn tenant_from_row(row: &PgRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: TenantId(col(row, 0)?),
        slug: col(row, 1)?,
        name: col(row, 2)?,
    })
}

pub(crate) async fn default_tenant(conn: &mut PgConnection, now: Timestamp) -> StoreResult<Tenant> {
    sqlx::query(
        "INSERT INTO tenants (slug, name, created_at) VALUES ($1, 'Default', $2)
         ON CONFLICT (slug) DO NOTHING",
    )
    .bind(DEFAULT_TENANT_SLUG)
    .bind(now.0)
    .execute(&mut *conn)
    .await
    .pg()?;
    tenant_by_slug(conn, DEFAULT_TENANT_SLUG)
        .await?
        .ok_or_else(|| StoreError::Internal("the default tenant vanished".into()))
}

pub(crate) async fn tenant_by_slug(
    conn: &mut PgConnection,
    slug: &str,
) -> StoreResult<Option<Tenant>> {
    sqlx::query("SELECT id, slug, name FROM tenants WHERE slug = $1")
        .bind(slug)
        .fetch_optional(&mut *conn)
        .await
        .pg()?
        .map(|r| tenant_from_row(&r))
        .transpose()
}

pub(crate) async fn create_tenant(
    conn: &mut PgConnection,
    slug: &str,
    name: &str,
    now: Timestamp,
) -> StoreResult<Tenant> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO tenants (slug, name, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (slug) DO NOTHING RETURNING id",
    )
    .bind(slug)
    .bind(name)
    .bind(now.0)
    .fetch_optional(&mut *conn)
    .await
    .pg()?
    .ok_or_else(|| StoreError::Conflict(format!("tenant `{slug}` already exists")))?;
    Ok(Tenant {
        id: TenantId(id),
        slug: slug.to_string(),
        name: name.to_string(),
    })
}

/// `NotFound` unless the tenant exists, so a bad id is a clear error rather than a
/// foreign-key failure.
async fn require_tenant(conn: &mut PgConnection, tenant: TenantId) -> StoreResult<()> {
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
        .bind(tenant.0)
        .fetch_optional(&mut *conn)
        .await
        .pg()?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

pub(crate) async fn count_api_keys(conn: &mut PgConnection) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&mut *conn)
        .await
        .pg()?;
    Ok(n.max(0) as u64)
}

fn role(text: &str) -> StoreResult<Role> {
    text.parse().map_err(|e: String| bad_column(e))
}

pub(crate) async fn insert_api_key(
    conn: &mut PgConnection,
    key: &NewApiKey,
    now: Timestamp,
) -> StoreResult<ApiKeyInfo> {
    require_tenant(conn, key.tenant).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO api_keys (tenant_id, name, role, hash, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (hash) DO NOTHING RETURNING id",
    )
    .bind(key.tenant.0)
    .bind(&key.name)
    .bind(key.role.as_str())
    .bind(&key.hash[..])
    .bind(now.0)
    .fetch_optional(&mut *conn)
    .await
    .pg()?
    .ok_or_else(|| StoreError::Conflict("an API key with this hash already exists".into()))?;
    Ok(ApiKeyInfo {
        id: ApiKeyId(id),
        name: key.name.clone(),
        role: key.role,
        created_at: now,
    })
}

pub(crate) async fn find_api_key(
    conn: &mut PgConnection,
    hash: &[u8; 32],
) -> StoreResult<Option<ApiKeyRecord>> {
    let row = sqlx::query(
        "SELECT id, tenant_id, name, role FROM api_keys WHERE hash = $1 AND revoked_at IS NULL",
    )
    .bind(&hash[..])
    .fetch_optional(&mut *conn)
    .await
    .pg()?;
    row.map(|r| {
        Ok(ApiKeyRecord {
            id: ApiKeyId(col(&r, 0)?),
            tenant: TenantId(col(&r, 1)?),
            name: col(&r, 2)?,
            role: role(&col::<String>(&r, 3)?)?,
        })
    })
    .transpose()
}

pub(crate) async fn list_api_keys(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> StoreResult<Vec<ApiKeyInfo>> {
    let rows = sqlx::query(
        "SELECT id, name, role, created_at FROM api_keys
         WHERE tenant_id = $1 AND revoked_at IS NULL ORDER BY id",
    )
    .bind(tenant.0)
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    rows.iter()
        .map(|r| {
            Ok(ApiKeyInfo {
                id: ApiKeyId(col(r, 0)?),
                name: col(r, 1)?,
                role: role(&col::<String>(r, 2)?)?,
                created_at: Timestamp(col(r, 3)?),
            })
        })
        .collect()
}

pub(crate) async fn revoke_api_key(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ApiKeyId,
    at: Timestamp,
) -> StoreResult<[u8; 32]> {
    let hash: Vec<u8> = sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = $3
         WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL RETURNING hash",
    )
    .bind(id.0)
    .bind(tenant.0)
    .bind(at.0)
    .fetch_optional(&mut *conn)
    .await
    .pg()?
    .ok_or(StoreError::NotFound)?;
    hash.try_into()
        .map_err(|_| StoreError::Internal("a stored key hash is not 32 bytes".into()))
}

// ---------------------------------------------------------------- sensors

const SENSOR_COLUMNS: &str =
    "id, tenant_id, key, name, kind, unit, rules::text, stock, product, created_at";

fn sensor_from_row(row: &PgRow) -> StoreResult<Sensor> {
    let kind: String = col(row, 4)?;
    let rules: String = col(row, 6)?;
    Ok(Sensor {
        id: SensorId(col(row, 0)?),
        tenant: TenantId(col(row, 1)?),
        key: col(row, 2)?,
        name: col(row, 3)?,
        kind: SensorKind::parse(&kind)
            .ok_or_else(|| bad_column(format!("unknown sensor kind `{kind}`")))?,
        unit: col(row, 5)?,
        rules: serde_json::from_str::<Vec<Rule>>(&rules)
            .map_err(|e| bad_column(format!("invalid rules JSON: {e}")))?,
        stock: col(row, 7)?,
        product: col(row, 8)?,
        created_at: Timestamp(col(row, 9)?),
    })
}

pub(crate) async fn list_sensors(
    conn: &mut PgConnection,
    tenant: TenantId,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<Sensor>> {
    // Keys are never empty, so "" is before every key. The column is `COLLATE "C"`:
    // pages follow byte order, as on the other backends.
    sqlx::query(&format!(
        "SELECT {SENSOR_COLUMNS} FROM sensors WHERE tenant_id = $1 AND key > $2
         ORDER BY key LIMIT $3"
    ))
    .bind(tenant.0)
    .bind(after.unwrap_or(""))
    .bind(sql_limit(limit))
    .fetch_all(&mut *conn)
    .await
    .pg()?
    .iter()
    .map(sensor_from_row)
    .collect()
}

pub(crate) async fn all_sensors(conn: &mut PgConnection) -> StoreResult<Vec<Sensor>> {
    sqlx::query(&format!(
        "SELECT {SENSOR_COLUMNS} FROM sensors ORDER BY tenant_id, key"
    ))
    .fetch_all(&mut *conn)
    .await
    .pg()?
    .iter()
    .map(sensor_from_row)
    .collect()
}

pub(crate) async fn get_sensor(
    conn: &mut PgConnection,
    tenant: TenantId,
    key: &str,
) -> StoreResult<Option<Sensor>> {
    sqlx::query(&format!(
        "SELECT {SENSOR_COLUMNS} FROM sensors WHERE tenant_id = $1 AND key = $2"
    ))
    .bind(tenant.0)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await
    .pg()?
    .map(|r| sensor_from_row(&r))
    .transpose()
}

pub(crate) async fn sensor_id(
    conn: &mut PgConnection,
    tenant: TenantId,
    key: &str,
) -> StoreResult<Option<SensorId>> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT id FROM sensors WHERE tenant_id = $1 AND key = $2")
            .bind(tenant.0)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .pg()?
            .map(SensorId),
    )
}

/// Sensor id → tenant for those of `ids` that exist.
pub(crate) async fn sensor_tenants(
    conn: &mut PgConnection,
    ids: &[i64],
) -> StoreResult<Vec<(i64, i64)>> {
    sqlx::query_as("SELECT id, tenant_id FROM sensors WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
        .pg()
}

/// Creates or replaces the writable fields in one statement (two concurrent puts of a
/// new key cannot both insert); returns the sensor and whether it was created. Call
/// inside a transaction.
pub(crate) async fn put_sensor(
    conn: &mut PgConnection,
    tenant: TenantId,
    key: &str,
    spec: &SensorSpec,
    now: Timestamp,
) -> StoreResult<(Sensor, bool)> {
    require_tenant(conn, tenant).await?;
    let rules = serde_json::to_string(&spec.rules)
        .map_err(|e| StoreError::Internal(format!("cannot encode rules: {e}")))?;
    let row = sqlx::query(&format!(
        "INSERT INTO sensors (tenant_id, key, name, kind, unit, rules, stock, product,
             created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $9)
         ON CONFLICT (tenant_id, key) DO UPDATE SET name = excluded.name,
             kind = excluded.kind, unit = excluded.unit, rules = excluded.rules,
             stock = excluded.stock, product = excluded.product,
             updated_at = excluded.updated_at
         RETURNING {SENSOR_COLUMNS}, (xmax = 0) AS created"
    ))
    .bind(tenant.0)
    .bind(key)
    .bind(spec.name.as_deref().unwrap_or(key))
    .bind(spec.kind.as_str())
    .bind(spec.unit.as_deref())
    .bind(rules)
    .bind(spec.stock)
    .bind(spec.product.as_deref())
    .bind(now.0)
    .fetch_one(&mut *conn)
    .await
    .pg()?;
    Ok((sensor_from_row(&row)?, col(&row, 10)?))
}

/// Creates every missing key with defaults (name = key, generic, no rules); returns the
/// sensors in the order of `keys`.
pub(crate) async fn provision_sensors(
    conn: &mut PgConnection,
    tenant: TenantId,
    keys: &[String],
    now: Timestamp,
) -> StoreResult<Vec<Sensor>> {
    require_tenant(conn, tenant).await?;
    sqlx::query(
        "INSERT INTO sensors (tenant_id, key, name, kind, rules, created_at, updated_at)
         SELECT $1, k, k, $3, '[]', $4, $4 FROM unnest($2::text[]) AS k
         ON CONFLICT (tenant_id, key) DO NOTHING",
    )
    .bind(tenant.0)
    .bind(keys)
    .bind(SensorKind::Generic.as_str())
    .bind(now.0)
    .execute(&mut *conn)
    .await
    .pg()?;
    let rows = sqlx::query(&format!(
        "SELECT {SENSOR_COLUMNS} FROM sensors WHERE tenant_id = $1 AND key = ANY($2)"
    ))
    .bind(tenant.0)
    .bind(keys)
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    let mut by_key: HashMap<String, Sensor> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let sensor = sensor_from_row(row)?;
        by_key.insert(sensor.key.clone(), sensor);
    }
    keys.iter()
        .map(|k| {
            by_key.get(k).cloned().ok_or_else(|| {
                StoreError::Internal(format!("sensor `{k}` vanished after provisioning it"))
            })
        })
        .collect()
}

// ---------------------------------------------------------------- alerts

const ALERT_SELECT: &str = "SELECT a.id, a.tenant_id, a.sensor_id, s.key, a.rule, a.kind,
    a.severity, a.state, a.metric, a.value, a.message, a.opened_at, a.acked_at, a.acked_by,
    a.resolved_at, a.resolved_by, a.details::text
    FROM alerts a JOIN sensors s ON s.id = a.sensor_id";

fn alert_from_row(row: &PgRow) -> StoreResult<Alert> {
    let kind: String = col(row, 5)?;
    let severity: String = col(row, 6)?;
    let state: String = col(row, 7)?;
    Ok(Alert {
        id: AlertId(col(row, 0)?),
        tenant: TenantId(col(row, 1)?),
        sensor_id: SensorId(col(row, 2)?),
        sensor: col(row, 3)?,
        rule: col(row, 4)?,
        kind: RuleKind::parse(&kind)
            .ok_or_else(|| bad_column(format!("unknown rule kind `{kind}`")))?,
        severity: Severity::parse(&severity)
            .ok_or_else(|| bad_column(format!("unknown severity `{severity}`")))?,
        state: AlertState::parse(&state)
            .ok_or_else(|| bad_column(format!("unknown alert state `{state}`")))?,
        metric: col(row, 8)?,
        value: col(row, 9)?,
        message: col(row, 10)?,
        opened_at: Timestamp(col(row, 11)?),
        acked_at: col::<Option<i64>>(row, 12)?.map(Timestamp),
        acked_by: col(row, 13)?,
        resolved_at: col::<Option<i64>>(row, 14)?.map(Timestamp),
        resolved_by: col(row, 15)?,
        details: crate::alerts::details_from_json(col::<Option<String>>(row, 16)?.as_deref())
            .map_err(bad_column)?,
    })
}

pub(crate) async fn get_alert(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: AlertId,
) -> StoreResult<Alert> {
    let row = sqlx::query(&format!(
        "{ALERT_SELECT} WHERE a.id = $1 AND a.tenant_id = $2"
    ))
    .bind(id.0)
    .bind(tenant.0)
    .fetch_optional(&mut *conn)
    .await
    .pg()?
    .ok_or(StoreError::NotFound)?;
    alert_from_row(&row)
}

/// The alert, its row locked until the transaction ends (so an ack and a resolve of the
/// same alert apply one after the other). Call inside a transaction.
async fn lock_alert(conn: &mut PgConnection, tenant: TenantId, id: AlertId) -> StoreResult<Alert> {
    let row = sqlx::query(&format!(
        "{ALERT_SELECT} WHERE a.id = $1 AND a.tenant_id = $2 FOR UPDATE OF a"
    ))
    .bind(id.0)
    .bind(tenant.0)
    .fetch_optional(&mut *conn)
    .await
    .pg()?
    .ok_or(StoreError::NotFound)?;
    alert_from_row(&row)
}

pub(crate) async fn list_alerts(
    conn: &mut PgConnection,
    tenant: TenantId,
    filter: &AlertFilter,
) -> StoreResult<Vec<Alert>> {
    // Fixed shapes rather than `$n IS NULL OR ...`, which would hide the
    // (tenant_id, state, id) index from the planner. Parameters are numbered in order.
    let mut sql = format!("{ALERT_SELECT} WHERE a.tenant_id = $1");
    let mut next = 2;
    if filter.state.is_some() {
        sql.push_str(&format!(" AND a.state = ${next}"));
        next += 1;
    }
    if filter.sensor.is_some() {
        sql.push_str(&format!(" AND s.key = ${next}"));
        next += 1;
    }
    sql.push_str(&format!(
        " AND a.id < ${} ORDER BY a.id DESC LIMIT ${next}",
        next + 1
    ));
    let mut query = sqlx::query(&sql).bind(tenant.0);
    if let Some(state) = filter.state {
        query = query.bind(state.as_str());
    }
    if let Some(sensor) = &filter.sensor {
        query = query.bind(sensor.as_str());
    }
    query
        .bind(sql_limit(filter.limit))
        .bind(filter.before.map_or(i64::MAX, |id| id.0))
        .fetch_all(&mut *conn)
        .await
        .pg()?
        .iter()
        .map(alert_from_row)
        .collect()
}

pub(crate) async fn unresolved(conn: &mut PgConnection) -> StoreResult<Vec<Alert>> {
    sqlx::query(&format!(
        "{ALERT_SELECT} WHERE a.state IN ('open', 'acked') ORDER BY a.id"
    ))
    .fetch_all(&mut *conn)
    .await
    .pg()?
    .iter()
    .map(alert_from_row)
    .collect()
}

/// Opens an alert unless one is open or acked for (sensor, rule): the partial unique
/// index decides (a concurrent opener waits for the other's commit, then does nothing).
pub(crate) async fn open_alert(
    conn: &mut PgConnection,
    new: &NewAlert,
) -> StoreResult<Option<Alert>> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO alerts (tenant_id, sensor_id, rule, kind, severity, state, metric, value,
             message, opened_at, details)
         VALUES ($1, $2, $3, $4, $5, 'open', $6, $7, $8, $9, $10::jsonb)
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(new.tenant.0)
    .bind(new.sensor.0)
    .bind(&new.rule)
    .bind(new.kind.as_str())
    .bind(new.severity.as_str())
    .bind(&new.metric)
    .bind(new.value)
    .bind(&new.message)
    .bind(new.opened_at.0)
    .bind(crate::alerts::details_to_json(&new.details)?)
    .fetch_optional(&mut *conn)
    .await
    .pg()?;
    match id {
        Some(id) => Ok(Some(get_alert(conn, new.tenant, AlertId(id)).await?)),
        None => Ok(None),
    }
}

/// Resolves the unresolved alert of (sensor, rule) as `auto`; `None` when there is none.
pub(crate) async fn auto_resolve(
    conn: &mut PgConnection,
    tenant: TenantId,
    sensor: SensorId,
    rule: &str,
    at: Timestamp,
) -> StoreResult<Option<Alert>> {
    let id: Option<i64> = sqlx::query_scalar(
        "UPDATE alerts SET state = 'resolved', resolved_at = $1, resolved_by = 'auto'
         WHERE tenant_id = $2 AND sensor_id = $3 AND rule = $4 AND state IN ('open', 'acked')
         RETURNING id",
    )
    .bind(at.0)
    .bind(tenant.0)
    .bind(sensor.0)
    .bind(rule)
    .fetch_optional(&mut *conn)
    .await
    .pg()?;
    match id {
        Some(id) => Ok(Some(get_alert(conn, tenant, AlertId(id)).await?)),
        None => Ok(None),
    }
}

/// Open → acked (appending its event); acked stays; resolved is a `Conflict`. Call
/// inside a transaction.
pub(crate) async fn ack(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: AlertId,
    by: &str,
    at: Timestamp,
) -> StoreResult<Alert> {
    let alert = lock_alert(conn, tenant, id).await?;
    match alert.state {
        AlertState::Acked => Ok(alert),
        AlertState::Resolved => Err(StoreError::Conflict(format!(
            "alert {id} is already resolved"
        ))),
        AlertState::Open => {
            sqlx::query(
                "UPDATE alerts SET state = 'acked', acked_at = $2, acked_by = $3 WHERE id = $1",
            )
            .bind(id.0)
            .bind(at.0)
            .bind(by)
            .execute(&mut *conn)
            .await
            .pg()?;
            let after = get_alert(conn, tenant, id).await?;
            alert_changed(conn, AlertChange::Acked, &after, at).await?;
            Ok(after)
        }
    }
}

/// Open or acked → resolved by `by` (appending its event); resolved stays. Call inside a
/// transaction.
pub(crate) async fn resolve(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: AlertId,
    by: &str,
    at: Timestamp,
) -> StoreResult<Alert> {
    let alert = lock_alert(conn, tenant, id).await?;
    if alert.state == AlertState::Resolved {
        return Ok(alert);
    }
    sqlx::query(
        "UPDATE alerts SET state = 'resolved', resolved_at = $2, resolved_by = $3 WHERE id = $1",
    )
    .bind(id.0)
    .bind(at.0)
    .bind(by)
    .execute(&mut *conn)
    .await
    .pg()?;
    let after = get_alert(conn, tenant, id).await?;
    alert_changed(conn, AlertChange::Resolved, &after, at).await?;
    Ok(after)
}

/// Resolves, as `by`, the sensor's unresolved alerts whose rule is not in its rules.
/// Call inside the transaction that changed the rules.
pub(crate) async fn resolve_removed_rules(
    conn: &mut PgConnection,
    sensor: &Sensor,
    by: &str,
    at: Timestamp,
) -> StoreResult<Vec<Alert>> {
    let unresolved: Vec<Alert> = sqlx::query(&format!(
        "{ALERT_SELECT} WHERE a.sensor_id = $1 AND a.state IN ('open', 'acked') ORDER BY a.id"
    ))
    .bind(sensor.id.0)
    .fetch_all(&mut *conn)
    .await
    .pg()?
    .iter()
    .map(alert_from_row)
    .collect::<StoreResult<_>>()?;
    let mut resolved = Vec::new();
    for alert in unresolved {
        if sensor.rules.iter().any(|r| r.name == alert.rule) {
            continue;
        }
        resolved.push(resolve(conn, sensor.tenant, alert.id, by, at).await?);
    }
    Ok(resolved)
}

pub(crate) async fn unresolved_counts(
    conn: &mut PgConnection,
    tenant: TenantId,
    scope: &SensorScope,
) -> StoreResult<Vec<(SensorId, u64)>> {
    let rows: Vec<(i64, i64)> = match scope {
        SensorScope::One(sensor) => sqlx::query_as(
            "SELECT sensor_id, count(*) FROM alerts
             WHERE tenant_id = $1 AND sensor_id = $2 AND state IN ('open', 'acked')
             GROUP BY sensor_id",
        )
        .bind(tenant.0)
        .bind(sensor.0)
        .fetch_all(&mut *conn)
        .await
        .pg()?,
        SensorScope::Keys { after, through } => sqlx::query_as(
            "SELECT a.sensor_id, count(*) FROM alerts a JOIN sensors s ON s.id = a.sensor_id
             WHERE a.tenant_id = $1 AND s.key > $2 AND s.key <= $3
               AND a.state IN ('open', 'acked')
             GROUP BY a.sensor_id",
        )
        .bind(tenant.0)
        .bind(after.as_deref().unwrap_or(""))
        .bind(through.as_str())
        .fetch_all(&mut *conn)
        .await
        .pg()?,
        SensorScope::All => sqlx::query_as(
            "SELECT sensor_id, count(*) FROM alerts
             WHERE tenant_id = $1 AND state IN ('open', 'acked') GROUP BY sensor_id",
        )
        .bind(tenant.0)
        .fetch_all(&mut *conn)
        .await
        .pg()?,
    };
    Ok(rows
        .into_iter()
        .map(|(s, n)| (SensorId(s), n.max(0) as u64))
        .collect())
}

// ---------------------------------------------------------------- outbox

/// Advisory lock key that orders outbox appends ("vigiaobx").
pub const OUTBOX_LOCK: i64 = 0x7669_6769_616f_6278;

/// Takes the outbox's transaction-scoped advisory lock; every transaction that may
/// append an event calls it BEFORE touching any alert row.
///
/// Identity values are handed out at insert but become visible at commit, so two
/// transactions could commit ids 11 then 10, and a consumer that read 11 and saved its
/// cursor would never see 10. Holding this lock until commit makes appenders commit in id
/// order (alert changes are rare; readings alone never take it). Taking it before the
/// alert rows, never after, keeps a lock-holder from waiting on an alert row of a
/// transaction that waits for the lock (a deadlock).
pub(crate) async fn lock_outbox(conn: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(OUTBOX_LOCK)
        .execute(&mut *conn)
        .await
        .pg()?;
    Ok(())
}

/// Appends the event of an alert change. Call inside the change's transaction, after
/// [`lock_outbox`].
pub(crate) async fn alert_changed(
    conn: &mut PgConnection,
    change: AlertChange,
    alert: &Alert,
    at: Timestamp,
) -> StoreResult<()> {
    let event = DomainEvent::AlertChanged {
        tenant: alert.tenant,
        change,
        alert: alert.clone(),
    };
    sqlx::query("INSERT INTO outbox (created_at, event) VALUES ($1, $2)")
        .bind(at.0)
        .bind(event.encode())
        .execute(&mut *conn)
        .await
        .pg()?;
    Ok(())
}

pub(crate) async fn read_outbox(
    conn: &mut PgConnection,
    after: u64,
    limit: usize,
) -> StoreResult<Vec<OutboxEntry>> {
    let rows: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT id, created_at, event FROM outbox WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(i64::try_from(after).unwrap_or(i64::MAX))
    .bind(sql_limit(limit))
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    rows.into_iter()
        .map(|(id, at, bytes)| {
            let event = DomainEvent::decode(&bytes).map_err(|e| {
                StoreError::Internal(format!("outbox event {id} cannot be read: {e}"))
            })?;
            Ok(OutboxEntry {
                id: id.max(0) as u64,
                at: Timestamp(at),
                event,
            })
        })
        .collect()
}

pub(crate) async fn cursor(conn: &mut PgConnection, consumer: &str) -> StoreResult<u64> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM outbox_cursors WHERE consumer = $1")
            .bind(consumer)
            .fetch_optional(&mut *conn)
            .await
            .pg()?;
    Ok(position.unwrap_or(0).max(0) as u64)
}

pub(crate) async fn save_cursor(
    conn: &mut PgConnection,
    consumer: &str,
    position: u64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO outbox_cursors (consumer, position) VALUES ($1, $2)
         ON CONFLICT (consumer) DO UPDATE
         SET position = GREATEST(outbox_cursors.position, excluded.position)",
    )
    .bind(consumer)
    .bind(i64::try_from(position).unwrap_or(i64::MAX))
    .execute(&mut *conn)
    .await
    .pg()?;
    Ok(())
}

pub(crate) async fn prune_outbox(conn: &mut PgConnection, before: Timestamp) -> StoreResult<u64> {
    Ok(sqlx::query("DELETE FROM outbox WHERE created_at < $1")
        .bind(before.0)
        .execute(&mut *conn)
        .await
        .pg()?
        .rows_affected())
}

// ---------------------------------------------------------------- audit and leases

/// `tenant_id` stored for "no tenant" (see the migration).
const NO_TENANT: i64 = 0;

pub(crate) async fn record_audit(
    conn: &mut PgConnection,
    events: &[(AuditEvent, u64)],
    at: Timestamp,
) -> StoreResult<()> {
    let minute = audit_minute(at);
    for (event, count) in events {
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, minute, client, actor, action, target, outcome,
                 count, first_at, last_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
             ON CONFLICT (tenant_id, minute, client, actor, action, target, outcome)
             DO UPDATE SET count = audit_log.count + excluded.count, last_at = excluded.last_at",
        )
        .bind(event.tenant.map_or(NO_TENANT, |t| t.0))
        .bind(minute.0)
        .bind(&event.client)
        .bind(&event.actor)
        .bind(&event.action)
        .bind(&event.target)
        .bind(event.outcome.as_str())
        .bind(i64::try_from(*count).unwrap_or(i64::MAX))
        .bind(at.0)
        .execute(&mut *conn)
        .await
        .pg()?;
    }
    Ok(())
}

pub(crate) async fn list_audit(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    limit: usize,
) -> StoreResult<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT tenant_id, minute, client, actor, action, target, outcome, count, first_at,
             last_at FROM audit_log WHERE tenant_id = $1 ORDER BY minute DESC, id DESC LIMIT $2",
    )
    .bind(tenant.map_or(NO_TENANT, |t| t.0))
    .bind(sql_limit(limit))
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    rows.iter()
        .map(|r| {
            let tenant: i64 = col(r, 0)?;
            let outcome: String = col(r, 6)?;
            Ok(AuditRecord {
                tenant: (tenant != NO_TENANT).then_some(TenantId(tenant)),
                minute: Timestamp(col(r, 1)?),
                client: col(r, 2)?,
                actor: col(r, 3)?,
                action: col(r, 4)?,
                target: col(r, 5)?,
                outcome: AuditOutcome::parse(&outcome)
                    .ok_or_else(|| bad_column(format!("unknown audit outcome `{outcome}`")))?,
                count: col::<i64>(r, 7)?.max(0) as u64,
                first_at: Timestamp(col(r, 8)?),
                last_at: Timestamp(col(r, 9)?),
            })
        })
        .collect()
}

pub(crate) async fn prune_audit(conn: &mut PgConnection, before: Timestamp) -> StoreResult<u64> {
    Ok(sqlx::query("DELETE FROM audit_log WHERE minute < $1")
        .bind(before.0)
        .execute(&mut *conn)
        .await
        .pg()?
        .rows_affected())
}

/// Takes or renews the lease in one statement; true when `holder` holds it afterwards.
pub(crate) async fn try_acquire_lease(
    conn: &mut PgConnection,
    name: &str,
    holder: &str,
    ttl: Duration,
    now: Timestamp,
) -> StoreResult<bool> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let changed = sqlx::query(
        "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
             expires_at = excluded.expires_at
         WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
    )
    .bind(name)
    .bind(holder)
    .bind(now.0.saturating_add(ttl_ms))
    .bind(now.0)
    .execute(&mut *conn)
    .await
    .pg()?
    .rows_affected();
    Ok(changed == 1)
}

/// Live leases named `prefix…` at `now`, by name (a handful of rows: the prefix is
/// matched here rather than with an escaped LIKE).
pub(crate) async fn lease_holders(
    conn: &mut PgConnection,
    prefix: &str,
    now: Timestamp,
) -> StoreResult<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT name, holder FROM leases WHERE expires_at > $1 ORDER BY name")
        .bind(now.0)
        .fetch_all(&mut *conn)
        .await
        .pg()?;
    let mut out = Vec::new();
    for row in rows {
        let name: String = row.try_get(0).pg()?;
        if name.starts_with(prefix) {
            out.push((name, row.try_get(1).pg()?));
        }
    }
    Ok(out)
}

pub(crate) async fn release_lease(
    conn: &mut PgConnection,
    name: &str,
    holder: &str,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(holder)
        .execute(&mut *conn)
        .await
        .pg()?;
    Ok(())
}

/// Leases that expired this long ago are nobody's any more: housekeeping drops them.
const STALE_LEASE_MS: i64 = 24 * 3_600_000;

pub(crate) async fn drop_stale_leases(conn: &mut PgConnection, now: Timestamp) -> StoreResult<u64> {
    Ok(sqlx::query("DELETE FROM leases WHERE expires_at < $1")
        .bind(now.0.saturating_sub(STALE_LEASE_MS))
        .execute(&mut *conn)
        .await
        .pg()?
        .rows_affected())
}

// ---------------------------------------------------------------- readings

pub(crate) async fn metric_id(conn: &mut PgConnection, name: &str) -> StoreResult<Option<i64>> {
    sqlx::query_scalar("SELECT id FROM metrics WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .pg()
}

/// One sensor's series; the time-first key makes it a range scan of the partitions the
/// range touches (pruned by the planner), filtered to this sensor.
pub(crate) async fn series(
    conn: &mut PgConnection,
    tenant: TenantId,
    sensor_key: &str,
    query: &ReadingQuery,
) -> StoreResult<Vec<Point>> {
    let sensor = sensor_id(conn, tenant, sensor_key)
        .await?
        .ok_or(StoreError::NotFound)?;
    let Some(metric) = metric_id(conn, &query.metric).await? else {
        return Ok(Vec::new());
    };
    if query.limit == 0 || query.from > query.to {
        return Ok(Vec::new());
    }
    let limit = sql_limit(query.limit);
    // A 1 ms bucket holds at most one reading, so steps of 1 or less are the raw series.
    let rows: Vec<(i64, f64)> = match query.step_ms.filter(|&step| step > 1) {
        None => sqlx::query_as(
            "SELECT ts, value FROM readings
             WHERE ts BETWEEN $1 AND $2 AND sensor_id = $3 AND metric_id = $4
             ORDER BY ts LIMIT $5",
        )
        .bind(query.from.0)
        .bind(query.to.0)
        .bind(sensor.0)
        .bind(metric)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .pg()?,
        // Floor division, so a negative timestamp lands in the bucket below it.
        Some(step) => sqlx::query_as(
            "SELECT ts - (((ts % $6) + $6) % $6) AS bucket, avg(value) FROM readings
             WHERE ts BETWEEN $1 AND $2 AND sensor_id = $3 AND metric_id = $4
             GROUP BY bucket ORDER BY bucket LIMIT $5",
        )
        .bind(query.from.0)
        .bind(query.to.0)
        .bind(sensor.0)
        .bind(metric)
        .bind(limit)
        .bind(step)
        .fetch_all(&mut *conn)
        .await
        .pg()?,
    };
    Ok(rows
        .into_iter()
        .map(|(ts, value)| Point {
            ts: Timestamp(ts),
            value,
        })
        .collect())
}

/// Latest value per (sensor, metric): of one tenant (and optionally one of its sensors)
/// or of all.
pub(crate) async fn latest(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    scope: &SensorScope,
) -> StoreResult<Vec<LatestReading>> {
    const SELECT: &str = "SELECT l.sensor_id, m.name, l.ts, l.value FROM latest_readings l
        JOIN metrics m ON m.id = l.metric_id JOIN sensors s ON s.id = l.sensor_id";
    const ORDER: &str = "ORDER BY l.sensor_id, m.name";
    let rows: Vec<(i64, String, i64, f64)> = match (tenant, scope) {
        (Some(tenant), SensorScope::One(sensor)) => sqlx::query_as(&format!(
            "{SELECT} WHERE s.tenant_id = $1 AND l.sensor_id = $2 {ORDER}"
        ))
        .bind(tenant.0)
        .bind(sensor.0)
        .fetch_all(&mut *conn)
        .await
        .pg()?,
        (Some(tenant), SensorScope::Keys { after, through }) => sqlx::query_as(&format!(
            "{SELECT} WHERE s.tenant_id = $1 AND s.key > $2 AND s.key <= $3 {ORDER}"
        ))
        .bind(tenant.0)
        .bind(after.as_deref().unwrap_or(""))
        .bind(through.as_str())
        .fetch_all(&mut *conn)
        .await
        .pg()?,
        (Some(tenant), SensorScope::All) => {
            sqlx::query_as(&format!("{SELECT} WHERE s.tenant_id = $1 {ORDER}"))
                .bind(tenant.0)
                .fetch_all(&mut *conn)
                .await
                .pg()?
        }
        (None, _) => sqlx::query_as(&format!("{SELECT} {ORDER}"))
            .fetch_all(&mut *conn)
            .await
            .pg()?,
    };
    Ok(rows
        .into_iter()
        .map(|(sensor, metric, ts, value)| LatestReading {
            sensor: SensorId(sensor),
            metric,
            ts: Timestamp(ts),
            value,
        })
        .collect())
}

/// Every tenant's readings since `since`, oldest first, at most the newest `limit`.
pub(crate) async fn recent(
    conn: &mut PgConnection,
    since: Timestamp,
    limit: usize,
) -> StoreResult<Vec<SensorReading>> {
    let mut rows: Vec<(i64, String, i64, f64)> = sqlx::query_as(
        "SELECT r.sensor_id, m.name, r.ts, r.value FROM readings r
         JOIN metrics m ON m.id = r.metric_id
         WHERE r.ts >= $1
         ORDER BY r.ts DESC, r.sensor_id DESC, r.metric_id DESC LIMIT $2",
    )
    .bind(since.0)
    .bind(sql_limit(limit))
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    rows.reverse();
    Ok(rows
        .into_iter()
        .map(|(sensor, metric, ts, value)| SensorReading {
            sensor: SensorId(sensor),
            metric,
            ts: Timestamp(ts),
            value,
        })
        .collect())
}
