//! `POST /api/v1/readings`: read the body within its limit, hand it to the ingest
//! service (decode, provisioning policy, durable publish), answer 202.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde::Serialize;
use utoipa::ToSchema;
use vigia_core::{Timestamp, DEFAULT_METRIC};
use vigia_ingest::decode::{DecodeLimits, MAX_METRIC_LEN, METRIC_PATTERN};

use crate::error::{ApiError, Problem};
use crate::{AppState, Caller};

/// One reading as a device sends it. Documentation only: the decoder
/// (`vigia_ingest::decode`) parses the body itself; this states its rules.
#[derive(ToSchema, serde::Deserialize)]
#[allow(dead_code)] // documentation only: the decoder parses the body itself
#[serde(deny_unknown_fields)]
pub struct ReadingInput {
    /// Sensor key within the caller's tenant (1–128 characters, no `/` or control characters).
    #[schema(schema_with = sensor_key_schema)]
    sensor: String,
    /// Metric name, 1–64 characters without control characters; absent or `null` means
    /// `temperature`.
    #[schema(schema_with = reading_metric_schema)]
    metric: Option<String>,
    /// Event time, RFC 3339 or epoch milliseconds, in years 0000–9999 (UTC); absent or
    /// `null` means the arrival time — one millisecond later for each further reading of
    /// the same sensor and metric arriving in that millisecond, so none is folded into
    /// another (a retried batch without `ts` is stored again; send `ts` for idempotent
    /// retries: a (sensor, metric, ts) already stored is not stored twice). At most 24 h
    /// (`ingest.max_future`) after the arrival and at most 7 d (`ingest.max_age`, no more
    /// than the raw retention) before it.
    #[schema(schema_with = reading_ts_schema)]
    ts: Option<String>,
    /// A finite number.
    value: f64,
}

fn sensor_key_schema() -> utoipa::openapi::schema::Object {
    vigia_core::sensor::sensor_key_schema()
}

fn reading_metric_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(1))
        .max_length(Some(MAX_METRIC_LEN))
        .pattern(Some(METRIC_PATTERN))
        .default(Some(DEFAULT_METRIC.into()))
        .build()
}

fn reading_ts_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    vigia_core::time::instant_input_schema(Timestamp::RFC3339_MIN, Timestamp::RFC3339_MAX, true)
}

/// One reading or a non-empty array of them (refused whole if any row is bad).
/// Documentation only, like [`ReadingInput`].
pub struct ReadingsBody;

impl utoipa::PartialSchema for ReadingsBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder};
        use utoipa::openapi::Ref;
        let max_rows = DecodeLimits::default().max_rows;
        OneOfBuilder::new()
            .item(Ref::from_schema_name("ReadingInput"))
            .item(
                ArrayBuilder::new()
                    .items(Ref::from_schema_name("ReadingInput"))
                    .min_items(Some(1))
                    .max_items(Some(max_rows))
                    .description(Some(format!(
                        "1 to {max_rows} readings by default (`ingest.max_batch_rows`); \
                         more is refused with 413."
                    ))),
            )
            .description(Some(
                "One reading or an array of them (refused whole if any row is bad).",
            ))
            .into()
    }
}

impl ToSchema for ReadingsBody {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            ReadingInput::name().into_owned(),
            <ReadingInput as utoipa::PartialSchema>::schema(),
        ));
    }
}

/// The answer to an accepted request.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Readings now durable and queued for processing.
    pub accepted: usize,
}

/// Ingest readings.
///
/// Answers 202 only once the readings are durable (they survive `kill -9`). A batch with
/// any bad row is refused whole and the problem lists every failing row index.
#[utoipa::path(
    post,
    path = "/api/v1/readings",
    tag = "readings",
    request_body(content = ReadingsBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Durable and queued", body = Accepted),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role cannot post readings", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or batch over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Schema or value errors, with row indexes", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Queue full or shutting down; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("ingest")))
)]
pub async fn post_readings(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Some(ingest) = &state.ingest else {
        return Err(ApiError::not_found(
            "this process does not have the `ingest` role",
        ));
    };
    crate::ratelimit::check_ingest_rate(&state.ingest_rate, caller.key_id)?;
    check_content_type(&headers)?;
    let bytes = read_body(body, &headers, ingest.limits().max_body_bytes).await?;
    let accepted = ingest.ingest_json(&caller, bytes).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted })))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        // Devices often omit it; the body is still parsed as JSON.
        return Ok(());
    };
    let mime = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("expected `application/json`, got `{mime}`"),
        ))
    }
}

/// Past the limit, up to this much more is read and dropped before answering 413, so
/// the client gets the answer instead of a connection reset (lingering close).
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// Reads the body up to `limit` bytes; 413 past it.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit + LINGER_BYTES) {
        return Err(too_large(limit));
    }
    let mut body = body;
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    let mut dropped = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(body_read_error)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if dropped > 0 || buf.len() + data.len() > limit {
            dropped += data.len();
            if dropped > LINGER_BYTES {
                break;
            }
        } else {
            buf.extend_from_slice(&data);
        }
    }
    if dropped > 0 {
        return Err(too_large(limit));
    }
    Ok(buf.freeze())
}

/// 408 when the client paused longer than `http.body_read_timeout` (the listener wraps
/// every body in a `TimeoutBody`), 400 for any other broken body.
fn body_read_error(error: axum::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::request_timeout(
                "the body stopped arriving for longer than http.body_read_timeout; \
                 send it without pauses",
            );
        }
        source = e.source();
    }
    ApiError::bad_request(format!("could not read the body: {error}"))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!(
        "the body is larger than the limit of {limit} bytes; split the batch"
    ))
}
