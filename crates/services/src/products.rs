//! Products as operators define them: a code, a name, an optional unit weight, and the
//! cold-chain limits the 4-hour rule classifies stock by (keep below `keep_below` out of
//! range, use now up to `discard_after`, discard past it; 2 h and 4 h by default).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vigia_core::{FieldError, Permission, Timestamp};
use vigia_store::products::{DEFAULT_DISCARD_AFTER_MS, DEFAULT_KEEP_BELOW_MS};
use vigia_store::{AuditEvent, AuditOutcome, Product, ProductPut, Store};

use crate::prices::validate_product_code;
use crate::{AuditTrail, Caller, Page, ServiceError};

/// Longest product name, in characters.
pub const MAX_PRODUCT_NAME_LEN: usize = 200;
/// Heaviest unit weight accepted, in kg.
pub const MAX_WEIGHT_KG: f64 = 1_000_000.0;
/// The duration text a product's limits take, as the OpenAPI document states it.
pub const LIMIT_PATTERN: &str = "^[1-9][0-9]{0,4}(ms|s|m|h|d)$";

/// The writable part of a product, as `PUT /api/v1/products/{code}` takes it.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductSpec {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// The weight of one unit in kg, when the product is counted in units.
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, maximum = 1000000.0)]
    pub weight_kg: Option<f64>,
    /// Cumulative time out of range below which stock is kept (default `2h`); a number of
    /// 1–5 digits and a unit (ms, s, m, h, d). Must be shorter than `discard_after`.
    #[serde(default)]
    #[schema(max_length = 8, pattern = "^[1-9][0-9]{0,4}(ms|s|m|h|d)$")]
    pub keep_below: Option<String>,
    /// Cumulative time out of range past which stock is discarded (default `4h`).
    #[serde(default)]
    #[schema(max_length = 8, pattern = "^[1-9][0-9]{0,4}(ms|s|m|h|d)$")]
    pub discard_after: Option<String>,
}

/// A product as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProductView {
    pub code: String,
    pub name: String,
    pub weight_kg: Option<f64>,
    /// As `PUT` takes it (e.g. `2h`).
    pub keep_below: String,
    pub discard_after: String,
    pub keep_below_ms: i64,
    pub discard_after_ms: i64,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl From<Product> for ProductView {
    fn from(p: Product) -> Self {
        Self {
            keep_below: duration_text(p.keep_below_ms),
            discard_after: duration_text(p.discard_after_ms),
            code: p.code,
            name: p.name,
            weight_kg: p.weight_kg,
            keep_below_ms: p.keep_below_ms,
            discard_after_ms: p.discard_after_ms,
            updated_at: p.updated_at,
        }
    }
}

/// Milliseconds in the largest unit that divides them: `7200000` is `2h`.
pub fn duration_text(ms: i64) -> String {
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Parses a limit as [`LIMIT_PATTERN`] states it; milliseconds.
fn parse_limit(text: &str) -> Result<i64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let size = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    match digits.parse::<i64>() {
        Ok(n) if size > 0 && (1..=99_999).contains(&n) && !digits.starts_with('0') => Ok(n * size),
        _ => Err(format!(
            "`{text}` is not a limit: 1–5 digits (not starting with 0) and a unit, ms, s, m, h \
             or d (e.g. 2h)"
        )),
    }
}

