//! The SQL of every port but the unit of work (see `batch.rs`). Functions take a
//! `&mut MySqlConnection`, so they run the same on a pooled connection or inside a
//! transaction (`&mut *tx`); the caller picks the pool (primary or replica) and the
//! transaction.
//!
//! Differences from the PostgreSQL queries, and why:
//! - no `RETURNING` on upserts and no `xmax`: sqlx always connects with CLIENT_FOUND_ROWS,
//!   so an `ON DUPLICATE KEY UPDATE` reports 1 both for a new row and for an existing
//!   row left as it was. Where "was it new?" matters (a sensor put, an alert opened, a
//!   lease taken), a locking read (`FOR UPDATE`) decides first, inside the transaction;
//! - a duplicate key is never ignored blindly: plain `INSERT`s whose duplicates are
//!   errors get error 1062 mapped to a precise `Conflict`;
//! - text columns are decoded from bytes (`text`): their `_bin` collation makes the
//!   server flag them BINARY, which sqlx refuses to decode as `String`.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::mysql::MySqlRow;
use sqlx::{MySqlConnection, Row};
use vigia_core::{
    Alert, AlertChange, AlertId, AlertState, ApiKeyId, ApiKeyInfo, ApiKeyRecord, DomainEvent, Role,
    Rule, RuleKind, Sensor, SensorId, SensorKind, SensorSpec, Severity, Tenant, TenantId,
    Timestamp,
};

use super::error::{error_number, store_error, MyResultExt, DUPLICATE_ENTRY};
use crate::{
    audit_minute, AlertFilter, AuditEvent, AuditOutcome, AuditRecord, LatestReading, NewAlert,
    NewApiKey, OutboxEntry, Point, ReadingQuery, SensorReading, SensorScope, StoreError,
    StoreResult,
};

/// Rows of `IN (…)` lists and multi-row statements that take bound values, per statement:
/// far below the 65,535 placeholders of a prepared statement and max_allowed_packet.
pub(crate) const IN_LIST_CHUNK: usize = 1_000;

/// Column `index` of `row`.
fn col<'r, T>(row: &'r MySqlRow, index: usize) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::MySql> + sqlx::Type<sqlx::MySql>,
{
    row.try_get(index).my()
}

/// A text column, read as bytes (see the module docs) and checked as UTF-8.
fn text(row: &MySqlRow, index: usize) -> StoreResult<String> {
    let bytes: Vec<u8> = col(row, index)?;
    String::from_utf8(bytes).map_err(|_| bad_column(format!("column {index} is not UTF-8")))
}

fn opt_text(row: &MySqlRow, index: usize) -> StoreResult<Option<String>> {
    let bytes: Option<Vec<u8>> = col(row, index)?;
    bytes
        .map(|b| {
            String::from_utf8(b).map_err(|_| bad_column(format!("column {index} is not UTF-8")))
        })
        .transpose()
}

fn bad_column(what: String) -> StoreError {
    StoreError::Internal(format!("a stored value cannot be read: {what}"))
}

/// A `usize` limit as SQL `LIMIT` takes it.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// `?, ?, …` with `n` placeholders.
pub(crate) fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

/// Runs `result`, turning a duplicate key into `Conflict(message)`.
fn duplicate_is<T>(
    result: Result<T, sqlx::Error>,
    message: impl FnOnce() -> String,
) -> StoreResult<T> {
    result.map_err(|e| {
        if error_number(&e) == Some(DUPLICATE_ENTRY) {
            StoreError::Conflict(message())
        } else {
            store_error(e)
        }
    })
}

// ---------------------------------------------------------------- tenants and keys

const DEFAULT_TENANT_SLUG: &str = "default";

fn tenant_from_row(row: &MySqlRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: TenantId(col(row, 0)?),
        slug: text(row, 1)?,
        name: text(row, 2)?,
    })
}

pub(crate) async fn default_tenant(
    conn: &mut MySqlConnection,
    now: Timestamp,
) -> StoreResult<Tenant> {
    // `slug = slug`: a no-op on the one duplicate that can happen, without hiding any
    // other error (as INSERT IGNORE would).
    sqlx::query(
        "INSERT INTO tenants (slug, name, created_at) VALUES (?, 'Default', ?)
         ON DUPLICATE KEY UPDATE slug = slug",
    )
    .bind(DEFAULT_TENANT_SLUG)
    .bind(now.0)
    .execute(&mut *conn)
    .await
    .my()?;
    tenant_by_slug(conn, DEFAULT_TENANT_SLUG)
        .await?
        .ok_or_else(|| StoreError::Internal("the default tenant vanished".into()))
}

pub(crate) async fn tenant_by_slug(
    conn: &mut MySqlConnection,
    slug: &str,
) -> StoreResult<Option<Tenant>> {
    sqlx::query("SELECT id, slug, name FROM tenants WHERE slug = ?")
        .bind(slug)
        .fetch_optional(&mut *conn)
        .await
        .my()?
        .map(|r| tenant_from_row(&r))
        .transpose()
}

