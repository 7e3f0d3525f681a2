//! Sensors: list, read, create/update, and their reading series.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vigia_core::{parse_duration_ms, SensorSpec, Timestamp, DEFAULT_METRIC};
use vigia_services::SensorView;
use vigia_store::{Point, ReadingQuery};

use crate::error::{ApiError, Problem, ProblemField};
use crate::extract::{ApiJson, ApiQuery};
use crate::{AppState, Caller};

/// Default and largest number of points per series request.
const DEFAULT_POINTS: usize = 1_000;
const MAX_POINTS: usize = 10_000;

/// List the tenant's sensors.
#[utoipa::path(
    get,
    path = "/api/v1/sensors",
    tag = "sensors",
    responses(
        (status = 200, description = "Sensors ordered by key", body = Vec<SensorView>),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn list_sensors(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<SensorView>>, ApiError> {
    Ok(Json(state.sensors.list(&caller).await?))
}

/// Get one sensor.
#[utoipa::path(
    get,
    path = "/api/v1/sensors/{key}",
    tag = "sensors",
    params(("key" = String, Path, description = "Sensor key")),
    responses(
        (status = 200, description = "The sensor", body = SensorView),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such sensor in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn get_sensor(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Json<SensorView>, ApiError> {
    Ok(Json(state.sensors.get(&caller, &key).await?))
}

/// Create or update a sensor: name, kind, unit, rules, stock and product.
///
/// The whole writable state is replaced (PUT semantics). Rule names default to
/// `<kind>-<severity>`; at most one alert per sensor and rule name is open at a time.
/// Unresolved alerts of rules the update removes are resolved (by `<key> (rule removed)`).
#[utoipa::path(
    put,
    path = "/api/v1/sensors/{key}",
    tag = "sensors",
    params(("key" = String, Path, description = "Sensor key")),
    request_body(content = SensorSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "Updated", body = SensorView),
        (status = 201, description = "Created", body = SensorView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid key or fields", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("operate")))
)]
pub async fn put_sensor(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiJson(spec): ApiJson<SensorSpec>,
) -> Result<(StatusCode, Json<SensorView>), ApiError> {
    let (view, created) = state.sensors.put(&caller, &key, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// Query of a reading series.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// Metric; default `temperature`.
    metric: Option<String>,
    /// Start (inclusive), RFC 3339 or epoch ms; default one hour before `to`.
    from: Option<String>,
    /// End (inclusive), RFC 3339 or epoch ms; default now.
    to: Option<String>,
    /// Most points, 1–10000; default 1000.
    limit: Option<usize>,
    /// Average into buckets of this width (`60s`, `5m`, or milliseconds).
    step: Option<String>,
}

/// A reading series.
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    pub sensor: String,
    pub metric: String,
    #[schema(value_type = Vec<Object>)]
    pub points: Vec<Point>,
}

/// Readings of one sensor over a time range, oldest first, optionally averaged per step.
#[utoipa::path(
    get,
    path = "/api/v1/sensors/{key}/readings",
    tag = "sensors",
    params(("key" = String, Path, description = "Sensor key"), SeriesParams),
    responses(
        (status = 200, description = "Points oldest first", body = Series),
        (status = 400, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such sensor in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn sensor_readings(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<SeriesParams>,
) -> Result<Json<Series>, ApiError> {
    let query = series_query(params)?;
    let points = state.sensors.series(&caller, &key, &query).await?;
    Ok(Json(Series {
        sensor: key,
        metric: query.metric,
        points,
    }))
}

fn series_query(p: SeriesParams) -> Result<ReadingQuery, ApiError> {
    let bad = |field: &str, message: String| {
        let mut e = ApiError::bad_request(format!("invalid query parameter `{field}`: {message}"));
        e.problem.errors.push(ProblemField {
            row: None,
            field: field.into(),
            message,
        });
        e
    };
    let instant = |field: &str, text: &str| -> Result<Timestamp, ApiError> {
        if let Ok(ms) = text.parse::<i64>() {
            return Ok(Timestamp(ms));
        }
        Timestamp::parse_rfc3339(text)
            .ok_or_else(|| bad(field, "expected RFC 3339 or epoch milliseconds".into()))
    };
    let to = match &p.to {
        Some(t) => instant("to", t)?,
        None => Timestamp::now(),
    };
    let from = match &p.from {
        Some(t) => instant("from", t)?,
        None => Timestamp(to.0 - 3_600_000),
    };
    if from > to {
        return Err(bad("from", "must not be after `to`".into()));
    }
    let limit = p.limit.unwrap_or(DEFAULT_POINTS);
    if limit == 0 || limit > MAX_POINTS {
        return Err(bad("limit", format!("must be between 1 and {MAX_POINTS}")));
    }
    let step_ms = match &p.step {
        Some(s) => {
            let ms = parse_duration_ms(s).map_err(|m| bad("step", m))?;
            if ms < 1 {
                return Err(bad("step", "must be at least 1 ms".into()));
            }
            Some(ms)
        }
        None => None,
    };
    let metric = p.metric.unwrap_or_else(|| DEFAULT_METRIC.to_string());
    if metric.is_empty() || metric.len() > 64 {
        return Err(bad("metric", "must be 1 to 64 characters".into()));
    }
    Ok(ReadingQuery {
        metric,
        from,
        to,
        limit,
        step_ms,
    })
}
