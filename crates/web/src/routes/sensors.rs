//! Sensors: list, read, create/update, and their reading series.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vigia_core::rule::MAX_METRIC_LEN;
use vigia_core::sensor::validate_sensor_key;
use vigia_core::{
    parse_duration_ms, AlertChange, AlertState, Sensor, SensorSpec, Timestamp, DEFAULT_METRIC,
};
use vigia_store::{AlertFilter, LatestReading, Point, ReadingQuery};

use crate::error::{ApiError, Problem, ProblemField};
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::alerts::announce_change;
use crate::{AppState, Caller};

/// Default and largest number of points per series request.
const DEFAULT_POINTS: usize = 1_000;
const MAX_POINTS: usize = 10_000;

/// Latest value of one metric.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatestValue {
    pub metric: String,
    #[schema(value_type = String, format = DateTime)]
    pub ts: Timestamp,
    pub value: f64,
}

/// A sensor with its latest values and how many alerts are unresolved.
#[derive(Debug, Serialize, ToSchema)]
pub struct SensorView {
    #[serde(flatten)]
    pub sensor: Sensor,
    pub latest: Vec<LatestValue>,
    /// Open plus acknowledged alerts.
    pub open_alerts: usize,
}

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
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list_sensors(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<SensorView>>, ApiError> {
    let store = &state.pipeline.store;
    let sensors = store.list_sensors(caller.tenant).await?;
    let mut latest: HashMap<_, Vec<LatestReading>> = HashMap::new();
    for l in store.latest_readings(caller.tenant).await? {
        latest.entry(l.sensor).or_default().push(l);
    }
    let open = unresolved_counts(&state, &caller).await?;
    Ok(Json(
        sensors
            .into_iter()
            .map(|s| {
                let latest = latest.remove(&s.id).unwrap_or_default();
                view(s, latest, &open)
            })
            .collect(),
    ))
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
        (status = 404, description = "No such sensor in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get_sensor(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Json<SensorView>, ApiError> {
    let store = &state.pipeline.store;
    let sensor = store
        .get_sensor(caller.tenant, &key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no sensor `{key}` in this tenant")))?;
    Ok(Json(single_view(&state, &caller, sensor).await?))
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
        (status = 413, description = "Body over 2 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid key or fields", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn put_sensor(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiJson(mut spec): ApiJson<SensorSpec>,
) -> Result<(StatusCode, Json<SensorView>), ApiError> {
    let mut errors = Vec::new();
    if let Err(message) = validate_sensor_key(&key) {
        errors.push(ProblemField {
            row: None,
            field: "key".into(),
            message: message.into(),
        });
    }
    if let Err(field_errors) = spec.normalise() {
        errors.extend(field_errors.into_iter().map(|e| ProblemField {
            row: None,
            field: e.field,
            message: e.message,
        }));
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "the sensor is invalid; nothing was changed",
            errors,
        ));
    }
    let (sensor, created) = state
        .pipeline
        .store
        .put_sensor(caller.tenant, &key, &spec)
        .await?;
    state.pipeline.directory.insert(sensor.clone());
    resolve_alerts_of_removed_rules(&state, &caller, &sensor).await?;
    let view = single_view(&state, &caller, sensor).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// Resolves the sensor's unresolved alerts whose rule the update removed: no reading can
/// resolve them any more, so left alone they would stay open for ever.
async fn resolve_alerts_of_removed_rules(
    state: &AppState,
    caller: &Caller,
    sensor: &Sensor,
) -> Result<(), ApiError> {
    let store = &state.pipeline.store;
    for alert_state in [AlertState::Open, AlertState::Acked] {
        let filter = AlertFilter {
            state: Some(alert_state),
            sensor: Some(sensor.key.clone()),
            limit: usize::MAX,
        };
        for alert in store.alerts(caller.tenant, &filter).await? {
            if sensor.rules.iter().any(|r| r.name == alert.rule) {
                continue;
            }
            let by = format!("{} (rule removed)", caller.key_name);
            let resolved = store
                .resolve_alert(caller.tenant, alert.id, &by, Timestamp::now())
                .await?;
            announce_change(state, AlertChange::Resolved, &resolved);
        }
    }
    Ok(())
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
        (status = 404, description = "No such sensor in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn sensor_readings(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<SeriesParams>,
) -> Result<Json<Series>, ApiError> {
    let query = series_query(params)?;
    let points = state
        .pipeline
        .store
        .readings(caller.tenant, &key, &query)
        .await
        .map_err(|e| match e {
            vigia_store::StoreError::NotFound => {
                ApiError::not_found(format!("no sensor `{key}` in this tenant"))
            }
            other => other.into(),
        })?;
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

/// One sensor with its latest values and unresolved alert count.
async fn single_view(
    state: &AppState,
    caller: &Caller,
    sensor: Sensor,
) -> Result<SensorView, ApiError> {
    let latest = state
        .pipeline
        .store
        .latest_readings(caller.tenant)
        .await?
        .into_iter()
        .filter(|l| l.sensor == sensor.id)
        .collect();
    let open = unresolved_counts(state, caller).await?;
    Ok(view(sensor, latest, &open))
}

async fn unresolved_counts(
    state: &AppState,
    caller: &Caller,
) -> Result<HashMap<vigia_core::SensorId, usize>, ApiError> {
    let mut counts = HashMap::new();
    for s in [AlertState::Open, AlertState::Acked] {
        let filter = AlertFilter {
            state: Some(s),
            sensor: None,
            limit: 10_000,
        };
        for alert in state.pipeline.store.alerts(caller.tenant, &filter).await? {
            *counts.entry(alert.sensor_id).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

fn view(
    sensor: Sensor,
    latest: Vec<LatestReading>,
    open: &HashMap<vigia_core::SensorId, usize>,
) -> SensorView {
    let open_alerts = open.get(&sensor.id).copied().unwrap_or(0);
    let mut latest: Vec<LatestValue> = latest
        .into_iter()
        .map(|l| LatestValue {
            metric: l.metric,
            ts: l.ts,
            value: l.value,
        })
        .collect();
    // The main metric first: the page shows it big.
    latest.sort_by_key(|l| (l.metric != DEFAULT_METRIC, l.metric.clone()));
    SensorView {
        sensor,
        latest,
        open_alerts,
    }
}
