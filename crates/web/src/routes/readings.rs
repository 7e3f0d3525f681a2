//! `POST /api/v1/readings`: validate, make durable on the bus, answer 202.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde::Serialize;
use utoipa::ToSchema;
use vigia_core::{IngestBatch, Reading, Timestamp, DEFAULT_METRIC};
use vigia_ingest::decode::{
    decode_readings, DecodeError, DecodeLimits, MAX_METRIC_LEN, METRIC_PATTERN,
};
use vigia_ingest::{metrics as m, Provisioning};

use crate::error::{ApiError, Problem, ProblemField};
use crate::{AppState, Caller};

/// Bodies larger than this are decoded off the async runtime.
const INLINE_DECODE_LIMIT: usize = 256 * 1024;

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
    /// `null` means the arrival time. At most 24 h (`ingest.max_future`) after the arrival.
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
        (status = 413, description = "Body or batch over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Schema or value errors, with row indexes", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Queue full or shutting down; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn post_readings(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    check_content_type(&headers)?;
    let bytes = read_body(body, &headers, state.limits.max_body_bytes).await?;

    let now = Timestamp::now();
    let decode_limits = state.limits.decode.clone();
    let decoded = if bytes.len() <= INLINE_DECODE_LIMIT {
        decode_readings(&bytes, now, &decode_limits)
    } else {
        tokio::task::spawn_blocking(move || decode_readings(&bytes, now, &decode_limits))
            .await
            .map_err(|e| ApiError::internal(format!("decoder task failed: {e}")))?
    };
    let readings = decoded.map_err(decode_error)?;

    if state.pipeline.config.provisioning == Provisioning::Required {
        refuse_unknown_sensors(&state, &caller, &readings)?;
    }

    let accepted = readings.len();
    state
        .pipeline
        .bus
        .publish(IngestBatch {
            tenant: caller.tenant,
            received_ms: now.0,
            readings,
        })
        .await?;
    metrics::counter!(m::INGEST_READINGS).increment(accepted as u64);
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
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
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
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("could not read the body: {e}")))?;
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

fn too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!(
        "the body is larger than the limit of {limit} bytes; split the batch"
    ))
}

fn decode_error(e: DecodeError) -> ApiError {
    match e {
        DecodeError::Malformed {
            message,
            line,
            column,
        } => ApiError::bad_request(format!(
            "malformed JSON at line {line}, column {column}: {message}"
        )),
        DecodeError::Invalid {
            errors,
            rows_with_errors,
        } => {
            let is_batch = errors.iter().any(|e| e.row.is_some());
            let detail = if is_batch {
                format!("{rows_with_errors} row(s) are invalid; nothing from this batch was stored")
            } else {
                "the reading is invalid; nothing was stored".to_string()
            };
            let mut err = ApiError::invalid(
                detail,
                errors
                    .into_iter()
                    .map(|e| ProblemField {
                        row: e.row,
                        field: e.field,
                        message: e.message,
                    })
                    .collect(),
            );
            if is_batch {
                err.problem.rows_with_errors = Some(rows_with_errors);
            }
            err
        }
        DecodeError::TooManyRows { rows, max } => ApiError::too_large(format!(
            "the batch has {rows} readings; at most {max} are accepted per request"
        )),
        DecodeError::Empty => ApiError::invalid(
            "the batch is empty",
            vec![ProblemField {
                row: None,
                field: "body".into(),
                message: "send at least one reading".into(),
            }],
        ),
    }
}

fn refuse_unknown_sensors(
    state: &AppState,
    caller: &Caller,
    readings: &[Reading],
) -> Result<(), ApiError> {
    let directory = &state.pipeline.directory;
    let mut errors = Vec::new();
    let mut bad_rows = 0;
    let single = readings.len() == 1;
    for (i, r) in readings.iter().enumerate() {
        if !directory.contains(caller.tenant, &r.sensor) {
            bad_rows += 1;
            if errors.len() < 100 {
                errors.push(ProblemField {
                    row: (!single).then_some(i),
                    field: "sensor".into(),
                    message: format!(
                        "sensor `{}` is not provisioned (this server requires PUT /api/v1/sensors/{{key}} first)",
                        r.sensor
                    ),
                });
            }
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let mut err = ApiError::invalid(
        "readings of unprovisioned sensors; nothing was stored",
        errors,
    );
    if !single {
        err.problem.rows_with_errors = Some(bad_rows);
    }
    Err(err)
}