pub(crate) async fn create_tenant(
    conn: &mut MySqlConnection,
    slug: &str,
    name: &str,
    now: Timestamp,
) -> StoreResult<Tenant> {
    let done = sqlx::query("INSERT INTO tenants (slug, name, created_at) VALUES (?, ?, ?)")
        .bind(slug)
        .bind(name)
        .bind(now.0)
        .execute(&mut *conn)
        .await;
    let id = duplicate_is(done, || format!("tenant `{slug}` already exists"))?.last_insert_id();
    Ok(Tenant {
        id: TenantId(id as i64),
        slug: slug.to_string(),
        name: name.to_string(),
    })
}

/// `NotFound` unless the tenant exists, so a bad id is a clear error rather than a
/// foreign-key failure.
async fn require_tenant(conn: &mut MySqlConnection, tenant: TenantId) -> StoreResult<()> {
    sqlx::query("SELECT 1 FROM tenants WHERE id = ?")
        .bind(tenant.0)
        .fetch_optional(&mut *conn)
        .await
        .my()?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

pub(crate) async fn count_api_keys(conn: &mut MySqlConnection) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&mut *conn)
        .await
        .my()?;
    Ok(n.max(0) as u64)
}

fn role(text: &str) -> StoreResult<Role> {
    text.parse().map_err(|e: String| bad_column(e))
}

pub(crate) async fn insert_api_key(
    conn: &mut MySqlConnection,
    key: &NewApiKey,
    now: Timestamp,
) -> StoreResult<ApiKeyInfo> {
    require_tenant(conn, key.tenant).await?;
    let done = sqlx::query(
        "INSERT INTO api_keys (tenant_id, name, role, hash, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(key.tenant.0)
    .bind(&key.name)
    .bind(key.role.as_str())
    .bind(&key.hash[..])
    .bind(now.0)
    .execute(&mut *conn)
    .await;
    let id =
        duplicate_is(done, || "an API key with this hash already exists".into())?.last_insert_id();
    Ok(ApiKeyInfo {
        id: ApiKeyId(id as i64),
        name: key.name.clone(),
        role: key.role,
        created_at: now,
    })
}

pub(crate) async fn find_api_key(
    conn: &mut MySqlConnection,
    hash: &[u8; 32],
) -> StoreResult<Option<ApiKeyRecord>> {
    let row = sqlx::query(
        "SELECT id, tenant_id, name, role FROM api_keys WHERE hash = ? AND revoked_at IS NULL",
    )
    .bind(&hash[..])
    .fetch_optional(&mut *conn)
    .await
    .my()?;
    row.map(|r| {
        Ok(ApiKeyRecord {
            id: ApiKeyId(col(&r, 0)?),
            tenant: TenantId(col(&r, 1)?),
            name: text(&r, 2)?,
            role: role(&text(&r, 3)?)?,
        })
    })
    .transpose()
}

pub(crate) async fn list_api_keys(
    conn: &mut MySqlConnection,
    tenant: TenantId,
) -> StoreResult<Vec<ApiKeyInfo>> {
    let rows = sqlx::query(
        "SELECT id, name, role, created_at FROM api_keys
         WHERE tenant_id = ? AND revoked_at IS NULL ORDER BY id",
    )
    .bind(tenant.0)
    .fetch_all(&mut *conn)
    .await
    .my()?;
    rows.iter()
        .map(|r| {
            Ok(ApiKeyInfo {
                id: ApiKeyId(col(r, 0)?),
                name: text(r, 1)?,
                role: role(&text(r, 2)?)?,
                created_at: Timestamp(col(r, 3)?),
            })
        })
        .collect()
}

/// Call inside a transaction: the key's row stays locked from the check to the update.
pub(crate) async fn revoke_api_key(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    id: ApiKeyId,
    at: Timestamp,
) -> StoreResult<[u8; 32]> {
    let hash: Vec<u8> = sqlx::query_scalar(
        "SELECT hash FROM api_keys WHERE id = ? AND tenant_id = ? AND revoked_at IS NULL
         FOR UPDATE",
    )
    .bind(id.0)
    .bind(tenant.0)
    .fetch_optional(&mut *conn)
    .await
    .my()?
    .ok_or(StoreError::NotFound)?;
    sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ?")
        .bind(at.0)
        .bind(id.0)
        .execute(&mut *conn)
        .await
        .my()?;
    hash.try_into()
        .map_err(|_| StoreError::Internal("a stored key hash is not 32 bytes".into()))
}

// ---------------------------------------------------------------- sensors

const SENSOR_COLUMNS: &str =
    "id, tenant_id, `key`, name, kind, unit, rules, stock, product, created_at";

fn sensor_from_row(row: &MySqlRow) -> StoreResult<Sensor> {
    let kind = text(row, 4)?;
    let rules = text(row, 6)?;
    Ok(Sensor {
        id: SensorId(col(row, 0)?),
        tenant: TenantId(col(row, 1)?),
        key: text(row, 2)?,
        name: text(row, 3)?,
        kind: SensorKind::parse(&kind)
            .ok_or_else(|| bad_column(format!("unknown sensor kind `{kind}`")))?,
        unit: opt_text(row, 5)?,
        rules: serde_json::from_str::<Vec<Rule>>(&rules)
            .map_err(|e| bad_column(format!("invalid rules JSON: {e}")))?,
        stock: col(row, 7)?,
        product: opt_text(row, 8)?,
        created_at: Timestamp(col(row, 9)?),
    })
}

pub(crate) async fn list_sensors(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<Sensor>> {
    // Keys are never empty, so "" is before every key (byte order: utf8mb4_nopad_bin).
    sqlx::query(&format!(
        "SELECT {SENSOR_COLUMNS} FROM sensors WHERE tenant_id = ? AND `key` > ?
         ORDER BY `key` LIMIT ?"
    ))
    .bind(tenant.0)
    .bind(after.unwrap_or(""))
    .bind(sql_limit(limit))
    .fetch_all(&mut *conn)
    .await
    .my()?
    .iter()
    .map(sensor_from_row)
    .collect()
}

pub(crate) async fn all_sensors(conn: &mut MySqlConnection) -> StoreResult<Vec<Sensor>> {
    sqlx::query(&format!(
        "SELECT {SENSOR_COLUMNS} FROM sensors ORDER BY tenant_id, `key`"
    ))
    .fetch_all(&mut *conn)
    .await
    .my()?
    .iter()
    .map(sensor_from_row)
    .collect()
}

pub(crate) async fn get_sensor(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    key: &str,
) -> StoreResult<Option<Sensor>> {
    sqlx::query(&format!(
        "SELECT {SENSOR_COLUMNS} FROM sensors WHERE tenant_id = ? AND `key` = ?"
    ))
    .bind(tenant.0)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await
    .my()?
    .map(|r| sensor_from_row(&r))
    .transpose()
}

pub(crate) async fn sensor_id(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    key: &str,
) -> StoreResult<Option<SensorId>> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT id FROM sensors WHERE tenant_id = ? AND `key` = ?")
            .bind(tenant.0)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .my()?
            .map(SensorId),
    )
}

