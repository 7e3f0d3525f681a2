//! The audit log and leases: small tables written through the writer thread.

use std::time::Duration;

use rusqlite::{params, Connection, Row};
use vigia_core::{TenantId, Timestamp};

use super::catalog::bad_column;
use crate::{audit_minute, AuditEvent, AuditOutcome, AuditRecord, StoreResult};

/// `tenant_id` stored for "no tenant" (see the migration).
const NO_TENANT: i64 = 0;

/// Adds each event's count into its minute's row. Call inside a transaction.
pub(crate) fn record(
    conn: &Connection,
    events: &[(AuditEvent, u64)],
    at: Timestamp,
) -> StoreResult<()> {
    let minute = audit_minute(at);
    let mut upsert = conn.prepare_cached(
        "INSERT INTO audit_log (tenant_id, minute, client, actor, action, target, outcome,
         count, first_at, last_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
         ON CONFLICT (tenant_id, minute, client, actor, action, target, outcome)
         DO UPDATE SET count = count + excluded.count, last_at = excluded.last_at",
    )?;
    for (event, count) in events {
        upsert.execute(params![
            event.tenant.map_or(NO_TENANT, |t| t.0),
            minute.0,
            event.client,
            event.actor,
            event.action,
            event.target,
            event.outcome.as_str(),
            i64::try_from(*count).unwrap_or(i64::MAX),
            at.0,
        ])?;
    }
    Ok(())
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let tenant: i64 = row.get(0)?;
    let outcome: String = row.get(6)?;
    Ok(AuditRecord {
        tenant: (tenant != NO_TENANT).then_some(TenantId(tenant)),
        minute: Timestamp(row.get(1)?),
        client: row.get(2)?,
        actor: row.get(3)?,
        action: row.get(4)?,
        target: row.get(5)?,
        outcome: AuditOutcome::parse(&outcome)
            .ok_or_else(|| bad_column(6, format!("unknown audit outcome `{outcome}`")))?,
        count: row.get::<_, i64>(7)?.max(0) as u64,
        first_at: Timestamp(row.get(8)?),
        last_at: Timestamp(row.get(9)?),
    })
}

/// Newest rows first, of one tenant or of unidentified callers.
pub(crate) fn list(
    conn: &Connection,
    tenant: Option<TenantId>,
    limit: usize,
) -> StoreResult<Vec<AuditRecord>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn
        .prepare_cached(
            "SELECT tenant_id, minute, client, actor, action, target, outcome, count, first_at,
             last_at FROM audit_log WHERE tenant_id = ?1 ORDER BY minute DESC, id DESC LIMIT ?2",
        )?
        .query_map(
            params![tenant.map_or(NO_TENANT, |t| t.0), limit],
            record_from_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Deletes audit rows of minutes before `before`.
pub(crate) fn prune(conn: &Connection, before: Timestamp) -> StoreResult<u64> {
    let deleted = conn
        .prepare_cached("DELETE FROM audit_log WHERE minute < ?1")?
        .execute([before.0])?;
    Ok(deleted as u64)
}

/// Leases that expired this long ago are nobody's any more: housekeeping drops them.
const STALE_LEASE_MS: i64 = 24 * 3_600_000;

/// Checkpoints the WAL into the database and truncates it, and drops leases expired for
/// a day; returns a summary. Runs on the writer connection, outside any transaction.
pub(crate) fn housekeep(conn: &Connection, now: Timestamp) -> StoreResult<String> {
    let stale = conn
        .prepare_cached("DELETE FROM leases WHERE expires_at < ?1")?
        .execute([now.0.saturating_sub(STALE_LEASE_MS)])?;
    // (busy, WAL pages, pages checkpointed); busy = 1 when a reader kept it from finishing.
    let (busy, log, done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let checkpoint = if busy == 0 {
        format!("WAL checkpointed and truncated ({done} of {log} pages)")
    } else {
        format!("WAL partly checkpointed ({done} of {log} pages; readers busy)")
    };
    Ok(format!("{checkpoint}; {stale} stale lease(s) removed"))
}

/// Takes or renews the lease; true when `holder` holds it afterwards.
pub(crate) fn try_acquire_lease(
    conn: &Connection,
    name: &str,
    holder: &str,
    ttl: Duration,
    now: Timestamp,
) -> StoreResult<bool> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let changed = conn
        .prepare_cached(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                 expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4",
        )?
        .execute(params![name, holder, now.0.saturating_add(ttl_ms), now.0])?;
    Ok(changed == 1)
}

/// Live leases named `prefix…` at `now`, by name. The table holds a handful of rows
/// (leaders, members, partitions), so the prefix is matched here rather than with an
/// escaped LIKE.
pub(crate) fn lease_holders(
    conn: &Connection,
    prefix: &str,
    now: Timestamp,
) -> StoreResult<Vec<(String, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT name, holder FROM leases WHERE expires_at > ?1 ORDER BY name")?;
    let rows = stmt.query_map(params![now.0], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (name, holder): (String, String) = row?;
        if name.starts_with(prefix) {
            out.push((name, holder));
        }
    }
    Ok(out)
}

/// Drops the lease if `holder` holds it.
pub(crate) fn release_lease(conn: &Connection, name: &str, holder: &str) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")?
        .execute(params![name, holder])?;
    Ok(())
}
