//! The dead_letters table (see [`crate::DeadLetterRepo`]).

use rusqlite::{params, Connection, OptionalExtension, Row};
use vigia_core::{TenantId, Timestamp};

use crate::dead_letters::{
    letter_from_row, sql_id, summary_from_row, EncodedLetter, SummaryRow, SUMMARY_COLUMNS,
};
use crate::{DeadLetter, DeadLetterSummary, NewDeadLetter, StoreError, StoreResult};

pub(crate) fn put(conn: &Connection, letter: &NewDeadLetter, at: Timestamp) -> StoreResult<u64> {
    let encoded = EncodedLetter::new(letter)?;
    conn.prepare_cached(
        "INSERT INTO dead_letters (tenant_id, reason, received_at, dead_at, readings, sensors, batch)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        letter.tenant.0,
        letter.reason,
        letter.received_at.0,
        at.0,
        encoded.readings,
        encoded.sensors,
        encoded.batch,
    ])?;
    Ok(conn.last_insert_rowid().max(0) as u64)
}

fn summary_row(row: &Row<'_>) -> rusqlite::Result<SummaryRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

pub(crate) fn list(
    conn: &Connection,
    tenant: TenantId,
    before: Option<u64>,
    limit: usize,
) -> StoreResult<Vec<DeadLetterSummary>> {
    let before = before.map_or(i64::MAX, |id| sql_id(id).unwrap_or(i64::MAX));
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM dead_letters
             WHERE tenant_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
        ))?
        .query_map(params![tenant.0, before, limit], summary_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(summary_from_row).collect()
}

pub(crate) fn get(conn: &Connection, tenant: TenantId, id: u64) -> StoreResult<DeadLetter> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS}, batch FROM dead_letters WHERE tenant_id = ?1 AND id = ?2"
        ))?
        .query_row(params![tenant.0, sql_id(id)?], |r| {
            Ok((summary_row(r)?, r.get::<_, String>(6)?))
        })
        .optional()?;
    let (row, batch) = row.ok_or(StoreError::NotFound)?;
    letter_from_row(row, &batch)
}

pub(crate) fn delete(conn: &Connection, tenant: TenantId, id: u64) -> StoreResult<()> {
    let deleted = conn
        .prepare_cached("DELETE FROM dead_letters WHERE tenant_id = ?1 AND id = ?2")?
        .execute(params![tenant.0, sql_id(id)?])?;
    if deleted == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