/// Sensor id → tenant for those of `ids` that exist.
pub(crate) async fn sensor_tenants(
    conn: &mut MySqlConnection,
    ids: &[i64],
) -> StoreResult<Vec<(i64, i64)>> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IN_LIST_CHUNK) {
        let sql = format!(
            "SELECT id, tenant_id FROM sensors WHERE id IN ({})",
            placeholders(chunk.len())
        );
        let mut query = sqlx::query_as(&sql);
        for id in chunk {
            query = query.bind(id);
        }
        let rows: Vec<(i64, i64)> = query.fetch_all(&mut *conn).await.my()?;
        found.extend(rows);
    }
    Ok(found)
}

/// Creates or replaces the writable fields; returns the sensor and whether it was
/// created. Call inside a transaction: the locking read decides between insert and
/// update, and holds the row until commit. Two concurrent puts of a NEW key both find
/// nothing; the second insert then fails on the unique key (`Conflict`), and the caller
/// retries once, when its locking read finds the row.
pub(crate) async fn put_sensor(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    key: &str,
    spec: &SensorSpec,
    now: Timestamp,
) -> StoreResult<(Sensor, bool)> {
    require_tenant(conn, tenant).await?;
    let rules = serde_json::to_string(&spec.rules)
        .map_err(|e| StoreError::Internal(format!("cannot encode rules: {e}")))?;
    let existing: Option<i64> =
        sqlx::query_scalar("SELECT id FROM sensors WHERE tenant_id = ? AND `key` = ? FOR UPDATE")
            .bind(tenant.0)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .my()?;
    let name = spec.name.as_deref().unwrap_or(key);
    let id = match existing {
        Some(id) => {
            sqlx::query(
                "UPDATE sensors SET name = ?, kind = ?, unit = ?, rules = ?, stock = ?,
                     product = ?, updated_at = ? WHERE id = ?",
            )
            .bind(name)
            .bind(spec.kind.as_str())
            .bind(spec.unit.as_deref())
            .bind(&rules)
            .bind(spec.stock)
            .bind(spec.product.as_deref())
            .bind(now.0)
            .bind(id)
            .execute(&mut *conn)
            .await
            .my()?;
            id
        }
        None => {
            let done = sqlx::query(
                "INSERT INTO sensors (tenant_id, `key`, name, kind, unit, rules, stock, product,
                     created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(tenant.0)
            .bind(key)
            .bind(name)
            .bind(spec.kind.as_str())
            .bind(spec.unit.as_deref())
            .bind(&rules)
            .bind(spec.stock)
            .bind(spec.product.as_deref())
            .bind(now.0)
            .bind(now.0)
            .execute(&mut *conn)
            .await;
            duplicate_is(done, || format!("sensor `{key}` was created concurrently"))?
                .last_insert_id() as i64
        }
    };
    let row = sqlx::query(&format!(
        "SELECT {SENSOR_COLUMNS} FROM sensors WHERE id = ?"
    ))
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .my()?;
    Ok((sensor_from_row(&row)?, existing.is_none()))
}

/// Creates every missing key with defaults (name = key, generic, no rules); returns the
/// sensors in the order of `keys`.
pub(crate) async fn provision_sensors(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    keys: &[String],
    now: Timestamp,
) -> StoreResult<Vec<Sensor>> {
    require_tenant(conn, tenant).await?;
    let mut by_key: HashMap<String, Sensor> = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(IN_LIST_CHUNK) {
        // `id = id` on the sensors that already exist: a no-op that, unlike INSERT
        // IGNORE, still fails on a value the table refuses (too long, bad text).
        let sql = format!(
            "INSERT INTO sensors (tenant_id, `key`, name, kind, rules, created_at, updated_at)
             VALUES {} ON DUPLICATE KEY UPDATE id = id",
            vec!["(?, ?, ?, ?, '[]', ?, ?)"; chunk.len()].join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for key in chunk {
            insert = insert
                .bind(tenant.0)
                .bind(key)
                .bind(key)
                .bind(SensorKind::Generic.as_str())
                .bind(now.0)
                .bind(now.0);
        }
        insert.execute(&mut *conn).await.my()?;
        let sql = format!(
            "SELECT {SENSOR_COLUMNS} FROM sensors WHERE tenant_id = ? AND `key` IN ({})",
            placeholders(chunk.len())
        );
        let mut select = sqlx::query(&sql).bind(tenant.0);
        for key in chunk {
            select = select.bind(key);
        }
        for row in select.fetch_all(&mut *conn).await.my()? {
            let sensor = sensor_from_row(&row)?;
            by_key.insert(sensor.key.clone(), sensor);
        }
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

const ALERT_SELECT: &str = "SELECT a.id, a.tenant_id, a.sensor_id, s.`key`, a.rule, a.kind,
    a.severity, a.state, a.metric, a.value, a.message, a.opened_at, a.acked_at, a.acked_by,
    a.resolved_at, a.resolved_by, a.details
    FROM alerts a JOIN sensors s ON s.id = a.sensor_id";

fn alert_from_row(row: &MySqlRow) -> StoreResult<Alert> {
    let kind = text(row, 5)?;
    let severity = text(row, 6)?;
    let state = text(row, 7)?;
    Ok(Alert {
        id: AlertId(col(row, 0)?),
        tenant: TenantId(col(row, 1)?),
        sensor_id: SensorId(col(row, 2)?),
        sensor: text(row, 3)?,
        rule: text(row, 4)?,
        kind: RuleKind::parse(&kind)
            .ok_or_else(|| bad_column(format!("unknown rule kind `{kind}`")))?,
        severity: Severity::parse(&severity)
            .ok_or_else(|| bad_column(format!("unknown severity `{severity}`")))?,
        state: AlertState::parse(&state)
            .ok_or_else(|| bad_column(format!("unknown alert state `{state}`")))?,
        metric: text(row, 8)?,
        value: col(row, 9)?,
        message: text(row, 10)?,
        opened_at: Timestamp(col(row, 11)?),
        acked_at: col::<Option<i64>>(row, 12)?.map(Timestamp),
        acked_by: opt_text(row, 13)?,
        resolved_at: col::<Option<i64>>(row, 14)?.map(Timestamp),
        resolved_by: opt_text(row, 15)?,
        details: crate::alerts::details_from_json(opt_text(row, 16)?.as_deref())
            .map_err(bad_column)?,
    })
}

pub(crate) async fn get_alert(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    id: AlertId,
) -> StoreResult<Alert> {
    let row = sqlx::query(&format!(
        "{ALERT_SELECT} WHERE a.id = ? AND a.tenant_id = ?"
    ))
    .bind(id.0)
    .bind(tenant.0)
    .fetch_optional(&mut *conn)
    .await
    .my()?
    .ok_or(StoreError::NotFound)?;
    alert_from_row(&row)
}

/// The alert, its row locked until the transaction ends (so an ack and a resolve of the
/// same alert apply one after the other). Only the alert row is locked: MariaDB has no
/// `FOR UPDATE OF a`, and a lock on the joined sensor row would block batches. Call
/// inside a transaction.
async fn lock_alert(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    id: AlertId,
) -> StoreResult<Alert> {
    sqlx::query("SELECT id FROM alerts WHERE id = ? AND tenant_id = ? FOR UPDATE")
        .bind(id.0)
        .bind(tenant.0)
        .fetch_optional(&mut *conn)
        .await
        .my()?
        .ok_or(StoreError::NotFound)?;
    get_alert(conn, tenant, id).await
}

pub(crate) async fn list_alerts(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    filter: &AlertFilter,
) -> StoreResult<Vec<Alert>> {
    // Fixed shapes rather than `? IS NULL OR ...`, which would hide the
    // (tenant_id, state, id) index from the optimizer.
    let mut sql = format!("{ALERT_SELECT} WHERE a.tenant_id = ?");
    if filter.state.is_some() {
        sql.push_str(" AND a.state = ?");
    }
    if filter.sensor.is_some() {
        sql.push_str(" AND s.`key` = ?");
    }
    sql.push_str(" AND a.id < ? ORDER BY a.id DESC LIMIT ?");
    let mut query = sqlx::query(&sql).bind(tenant.0);
    if let Some(state) = filter.state {
        query = query.bind(state.as_str());
    }
    if let Some(sensor) = &filter.sensor {
        query = query.bind(sensor.as_str());
    }
    query
        .bind(filter.before.map_or(i64::MAX, |id| id.0))
        .bind(sql_limit(filter.limit))
        .fetch_all(&mut *conn)
        .await
        .my()?
        .iter()
        .map(alert_from_row)
        .collect()
}

pub(crate) async fn unresolved(conn: &mut MySqlConnection) -> StoreResult<Vec<Alert>> {
    sqlx::query(&format!(
        "{ALERT_SELECT} WHERE a.state IN ('open', 'acked') ORDER BY a.id"
    ))
    .fetch_all(&mut *conn)
    .await
    .my()?
    .iter()
    .map(alert_from_row)
    .collect()
}

/// The unresolved alert of (sensor, rule), its row locked until the transaction ends.
async fn lock_unresolved(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    sensor: SensorId,
    rule: &str,
) -> StoreResult<Option<i64>> {
    sqlx::query_scalar(
        "SELECT id FROM alerts WHERE sensor_id = ? AND rule = ? AND unresolved = 1
             AND tenant_id = ? FOR UPDATE",
    )
    .bind(sensor.0)
    .bind(rule)
    .bind(tenant.0)
    .fetch_optional(&mut *conn)
    .await
    .my()
}

/// Opens an alert unless one is open or acked for (sensor, rule). Call inside a
/// transaction, after [`lock_outbox`]: every Vigía writer of alerts holds that lock, so
/// the locking read and the insert cannot interleave with another opener. The unique key
/// `alerts_one_unresolved` (on the generated `unresolved` column) still guarantees it for
/// any writer: a second unresolved alert fails with a duplicate key, reported as a
/// `Conflict`, never silently dropped.
pub(crate) async fn open_alert(
    conn: &mut MySqlConnection,
    new: &NewAlert,
) -> StoreResult<Option<Alert>> {
    if lock_unresolved(conn, new.tenant, new.sensor, &new.rule)
        .await?
        .is_some()
    {
        return Ok(None);
    }
    let done = sqlx::query(
        "INSERT INTO alerts (tenant_id, sensor_id, rule, kind, severity, state, metric, value,
             message, opened_at, details) VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?)",
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
    .execute(&mut *conn)
    .await;
    let id = duplicate_is(done, || {
        format!(
            "an unresolved alert of rule `{}` on sensor id {} was opened by a writer that \
             does not take the outbox lock",
            new.rule, new.sensor
        )
    })?
    .last_insert_id();
    Ok(Some(get_alert(conn, new.tenant, AlertId(id as i64)).await?))
}

/// Resolves the unresolved alert of (sensor, rule) as `auto`; `None` when there is none.
/// Call inside a transaction.
pub(crate) async fn auto_resolve(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    sensor: SensorId,
    rule: &str,
    at: Timestamp,
) -> StoreResult<Option<Alert>> {
    let Some(id) = lock_unresolved(conn, tenant, sensor, rule).await? else {
        return Ok(None);
    };
    sqlx::query(
        "UPDATE alerts SET state = 'resolved', resolved_at = ?, resolved_by = 'auto' WHERE id = ?",
    )
    .bind(at.0)
    .bind(id)
    .execute(&mut *conn)
    .await
    .my()?;
    Ok(Some(get_alert(conn, tenant, AlertId(id)).await?))
}

/// Open → acked (appending its event); acked stays; resolved is a `Conflict`. Call
/// inside a transaction.
pub(crate) async fn ack(
    conn: &mut MySqlConnection,
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
                "UPDATE alerts SET state = 'acked', acked_at = ?, acked_by = ? WHERE id = ?",
            )
            .bind(at.0)
            .bind(by)
            .bind(id.0)
            .execute(&mut *conn)
            .await
            .my()?;
            let after = get_alert(conn, tenant, id).await?;
            alert_changed(conn, AlertChange::Acked, &after, at).await?;
            Ok(after)
        }
    }
}

