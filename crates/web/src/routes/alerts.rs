//! Alerts: list, read, acknowledge, resolve.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use vigia_core::{Alert, AlertId, AlertState};
use vigia_store::AlertFilter;

use crate::error::{ApiError, Problem, ProblemField};
use crate::extract::ApiQuery;
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
    /// Most alerts, newest first, 1–1000; default 100.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
}

/// List the tenant's alerts, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    params(AlertParams),
    responses(
        (status = 200, description = "Alerts, newest first", body = Vec<Alert>),
        (status = 400, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AlertParams>,
) -> Result<Json<Vec<Alert>>, ApiError> {
    let bad = |field: &str, message: &str| {
        let mut e = ApiError::bad_request(format!("invalid query parameter `{field}`: {message}"));
        e.problem.errors.push(ProblemField {
            line: None,
            row: None,
            field: field.into(),
            message: message.into(),
        });
        e
    };
    let alert_state = match params.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            AlertState::parse(s).ok_or_else(|| bad("state", "must be open, acked or resolved"))?,
        ),
    };
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad("limit", "must be between 1 and 1000"));
    }
    let filter = AlertFilter {
        state: alert_state,
        sensor: params.sensor,
        limit,
    };
    Ok(Json(state.alerts.list(&caller, &filter).await?))
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
    text.parse::<i64>().map(AlertId).map_err(|_| {
        let mut e = ApiError::bad_request(format!("`{text}` is not an alert id"));
        e.problem.errors.push(ProblemField {
            line: None,
            row: None,
            field: "id".into(),
            message: "must be an integer".into(),
        });
        e
    })
}
