//! The audit log (admin only): who did what, from where, aggregated per client address
//! and minute (a flood of refusals grows a counter, not the table).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use vigia_store::AuditRecord;

use crate::error::{ApiError, Problem};
use crate::extract::ApiQuery;
use crate::pagination;
use crate::{AppState, Caller};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

/// How many rows.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Rows, newest first, 1–1000; default 100.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
}

/// The newest rows of the tenant's audit log.
///
/// Refusals of callers that could not be identified (wrong keys) have no tenant and are
/// not listed here; the store keeps them with the client address.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "keys",
    params(AuditParams),
    responses(
        (status = 200, description = "Audit rows, newest first", body = Vec<AuditRecord>),
        (status = 400, description = "Invalid query parameter (`limit`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only admin keys read the audit log", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("administer")))
)]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let limit = pagination::limit(params.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    Ok(Json(state.robots.audit_log(&caller, limit).await?))
}
