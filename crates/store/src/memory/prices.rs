//! Products and prices in memory, under their own lock: they change nothing else.

use std::collections::BTreeMap;

use async_trait::async_trait;
use vigia_core::{TenantId, Timestamp};

use super::VolatileStore;
use crate::prices::{check_distinct, classify, Write};
use crate::{
    ImportCounts, NewPrice, Price, PriceFilter, PriceRepo, Product, ProductPut, ProductRepo,
    StoreError, StoreResult,
};

/// A price's identity: tenant, product, currency, valid from, source.
type PriceKey = (TenantId, String, String, Timestamp, String);

#[derive(Default)]
pub(super) struct Prices {
    products: BTreeMap<(TenantId, String), Product>,
    /// Prices by id (import order), with their tenant.
    prices: BTreeMap<u64, (TenantId, Price)>,
    ids: BTreeMap<PriceKey, u64>,
    last_id: u64,
}

fn key(tenant: TenantId, row: &NewPrice) -> PriceKey {
    (
        tenant,
        row.product.clone(),
        row.currency.clone(),
        row.valid_from,
        row.source.clone(),
    )
}

#[async_trait]
impl ProductRepo for VolatileStore {
    async fn put(
        &self,
        tenant: TenantId,
        put: ProductPut,
        at: Timestamp,
    ) -> StoreResult<(Product, bool)> {
        let mut table = self.lock(&self.prices)?;
        let product = put.stored(at);
        let created = table
            .products
            .insert((tenant, put.code), product.clone())
            .is_none();
        Ok((product, created))
    }

    async fn get(&self, tenant: TenantId, code: &str) -> StoreResult<Product> {
        let table = self.lock(&self.prices)?;
        table
            .products
            .get(&(tenant, code.to_string()))
            .cloned()
            .ok_or(StoreError::NotFound)
    }

    async fn list(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Product>> {
        let table = self.lock(&self.prices)?;
        Ok(table
            .products
            .range((tenant, String::new())..)
            .take_while(|((owner, _), _)| *owner == tenant)
            .filter(|((_, code), _)| after.is_none_or(|after| code.as_str() > after))
            .take(limit)
            .map(|(_, product)| product.clone())
            .collect())
    }

    async fn delete(&self, tenant: TenantId, code: &str) -> StoreResult<()> {
        let mut table = self.lock(&self.prices)?;
        table
            .products
            .remove(&(tenant, code.to_string()))
            .map(drop)
            .ok_or(StoreError::NotFound)
    }
}

#[async_trait]
impl PriceRepo for VolatileStore {
    async fn import(
        &self,
        tenant: TenantId,
        prices: Vec<NewPrice>,
        at: Timestamp,
    ) -> StoreResult<ImportCounts> {
        check_distinct(&prices)?;
        let mut table = self.lock(&self.prices)?;
        let mut counts = ImportCounts::default();
        for row in prices {
            let key = key(tenant, &row);
            let stored = table.ids.get(&key).copied();
            let micros = stored.map(|id| table.prices[&id].1.price_per_kg.0);
            match (classify(micros, &row, &mut counts), stored) {
                (Write::Insert, _) => {
                    table.last_id += 1;
                    let id = table.last_id;
                    let price = Price {
                        id,
                        product: row.product,
                        currency: row.currency,
                        price_per_kg: row.per_kg,
                        valid_from: row.valid_from,
                        source: row.source,
                        imported_at: at,
                    };
                    table.prices.insert(id, (tenant, price));
                    table.ids.insert(key, id);
                }
                (Write::Update, Some(id)) => {
                    if let Some((_, price)) = table.prices.get_mut(&id) {
                        price.price_per_kg = row.per_kg;
                        price.imported_at = at;
                    }
                }
                _ => {}
            }
        }
        Ok(counts)
    }

    async fn list(&self, tenant: TenantId, filter: &PriceFilter) -> StoreResult<Vec<Price>> {
        let table = self.lock(&self.prices)?;
        Ok(table
            .prices
            .range(..filter.before.unwrap_or(u64::MAX))
            .rev()
            .map(|(_, row)| row)
            .filter(|(owner, price)| {
                *owner == tenant
                    && filter.product.as_ref().is_none_or(|p| *p == price.product)
                    && filter
                        .currency
                        .as_ref()
                        .is_none_or(|c| *c == price.currency)
            })
            .take(filter.limit)
            .map(|(_, price)| price.clone())
            .collect())
    }

    async fn in_force(
        &self,
        tenant: TenantId,
        product: &str,
        currency: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<Option<Price>> {
        let table = self.lock(&self.prices)?;
        Ok(table
            .prices
            .values()
            .filter(|(owner, price)| {
                *owner == tenant
                    && price.product == product
                    && currency.is_none_or(|c| c == price.currency)
                    && price.valid_from <= at
            })
            .max_by_key(|(_, price)| (price.valid_from, price.id))
            .map(|(_, price)| price.clone()))
    }
}