/// Open or acked → resolved by `by` (appending its event); resolved stays. Call inside a
/// transaction.
pub(crate) async fn resolve(
    conn: &mut MySqlConnection,
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
        "UPDATE alerts SET state = 'resolved', resolved_at = ?, resolved_by = ? WHERE id = ?",
    )
    .bind(at.0)
    .bind(by)
    .bind(id.0)
    .execute(&mut *conn)
    .await
    .my()?;
    let after = get_alert(conn, tenant, id).await?;
    alert_changed(conn, AlertChange::Resolved, &after, at).await?;
    Ok(after)
}

/// Resolves, as `by`, the sensor's unresolved alerts whose rule is not in its rules.
/// Call inside the transaction that changed the rules.
pub(crate) async fn resolve_removed_rules(
    conn: &mut MySqlConnection,
    sensor: &Sensor,
    by: &str,
    at: Timestamp,
) -> StoreResult<Vec<Alert>> {
    let unresolved: Vec<Alert> = sqlx::query(&format!(
        "{ALERT_SELECT} WHERE a.sensor_id = ? AND a.state IN ('open', 'acked') ORDER BY a.id"
    ))
    .bind(sensor.id.0)
    .fetch_all(&mut *conn)
    .await
    .my()?
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
    conn: &mut MySqlConnection,
    tenant: TenantId,
    scope: &SensorScope,
) -> StoreResult<Vec<(SensorId, u64)>> {
    let rows: Vec<(i64, i64)> = match scope {
        SensorScope::One(sensor) => sqlx::query_as(
            "SELECT sensor_id, count(*) FROM alerts
             WHERE tenant_id = ? AND sensor_id = ? AND state IN ('open', 'acked')
             GROUP BY sensor_id",
        )
        .bind(tenant.0)
        .bind(sensor.0)
        .fetch_all(&mut *conn)
        .await
        .my()?,
        SensorScope::Keys { after, through } => sqlx::query_as(
            "SELECT a.sensor_id, count(*) FROM alerts a JOIN sensors s ON s.id = a.sensor_id
             WHERE a.tenant_id = ? AND s.`key` > ? AND s.`key` <= ?
               AND a.state IN ('open', 'acked')
             GROUP BY a.sensor_id ORDER BY a.sensor_id",
        )
        .bind(tenant.0)
        .bind(after.as_deref().unwrap_or(""))
        .bind(through.as_str())
        .fetch_all(&mut *conn)
        .await
        .my()?,
        SensorScope::All => sqlx::query_as(
            "SELECT sensor_id, count(*) FROM alerts
             WHERE tenant_id = ? AND state IN ('open', 'acked') GROUP BY sensor_id
             ORDER BY sensor_id",
        )
        .bind(tenant.0)
        .fetch_all(&mut *conn)
        .await
        .my()?,
    };
    Ok(rows
        .into_iter()
        .map(|(s, n)| (SensorId(s), n.max(0) as u64))
        .collect())
}

