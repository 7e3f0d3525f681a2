//! Alerts: list, read, acknowledge, resolve.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use vigia_core::{Alert, AlertChange, AlertId, AlertState, LiveEvent, Timestamp};
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
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AlertParams>,
) -> Result<Json<Vec<Alert>>, ApiError> {
    let bad = |field: &str, message: &str| {
        let mut e = ApiError::bad_request(format!("invalid query parameter `{field}`: {message}"));
        e.problem.errors.push(ProblemField {
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
    Ok(Json(
        state.pipeline.store.alerts(caller.tenant, &filter).await?,
    ))
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
        (status = 404, description = "No such alert in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Alert>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(
        state
            .pipeline
            .store
            .get_alert(caller.tenant, id)
            .await
            .map_err(not_found(id))?,
    ))
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
        (status = 404, description = "No such alert in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The alert is already resolved", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn ack_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Alert>, ApiError> {
    change_alert(&state, &caller, &id, AlertChange::Acked).await
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
        (status = 404, description = "No such alert in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn resolve_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Alert>, ApiError> {
    change_alert(&state, &caller, &id, AlertChange::Resolved).await
}

/// Acks or resolves an alert of the caller's tenant and tells live subscribers.
async fn change_alert(
    state: &AppState,
    caller: &Caller,
    id: &str,
    change: AlertChange,
) -> Result<Json<Alert>, ApiError> {
    let id = parse_id(id)?;
    let store = &state.pipeline.store;
    let (tenant, by, now) = (caller.tenant, caller.key_name.as_str(), Timestamp::now());
    let alert = match change {
        AlertChange::Acked => store.ack_alert(tenant, id, by, now).await,
        AlertChange::Resolved => store.resolve_alert(tenant, id, by, now).await,
        AlertChange::Opened => return Err(ApiError::internal("alerts are opened by rules only")),
    }
    .map_err(not_found(id))?;
    announce_change(state, change, &alert);
    Ok(Json(alert))
}

/// After a change made by hand: a resolved alert's excursion is forgotten, so the next
/// out-of-range reading opens a new alert; live subscribers hear of the change.
pub(crate) fn announce_change(state: &AppState, change: AlertChange, alert: &Alert) {
    if change == AlertChange::Resolved {
        state
            .pipeline
            .states
            .forget_excursion(alert.sensor_id, &alert.rule);
    }
    state.pipeline.live.publish(LiveEvent::Alert {
        tenant: alert.tenant,
        change,
        alert: Box::new(alert.clone()),
    });
}

fn parse_id(text: &str) -> Result<AlertId, ApiError> {
    text.parse::<i64>().map(AlertId).map_err(|_| {
        let mut e = ApiError::bad_request(format!("`{text}` is not an alert id"));
        e.problem.errors.push(ProblemField {
            row: None,
            field: "id".into(),
            message: "must be an integer".into(),
        });
        e
    })
}

fn not_found(id: AlertId) -> impl Fn(vigia_store::StoreError) -> ApiError {
    move |e| match e {
        vigia_store::StoreError::NotFound => {
            ApiError::not_found(format!("no alert {id} in this tenant"))
        }
        other => other.into(),
    }
}
