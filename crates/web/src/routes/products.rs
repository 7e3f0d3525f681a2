//! Products: a tenant's product codes with their names, unit weights and cold-chain
//! limits (`Sensor.product` names a code). Create/replace, list, read, delete.

use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use vigia_services::{ProductSpec, ProductView};

use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{self, CursorKind, Paged};
use crate::routes::keys::ClientAddress;
use crate::{AppState, Caller};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

// The `{code}` parameter is spelled out in each route below (utoipa takes only literals
// there): `vigia_services::prices::validate_product_code` as a schema.

/// A page of the product list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProductListParams {
    /// Products per page, ordered by code, 1–1000; default 100.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// Opaque: from the previous page's `Link: <…>; rel="next"` header; absent or empty
    /// for the first page.
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
}

/// List the tenant's products, ordered by code, one page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/products",
    tag = "products",
    params(ProductListParams),
    responses(
        (status = 200, description = "A page of products ordered by code", body = Vec<ProductView>,
            headers(("link" = String, description = "`<URL>; rel=\"next\"` when more products follow"))),
        (status = 400, description = "Invalid `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn list_products(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ProductListParams>,
) -> Result<Paged<ProductView>, ApiError> {
    let limit = pagination::limit(params.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let after: Option<String> =
        pagination::position(CursorKind::Products, params.cursor.as_deref())?;
    let page = state
        .products
        .list(&caller, after.as_deref(), limit)
        .await?;
    Ok(Paged::of(page, CursorKind::Products, uri, |last| {
        last.code.clone()
    }))
}

/// Get one product.
#[utoipa::path(
    get,
    path = "/api/v1/products/{code}",
    tag = "products",
    params(("code" = String, Path, description = "Product code: 1–64 characters, no control characters, no `/`", min_length = 1, max_length = 64, pattern = r"^[^\u0000-\u001F\u007F-\u009F/]*$")),
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn get_product(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Json<ProductView>, ApiError> {
    Ok(Json(state.products.get(&caller, &code).await?))
}

/// Create or replace a product.
///
/// The cold-chain limits classify a chamber's stock by its cumulative time out of range:
/// kept below `keep_below` (default `2h`), used now up to `discard_after` (default `4h`),
/// discarded past it. `keep_below` must be shorter than `discard_after`.
#[utoipa::path(
    put,
    path = "/api/v1/products/{code}",
    tag = "products",
    params(("code" = String, Path, description = "Product code: 1–64 characters, no control characters, no `/`", min_length = 1, max_length = 64, pattern = r"^[^\u0000-\u001F\u007F-\u009F/]*$")),
    request_body(content = ProductSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced", body = ProductView),
        (status = 201, description = "Created", body = ProductView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 2 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid code or fields (each named)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("operate")))
)]
pub async fn put_product(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(code): Path<String>,
    ApiJson(spec): ApiJson<ProductSpec>,
) -> Result<(StatusCode, Json<ProductView>), ApiError> {
    let (view, created) = state.products.put(&caller, &code, spec, &client).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// Delete a product. Its prices stay (the reports cite them).
#[utoipa::path(
    delete,
    path = "/api/v1/products/{code}",
    tag = "products",
    params(("code" = String, Path, description = "Product code: 1–64 characters, no control characters, no `/`", min_length = 1, max_length = 64, pattern = r"^[^\u0000-\u001F\u007F-\u009F/]*$")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("operate")))
)]
pub async fn delete_product(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(code): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.products.delete(&caller, &code, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