// ---------------------------------------------------------------- outbox

/// The `store_locks` row that orders outbox appends.
pub const OUTBOX_LOCK: &str = "outbox";

/// Locks the outbox's row of `store_locks` until the transaction ends; every transaction
/// that may append an event calls it BEFORE touching any alert row.
///
/// AUTO_INCREMENT values are handed out at insert but become visible at commit, so two
/// transactions could commit ids 11 then 10, and a consumer that read 11 and saved its
/// cursor would never see 10. Holding this lock until commit makes appenders commit in id
/// order (alert changes are rare; readings alone never take it). Taking it before the
/// alert rows, never after, keeps a lock-holder from waiting on an alert row of a
/// transaction that waits for the lock (a deadlock).
pub(crate) async fn lock_outbox(conn: &mut MySqlConnection) -> StoreResult<()> {
    sqlx::query("SELECT name FROM store_locks WHERE name = ? FOR UPDATE")
        .bind(OUTBOX_LOCK)
        .fetch_optional(&mut *conn)
        .await
        .my()?
        .ok_or_else(|| StoreError::Internal("the outbox lock row is missing".into()))?;
    Ok(())
}

/// Appends the event of an alert change. Call inside the change's transaction, after
/// [`lock_outbox`].
pub(crate) async fn alert_changed(
    conn: &mut MySqlConnection,
    change: AlertChange,
    alert: &Alert,
    at: Timestamp,
) -> StoreResult<()> {
    let event = DomainEvent::AlertChanged {
        tenant: alert.tenant,
        change,
        alert: alert.clone(),
    };
    sqlx::query("INSERT INTO outbox (created_at, event) VALUES (?, ?)")
        .bind(at.0)
        .bind(event.encode())
        .execute(&mut *conn)
        .await
        .my()?;
    Ok(())
}

