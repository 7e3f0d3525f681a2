//! Tenants, API keys and sensors: the slowly changing rows everything else points at.
//!
//! Functions take a `&Connection` so the writer (inside its transaction) and the
//! read pool share them.

use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};
use vigia_core::{
    ApiKeyId, ApiKeyInfo, ApiKeyRecord, Role, Rule, Sensor, SensorId, SensorKind, SensorSpec,
    Tenant, TenantId, Timestamp,
};

use crate::{NewApiKey, StoreError, StoreResult};

/// Slug of the tenant that exists on every installation.
const DEFAULT_TENANT_SLUG: &str = "default";

pub(crate) fn default_tenant(conn: &Connection, now: Timestamp) -> StoreResult<Tenant> {
    conn.prepare_cached(
        "INSERT INTO tenants (slug, name, created_at) VALUES (?1, 'Default', ?2)
         ON CONFLICT (slug) DO NOTHING",
    )?
    .execute(params![DEFAULT_TENANT_SLUG, now.0])?;
    Ok(conn
        .prepare_cached("SELECT id, slug, name FROM tenants WHERE slug = ?1")?
        .query_row([DEFAULT_TENANT_SLUG], tenant_from_row)?)
}

pub(crate) fn tenant_by_slug(conn: &Connection, slug: &str) -> StoreResult<Option<Tenant>> {
    Ok(conn
        .prepare_cached("SELECT id, slug, name FROM tenants WHERE slug = ?1")?
        .query_row([slug], tenant_from_row)
        .optional()?)
}

pub(crate) fn create_tenant(
    conn: &Connection,
    slug: &str,
    name: &str,
    now: Timestamp,
) -> StoreResult<Tenant> {
    let id = conn
        .prepare_cached(
            "INSERT INTO tenants (slug, name, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (slug) DO NOTHING RETURNING id",
        )?
        .query_row(params![slug, name, now.0], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::Conflict(format!("tenant `{slug}` already exists")))?;
    Ok(Tenant {
        id: TenantId(id),
        slug: slug.to_string(),
        name: name.to_string(),
    })
}

fn tenant_from_row(row: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: TenantId(row.get(0)?),
        slug: row.get(1)?,
        name: row.get(2)?,
    })
}

/// `NotFound` unless the tenant exists; writes check first so a bad id is a clear
/// error rather than a foreign-key failure.
fn require_tenant(conn: &Connection, tenant: TenantId) -> StoreResult<()> {
    conn.prepare_cached("SELECT 1 FROM tenants WHERE id = ?1")?
        .query_row([tenant.0], |_| Ok(()))
        .optional()?
        .ok_or(StoreError::NotFound)
}

pub(crate) fn count_api_keys(conn: &Connection) -> StoreResult<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM api_keys")?
        .query_row([], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

pub(crate) fn insert_api_key(
    conn: &Connection,
    key: &NewApiKey,
    now: Timestamp,
) -> StoreResult<ApiKeyInfo> {
    require_tenant(conn, key.tenant)?;
    let id = conn
        .prepare_cached(
            "INSERT INTO api_keys (tenant_id, name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (hash) DO NOTHING RETURNING id",
        )?
        .query_row(
            params![key.tenant.0, key.name, key.role.as_str(), &key.hash[..], now.0],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| StoreError::Conflict("an API key with this hash already exists".into()))?;
    Ok(ApiKeyInfo {
        id: ApiKeyId(id),
        name: key.name.clone(),
        role: key.role,
        created_at: now,
    })
}

fn role_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Role> {
    let role: String = row.get(index)?;
    role.parse().map_err(|e: String| bad_column(index, e))
}

pub(crate) fn find_api_key(
    conn: &Connection,
    hash: &[u8; 32],
) -> StoreResult<Option<ApiKeyRecord>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, tenant_id, name, role FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL",
        )?
        .query_row([&hash[..]], |r| {
            Ok(ApiKeyRecord {
                id: ApiKeyId(r.get(0)?),
                tenant: TenantId(r.get(1)?),
                name: r.get(2)?,
                role: role_column(r, 3)?,
            })
        })
        .optional()?)
}

