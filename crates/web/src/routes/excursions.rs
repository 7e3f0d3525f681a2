//! Excursions of one sensor: each time it left a rule's limits, as data.

use axum::extract::{OriginalUri, Path, State};
use serde::Deserialize;
use utoipa::IntoParams;
use vigia_core::Timestamp;
use vigia_services::{ExcursionRequest, ExcursionView};

use super::sensors::{instant, instant_schema};
use crate::error::{ApiError, Problem};
use crate::extract::ApiQuery;
use crate::pagination::{self, CursorKind, Paged};
use crate::{AppState, Caller};

/// Most excursions per page when `limit` is absent, and the largest `limit`.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

/// Which excursions to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExcursionParams {
    /// Only excursions still going on at or after this instant (inclusive), RFC 3339 or
    /// epoch ms; default: since the first. Must not be after `to`.
    #[param(schema_with = instant_schema)]
    from: Option<String>,
    /// Only excursions that began before this instant (exclusive), RFC 3339 or epoch ms;
    /// default: up to the last.
    #[param(schema_with = instant_schema)]
    to: Option<String>,
    /// Excursions per page, 1–1000; default 100.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// Opaque: from the previous page's `Link: <…>; rel="next"` header; absent or empty
    /// for the first page.
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
}

/// List a sensor's excursions: each time it left a threshold or duration rule's limits,
/// oldest first, one page at a time.
///
/// An excursion runs from the first out-of-range reading to the first in-range one, in
/// event time; a silence inside it counts as out of range and is reported as a gap. They
/// are kept as data when the readings are stored, so this answers past raw retention.
#[utoipa::path(
    get,
    path = "/api/v1/sensors/{key}/excursions",
    tag = "sensors",
    params(("key" = String, Path, description = "Sensor key: 1–128 characters, no control characters, no `/`", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001F\u007F-\u009F/]*$"), ExcursionParams),
    responses(
        (status = 200, description = "A page of excursions, oldest first", body = Vec<ExcursionView>,
            headers(("link" = String, description = "`<URL>; rel=\"next\"` when more follow"))),
        (status = 400, description = "Invalid query parameter (`from`, `to`, `limit`, `cursor`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such sensor in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn sensor_excursions(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ExcursionParams>,
) -> Result<Paged<ExcursionView>, ApiError> {
    let limit = pagination::limit(params.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let from = match &params.from {
        Some(t) => instant("from", t)?,
        None => Timestamp(i64::MIN),
    };
    let to = match &params.to {
        Some(t) => instant("to", t)?,
        None => Timestamp(i64::MAX),
    };
    if from > to {
        return Err(ApiError::bad_parameter("from", "must not be after `to`"));
    }
    let after = pagination::position::<String>(CursorKind::Excursions, params.cursor.as_deref())?
        .map(|position| parse_position(&position))
        .transpose()?;
    let request = ExcursionRequest {
        from,
        to,
        after,
        limit,
    };
    let page = state.sensors.excursions(&caller, &key, &request).await?;
    Ok(Paged::of(page, CursorKind::Excursions, uri, |last| {
        format!("{}:{}", last.start.0, last.rule)
    }))
}

/// `<start ms>:<rule>`, as the cursor of the page's last excursion holds it.
fn parse_position(position: &str) -> Result<(Timestamp, String), ApiError> {
    position
        .split_once(':')
        .and_then(|(start, rule)| Some((Timestamp(start.parse().ok()?), rule.to_string())))
        .ok_or_else(|| {
            ApiError::bad_parameter(
                "cursor",
                "not a cursor of this list; follow the `next` link",
            )
        })
}
