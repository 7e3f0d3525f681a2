//! The products and prices tables on MariaDB (see [`crate::ProductRepo`],
//! [`crate::PriceRepo`]); the row shapes and the import's bookkeeping are shared with the
//! other backends in `crate::products` and `crate::prices`.

use sqlx::MySqlConnection;
use vigia_core::{TenantId, Timestamp};

use super::error::MyResultExt;
use crate::prices::{
    check_distinct, classify, price_from_row, sql_before, sql_limit, PriceRow, Write,
};
use crate::products::{product_from_row, ProductRow};

// The keyed columns are binary-collated (byte comparison, as the other backends); sqlx
// reads those as bytes, so they are converted back to text as they are selected.
const PRODUCT_COLUMNS: &str = "CONVERT(code USING utf8mb4), name, weight_kg, keep_below_ms, \
     discard_after_ms, updated_at";
const PRICE_COLUMNS: &str = "id, CONVERT(product USING utf8mb4), CONVERT(currency USING utf8mb4), \
     per_kg_micros, valid_from, CONVERT(source USING utf8mb4), imported_at";
use crate::{
    ImportCounts, NewPrice, Price, PriceFilter, Product, ProductPut, StoreError, StoreResult,
};

pub(crate) async fn put_product(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    put: &ProductPut,
    at: Timestamp,
) -> StoreResult<(Product, bool)> {
    // Run inside the caller's transaction: the lock on the row (or the gap) holds until
    // the upsert, so `created` is exact. The upsert's affected-row count would not be:
    // it depends on the client's FOUND_ROWS flag.
    let existed: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM products WHERE tenant_id = ? AND code = ? FOR UPDATE")
            .bind(tenant.0)
            .bind(&put.code)
            .fetch_optional(&mut *conn)
            .await
            .my()?;
    sqlx::query(
        "INSERT INTO products (tenant_id, code, name, weight_kg, keep_below_ms, discard_after_ms, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE name = VALUES(name), weight_kg = VALUES(weight_kg),
             keep_below_ms = VALUES(keep_below_ms), discard_after_ms = VALUES(discard_after_ms),
             updated_at = VALUES(updated_at)",
    )
    .bind(tenant.0)
    .bind(&put.code)
    .bind(&put.name)
    .bind(put.weight_kg)
    .bind(put.keep_below_ms)
    .bind(put.discard_after_ms)
    .bind(at.0)
    .execute(&mut *conn)
    .await
    .my()?;
    Ok((put.stored(at), existed.is_none()))
}

pub(crate) async fn product(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    code: &str,
) -> StoreResult<Product> {
    let row: Option<ProductRow> = sqlx::query_as(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE tenant_id = ? AND code = ?"
    ))
    .bind(tenant.0)
    .bind(code)
    .fetch_optional(&mut *conn)
    .await
    .my()?;
    row.map(product_from_row).ok_or(StoreError::NotFound)
}

pub(crate) async fn products(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<Product>> {
    let rows: Vec<ProductRow> = sqlx::query_as(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products
         WHERE tenant_id = ? AND (? IS NULL OR code > ?) ORDER BY code LIMIT ?"
    ))
    .bind(tenant.0)
    .bind(after)
    .bind(after)
    .bind(sql_limit(limit))
    .fetch_all(&mut *conn)
    .await
    .my()?;
    Ok(rows.into_iter().map(product_from_row).collect())
}

pub(crate) async fn delete_product(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    code: &str,
) -> StoreResult<()> {
    let deleted = sqlx::query("DELETE FROM products WHERE tenant_id = ? AND code = ?")
        .bind(tenant.0)
        .bind(code)
        .execute(&mut *conn)
        .await
        .my()?
        .rows_affected();
    if deleted == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Runs inside the caller's transaction.
pub(crate) async fn import(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    prices: &[NewPrice],
    at: Timestamp,
) -> StoreResult<ImportCounts> {
    check_distinct(prices)?;
    let mut counts = ImportCounts::default();
    for row in prices {
        let stored: Option<i64> = sqlx::query_scalar(
            "SELECT per_kg_micros FROM prices
             WHERE tenant_id = ? AND product = ? AND currency = ? AND valid_from = ? AND source = ?
             FOR UPDATE",
        )
        .bind(tenant.0)
        .bind(&row.product)
        .bind(&row.currency)
        .bind(row.valid_from.0)
        .bind(&row.source)
        .fetch_optional(&mut *conn)
        .await
        .my()?;
        let query = match classify(stored, row, &mut counts) {
            Write::Insert => sqlx::query(
                "INSERT INTO prices (tenant_id, product, currency, valid_from, source, per_kg_micros, imported_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(tenant.0)
            .bind(&row.product)
            .bind(&row.currency)
            .bind(row.valid_from.0)
            .bind(&row.source)
            .bind(row.per_kg.0)
            .bind(at.0),
            Write::Update => sqlx::query(
                "UPDATE prices SET per_kg_micros = ?, imported_at = ?
                 WHERE tenant_id = ? AND product = ? AND currency = ? AND valid_from = ? AND source = ?",
            )
            .bind(row.per_kg.0)
            .bind(at.0)
            .bind(tenant.0)
            .bind(&row.product)
            .bind(&row.currency)
            .bind(row.valid_from.0)
            .bind(&row.source),
            Write::Nothing => continue,
        };
        query.execute(&mut *conn).await.my()?;
    }
    Ok(counts)
}

pub(crate) async fn list(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    filter: &PriceFilter,
) -> StoreResult<Vec<Price>> {
    let rows: Vec<PriceRow> = sqlx::query_as(&format!(
        "SELECT {PRICE_COLUMNS} FROM prices
         WHERE tenant_id = ? AND id < ? AND (? IS NULL OR product = ?)
           AND (? IS NULL OR currency = ?)
         ORDER BY id DESC LIMIT ?"
    ))
    .bind(tenant.0)
    .bind(sql_before(filter.before))
    .bind(filter.product.as_deref())
    .bind(filter.product.as_deref())
    .bind(filter.currency.as_deref())
    .bind(filter.currency.as_deref())
    .bind(sql_limit(filter.limit))
    .fetch_all(&mut *conn)
    .await
    .my()?;
    Ok(rows.into_iter().map(price_from_row).collect())
}

pub(crate) async fn in_force(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    product: &str,
    currency: Option<&str>,
    at: Timestamp,
) -> StoreResult<Option<Price>> {
    let row: Option<PriceRow> = sqlx::query_as(&format!(
        "SELECT {PRICE_COLUMNS} FROM prices
         WHERE tenant_id = ? AND product = ? AND (? IS NULL OR currency = ?)
           AND valid_from <= ?
         ORDER BY valid_from DESC, id DESC LIMIT 1"
    ))
    .bind(tenant.0)
    .bind(product)
    .bind(currency)
    .bind(currency)
    .bind(at.0)
    .fetch_optional(&mut *conn)
    .await
    .my()?;
    Ok(row.map(price_from_row))
}
