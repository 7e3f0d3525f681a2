//! The dead_letters table on PostgreSQL (see [`crate::DeadLetterRepo`]); the row shapes and
//! their decoding are shared with the other SQL backends in `crate::dead_letters`.

use sqlx::PgConnection;
use vigia_core::{TenantId, Timestamp};

use super::error::PgResultExt;
use crate::dead_letters::{
    letter_from_row, sql_id, summary_from_row, EncodedLetter, SummaryRow, SUMMARY_COLUMNS,
};
use crate::{DeadLetter, DeadLetterSummary, NewDeadLetter, StoreError, StoreResult};

pub(crate) async fn put(
    conn: &mut PgConnection,
    letter: &NewDeadLetter,
    at: Timestamp,
) -> StoreResult<u64> {
    let encoded = EncodedLetter::new(letter)?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dead_letters (tenant_id, reason, received_at, dead_at, readings, sensors, batch)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(letter.tenant.0)
    .bind(&letter.reason)
    .bind(letter.received_at.0)
    .bind(at.0)
    .bind(encoded.readings)
    .bind(&encoded.sensors)
    .bind(&encoded.batch)
    .fetch_one(&mut *conn)
    .await
    .pg()?;
    Ok(id.max(0) as u64)
}

pub(crate) async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    before: Option<u64>,
    limit: usize,
) -> StoreResult<Vec<DeadLetterSummary>> {
    let before = before.map_or(i64::MAX, |id| sql_id(id).unwrap_or(i64::MAX));
    let rows: Vec<SummaryRow> = sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM dead_letters
         WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
    ))
    .bind(tenant.0)
    .bind(before)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    rows.into_iter().map(summary_from_row).collect()
}

pub(crate) async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: u64,
) -> StoreResult<DeadLetter> {
    let row: Option<(i64, String, i64, i64, i64, String, String)> = sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS}, batch FROM dead_letters WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.0)
    .bind(sql_id(id)?)
    .fetch_optional(&mut *conn)
    .await
    .pg()?;
    let (id, reason, received_at, dead_at, readings, sensors, batch) =
        row.ok_or(StoreError::NotFound)?;
    letter_from_row(
        (id, reason, received_at, dead_at, readings, sensors),
        &batch,
    )
}

pub(crate) async fn delete(conn: &mut PgConnection, tenant: TenantId, id: u64) -> StoreResult<()> {
    let deleted = sqlx::query("DELETE FROM dead_letters WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.0)
        .bind(sql_id(id)?)
        .execute(&mut *conn)
        .await
        .pg()?
        .rows_affected();
    if deleted == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
