//! Sensors: list, read, create/update, and their reading series.

use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vigia_core::rule::MAX_METRIC_LEN;
use vigia_core::{parse_duration_ms, SensorSpec, Timestamp, DEFAULT_METRIC};
use vigia_services::{SensorView, SeriesPoint, SeriesRequest, SeriesSource, SeriesStep};

use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{self, CursorKind, Paged};
use crate::{AppState, Caller};

/// Default and largest number of points per series request.
const DEFAULT_POINTS: usize = 1_000;
const MAX_POINTS: usize = 10_000;
/// Points `step=auto` aims at when `points` is not given.
const DEFAULT_AUTO_POINTS: usize = 300;

// The `{key}` parameter is spelled out in each route below (utoipa takes only literals
// there); `tests/openapi.rs` checks it against `vigia_core::sensor::SENSOR_KEY_PATTERN`.

/// Most sensors per page when `limit` is absent, and the largest `limit`.
const DEFAULT_SENSOR_PAGE: usize = 100;
const MAX_SENSOR_PAGE: usize = 1_000;

/// A page of the sensor list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SensorListParams {
    /// Sensors per page, 1–1000; default 100.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// Opaque: from the previous page's `Link: <…>; rel="next"` header; absent or empty
    /// for the first page.
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
}

/// List the tenant's sensors, ordered by key, one page at a time.
///
/// When more sensors follow, the answer has a `Link` header with `rel="next"`: the same
/// request with the cursor of the next page. Following it from the first page returns
/// every sensor exactly once.
#[utoipa::path(
    get,
    path = "/api/v1/sensors",
    tag = "sensors",
    params(SensorListParams),
    responses(
        (status = 200, description = "A page of sensors ordered by key", body = Vec<SensorView>,
            headers(("link" = String, description = "`<URL>; rel=\"next\"` when more sensors follow"))),
        (status = 400, description = "Invalid `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn list_sensors(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<SensorListParams>,
) -> Result<Paged<SensorView>, ApiError> {
    let limit = pagination::limit(params.limit, DEFAULT_SENSOR_PAGE, MAX_SENSOR_PAGE)?;
    let after: Option<String> =
        pagination::position(CursorKind::Sensors, params.cursor.as_deref())?;
    let page = state.sensors.list(&caller, after.as_deref(), limit).await?;
    Ok(Paged::of(page, CursorKind::Sensors, uri, |last| {
        last.sensor.key.clone()
    }))
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
    /// `raw` (the default): every reading. A width — a number, then `ms` (the default),
    /// `s`, `m`/`min`, `h` or `d`, e.g. `1m`, `1h`, `60s`, `1.5m`, `1500`; at least 1 ms
    /// once rounded — averages into buckets of that width aligned to the epoch: whole
    /// hours are read from the 1-hour rollups and whole minutes from the 1-minute ones
    /// (also past raw retention; a bucket from rollups covers its whole width), other
    /// widths from raw readings. `auto`: the smallest width giving at most `points`
    /// points, rounded up to whole minutes or hours once that large.
    #[param(schema_with = step_schema)]
    step: Option<String>,
    /// Target number of points for `step=auto`, 1–10000; default 300. Given alone it
    /// implies `step=auto`; with another step it is ignored.
    #[param(minimum = 1, maximum = 10000)]
    points: Option<usize>,
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

pub(crate) fn instant_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    vigia_core::time::instant_input_schema(Timestamp(i64::MIN), Timestamp(i64::MAX), false)
}

/// The grammar `parse_duration_ms` takes, without the surrounding blanks it also trims:
/// a decimal number (at most 8 integer digits, so no step overflows), then a unit. That it
/// must come to at least 1 ms (`0.4ms` rounds to 0) the description says in words.
const STEP_PATTERN: &str = r"^(raw|auto|([0-9]{1,8}(\.[0-9]*)?|\.[0-9]+)(ms|s|m|min|h|d)?)$";

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
    /// Bucket width in ms of the points; `null` for raw readings.
    pub step_ms: Option<i64>,
    /// Where the points came from: `raw` readings or the `1m`/`1h` rollups (plus the
    /// newest raw readings not rolled up yet).
    pub source: SeriesSource,
    pub points: Vec<SeriesPoint>,
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
    let request = series_request(params)?;
    let answer = state.sensors.series(&caller, &key, &request).await?;
    Ok(Json(Series {
        sensor: key,
        metric: request.metric,
        step_ms: answer.step_ms,
        source: answer.source,
        points: answer.points,
    }))
}

/// An instant given as RFC 3339 or epoch milliseconds; 400 naming `field` otherwise.
pub(crate) fn instant(field: &str, text: &str) -> Result<Timestamp, ApiError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(Timestamp(ms));
    }
    Timestamp::parse_rfc3339(text)
        .ok_or_else(|| ApiError::bad_parameter(field, "expected RFC 3339 or epoch milliseconds"))
}

fn series_request(p: SeriesParams) -> Result<SeriesRequest, ApiError> {
    let bad = |field: &str, message: String| ApiError::bad_parameter(field, message);
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
    let points = match p.points {
        Some(n) if n == 0 || n > MAX_POINTS => {
            return Err(bad("points", format!("must be between 1 and {MAX_POINTS}")))
        }
        other => other,
    };
    let step = match (p.step.as_deref(), points) {
        (None | Some("auto"), Some(points)) => SeriesStep::Auto { points },
        (Some("auto"), None) => SeriesStep::Auto {
            points: DEFAULT_AUTO_POINTS,
        },
        (None | Some("raw"), None) | (Some("raw"), Some(_)) => SeriesStep::Raw,
        // `points` only steers `auto`: with an explicit step it has nothing to say.
        (Some(s), _) => {
            let ms = parse_duration_ms(s)
                .map_err(|m| bad("step", format!("{m}; or `raw`, or `auto`")))?;
            if ms < 1 {
                return Err(bad("step", "must be at least 1 ms".into()));
            }
            SeriesStep::Every(ms)
        }
    };
    let metric = p.metric.unwrap_or_else(|| DEFAULT_METRIC.to_string());
    if metric.is_empty() || vigia_core::longer_than(&metric, MAX_METRIC_LEN) {
        return Err(bad("metric", "must be 1 to 64 characters".into()));
    }
    Ok(SeriesRequest {
        metric,
        from,
        to,
        limit,
        step,
    })
}
