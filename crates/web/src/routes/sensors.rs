//! Sensors: list, read, create/update, and their reading series.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vigia_core::rule::MAX_METRIC_LEN;
use vigia_core::{parse_duration_ms, SensorSpec, Timestamp, DEFAULT_METRIC};
use vigia_services::SensorView;
use vigia_store::{Point, ReadingQuery};

use crate::error::{ApiError, Problem, ProblemField};
use crate::extract::{ApiJson, ApiQuery};
use crate::{AppState, Caller};

/// Default and largest number of points per series request.
const DEFAULT_POINTS: usize = 1_000;
const MAX_POINTS: usize = 10_000;

// The `{key}` parameter is spelled out in each route below (utoipa takes only literals
// there); `tests/openapi.rs` checks it against `vigia_core::sensor::SENSOR_KEY_PATTERN`.

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
    params(("key" = String, Path, description = "Sensor key: 1–128 characters, no control characters, no `/`", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001F\u007F-\u009F/]*$")),
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
    params(("key" = String, Path, description = "Sensor key: 1–128 characters, no control characters, no `/`", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001F\u007F-\u009F/]*$")),
    request_body(content = SensorSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "Updated", body = SensorView),
        (status = 201, description = "Created", body = SensorView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 2 MiB", body = Problem, content_type = "application/problem+json"),
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
    /// Metric, 1–64 characters; default `temperature`.
    #[param(schema_with = series_metric_schema)]
    metric: Option<String>,
    /// Start (inclusive), RFC 3339 or epoch ms; default one hour before `to`.
    /// Must not be after `to`.
    #[param(schema_with = instant_schema)]
    from: Option<String>,
    /// End (inclusive), RFC 3339 or epoch ms; default now.
    #[param(schema_with = instant_schema)]
    to: Option<String>,
    /// Most points, 1–10000; default 1000.
    #[param(minimum = 1, maximum = 10000, default = 1000)]
    limit: Option<usize>,
    /// Average into buckets of this width: a number, then `ms` (the default), `s`,
    /// `m`/`min`, `h` or `d`, e.g. `60s`, `1.5m`, `1500`; at least 1 ms once rounded.
    #[param(schema_with = step_schema)]
    step: Option<String>,
}

fn series_metric_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_METRIC_LEN))
        .default(Some(DEFAULT_METRIC.into()))
        .build()
}

fn instant_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    vigia_core::time::instant_input_schema(Timestamp(i64::MIN), Timestamp(i64::MAX), false)
}

/// The grammar `parse_duration_ms` takes, without the surrounding blanks it also trims:
/// a decimal number (at most 8 integer digits, so no step overflows), then a unit. That it
/// must come to at least 1 ms (`0.4ms` rounds to 0) the description says in words.
const STEP_PATTERN: &str = r"^([0-9]{1,8}(\.[0-9]*)?|\.[0-9]+)(ms|s|m|min|h|d)?$";

fn step_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(STEP_PATTERN))
        .build()
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
    params(("key" = String, Path, description = "Sensor key: 1–128 characters, no control characters, no `/`", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001F\u007F-\u009F/]*$"), SeriesParams),
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
            line: None,
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
        // Saturating: `to` may be any int64, down to its minimum.
        None => Timestamp(to.0.saturating_sub(3_600_000)),
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
    if metric.is_empty() || vigia_core::longer_than(&metric, MAX_METRIC_LEN) {
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
