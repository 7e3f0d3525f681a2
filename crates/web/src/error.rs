//! The one place where errors become HTTP responses: RFC 9457 problem details
//! (`application/problem+json`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use vigia_bus::BusError;
use vigia_ingest::decode::{DecodeError, LineProtocolError};
use vigia_objects::ObjectError;
use vigia_services::{IngestError, ServiceError};
use vigia_store::StoreError;

/// An error body as every API route returns it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (stable; documented in the API guide).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for a person.
    pub detail: String,
    /// Fields that failed validation, with row indexes for batches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
    /// For batches: how many rows (line protocol: lines) had errors (the list may be
    /// capped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_with_errors: Option<usize>,
}

/// One failing field.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemField {
    /// 1-based line of a line protocol body; absent for JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Row index within a batch; absent for a single object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
    pub field: String,
    pub message: String,
}

/// Typed API error; handlers return `Result<_, ApiError>`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Boxed so `Result<_, ApiError>` stays small on the happy path.
    pub problem: Box<Problem>,
    pub retry_after_secs: Option<u64>,
    pub www_authenticate: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            problem: Box::new(Problem {
                kind: format!("https://vigia.dev/problems/{kind}"),
                title: title.to_string(),
                status: status.as_u16(),
                detail: detail.into(),
                errors: Vec::new(),
                rows_with_errors: None,
            }),
            retry_after_secs: None,
            www_authenticate: false,
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        );
        e.www_authenticate = true;
        e
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 400 for a query parameter, naming it in `errors`.
    pub fn bad_parameter(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut e = Self::bad_request(format!("invalid query parameter `{field}`: {message}"));
        e.problem.errors.push(ProblemField {
            line: None,
            row: None,
            field: field.into(),
            message,
        });
        e
    }

    /// 400 for a path id that is not a number (`what`: "an alert", "a key"…), naming `id`.
    pub fn bad_id(what: &str, text: &str) -> Self {
        let mut e = Self::bad_request(format!("`{text}` is not {what} id"));
        e.problem.errors.push(ProblemField {
            line: None,
            row: None,
            field: "id".into(),
            message: "must be an integer".into(),
        });
        e
    }

    pub fn invalid(detail: impl Into<String>, errors: Vec<ProblemField>) -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Validation failed",
            detail,
        );
        e.problem.errors = errors;
        e
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            detail,
        )
    }

    /// 408: the client stopped sending its body for longer than `http.body_read_timeout`.
    pub fn request_timeout(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            "Request timeout",
            detail,
        )
    }

    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        );
        e.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("no such resource in this tenant"),
            StoreError::Conflict(d) => ApiError::conflict(d),
            StoreError::Unavailable(d) => ApiError::unavailable(format!("store: {d}"), 1),
            StoreError::Config(d) | StoreError::Internal(d) => {
                tracing::error!(error = %d, "store error");
                ApiError::internal("the store failed; see the server log")
            }
        }
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Full {
                pending,
                capacity,
                retry_after,
            } => ApiError::unavailable(
                format!(
                    "ingest queue is full ({pending} of {capacity} readings waiting); retry later"
                ),
                retry_after.as_secs().max(1),
            ),
            BusError::Closed => ApiError::unavailable("the server is shutting down", 5),
            BusError::Unavailable(d) => ApiError::unavailable(format!("bus: {d}"), 1),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&*self.problem).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"vigia\""),
            );
        }
        res
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(d) => ApiError::not_found(d),
            ServiceError::Invalid { detail, errors } => ApiError::invalid(
                detail,
                errors
                    .into_iter()
                    .map(|e| ProblemField {
                        line: None,
                        row: None,
                        field: e.field,
                        message: e.message,
                    })
                    .collect(),
            ),
            ServiceError::Conflict(d) => ApiError::conflict(d),
            ServiceError::TooLarge(d) => ApiError::too_large(d),
            e @ ServiceError::Forbidden { .. } => ApiError::forbidden(e.to_string()),
            ServiceError::Store(e) => e.into(),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Decode(e) => decode_error(e),
            IngestError::LineProtocol(e) => line_protocol_error(e),
            IngestError::Unprovisioned { rows, total } => {
                let single = rows.len() == 1 && rows[0].0.is_none();
                let errors = rows
                    .into_iter()
                    .map(|(row, sensor)| ProblemField {
                        line: None,
                        row,
                        field: "sensor".into(),
                        message: format!(
                            "sensor `{sensor}` is not provisioned (this server requires PUT /api/v1/sensors/{{key}} first)"
                        ),
                    })
                    .collect();
                let mut err = ApiError::invalid(
                    "readings of unprovisioned sensors; nothing was stored",
                    errors,
                );
                if !single {
                    err.problem.rows_with_errors = Some(total);
                }
                err
            }
            IngestError::Bus(e) => e.into(),
            IngestError::Service(e) => e.into(),
        }
    }
}

/// The line protocol decoder's verdict: 400 for bad lines (InfluxDB answers 400 too, so
/// Telegraf drops the batch instead of retrying it forever), 413 for too many readings.
fn line_protocol_error(e: LineProtocolError) -> ApiError {
    match e {
        LineProtocolError::Invalid {
            errors,
            lines_with_errors,
        } => {
            let mut err = ApiError::new(
                StatusCode::BAD_REQUEST,
                "line-protocol",
                "Invalid line protocol",
                format!(
                    "{lines_with_errors} line(s) are invalid; nothing from this body was stored"
                ),
            );
            err.problem.errors = errors
                .into_iter()
                .map(|e| ProblemField {
                    line: Some(e.line),
                    row: None,
                    field: e.field,
                    message: e.message,
                })
                .collect();
            err.problem.rows_with_errors = Some(lines_with_errors);
            err
        }
        LineProtocolError::TooManyRows { readings, max } => ApiError::too_large(format!(
            "the body holds {readings} readings; at most {max} are accepted per request"
        )),
        LineProtocolError::Empty => {
            ApiError::bad_request("the body holds no lines; send at least one reading")
        }
    }
}

/// A decoder's verdict as a problem: 400 malformed, 422 invalid rows, 413 too many.
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
                        line: None,
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
                line: None,
                row: None,
                field: "body".into(),
                message: "send at least one reading".into(),
            }],
        ),
    }
}

/// Object storage errors (the signed `/objects/{key}` routes).
impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> Self {
        let detail = e.to_string();
        match e {
            ObjectError::NotFound { .. } => ApiError::not_found(detail),
            ObjectError::InvalidKey { .. } => {
                let mut error = ApiError::bad_request(detail);
                error.problem.errors.push(ProblemField {
                    line: None,
                    row: None,
                    field: "key".into(),
                    message: "not a valid object key".into(),
                });
                error
            }
            ObjectError::RangeNotSatisfiable { .. } => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                "Range not satisfiable",
                detail,
            ),
            ObjectError::Forbidden(_) => ApiError::forbidden(detail),
            ObjectError::SizeMismatch { .. } | ObjectError::Body { .. } => {
                ApiError::bad_request(detail)
            }
            ObjectError::Unavailable { .. } => ApiError::unavailable(detail, 1),
            ObjectError::Config(_) | ObjectError::Unsupported { .. } => ApiError::internal(detail),
        }
    }
}
