//! The products and prices tables on PostgreSQL (see [`crate::ProductRepo`],
//! [`crate::PriceRepo`]); the row shapes and the import's bookkeeping are shared with the
//! other backends in `crate::products` and `crate::prices`.

use sqlx::PgConnection;
use vigia_core::{TenantId, Timestamp};

use super::error::PgResultExt;
use crate::prices::{
    check_distinct, classify, price_from_row, sql_before, sql_limit, PriceRow, Write, PRICE_COLUMNS,
};
use crate::products::{product_from_row, ProductRow, PRODUCT_COLUMNS};
use crate::{
    ImportCounts, NewPrice, Price, PriceFilter, Product, ProductPut, StoreError, StoreResult,
};

pub(crate) async fn put_product(
    conn: &mut PgConnection,
    tenant: TenantId,
    put: &ProductPut,
    at: Timestamp,
) -> StoreResult<(Product, bool)> {
    // `xmax = 0` only on a row this statement inserted, not on one it updated.
    let created: bool = sqlx::query_scalar(
        "INSERT INTO products (tenant_id, code, name, weight_kg, keep_below_ms, discard_after_ms, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id, code) DO UPDATE SET name = excluded.name,
             weight_kg = excluded.weight_kg, keep_below_ms = excluded.keep_below_ms,
             discard_after_ms = excluded.discard_after_ms, updated_at = excluded.updated_at
         RETURNING (xmax = 0)",
    )
    .bind(tenant.0)
    .bind(&put.code)
    .bind(&put.name)
    .bind(put.weight_kg)
    .bind(put.keep_below_ms)
    .bind(put.discard_after_ms)
    .bind(at.0)
    .fetch_one(&mut *conn)
    .await
    .pg()?;
    Ok((put.stored(at), created))
}

pub(crate) async fn product(
    conn: &mut PgConnection,
    tenant: TenantId,
    code: &str,
) -> StoreResult<Product> {
    let row: Option<ProductRow> = sqlx::query_as(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE tenant_id = $1 AND code = $2"
    ))
    .bind(tenant.0)
    .bind(code)
    .fetch_optional(&mut *conn)
    .await
    .pg()?;
    row.map(product_from_row).ok_or(StoreError::NotFound)
}

pub(crate) async fn products(
    conn: &mut PgConnection,
    tenant: TenantId,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<Product>> {
    let rows: Vec<ProductRow> = sqlx::query_as(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products
         WHERE tenant_id = $1 AND ($2::text IS NULL OR code > $2) ORDER BY code LIMIT $3"
    ))
    .bind(tenant.0)
    .bind(after)
    .bind(sql_limit(limit))
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    Ok(rows.into_iter().map(product_from_row).collect())
}

pub(crate) async fn delete_product(
    conn: &mut PgConnection,
    tenant: TenantId,
    code: &str,
) -> StoreResult<()> {
    let deleted = sqlx::query("DELETE FROM products WHERE tenant_id = $1 AND code = $2")
        .bind(tenant.0)
        .bind(code)
        .execute(&mut *conn)
        .await
        .pg()?
        .rows_affected();
    if deleted == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Runs inside the caller's transaction.
pub(crate) async fn import(
    conn: &mut PgConnection,
    tenant: TenantId,
    prices: &[NewPrice],
    at: Timestamp,
) -> StoreResult<ImportCounts> {
    check_distinct(prices)?;
    let mut counts = ImportCounts::default();
    for row in prices {
        let stored: Option<i64> = sqlx::query_scalar(
            "SELECT per_kg_micros FROM prices
             WHERE tenant_id = $1 AND product = $2 AND currency = $3 AND valid_from = $4 AND source = $5
             FOR UPDATE",
        )
        .bind(tenant.0)
        .bind(&row.product)
        .bind(&row.currency)
        .bind(row.valid_from.0)
        .bind(&row.source)
        .fetch_optional(&mut *conn)
        .await
        .pg()?;
        let statement = match classify(stored, row, &mut counts) {
            Write::Insert => {
                "INSERT INTO prices (tenant_id, product, currency, valid_from, source, per_kg_micros, imported_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)"
            }
            Write::Update => {
                "UPDATE prices SET per_kg_micros = $6, imported_at = $7
                 WHERE tenant_id = $1 AND product = $2 AND currency = $3 AND valid_from = $4 AND source = $5"
            }
            Write::Nothing => continue,
        };
        sqlx::query(statement)
            .bind(tenant.0)
            .bind(&row.product)
            .bind(&row.currency)
            .bind(row.valid_from.0)
            .bind(&row.source)
            .bind(row.per_kg.0)
            .bind(at.0)
            .execute(&mut *conn)
            .await
            .pg()?;
    }
    Ok(counts)
}

pub(crate) async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    filter: &PriceFilter,
) -> StoreResult<Vec<Price>> {
    let rows: Vec<PriceRow> = sqlx::query_as(&format!(
        "SELECT {PRICE_COLUMNS} FROM prices
         WHERE tenant_id = $1 AND id < $2 AND ($3::text IS NULL OR product = $3)
           AND ($4::text IS NULL OR currency = $4)
         ORDER BY id DESC LIMIT $5"
    ))
    .bind(tenant.0)
    .bind(sql_before(filter.before))
    .bind(filter.product.as_deref())
    .bind(filter.currency.as_deref())
    .bind(sql_limit(filter.limit))
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    Ok(rows.into_iter().map(price_from_row).collect())
}

pub(crate) async fn in_force(
    conn: &mut PgConnection,
    tenant: TenantId,
    product: &str,
    currency: Option<&str>,
    at: Timestamp,
) -> StoreResult<Option<Price>> {
    let row: Option<PriceRow> = sqlx::query_as(&format!(
        "SELECT {PRICE_COLUMNS} FROM prices
         WHERE tenant_id = $1 AND product = $2 AND ($3::text IS NULL OR currency = $3)
           AND valid_from <= $4
         ORDER BY valid_from DESC, id DESC LIMIT 1"
    ))
    .bind(tenant.0)
    .bind(product)
    .bind(currency)
    .bind(at.0)
    .fetch_optional(&mut *conn)
    .await
    .pg()?;
    Ok(row.map(price_from_row))
}