impl ProductSpec {
    /// Validates and fills defaults; every problem is reported.
    fn into_put(self, code: &str) -> Result<ProductPut, ServiceError> {
        let mut errors = Vec::new();
        if let Err(message) = validate_product_code(code) {
            errors.push(FieldError::new("code", message));
        }
        let name_len = self.name.chars().count();
        if name_len == 0 || name_len > MAX_PRODUCT_NAME_LEN {
            errors.push(FieldError::new(
                "name",
                format!("must be 1–{MAX_PRODUCT_NAME_LEN} characters"),
            ));
        }
        if let Some(w) = self.weight_kg {
            if !(w.is_finite() && w > 0.0 && w <= MAX_WEIGHT_KG) {
                errors.push(FieldError::new(
                    "weight_kg",
                    format!("must be above 0 and at most {MAX_WEIGHT_KG} kg"),
                ));
            }
        }
        let mut limit = |field: &str, text: Option<&str>, default: i64| match text {
            None => Some(default),
            Some(text) => match parse_limit(text) {
                Ok(ms) => Some(ms),
                Err(message) => {
                    errors.push(FieldError::new(field, message));
                    None
                }
            },
        };
        let keep = limit(
            "keep_below",
            self.keep_below.as_deref(),
            DEFAULT_KEEP_BELOW_MS,
        );
        let discard = limit(
            "discard_after",
            self.discard_after.as_deref(),
            DEFAULT_DISCARD_AFTER_MS,
        );
        if let (Some(keep), Some(discard)) = (keep, discard) {
            if keep >= discard {
                errors.push(FieldError::new(
                    "discard_after",
                    format!(
                        "must be longer than keep_below ({} is not longer than {}; the defaults \
                         are 2h and 4h)",
                        duration_text(discard),
                        duration_text(keep)
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ServiceError::Invalid {
                detail: format!("the product `{code}` is not valid"),
                errors,
            });
        }
        Ok(ProductPut {
            code: code.to_string(),
            name: self.name,
            weight_kg: self.weight_kg,
            keep_below_ms: keep.unwrap_or(DEFAULT_KEEP_BELOW_MS),
            discard_after_ms: discard.unwrap_or(DEFAULT_DISCARD_AFTER_MS),
        })
    }
}

/// The caller's tenant's products.
pub struct ProductService {
    store: Arc<dyn Store>,
    audit: Arc<AuditTrail>,
}

impl ProductService {
    pub fn new(store: Arc<dyn Store>, audit: Arc<AuditTrail>) -> Self {
        Self { store, audit }
    }

    /// Creates or replaces a product (operators and admins); returns it and whether it
    /// was created. Audited.
    pub async fn put(
        &self,
        caller: &Caller,
        code: &str,
        spec: ProductSpec,
        client: &str,
    ) -> Result<(ProductView, bool), ServiceError> {
        caller.require(Permission::Operate)?;
        let put = spec.into_put(code)?;
        let (product, created) = self
            .store
            .products()
            .put(caller.tenant, put, Timestamp::now())
            .await?;
        self.record(caller, "product.put", code, client).await?;
        Ok((product.into(), created))
    }

    pub async fn get(&self, caller: &Caller, code: &str) -> Result<ProductView, ServiceError> {
        caller.require(Permission::Read)?;
        let product = self
            .store
            .products()
            .get(caller.tenant, code)
            .await
            .map_err(not_found(code))?;
        Ok(product.into())
    }

    /// A page of the tenant's products by code, after `after`.
    pub async fn list(
        &self,
        caller: &Caller,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<ProductView>, ServiceError> {
        caller.require(Permission::Read)?;
        let mut items = self
            .store
            .products()
            .list(caller.tenant, after, limit.saturating_add(1))
            .await?;
        let has_more = items.len() > limit;
        items.truncate(limit);
        Ok(Page {
            items: items.into_iter().map(ProductView::from).collect(),
            has_more,
        })
    }

    /// Deletes a product (operators and admins); its prices stay. Audited.
    pub async fn delete(
        &self,
        caller: &Caller,
        code: &str,
        client: &str,
    ) -> Result<(), ServiceError> {
        caller.require(Permission::Operate)?;
        self.store
            .products()
            .delete(caller.tenant, code)
            .await
            .map_err(not_found(code))?;
        self.record(caller, "product.delete", code, client).await
    }

    async fn record(
        &self,
        caller: &Caller,
        action: &str,
        code: &str,
        client: &str,
    ) -> Result<(), ServiceError> {
        self.audit
            .record_now(AuditEvent {
                tenant: Some(caller.tenant),
                actor: caller.actor(),
                action: action.to_string(),
                target: format!("product:{code}"),
                outcome: AuditOutcome::Allowed,
                client: client.to_string(),
            })
            .await?;
        Ok(())
    }
}

fn not_found(code: &str) -> impl FnOnce(vigia_store::StoreError) -> ServiceError {
    ServiceError::not_found_as(format!("no product `{code}` in this tenant"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(keep: Option<&str>, discard: Option<&str>) -> ProductSpec {
        ProductSpec {
            name: "Beef".into(),
            weight_kg: None,
            keep_below: keep.map(Into::into),
            discard_after: discard.map(Into::into),
        }
    }

    #[test]
    fn limits_default_to_the_four_hour_rule_and_must_be_in_order() {
        let put = spec(None, None).into_put("beef").expect("defaults");
        assert_eq!(
            (put.keep_below_ms, put.discard_after_ms),
            (7_200_000, 14_400_000)
        );
        let put = spec(Some("90m"), Some("3h")).into_put("beef").expect("set");
        assert_eq!(
            (put.keep_below_ms, put.discard_after_ms),
            (5_400_000, 10_800_000)
        );
        for (keep, discard, field) in [
            (Some("5h"), None, "discard_after"),
            (Some("2h"), Some("2h"), "discard_after"),
            (Some("0h"), None, "keep_below"),
            (Some("2.5h"), None, "keep_below"),
            (None, Some("4 h"), "discard_after"),
        ] {
            match spec(keep, discard).into_put("beef") {
                Err(ServiceError::Invalid { errors, .. }) => {
                    assert_eq!(errors[0].field, field, "{keep:?} {discard:?}")
                }
                other => panic!("{keep:?} {discard:?}: {other:?}"),
            }
        }
        assert!(spec(None, None).into_put("a/b").is_err());
        assert_eq!(duration_text(7_200_000), "2h");
        assert_eq!(duration_text(5_400_000), "90m");
        assert_eq!(duration_text(1_500), "1500ms");
    }
}
