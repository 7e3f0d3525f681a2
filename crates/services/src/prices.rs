//! Prices as operators import them: a CSV file read whole and checked row by row before
//! anything is stored. Any bad row refuses the whole file, naming every bad row and column
//! (the first [`MAX_REPORTED_ROW_ERRORS`]); a good file is stored in one transaction, by
//! identity, so importing it again changes nothing (see `vigia_store::prices`).
//!
//! The file: a header line, then one price a line.
//!
//! ```text
//! product,currency,price_per_kg,valid_from,source
//! beef,USD,2.40,2026-11-23,market-weekly
//! fish,EUR,11.125,2026-11-23T06:00:00Z,
//! ```
//!
//! - `product`: the product code (1–64 characters, no control characters or `/`). A price
//!   may arrive before its product is defined: prices are market data by code, and a
//!   report names a product without a price.
//! - `currency`: ISO 4217, three upper-case letters (`USD`).
//! - `price_per_kg`: a plain decimal above zero with at most six decimals (`2.40`); kept
//!   exactly.
//! - `valid_from`: RFC 3339, or a date (`2026-11-23`, midnight UTC).
//! - `source` (optional column; empty means `csv`): who says so, at most 128 characters.
//!
//! Columns may come in any order; names and values are trimmed of spaces; blank lines are
//! skipped; a UTF-8 byte order mark is allowed. Unknown or repeated columns refuse the file.

use std::collections::HashMap;
use std::sync::Arc;

use vigia_core::{Permission, Timestamp};
use vigia_store::{
    AuditEvent, AuditOutcome, ImportCounts, NewPrice, Price, PriceFilter, PricePerKg, Store,
    StoreError,
};

use crate::{AuditTrail, Caller, Page, ServiceError};

/// Longest product code, in characters.
pub const MAX_PRODUCT_CODE_LEN: usize = 64;
/// Longest price source, in characters.
pub const MAX_SOURCE_LEN: usize = 128;
/// Most bad cells a refusal lists (it counts every bad row).
pub const MAX_REPORTED_ROW_ERRORS: usize = 100;
/// The default of `prices.max_import_bytes`: 1 MiB, some 20 000 rows.
pub const DEFAULT_MAX_IMPORT_BYTES: usize = 1024 * 1024;
/// The source of a row that names none.
pub const DEFAULT_SOURCE: &str = "csv";

/// The columns a price file may have, and whether each is required.
pub const COLUMNS: [(&str, bool); 5] = [
    ("product", true),
    ("currency", true),
    ("price_per_kg", true),
    ("valid_from", true),
    ("source", false),
];

/// One bad cell of a price file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The line of the file it is on (1-based; the header is line 1).
    pub line: usize,
    /// The data row (1-based: the first line after the header is row 1); 0 for the header.
    pub row: usize,
    /// The column's name (`columns` for a row with the wrong number of fields, `file` for
    /// the file as a whole).
    pub column: String,
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.row == 0 {
            write!(f, "line {}, {}: {}", self.line, self.column, self.message)
        } else {
            write!(
                f,
                "row {} (line {}), column {}: {}",
                self.row, self.line, self.column, self.message
            )
        }
    }
}

/// A refused file: every bad row counted, the first bad cells listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRefusal {
    pub rows_with_errors: usize,
    pub errors: Vec<RowError>,
}

impl CsvRefusal {
    fn whole_file(line: usize, column: &str, message: impl Into<String>) -> Self {
        Self {
            rows_with_errors: 1,
            errors: vec![RowError {
                line,
                row: 0,
                column: column.into(),
                message: message.into(),
            }],
        }
    }

    /// One line for a person: how many rows are bad and the first of them.
    pub fn summary(&self) -> String {
        let first = self
            .errors
            .first()
            .map(|e| format!("; first: {e}"))
            .unwrap_or_default();
        format!(
            "the price file was refused whole: {} bad row(s){first}",
            self.rows_with_errors
        )
    }
}