pub(crate) async fn read_outbox(
    conn: &mut MySqlConnection,
    after: u64,
    limit: usize,
) -> StoreResult<Vec<OutboxEntry>> {
    let rows: Vec<(i64, i64, Vec<u8>)> =
        sqlx::query_as("SELECT id, created_at, event FROM outbox WHERE id > ? ORDER BY id LIMIT ?")
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(sql_limit(limit))
            .fetch_all(&mut *conn)
            .await
            .my()?;
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

pub(crate) async fn cursor(conn: &mut MySqlConnection, consumer: &str) -> StoreResult<u64> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM outbox_cursors WHERE consumer = ?")
            .bind(consumer)
            .fetch_optional(&mut *conn)
            .await
            .my()?;
    Ok(position.unwrap_or(0).max(0) as u64)
}

pub(crate) async fn save_cursor(
    conn: &mut MySqlConnection,
    consumer: &str,
    position: u64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO outbox_cursors (consumer, position) VALUES (?, ?)
         ON DUPLICATE KEY UPDATE position = GREATEST(position, VALUES(position))",
    )
    .bind(consumer)
    .bind(i64::try_from(position).unwrap_or(i64::MAX))
    .execute(&mut *conn)
    .await
    .my()?;
    Ok(())
}

pub(crate) async fn prune_outbox(
    conn: &mut MySqlConnection,
    before: Timestamp,
) -> StoreResult<u64> {
    Ok(sqlx::query("DELETE FROM outbox WHERE created_at < ?")
        .bind(before.0)
        .execute(&mut *conn)
        .await
        .my()?
        .rows_affected())
}

// ---------------------------------------------------------------- audit and leases

/// `tenant_id` stored for "no tenant" (see the migration).
const NO_TENANT: i64 = 0;