pub(crate) fn list_api_keys(conn: &Connection, tenant: TenantId) -> StoreResult<Vec<ApiKeyInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, role, created_at FROM api_keys
         WHERE tenant_id = ?1 AND revoked_at IS NULL ORDER BY id",
    )?;
    let rows = stmt.query_map([tenant.0], |r| {
        Ok(ApiKeyInfo {
            id: ApiKeyId(r.get(0)?),
            name: r.get(1)?,
            role: role_column(r, 2)?,
            created_at: Timestamp(r.get(3)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn revoke_api_key(
    conn: &Connection,
    tenant: TenantId,
    id: ApiKeyId,
    at: Timestamp,
) -> StoreResult<[u8; 32]> {
    let hash: Vec<u8> = conn
        .prepare_cached(
            "UPDATE api_keys SET revoked_at = ?3
             WHERE id = ?1 AND tenant_id = ?2 AND revoked_at IS NULL RETURNING hash",
        )?
        .query_row(params![id.0, tenant.0, at.0], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound)?;
    hash.try_into()
        .map_err(|_| StoreError::Internal("a stored key hash is not 32 bytes".into()))
}

const SENSOR_COLUMNS: &str =
    "id, tenant_id, key, name, kind, unit, rules, stock, product, created_at";

fn sensor_from_row(row: &Row<'_>) -> rusqlite::Result<Sensor> {
    let kind: String = row.get(4)?;
    let kind = SensorKind::parse(&kind)
        .ok_or_else(|| bad_column(4, format!("unknown sensor kind `{kind}`")))?;
    let rules: String = row.get(6)?;
    let rules: Vec<Rule> = serde_json::from_str(&rules)
        .map_err(|e| bad_column(6, format!("invalid rules JSON: {e}")))?;
    Ok(Sensor {
        id: SensorId(row.get(0)?),
        tenant: TenantId(row.get(1)?),
        key: row.get(2)?,
        name: row.get(3)?,
        kind,
        unit: row.get(5)?,
        rules,
        stock: row.get(7)?,
        product: row.get(8)?,
        created_at: Timestamp(row.get(9)?),
    })
}

/// A stored value this build cannot interpret: surfaces as `Internal`.
pub(crate) fn bad_column(index: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, Type::Text, message.into())
}

pub(crate) fn list_sensors(
    conn: &Connection,
    tenant: TenantId,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<Sensor>> {
    // Keys are never empty, so "" is before every key.
    let sql = format!(
        "SELECT {SENSOR_COLUMNS} FROM sensors WHERE tenant_id = ?1 AND key > ?2
         ORDER BY key LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(
        params![tenant.0, after.unwrap_or(""), limit],
        sensor_from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn all_sensors(conn: &Connection) -> StoreResult<Vec<Sensor>> {
    let sql = format!("SELECT {SENSOR_COLUMNS} FROM sensors ORDER BY tenant_id, key");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], sensor_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn get_sensor(
    conn: &Connection,
    tenant: TenantId,
    key: &str,
) -> StoreResult<Option<Sensor>> {
    let sql = format!("SELECT {SENSOR_COLUMNS} FROM sensors WHERE tenant_id = ?1 AND key = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![tenant.0, key], sensor_from_row)
        .optional()?)
}

/// The id of a sensor by key within a tenant.
pub(crate) fn sensor_id(
    conn: &Connection,
    tenant: TenantId,
    key: &str,
) -> StoreResult<Option<SensorId>> {
    Ok(conn
        .prepare_cached("SELECT id FROM sensors WHERE tenant_id = ?1 AND key = ?2")?
        .query_row(params![tenant.0, key], |r| r.get(0).map(SensorId))
        .optional()?)
}

/// The tenant a sensor belongs to, if the sensor exists.
pub(crate) fn sensor_tenant(conn: &Connection, sensor: SensorId) -> StoreResult<Option<TenantId>> {
    Ok(conn
        .prepare_cached("SELECT tenant_id FROM sensors WHERE id = ?1")?
        .query_row([sensor.0], |r| r.get(0).map(TenantId))
        .optional()?)
}

/// Creates or replaces the writable fields; call inside a transaction.
pub(crate) fn put_sensor(
    conn: &Connection,
    tenant: TenantId,
    key: &str,
    spec: &SensorSpec,
    now: Timestamp,
) -> StoreResult<(Sensor, bool)> {
    require_tenant(conn, tenant)?;
    let rules = serde_json::to_string(&spec.rules)
        .map_err(|e| StoreError::Internal(format!("cannot encode rules: {e}")))?;
    let name = spec.name.as_deref().unwrap_or(key);
    let existing = sensor_id(conn, tenant, key)?;
    let created = existing.is_none();
    match existing {
        Some(id) => {
            conn.prepare_cached(
                "UPDATE sensors SET name = ?2, kind = ?3, unit = ?4, rules = ?5, stock = ?6,
                 product = ?7, updated_at = ?8 WHERE id = ?1",
            )?
            .execute(params![
                id.0,
                name,
                spec.kind.as_str(),
                spec.unit,
                rules,
                spec.stock,
                spec.product,
                now.0
            ])?;
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO sensors (tenant_id, key, name, kind, unit, rules, stock, product,
                 created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
            )?
            .execute(params![
                tenant.0,
                key,
                name,
                spec.kind.as_str(),
                spec.unit,
                rules,
                spec.stock,
                spec.product,
                now.0
            ])?;
        }
    }
    let sensor = get_sensor(conn, tenant, key)?
        .ok_or_else(|| StoreError::Internal(format!("sensor `{key}` vanished after writing it")))?;
    Ok((sensor, created))
}

/// Creates every missing key with defaults (name = key, generic, no rules); call inside
/// a transaction. Returns the sensors in the order of `keys`.
pub(crate) fn provision_sensors(
    conn: &Connection,
    tenant: TenantId,
    keys: &[String],
    now: Timestamp,
) -> StoreResult<Vec<Sensor>> {
    require_tenant(conn, tenant)?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO sensors (tenant_id, key, name, kind, rules, created_at, updated_at)
         VALUES (?1, ?2, ?2, ?3, '[]', ?4, ?4) ON CONFLICT (tenant_id, key) DO NOTHING",
    )?;
    let mut sensors = Vec::with_capacity(keys.len());
    for key in keys {
        insert.execute(params![tenant.0, key, SensorKind::Generic.as_str(), now.0])?;
        let sensor = get_sensor(conn, tenant, key)?.ok_or_else(|| {
            StoreError::Internal(format!("sensor `{key}` vanished after provisioning it"))
        })?;
        sensors.push(sensor);
    }
    Ok(sensors)
}