/// Why an import stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum PriceImportError {
    /// Bad rows or columns; nothing was stored.
    #[error("{}", .0.summary())]
    Refused(CsvRefusal),
    /// The file is over `prices.max_import_bytes`.
    #[error("the price file is over the {limit}-byte limit (prices.max_import_bytes)")]
    TooLarge { limit: usize },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for PriceImportError {
    fn from(e: StoreError) -> Self {
        PriceImportError::Service(e.into())
    }
}

/// Checks a product code: 1–64 characters, no control characters or `/` (it appears in
/// URL paths).
pub fn validate_product_code(code: &str) -> Result<(), String> {
    if code.is_empty() {
        return Err("must not be empty".into());
    }
    if code.chars().count() > MAX_PRODUCT_CODE_LEN {
        return Err(format!("must be at most {MAX_PRODUCT_CODE_LEN} characters"));
    }
    if code.chars().any(|c| c.is_control() || c == '/') {
        return Err("must not contain control characters or `/`".into());
    }
    Ok(())
}

fn validate_currency(text: &str) -> Result<(), String> {
    if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!(
            "`{text}` is not an ISO 4217 currency code (three upper-case letters, e.g. USD)"
        ))
    }
}

fn parse_valid_from(text: &str) -> Result<Timestamp, String> {
    let is_date = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let parsed = if is_date {
        Timestamp::parse_rfc3339(&format!("{text}T00:00:00Z"))
    } else {
        Timestamp::parse_rfc3339(text)
    };
    parsed.ok_or_else(|| {
        format!("`{text}` is not a date (2026-11-23) or an RFC 3339 time (2026-11-23T06:00:00Z)")
    })
}

fn parse_price(text: &str) -> Result<PricePerKg, String> {
    let price = PricePerKg::parse(text)?;
    if price.0 == 0 {
        return Err("must be more than 0".into());
    }
    Ok(price)
}