pub(crate) async fn record_audit(
    conn: &mut MySqlConnection,
    events: &[(AuditEvent, u64)],
    at: Timestamp,
) -> StoreResult<()> {
    let minute = audit_minute(at);
    for (event, count) in events {
        // The unique key is the generated `identity` hash of the seven columns.
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, minute, client, actor, action, target, outcome,
                 count, first_at, last_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE count = count + VALUES(count), last_at = VALUES(last_at)",
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
        .bind(at.0)
        .execute(&mut *conn)
        .await
        .my()?;
    }
    Ok(())
}

pub(crate) async fn list_audit(
    conn: &mut MySqlConnection,
    tenant: Option<TenantId>,
    limit: usize,
) -> StoreResult<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT tenant_id, minute, client, actor, action, target, outcome, count, first_at,
             last_at FROM audit_log WHERE tenant_id = ? ORDER BY minute DESC, id DESC LIMIT ?",
    )
    .bind(tenant.map_or(NO_TENANT, |t| t.0))
    .bind(sql_limit(limit))
    .fetch_all(&mut *conn)
    .await
    .my()?;
    rows.iter()
        .map(|r| {
            let tenant: i64 = col(r, 0)?;
            let outcome = text(r, 6)?;
            Ok(AuditRecord {
                tenant: (tenant != NO_TENANT).then_some(TenantId(tenant)),
                minute: Timestamp(col(r, 1)?),
                client: text(r, 2)?,
                actor: text(r, 3)?,
                action: text(r, 4)?,
                target: text(r, 5)?,
                outcome: AuditOutcome::parse(&outcome)
                    .ok_or_else(|| bad_column(format!("unknown audit outcome `{outcome}`")))?,
                count: col::<i64>(r, 7)?.max(0) as u64,
                first_at: Timestamp(col(r, 8)?),
                last_at: Timestamp(col(r, 9)?),
            })
        })
        .collect()
}

pub(crate) async fn prune_audit(conn: &mut MySqlConnection, before: Timestamp) -> StoreResult<u64> {
    Ok(sqlx::query("DELETE FROM audit_log WHERE minute < ?")
        .bind(before.0)
        .execute(&mut *conn)
        .await
        .my()?
        .rows_affected())
}

/// Takes or renews the lease; true when `holder` holds it afterwards. Call inside a
/// transaction: the locking read holds the lease row until commit, so the decision and
/// the write cannot interleave with another process's. (One `ON DUPLICATE KEY UPDATE`
/// with `IF`s, as PostgreSQL's `ON CONFLICT … WHERE`, would depend on the order MariaDB
/// evaluates its assignments in: tried, it renewed the expiry of a lease it did not
/// take when sent as a prepared statement, though not from the mariadb client.) Two processes creating the same new lease at once: the second insert
/// hits the primary key and simply does not get the lease.
pub(crate) async fn try_acquire_lease(
    conn: &mut MySqlConnection,
    name: &str,
    holder: &str,
    ttl: Duration,
    now: Timestamp,
) -> StoreResult<bool> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_at = now.0.saturating_add(ttl_ms);
    let current: Option<(Vec<u8>, i64)> =
        sqlx::query_as("SELECT holder, expires_at FROM leases WHERE name = ? FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .my()?;
    match current {
        None => {
            let inserted =
                sqlx::query("INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)")
                    .bind(name)
                    .bind(holder)
                    .bind(expires_at)
                    .execute(&mut *conn)
                    .await;
            match inserted {
                Ok(_) => Ok(true),
                Err(e) if error_number(&e) == Some(DUPLICATE_ENTRY) => Ok(false),
                Err(e) => Err(store_error(e)),
            }
        }
        Some((current, expires)) if current == holder.as_bytes() || expires <= now.0 => {
            sqlx::query("UPDATE leases SET holder = ?, expires_at = ? WHERE name = ?")
                .bind(holder)
                .bind(expires_at)
                .bind(name)
                .execute(&mut *conn)
                .await
                .my()?;
            Ok(true)
        }
        Some(_) => Ok(false),
    }
}

/// Live leases named `prefix…` at `now`, by name (a handful of rows: the prefix is
/// matched here rather than with an escaped LIKE).
pub(crate) async fn lease_holders(
    conn: &mut MySqlConnection,
    prefix: &str,
    now: Timestamp,
) -> StoreResult<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT name, holder FROM leases WHERE expires_at > ? ORDER BY name")
        .bind(now.0)
        .fetch_all(&mut *conn)
        .await
        .my()?;
    // The lease columns are binary-collated (0001_init.sql), which sqlx reads as bytes.
    let text = |row: &MySqlRow, i: usize| -> StoreResult<String> {
        let bytes: Vec<u8> = row.try_get(i).my()?;
        String::from_utf8(bytes)
            .map_err(|e| crate::StoreError::Internal(format!("a lease column is not UTF-8: {e}")))
    };
    let mut out = Vec::new();
    for row in rows {
        let name = text(&row, 0)?;
        if name.starts_with(prefix) {
            out.push((name, text(&row, 1)?));
        }
    }
    Ok(out)
}

pub(crate) async fn release_lease(
    conn: &mut MySqlConnection,
    name: &str,
    holder: &str,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM leases WHERE name = ? AND holder = ?")
        .bind(name)
        .bind(holder)
        .execute(&mut *conn)
        .await
        .my()?;
    Ok(())
}

