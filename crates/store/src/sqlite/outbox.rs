//! The outbox table: domain events appended inside the transaction of their change.

use rusqlite::{params, Connection, OptionalExtension};
use vigia_core::{Alert, AlertChange, DomainEvent, Timestamp};

use crate::{OutboxEntry, StoreError, StoreResult};

/// Appends the event of an alert change. Call inside the change's transaction.
pub(crate) fn alert_changed(
    conn: &Connection,
    change: AlertChange,
    alert: &Alert,
    at: Timestamp,
) -> StoreResult<()> {
    let event = DomainEvent::AlertChanged {
        tenant: alert.tenant,
        change,
        alert: alert.clone(),
    };
    conn.prepare_cached("INSERT INTO outbox (created_at, event) VALUES (?1, ?2)")?
        .execute(params![at.0, event.encode()])?;
    Ok(())
}

pub(crate) fn read_after(
    conn: &Connection,
    after: u64,
    limit: usize,
) -> StoreResult<Vec<OutboxEntry>> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn
        .prepare_cached(
            "SELECT id, created_at, event FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?
        .query_map(params![after, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
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

pub(crate) fn cursor(conn: &Connection, consumer: &str) -> StoreResult<u64> {
    let position: Option<i64> = conn
        .prepare_cached("SELECT position FROM outbox_cursors WHERE consumer = ?1")?
        .query_row([consumer], |r| r.get(0))
        .optional()?;
    Ok(position.unwrap_or(0).max(0) as u64)
}

pub(crate) fn save_cursor(conn: &Connection, consumer: &str, position: u64) -> StoreResult<()> {
    let position = i64::try_from(position).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "INSERT INTO outbox_cursors (consumer, position) VALUES (?1, ?2)
         ON CONFLICT (consumer) DO UPDATE SET position = max(position, excluded.position)",
    )?
    .execute(params![consumer, position])?;
    Ok(())
}

pub(crate) fn prune(conn: &Connection, before: Timestamp) -> StoreResult<u64> {
    let deleted = conn
        .prepare_cached("DELETE FROM outbox WHERE created_at < ?1")?
        .execute([before.0])?;
    Ok(deleted as u64)
}