fn validate_source(text: &str) -> Result<(), String> {
    if text.chars().count() > MAX_SOURCE_LEN {
        return Err(format!("must be at most {MAX_SOURCE_LEN} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Where each known column is in the file.
struct Layout {
    index: HashMap<&'static str, usize>,
    width: usize,
}

fn read_header(header: &csv::ByteRecord) -> Result<Layout, CsvRefusal> {
    let mut index = HashMap::new();
    let mut errors = Vec::new();
    let bad = |column: &str, message: String| RowError {
        line: 1,
        row: 0,
        column: column.to_string(),
        message,
    };
    let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
    for (i, raw) in header.iter().enumerate() {
        let Ok(name) = std::str::from_utf8(raw) else {
            errors.push(bad(&format!("#{}", i + 1), "is not UTF-8".into()));
            continue;
        };
        let name = name.trim();
        match COLUMNS.iter().find(|(known, _)| *known == name) {
            Some((known, _)) if index.contains_key(known) => {
                errors.push(bad(name, "appears twice in the header".into()));
            }
            Some((known, _)) => {
                index.insert(*known, i);
            }
            None => errors.push(bad(
                name,
                format!("unknown column (the columns are {})", names.join(", ")),
            )),
        }
    }
    for (name, required) in COLUMNS {
        if required && !index.contains_key(name) {
            errors.push(bad(name, "required column missing from the header".into()));
        }
    }
    if errors.is_empty() {
        Ok(Layout {
            index,
            width: header.len(),
        })
    } else {
        Err(CsvRefusal {
            rows_with_errors: 1,
            errors,
        })
    }
}

/// Reads a whole price file. Every row is checked; any bad one refuses the file.
pub fn parse_price_csv(bytes: &[u8]) -> Result<Vec<NewPrice>, CsvRefusal> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(CsvRefusal::whole_file(
            1,
            "file",
            "is empty: it needs a header line `product,currency,price_per_kg,valid_from[,source]`",
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes);
    let header = reader.byte_headers().map_err(|e| csv_error(&e, 1))?.clone();
    let layout = read_header(&header)?;

    let mut prices = Vec::new();
    let mut errors = Vec::new();
    let mut rows_with_errors = 0;
    // Identity → the row that first had it, to name both of a repeated pair.
    let mut seen: HashMap<(String, String, Timestamp, String), usize> = HashMap::new();
    let mut record = csv::ByteRecord::new();
    let mut row = 0;
    loop {
        let line_before = reader.position().line() as usize;
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                // A malformed file (bad quoting): the reader cannot go on past it.
                let mut refusal = csv_error(&e, line_before);
                refusal.rows_with_errors += rows_with_errors;
                refusal.errors.splice(0..0, errors);
                refusal.errors.truncate(MAX_REPORTED_ROW_ERRORS);
                return Err(refusal);
            }
        }
        row += 1;
        let line = record.position().map_or(line_before, |p| p.line() as usize);
        let mut bad = Vec::new();
        if record.len() != layout.width {
            bad.push(RowError {
                line,
                row,
                column: "columns".into(),
                message: format!(
                    "has {} fields, the header has {}",
                    record.len(),
                    layout.width
                ),
            });
        } else {
            let mut cell = |name: &'static str| -> Option<String> {
                let i = *layout.index.get(name)?;
                match std::str::from_utf8(&record[i]) {
                    Ok(text) => Some(text.trim().to_string()),
                    Err(_) => {
                        bad.push(RowError {
                            line,
                            row,
                            column: name.into(),
                            message: "is not UTF-8".into(),
                        });
                        None
                    }
                }
            };
            let product = cell("product");
            let currency = cell("currency");
            let price = cell("price_per_kg");
            let valid_from = cell("valid_from");
            let source = cell("source");
            let mut check = |name: &str, result: Result<(), String>| {
                if let Err(message) = result {
                    bad.push(RowError {
                        line,
                        row,
                        column: name.into(),
                        message,
                    });
                }
            };
            if let Some(p) = &product {
                check("product", validate_product_code(p));
            }
            if let Some(c) = &currency {
                check("currency", validate_currency(c));
            }
            let price = price.map(|p| parse_price(&p));
            if let Some(Err(e)) = &price {
                check("price_per_kg", Err(e.clone()));
            }
            let valid_from = valid_from.map(|v| parse_valid_from(&v));
            if let Some(Err(e)) = &valid_from {
                check("valid_from", Err(e.clone()));
            }
            let source = match source {
                Some(s) if !s.is_empty() => s,
                _ => DEFAULT_SOURCE.to_string(),
            };
            check("source", validate_source(&source));
            if let (Some(product), Some(currency), Some(Ok(per_kg)), Some(Ok(valid_from))) =
                (product, currency, price, valid_from)
            {
                if bad.is_empty() {
                    let identity = (
                        product.clone(),
                        currency.clone(),
                        valid_from,
                        source.clone(),
                    );
                    if let Some(first) = seen.get(&identity) {
                        bad.push(RowError {
                            line,
                            row,
                            column: "valid_from".into(),
                            message: format!(
                                "repeats row {first}: the same product, currency, valid_from and \
                                 source (a file holds each price once)"
                            ),
                        });
                    } else {
                        seen.insert(identity, row);
                        prices.push(NewPrice {
                            product,
                            currency,
                            per_kg,
                            valid_from,
                            source,
                        });
                    }
                }
            }
        }
        if !bad.is_empty() {
            rows_with_errors += 1;
            let room = MAX_REPORTED_ROW_ERRORS.saturating_sub(errors.len());
            errors.extend(bad.into_iter().take(room));
        }
    }
    if rows_with_errors > 0 {
        return Err(CsvRefusal {
            rows_with_errors,
            errors,
        });
    }
    Ok(prices)
}

fn csv_error(e: &csv::Error, line: usize) -> CsvRefusal {
    let line = e.position().map_or(line, |p| p.line() as usize).max(1);
    CsvRefusal::whole_file(line, "file", format!("is not valid CSV here: {e}"))
}

/// Imports and lists the caller's tenant's prices.
pub struct PriceService {
    store: Arc<dyn Store>,
    audit: Arc<AuditTrail>,
    max_import_bytes: usize,
}

impl PriceService {
    pub fn new(store: Arc<dyn Store>, audit: Arc<AuditTrail>, max_import_bytes: usize) -> Self {
        Self {
            store,
            audit,
            max_import_bytes,
        }
    }

    /// `prices.max_import_bytes`: the largest file an import takes.
    pub fn max_import_bytes(&self) -> usize {
        self.max_import_bytes
    }

    /// Imports a price file (operators and admins): all rows or none. Audited.
    pub async fn import_csv(
        &self,
        caller: &Caller,
        file: &[u8],
        client: &str,
    ) -> Result<ImportCounts, PriceImportError> {
        caller.require(Permission::Operate)?;
        if file.len() > self.max_import_bytes {
            return Err(PriceImportError::TooLarge {
                limit: self.max_import_bytes,
            });
        }
        let rows = parse_price_csv(file).map_err(PriceImportError::Refused)?;
        let count = rows.len();
        let counts = self
            .store
            .prices()
            .import(caller.tenant, rows, Timestamp::now())
            .await?;
        self.audit
            .record_now(AuditEvent {
                tenant: Some(caller.tenant),
                actor: caller.actor(),
                action: "prices.import".into(),
                target: format!(
                    "prices:{count} rows ({} imported, {} updated, {} unchanged)",
                    counts.imported, counts.updated, counts.unchanged
                ),
                outcome: AuditOutcome::Allowed,
                client: client.to_string(),
            })
            .await?;
        Ok(counts)
    }

    /// A page of the tenant's prices, newest import first, with ids below `before`.
    pub async fn list(
        &self,
        caller: &Caller,
        product: Option<String>,
        currency: Option<String>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Page<Price>, ServiceError> {
        caller.require(Permission::Read)?;
        let mut items = self
            .store
            .prices()
            .list(
                caller.tenant,
                &PriceFilter {
                    product,
                    currency,
                    before,
                    // One more than asked tells whether another page follows.
                    limit: limit.saturating_add(1),
                },
            )
            .await?;
        let has_more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, has_more })
    }

    /// The price of `product` in force at `at` (see `PriceRepo::in_force`).
    pub async fn in_force(
        &self,
        caller: &Caller,
        product: &str,
        currency: Option<&str>,
        at: Timestamp,
    ) -> Result<Option<Price>, ServiceError> {
        caller.require(Permission::Read)?;
        Ok(self
            .store
            .prices()
            .in_force(caller.tenant, product, currency, at)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(file: &str) -> CsvRefusal {
        parse_price_csv(file.as_bytes()).expect_err("refused")
    }

    #[test]
    fn a_good_file_parses_exactly() {
        let file = "\u{feff}valid_from, product ,price_per_kg,currency\n\
                    2026-11-23,beef,2.40,USD\n\
                    \n\
                    2026-11-23T06:00:00+01:00,fish,0.000001,EUR\n";
        let rows = parse_price_csv(file.as_bytes()).expect("parses");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].product, "beef");
        assert_eq!(rows[0].per_kg, PricePerKg(2_400_000));
        assert_eq!(rows[0].source, DEFAULT_SOURCE);
        assert_eq!(
            rows[0].valid_from,
            Timestamp::parse_rfc3339("2026-11-23T00:00:00Z").unwrap()
        );
        assert_eq!(rows[1].per_kg, PricePerKg(1));
        assert_eq!(
            rows[1].valid_from,
            Timestamp::parse_rfc3339("2026-11-23T05:00:00Z").unwrap()
        );
    }

    #[test]
    fn every_bad_row_is_named_with_its_column() {
        let file = "product,currency,price_per_kg,valid_from,source\n\
                    beef,USD,2.40,2026-11-23,a\n\
                    beef,usd,2.4.0,yesterday,a\n\
                    fish,EUR,-1,2026-11-23,b\n\
                    ,EUR,1.0000001,2026-11-23,b\n\
                    too,few\n\
                    beef,USD,2.50,2026-11-23,a\n";
        let refusal = refused(file);
        assert_eq!(refusal.rows_with_errors, 5);
        let cells: Vec<(usize, usize, &str)> = refusal
            .errors
            .iter()
            .map(|e| (e.row, e.line, e.column.as_str()))
            .collect();
        assert_eq!(
            cells,
            [
                (2, 3, "currency"),
                (2, 3, "price_per_kg"),
                (2, 3, "valid_from"),
                (3, 4, "price_per_kg"),
                (4, 5, "product"),
                (4, 5, "price_per_kg"),
                (5, 6, "columns"),
                (6, 7, "valid_from"),
            ]
        );
        assert!(refusal.errors[7].message.contains("repeats row 1"));
        assert!(refusal.summary().contains("5 bad row(s)"));
        assert_eq!(
            refusal.errors[0].to_string(),
            "row 2 (line 3), column currency: `usd` is not an ISO 4217 currency code (three \
             upper-case letters, e.g. USD)"
        );
    }

    #[test]
    fn headers_and_whole_file_problems() {
        let r = refused("product,currency,price,valid_from,valid_from\n");
        let columns: Vec<&str> = r.errors.iter().map(|e| e.column.as_str()).collect();
        assert_eq!(columns, ["price", "valid_from", "price_per_kg"]);
        assert_eq!(refused("").errors[0].column, "file");
        assert_eq!(refused(" \n\n").errors[0].column, "file");
        // An unclosed quote runs to the end of the file: that row is short of fields.
        let r = refused("product,currency,price_per_kg,valid_from\nbeef,USD,\"2.40,2026-11-23\n");
        assert_eq!(
            (r.errors[0].row, r.errors[0].column.as_str()),
            (1, "columns")
        );
        assert!(
            parse_price_csv(b"product,currency,price_per_kg,valid_from\n")
                .expect("a header alone is an empty import")
                .is_empty()
        );
        let r =
            parse_price_csv(b"product,currency,price_per_kg,valid_from\n\xff,USD,1,2026-01-01\n")
                .expect_err("not UTF-8");
        assert_eq!(
            (r.errors[0].row, r.errors[0].column.as_str()),
            (1, "product")
        );
    }

    #[test]
    fn the_error_list_is_bounded_but_every_row_counted() {
        let mut file = String::from("product,currency,price_per_kg,valid_from\n");
        for _ in 0..500 {
            file.push_str("beef,usd,x,never\n");
        }
        let r = refused(&file);
        assert_eq!(r.rows_with_errors, 500);
        assert_eq!(r.errors.len(), MAX_REPORTED_ROW_ERRORS);
    }

    #[test]
    fn prices_round_trip_as_text() {
        for (text, micros, shown) in [
            ("2.40", 2_400_000, "2.40"),
            ("1200", 1_200_000_000, "1200.00"),
            ("0.000125", 125, "0.000125"),
            ("9223372036854.775807", i64::MAX, "9223372036854.775807"),
        ] {
            let p = PricePerKg::parse(text).expect(text);
            assert_eq!(p.0, micros);
            assert_eq!(p.to_string(), shown);
        }
        for bad in [
            "",
            ".5",
            "5.",
            "1e3",
            "-1",
            "+1",
            "1,5",
            " 1",
            "9223372036855",
            "0.0000001",
        ] {
            assert!(PricePerKg::parse(bad).is_err(), "{bad:?}");
        }
    }
}