/// Leases that expired this long ago are nobody's any more: housekeeping drops them.
const STALE_LEASE_MS: i64 = 24 * 3_600_000;

pub(crate) async fn drop_stale_leases(
    conn: &mut MySqlConnection,
    now: Timestamp,
) -> StoreResult<u64> {
    Ok(sqlx::query("DELETE FROM leases WHERE expires_at < ?")
        .bind(now.0.saturating_sub(STALE_LEASE_MS))
        .execute(&mut *conn)
        .await
        .my()?
        .rows_affected())
}

// ---------------------------------------------------------------- readings

pub(crate) async fn metric_id(conn: &mut MySqlConnection, name: &str) -> StoreResult<Option<i64>> {
    sqlx::query_scalar("SELECT id FROM metrics WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .my()
}

/// One sensor's series; the time-first key makes it a range scan filtered to this sensor.
pub(crate) async fn series(
    conn: &mut MySqlConnection,
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
             WHERE ts BETWEEN ? AND ? AND sensor_id = ? AND metric_id = ?
             ORDER BY ts LIMIT ?",
        )
        .bind(query.from.0)
        .bind(query.to.0)
        .bind(sensor.0)
        .bind(metric)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .my()?,
        // Floor division, so a negative timestamp lands in the bucket below it. avg() of
        // a DOUBLE is a DOUBLE.
        Some(step) => sqlx::query_as(
            "SELECT ts - MOD(MOD(ts, ?) + ?, ?) AS bucket, avg(value) FROM readings
             WHERE ts BETWEEN ? AND ? AND sensor_id = ? AND metric_id = ?
             GROUP BY bucket ORDER BY bucket LIMIT ?",
        )
        .bind(step)
        .bind(step)
        .bind(step)
        .bind(query.from.0)
        .bind(query.to.0)
        .bind(sensor.0)
        .bind(metric)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .my()?,
    };
    Ok(rows
        .into_iter()
        .map(|(ts, value)| Point {
            ts: Timestamp(ts),
            value,
        })
        .collect())
}

fn latest_rows(rows: Vec<MySqlRow>) -> StoreResult<Vec<LatestReading>> {
    rows.iter()
        .map(|r| {
            Ok(LatestReading {
                sensor: SensorId(col(r, 0)?),
                metric: text(r, 1)?,
                ts: Timestamp(col(r, 2)?),
                value: col(r, 3)?,
            })
        })
        .collect()
}

/// Latest value per (sensor, metric): of the tenant's sensors in `scope`, or of all
/// tenants' sensors.
pub(crate) async fn latest(
    conn: &mut MySqlConnection,
    tenant: Option<TenantId>,
    scope: &SensorScope,
) -> StoreResult<Vec<LatestReading>> {
    const SELECT: &str = "SELECT l.sensor_id, m.name, l.ts, l.value FROM latest_readings l
        JOIN metrics m ON m.id = l.metric_id JOIN sensors s ON s.id = l.sensor_id";
    const ORDER: &str = "ORDER BY l.sensor_id, m.name";
    let rows = match (tenant, scope) {
        (Some(tenant), SensorScope::One(sensor)) => sqlx::query(&format!(
            "{SELECT} WHERE s.tenant_id = ? AND l.sensor_id = ? {ORDER}"
        ))
        .bind(tenant.0)
        .bind(sensor.0)
        .fetch_all(&mut *conn)
        .await
        .my()?,
        (Some(tenant), SensorScope::Keys { after, through }) => sqlx::query(&format!(
            "{SELECT} WHERE s.tenant_id = ? AND s.`key` > ? AND s.`key` <= ? {ORDER}"
        ))
        .bind(tenant.0)
        .bind(after.as_deref().unwrap_or(""))
        .bind(through.as_str())
        .fetch_all(&mut *conn)
        .await
        .my()?,
        (Some(tenant), SensorScope::All) => {
            sqlx::query(&format!("{SELECT} WHERE s.tenant_id = ? {ORDER}"))
                .bind(tenant.0)
                .fetch_all(&mut *conn)
                .await
                .my()?
        }
        (None, _) => sqlx::query(&format!("{SELECT} {ORDER}"))
            .fetch_all(&mut *conn)
            .await
            .my()?,
    };
    latest_rows(rows)
}

/// Every tenant's readings since `since`, oldest first, at most the newest `limit`.
pub(crate) async fn recent(
    conn: &mut MySqlConnection,
    since: Timestamp,
    limit: usize,
) -> StoreResult<Vec<SensorReading>> {
    let rows = sqlx::query(
        "SELECT r.sensor_id, m.name, r.ts, r.value FROM readings r
         JOIN metrics m ON m.id = r.metric_id
         WHERE r.ts >= ?
         ORDER BY r.ts DESC, r.sensor_id DESC, r.metric_id DESC LIMIT ?",
    )
    .bind(since.0)
    .bind(sql_limit(limit))
    .fetch_all(&mut *conn)
    .await
    .my()?;
    let mut out: Vec<SensorReading> = latest_rows(rows)?
        .into_iter()
        .map(|l| SensorReading {
            sensor: l.sensor,
            metric: l.metric,
            ts: l.ts,
            value: l.value,
        })
        .collect();
    out.reverse();
    Ok(out)
}
