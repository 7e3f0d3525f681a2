//! The prices port: market prices per kg of a tenant's products, by currency, each valid
//! from an instant and naming its source (a CSV import, a scraped page). Money is kept
//! exactly, in integer millionths ([`PricePerKg`]), never as a float.
//!
//! An import is idempotent: a price is identified by (product, currency, valid from,
//! source); importing the same rows again changes nothing, and a row whose identity is
//! stored with another amount replaces the amount (a source correcting itself).

use std::fmt;

use async_trait::async_trait;
use vigia_core::{TenantId, Timestamp};

use crate::{StoreError, StoreResult};

/// Decimal places a price keeps.
pub const PRICE_DECIMALS: u32 = 6;
const SCALE: i64 = 10i64.pow(PRICE_DECIMALS);

/// An amount per kg in millionths of the currency unit (`2.40` is 2 400 000), so decimal
/// text round-trips exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PricePerKg(pub i64);

impl PricePerKg {
    /// Parses plain decimal text: digits, an optional point and at most six decimals, not
    /// negative (`2.40`, `1200`, `0.000001`). No exponent, sign, separators or spaces.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (whole, fraction) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || text.ends_with('.') {
            return Err(format!(
                "`{text}` is not a decimal amount (write e.g. 2.40, with a point)"
            ));
        }
        if fraction.len() > PRICE_DECIMALS as usize {
            return Err(format!("`{text}` has more than {PRICE_DECIMALS} decimals"));
        }
        let too_large = || format!("`{text}` is too large an amount");
        let whole: i64 = whole.parse().map_err(|_| too_large())?;
        let mut micros = whole.checked_mul(SCALE).ok_or_else(too_large)?;
        if !fraction.is_empty() {
            let padded = format!("{fraction:0<width$}", width = PRICE_DECIMALS as usize);
            let part: i64 = padded.parse().map_err(|_| too_large())?;
            micros = micros.checked_add(part).ok_or_else(too_large)?;
        }
        Ok(PricePerKg(micros))
    }
}

/// At least two decimals, more only when they are not zero: `2.40`, `0.000125`, `1200.00`.
impl fmt::Display for PricePerKg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let scale = SCALE as u64;
        let mut fraction = format!("{:0width$}", abs % scale, width = PRICE_DECIMALS as usize);
        while fraction.len() > 2 && fraction.ends_with('0') {
            fraction.pop();
        }
        write!(f, "{sign}{}.{fraction}", abs / scale)
    }
}

impl serde::Serialize for PricePerKg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A price to import (validated by the service).
#[derive(Debug, Clone, PartialEq)]
pub struct NewPrice {
    pub product: String,
    /// ISO 4217 code, three upper-case letters.
    pub currency: String,
    pub per_kg: PricePerKg,
    pub valid_from: Timestamp,
    pub source: String,
}

/// A stored price.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Price {
    /// Increasing in import order, never reused: the list's order (newest first) and cursor.
    pub id: u64,
    pub product: String,
    pub currency: String,
    /// Decimal text, exact (e.g. `"2.40"`).
    #[schema(value_type = String, example = "2.40")]
    pub price_per_kg: PricePerKg,
    #[schema(value_type = String, format = DateTime)]
    pub valid_from: Timestamp,
    pub source: String,
    /// When the amount was last written.
    #[schema(value_type = String, format = DateTime)]
    pub imported_at: Timestamp,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ImportCounts {
    /// Prices that were not stored before.
    pub imported: u64,
    /// Prices stored before with another amount, now replaced.
    pub updated: u64,
    /// Prices stored before exactly so.
    pub unchanged: u64,
}

/// Which prices a list returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceFilter {
    pub product: Option<String>,
    pub currency: Option<String>,
    /// Only ids below this one (the keyset cursor).
    pub before: Option<u64>,
    pub limit: usize,
}

/// The columns the SQL backends select, in [`PriceRow`] order.
pub(crate) const PRICE_COLUMNS: &str =
    "id, product, currency, per_kg_micros, valid_from, source, imported_at";

/// A row of [`PRICE_COLUMNS`].
pub(crate) type PriceRow = (i64, String, String, i64, i64, String, i64);

pub(crate) fn price_from_row(
    (id, product, currency, micros, valid_from, source, imported_at): PriceRow,
) -> Price {
    Price {
        id: id.max(0) as u64,
        product,
        currency,
        price_per_kg: PricePerKg(micros),
        valid_from: Timestamp(valid_from),
        source,
        imported_at: Timestamp(imported_at),
    }
}

/// A cursor as the SQL backends hold it (ids past `i64::MAX` cannot exist: all are below).
pub(crate) fn sql_before(before: Option<u64>) -> i64 {
    before.map_or(i64::MAX, |id| i64::try_from(id).unwrap_or(i64::MAX))
}

/// A limit as the SQL backends bind it.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// How one row of an import compares with what is stored under its identity.
pub(crate) fn classify(stored: Option<i64>, row: &NewPrice, counts: &mut ImportCounts) -> Write {
    match stored {
        None => {
            counts.imported += 1;
            Write::Insert
        }
        Some(micros) if micros == row.per_kg.0 => {
            counts.unchanged += 1;
            Write::Nothing
        }
        Some(_) => {
            counts.updated += 1;
            Write::Update
        }
    }
}

/// What an import does with one row (see [`classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    Insert,
    Update,
    Nothing,
}

/// Two rows of one import with the same identity: the service refuses such files, and a
/// store refuses them too rather than let the later row win silently.
pub(crate) fn duplicate_row(row: &NewPrice) -> StoreError {
    StoreError::Conflict(format!(
        "the import holds the price of {} in {} from {} by {} twice",
        row.product,
        row.currency,
        row.valid_from.to_rfc3339(),
        row.source
    ))
}

/// Prices, per tenant.
#[async_trait]
pub trait PriceRepo: Send + Sync {
    /// Stores `prices` in ONE transaction at `at` (all or nothing), by identity (see the
    /// module docs). Two rows with one identity are a `Conflict`.
    async fn import(
        &self,
        tenant: TenantId,
        prices: Vec<NewPrice>,
        at: Timestamp,
    ) -> StoreResult<ImportCounts>;
    /// The tenant's prices, newest import first, filtered.
    async fn list(&self, tenant: TenantId, filter: &PriceFilter) -> StoreResult<Vec<Price>>;
    /// The price of `product` in force at `at`: the latest `valid_from` not after `at`, in
    /// `currency` (any currency when `None`); among prices valid from the same instant, the
    /// one imported last. `None` when there is none.
    async fn in_force(
        &self,
        tenant: TenantId,
        product: &str,
        currency: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<Option<Price>>;
}

/// Refuses an import with two rows of one identity (see [`duplicate_row`]), before any
/// backend writes.
pub(crate) fn check_distinct(prices: &[NewPrice]) -> StoreResult<()> {
    let mut seen = std::collections::HashSet::new();
    for row in prices {
        if !seen.insert((&row.product, &row.currency, row.valid_from, &row.source)) {
            return Err(duplicate_row(row));
        }
    }
    Ok(())
}
