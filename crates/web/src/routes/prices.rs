//! Prices: market prices per kg of the tenant's products, imported from CSV files (all
//! rows or none) and listed newest import first.

use axum::body::Body;
use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use vigia_services::{PriceImportError, RowError};
use vigia_store::{ImportCounts, Price};

use crate::error::{ApiError, Problem, ProblemField};
use crate::extract::ApiQuery;
use crate::pagination::{self, CursorKind, Paged};
use crate::routes::keys::ClientAddress;
use crate::routes::readings::read_body;
use crate::{AppState, Caller};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

/// The body of `POST /api/v1/prices/import`: a CSV file.
pub struct PriceCsvBody;

impl utoipa::PartialSchema for PriceCsvBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .description(Some(
                "CSV (RFC 4180) with a header line naming the columns, in any order: \
                 `product` (code, 1–64 characters), `currency` (ISO 4217, e.g. USD), \
                 `price_per_kg` (plain decimal above 0, at most 6 decimals, e.g. 2.40), \
                 `valid_from` (RFC 3339 or a date, midnight UTC) and, optionally, `source` \
                 (at most 128 characters; empty means `csv`). At most \
                 `prices.max_import_bytes` (default 1 MiB).",
            ))
            .examples([serde_json::json!(
                "product,currency,price_per_kg,valid_from,source\nbeef,USD,2.40,2026-11-23,market\n"
            )])
            .into()
    }
}

impl ToSchema for PriceCsvBody {}

/// Import a price file.
///
/// The whole file is read and every row checked first: any bad row refuses the file and
/// nothing is stored; the problem lists each bad cell with its `row` (1 = the first line
/// after the header) and `line` in the file, and its column as `field` (the first 100;
/// `rows_with_errors` counts them all). A good file is stored in one transaction. A price
/// is identified by product, currency, valid_from and source: importing the same file
/// again changes nothing (`unchanged`), and a row stored before with another amount
/// replaces it (`updated`).
#[utoipa::path(
    post,
    path = "/api/v1/prices/import",
    tag = "prices",
    request_body(content = PriceCsvBody, content_type = "text/csv"),
    responses(
        (status = 200, description = "Stored; what changed", body = ImportCounts),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role cannot import prices (operator or admin)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "File over `prices.max_import_bytes`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad rows or columns, each named; nothing stored", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("operate")))
)]
pub async fn import_prices(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportCounts>, ApiError> {
    // The role first, so a viewer learns nothing from sending a file.
    caller.require(vigia_core::Permission::Operate)?;
    let file = read_body(body, &headers, state.prices.max_import_bytes()).await?;
    match state.prices.import_csv(&caller, &file, &client).await {
        Ok(counts) => Ok(Json(counts)),
        Err(e) => Err(import_error(e)),
    }
}

fn import_error(e: PriceImportError) -> ApiError {
    match e {
        PriceImportError::Refused(refusal) => {
            let mut error = ApiError::invalid(
                refusal.summary(),
                refusal.errors.iter().map(problem_field).collect(),
            );
            error.problem.rows_with_errors = Some(refusal.rows_with_errors);
            error
        }
        e @ PriceImportError::TooLarge { .. } => ApiError::too_large(e.to_string()),
        PriceImportError::Service(e) => e.into(),
    }
}

fn problem_field(e: &RowError) -> ProblemField {
    ProblemField {
        line: Some(e.line),
        row: Some(e.row),
        field: e.column.clone(),
        message: e.message.clone(),
    }
}

/// Which prices, one page at a time.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PriceListParams {
    /// Only this product's prices (its code).
    #[param(min_length = 1, max_length = 64)]
    product: Option<String>,
    /// Only prices in this currency (ISO 4217).
    #[param(pattern = "^[A-Z]{3}$")]
    currency: Option<String>,
    /// Prices per page, newest import first, 1–1000; default 100.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// Opaque: from the previous page's `Link: <…>; rel="next"` header; absent or empty
    /// for the first page.
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
}

/// List the tenant's prices, newest import first, one page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/prices",
    tag = "prices",
    params(PriceListParams),
    responses(
        (status = 200, description = "A page of prices, newest import first", body = Vec<Price>,
            headers(("link" = String, description = "`<URL>; rel=\"next\"` when more prices follow"))),
        (status = 400, description = "Invalid `product`, `currency`, `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn list_prices(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<PriceListParams>,
) -> Result<Paged<Price>, ApiError> {
    let limit = pagination::limit(params.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let before = pagination::position(CursorKind::Prices, params.cursor.as_deref())?;
    if let Some(product) = &params.product {
        if product.is_empty() || product.chars().count() > 64 {
            return Err(ApiError::bad_parameter(
                "product",
                "must be 1–64 characters",
            ));
        }
    }
    if let Some(currency) = &params.currency {
        if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(ApiError::bad_parameter(
                "currency",
                "must be an ISO 4217 code: three upper-case letters",
            ));
        }
    }
    let page = state
        .prices
        .list(&caller, params.product, params.currency, before, limit)
        .await?;
    Ok(Paged::of(page, CursorKind::Prices, uri, |last| {
        last.id.to_string()
    }))
}
