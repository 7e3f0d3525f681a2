//! Alerts: list, read, acknowledge, resolve.

use axum::extract::{OriginalUri, Path, State};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use vigia_core::{Alert, AlertId, AlertState};
use vigia_store::AlertFilter;

use crate::error::{ApiError, Problem};
use crate::extract::ApiQuery;
use crate::pagination::{self, CursorKind, Paged};
use crate::{AppState, Caller};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

/// Filter for the alert list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertParams {
    /// `open`, `acked` or `resolved`; all states when absent or empty.
    #[param(pattern = "^(open|acked|resolved)?$")]
    state: Option<String>,
    /// Only this sensor key.
    sensor: Option<String>,
    /// Alerts per page, newest first, 1–1000; default 100.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// Opaque: from the previous page's `Link: <…>; rel="next"` header; absent or empty
    /// for the first page.
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
}

/// List the tenant's alerts, newest first, one page at a time.
///
/// When more alerts follow, the answer has a `Link` header with `rel="next"`: the same
/// request with the cursor of the next page. Following it from the first page returns
/// every alert exactly once.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    params(AlertParams),
    responses(
        (status = 200, description = "A page of alerts, newest first", body = Vec<Alert>,
            headers(("link" = String, description = "`<URL>; rel=\"next\"` when more alerts follow"))),
        (status = 400, description = "Invalid query parameter (`state`, `limit`, `cursor`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<AlertParams>,
) -> Result<Paged<Alert>, ApiError> {
    let bad = |field: &str, message: &str| ApiError::bad_parameter(field, message);
    let alert_state = match params.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            AlertState::parse(s).ok_or_else(|| bad("state", "must be open, acked or resolved"))?,
        ),
    };
    let limit = pagination::limit(params.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let before = pagination::position(CursorKind::Alerts, params.cursor.as_deref())?.map(AlertId);
    let filter = AlertFilter {
        state: alert_state,
        sensor: params.sensor,
        limit,
        before,
    };
    let page = state.alerts.list(&caller, &filter).await?;
    Ok(Paged::of(page, CursorKind::Alerts, uri, |last| {
        last.id.0.to_string()
    }))
}

/// Get one alert.
#[utoipa::path(
    get,
    path = "/api/v1/alerts/{id}",
    tag = "alerts",
    params(("id" = i64, Path, description = "Alert id", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)),
    responses(
        (status = 200, description = "The alert", body = Alert),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such alert in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn get_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Alert>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.alerts.get(&caller, id).await?))
}

/// Acknowledge an alert: someone is on it. It stays an open incident (no duplicate
/// opens) until it resolves. Acknowledging twice is harmless.
#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/ack",
    tag = "alerts",
    params(("id" = i64, Path, description = "Alert id", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)),
    responses(
        (status = 200, description = "The acknowledged alert", body = Alert),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such alert in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The alert is already resolved", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("operate")))
)]
pub async fn ack_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Alert>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.alerts.ack(&caller, id).await?))
}

/// Resolve an alert by hand. If the sensor is still out of range, the next reading
/// opens a new alert. Resolving twice is harmless.
#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/resolve",
    tag = "alerts",
    params(("id" = i64, Path, description = "Alert id", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)),
    responses(
        (status = 200, description = "The resolved alert", body = Alert),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such alert in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("operate")))
)]
pub async fn resolve_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Alert>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.alerts.resolve(&caller, id).await?))
}

fn parse_id(text: &str) -> Result<AlertId, ApiError> {
    text.parse::<i64>()
        .map(AlertId)
        .map_err(|_| ApiError::bad_id("an alert", text))
}
