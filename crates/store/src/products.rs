//! The products port: what a tenant stores in its chambers, per product code — the name,
//! the weight of a unit, and the cold-chain limits the 4-hour rule classifies stock by
//! (issue 15: "keep < 2 h, use now 2–4 h, discard > 4 h" out of range). `Sensor.product`
//! names a code here; the dashboards (issue 16) read the same rows.

use async_trait::async_trait;
use vigia_core::{TenantId, Timestamp};

use crate::StoreResult;

/// Below this much time out of range, stock is kept (2 h).
pub const DEFAULT_KEEP_BELOW_MS: i64 = 2 * 3_600_000;
/// Past this much time out of range, stock is discarded (4 h); in between: use now.
pub const DEFAULT_DISCARD_AFTER_MS: i64 = 4 * 3_600_000;

/// A product as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Product {
    pub code: String,
    pub name: String,
    /// The weight of one unit in kg, when the product is counted in units.
    pub weight_kg: Option<f64>,
    /// Cumulative time out of range below which stock is kept, in milliseconds.
    pub keep_below_ms: i64,
    /// Cumulative time out of range past which stock is discarded, in milliseconds.
    pub discard_after_ms: i64,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// What a `PUT` of a product writes (validated by the service).
#[derive(Debug, Clone, PartialEq)]
pub struct ProductPut {
    pub code: String,
    pub name: String,
    pub weight_kg: Option<f64>,
    pub keep_below_ms: i64,
    pub discard_after_ms: i64,
}

impl ProductPut {
    pub(crate) fn stored(&self, at: Timestamp) -> Product {
        Product {
            code: self.code.clone(),
            name: self.name.clone(),
            weight_kg: self.weight_kg,
            keep_below_ms: self.keep_below_ms,
            discard_after_ms: self.discard_after_ms,
            updated_at: at,
        }
    }
}

/// The columns the SQL backends select, in [`ProductRow`] order.
pub(crate) const PRODUCT_COLUMNS: &str =
    "code, name, weight_kg, keep_below_ms, discard_after_ms, updated_at";

/// A row of [`PRODUCT_COLUMNS`].
pub(crate) type ProductRow = (String, String, Option<f64>, i64, i64, i64);

pub(crate) fn product_from_row(
    (code, name, weight_kg, keep_below_ms, discard_after_ms, updated_at): ProductRow,
) -> Product {
    Product {
        code,
        name,
        weight_kg,
        keep_below_ms,
        discard_after_ms,
        updated_at: Timestamp(updated_at),
    }
}

/// Products, per tenant, by code.
#[async_trait]
pub trait ProductRepo: Send + Sync {
    /// Creates or replaces the tenant's product `put.code` at `at`; returns it and whether
    /// it was created.
    async fn put(
        &self,
        tenant: TenantId,
        put: ProductPut,
        at: Timestamp,
    ) -> StoreResult<(Product, bool)>;
    /// One of the tenant's products; `NotFound` when it has none by that code.
    async fn get(&self, tenant: TenantId, code: &str) -> StoreResult<Product>;
    /// The tenant's products by code: up to `limit` with a code after `after`.
    async fn list(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Product>>;
    /// Deletes one of the tenant's products (its prices stay: they are the history the
    /// reports cite); `NotFound` as [`ProductRepo::get`].
    async fn delete(&self, tenant: TenantId, code: &str) -> StoreResult<()>;
}
