//! The dead_letters table on MariaDB (see [`crate::DeadLetterRepo`]); the row shapes and
//! their decoding are shared with the other SQL backends in `crate::dead_letters`.

use sqlx::MySqlConnection;
use vigia_core::{TenantId, Timestamp};

use super::error::MyResultExt;
use crate::dead_letters::{
    letter_from_row, sql_id, summary_from_row, EncodedLetter, SummaryRow, SUMMARY_COLUMNS,
};
use crate::{DeadLetter, DeadLetterSummary, NewDeadLetter, StoreError, StoreResult};

pub(crate) async fn put(
    conn: &mut MySqlConnection,
    letter: &NewDeadLetter,
    at: Timestamp,
) -> StoreResult<u64> {
    let encoded = EncodedLetter::new(letter)?;
    let done = sqlx::query(
        "INSERT INTO dead_letters (tenant_id, reason, received_at, dead_at, readings, sensors, batch)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(letter.tenant.0)
    .bind(&letter.reason)
    .bind(letter.received_at.0)
    .bind(at.0)
    .bind(encoded.readings)
    .bind(&encoded.sensors)
    .bind(&encoded.batch)
    .execute(&mut *conn)
    .await
    .my()?;
    Ok(done.last_insert_id())
}

pub(crate) async fn list(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    before: Option<u64>,
    limit: usize,
) -> StoreResult<Vec<DeadLetterSummary>> {
    let before = before.map_or(i64::MAX, |id| sql_id(id).unwrap_or(i64::MAX));
    let rows: Vec<SummaryRow> = sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM dead_letters
         WHERE tenant_id = ? AND id < ? ORDER BY id DESC LIMIT ?"
    ))
    .bind(tenant.0)
    .bind(before)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await
    .my()?;
    rows.into_iter().map(summary_from_row).collect()
}

pub(crate) async fn get(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    id: u64,
) -> StoreResult<DeadLetter> {
    let row: Option<(i64, String, i64, i64, i64, String, String)> = sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS}, batch FROM dead_letters WHERE tenant_id = ? AND id = ?"
    ))
    .bind(tenant.0)
    .bind(sql_id(id)?)
    .fetch_optional(&mut *conn)
    .await
    .my()?;
    let (id, reason, received_at, dead_at, readings, sensors, batch) =
        row.ok_or(StoreError::NotFound)?;
    letter_from_row(
        (id, reason, received_at, dead_at, readings, sensors),
        &batch,
    )
}

pub(crate) async fn delete(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    id: u64,
) -> StoreResult<()> {
    let deleted = sqlx::query("DELETE FROM dead_letters WHERE tenant_id = ? AND id = ?")
        .bind(tenant.0)
        .bind(sql_id(id)?)
        .execute(&mut *conn)
        .await
        .my()?
        .rows_affected();
    if deleted == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
