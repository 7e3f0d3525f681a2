//! The products and prices tables (see [`crate::ProductRepo`], [`crate::PriceRepo`]).

use rusqlite::{params, Connection, OptionalExtension, Row};
use vigia_core::{TenantId, Timestamp};

use crate::prices::{
    check_distinct, classify, price_from_row, sql_before, sql_limit, PriceRow, Write, PRICE_COLUMNS,
};
use crate::products::{product_from_row, ProductRow, PRODUCT_COLUMNS};
use crate::{
    ImportCounts, NewPrice, Price, PriceFilter, Product, ProductPut, StoreError, StoreResult,
};

fn product_row(row: &Row<'_>) -> rusqlite::Result<ProductRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn price_row(row: &Row<'_>) -> rusqlite::Result<PriceRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

pub(crate) fn put_product(
    conn: &Connection,
    tenant: TenantId,
    put: &ProductPut,
    at: Timestamp,
) -> StoreResult<(Product, bool)> {
    let existed = conn
        .prepare_cached("SELECT 1 FROM products WHERE tenant_id = ?1 AND code = ?2")?
        .exists(params![tenant.0, put.code])?;
    conn.prepare_cached(
        "INSERT INTO products (tenant_id, code, name, weight_kg, keep_below_ms, discard_after_ms, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (tenant_id, code) DO UPDATE SET name = excluded.name,
             weight_kg = excluded.weight_kg, keep_below_ms = excluded.keep_below_ms,
             discard_after_ms = excluded.discard_after_ms, updated_at = excluded.updated_at",
    )?
    .execute(params![
        tenant.0,
        put.code,
        put.name,
        put.weight_kg,
        put.keep_below_ms,
        put.discard_after_ms,
        at.0
    ])?;
    Ok((put.stored(at), !existed))
}

pub(crate) fn product(conn: &Connection, tenant: TenantId, code: &str) -> StoreResult<Product> {
    conn.prepare_cached(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE tenant_id = ?1 AND code = ?2"
    ))?
    .query_row(params![tenant.0, code], product_row)
    .optional()?
    .map(product_from_row)
    .ok_or(StoreError::NotFound)
}

pub(crate) fn products(
    conn: &Connection,
    tenant: TenantId,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<Product>> {
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {PRODUCT_COLUMNS} FROM products
             WHERE tenant_id = ?1 AND (?2 IS NULL OR code > ?2) ORDER BY code LIMIT ?3"
        ))?
        .query_map(params![tenant.0, after, sql_limit(limit)], product_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows.into_iter().map(product_from_row).collect())
}

pub(crate) fn delete_product(conn: &Connection, tenant: TenantId, code: &str) -> StoreResult<()> {
    let deleted = conn
        .prepare_cached("DELETE FROM products WHERE tenant_id = ?1 AND code = ?2")?
        .execute(params![tenant.0, code])?;
    if deleted == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(crate) fn import(
    conn: &Connection,
    tenant: TenantId,
    prices: &[NewPrice],
    at: Timestamp,
) -> StoreResult<ImportCounts> {
    check_distinct(prices)?;
    let mut counts = ImportCounts::default();
    let mut find = conn.prepare_cached(
        "SELECT per_kg_micros FROM prices
         WHERE tenant_id = ?1 AND product = ?2 AND currency = ?3 AND valid_from = ?4 AND source = ?5",
    )?;
    for row in prices {
        let identity = params![
            tenant.0,
            row.product,
            row.currency,
            row.valid_from.0,
            row.source
        ];
        let stored: Option<i64> = find.query_row(identity, |r| r.get(0)).optional()?;
        match classify(stored, row, &mut counts) {
            Write::Insert => {
                conn.prepare_cached(
                    "INSERT INTO prices (tenant_id, product, currency, valid_from, source, per_kg_micros, imported_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    tenant.0,
                    row.product,
                    row.currency,
                    row.valid_from.0,
                    row.source,
                    row.per_kg.0,
                    at.0
                ])?;
            }
            Write::Update => {
                conn.prepare_cached(
                    "UPDATE prices SET per_kg_micros = ?6, imported_at = ?7
                     WHERE tenant_id = ?1 AND product = ?2 AND currency = ?3 AND valid_from = ?4 AND source = ?5",
                )?
                .execute(params![
                    tenant.0,
                    row.product,
                    row.currency,
                    row.valid_from.0,
                    row.source,
                    row.per_kg.0,
                    at.0
                ])?;
            }
            Write::Nothing => {}
        }
    }
    Ok(counts)
}

pub(crate) fn list(
    conn: &Connection,
    tenant: TenantId,
    filter: &PriceFilter,
) -> StoreResult<Vec<Price>> {
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {PRICE_COLUMNS} FROM prices
             WHERE tenant_id = ?1 AND id < ?2 AND (?3 IS NULL OR product = ?3)
               AND (?4 IS NULL OR currency = ?4)
             ORDER BY id DESC LIMIT ?5"
        ))?
        .query_map(
            params![
                tenant.0,
                sql_before(filter.before),
                filter.product,
                filter.currency,
                sql_limit(filter.limit)
            ],
            price_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows.into_iter().map(price_from_row).collect())
}

pub(crate) fn in_force(
    conn: &Connection,
    tenant: TenantId,
    product: &str,
    currency: Option<&str>,
    at: Timestamp,
) -> StoreResult<Option<Price>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {PRICE_COLUMNS} FROM prices
             WHERE tenant_id = ?1 AND product = ?2 AND (?3 IS NULL OR currency = ?3)
               AND valid_from <= ?4
             ORDER BY valid_from DESC, id DESC LIMIT 1"
        ))?
        .query_row(params![tenant.0, product, currency, at.0], price_row)
        .optional()?
        .map(price_from_row))
}
