//! Robots (issue #18): jobs for a module. Create (202 once durable, or the final status
//! within `?wait`), read, list, attempts, cancel, retry a dead one; and the worker's
//! reports (`progress`, `complete`, `fail`), each carrying the attempt it belongs to: a
//! stale attempt's report gets 409 and is recorded.

use std::time::{Duration, Instant};

use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vigia_core::{Execution, ExecutionStatus, Robot, RobotId, RobotStatus, Timestamp};
use vigia_services::robots::{CreateRobot, Outcome, ProgressReport};

use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{self, CursorKind, Paged};
use crate::routes::keys::ClientAddress;
use crate::{AppState, Caller};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;
/// The longest `?wait` (the answer is held at most this long).
pub const MAX_WAIT_S: u64 = 30;

/// A robot to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RobotRequest {
    /// The module that runs it (`GET /api/v1/modules`), e.g. `echo`.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
    )]
    pub module: String,
    /// The module's input: a JSON object of at most `robots.max_input_bytes` (413 past
    /// it), nested at most 32 levels, without control characters but tab and line breaks
    /// in its strings and names, matching the module's input schema if it has one (422
    /// naming JSON pointers).
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// Higher runs first, -1000–1000; default 0.
    #[schema(minimum = -1000, maximum = 1000)]
    #[serde(default, deserialize_with = "crate::extract::integer::optional")]
    pub priority: Option<i32>,
    /// The same key with the same body returns the original robot; with another body, 422.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub idempotency_key: Option<String>,
    /// How long one attempt may run, 1–86400 seconds.
    #[schema(minimum = 1, maximum = 86400)]
    #[serde(default, deserialize_with = "crate::extract::integer::optional")]
    pub timeout_s: Option<u32>,
}

/// `?wait` of a create.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateParams {
    /// Hold the answer until the robot finishes (200 with its final state) or this long
    /// has passed (202): whole seconds, `0s`–`30s`.
    #[param(pattern = "^([0-9]|[12][0-9]|30)s$")]
    wait: Option<String>,
}

/// A robot just accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct RobotAccepted {
    #[schema(value_type = i64)]
    pub id: RobotId,
    pub status: RobotStatus,
}

/// A robot as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RobotView {
    #[schema(value_type = i64)]
    pub id: RobotId,
    pub module: String,
    pub status: RobotStatus,
    pub priority: i32,
    /// Attempts started so far; while running, the live attempt (what reports carry).
    pub attempt: u32,
    /// 0–100, of the live or last attempt.
    pub progress: u8,
    pub step: Option<String>,
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// What a successful attempt returned.
    #[schema(value_type = Option<Object>)]
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    pub timeout_s: Option<u32>,
    pub idempotency_key: Option<String>,
    /// Not run before this time (a retry's backoff).
    #[schema(value_type = String, format = DateTime)]
    pub not_before: Timestamp,
    /// Set when a caller asked to cancel the running attempt: a worker should stop.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub cancel_requested_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub lease_expires_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
}

impl From<Robot> for RobotView {
    fn from(r: Robot) -> Self {
        RobotView {
            id: r.id,
            module: r.module,
            status: r.status,
            priority: r.priority,
            attempt: r.attempt,
            progress: r.progress,
            step: r.step,
            input: r.input,
            output: r.result,
            error: r.error,
            timeout_s: r.timeout_s,
            idempotency_key: r.idempotency_key,
            not_before: r.not_before,
            cancel_requested_at: r.cancel_requested_at,
            lease_expires_at: r.lease_expires_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
        }
    }
}

/// One attempt of a robot.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionView {
    /// 1 for the first attempt.
    pub attempt: u32,
    pub worker: String,
    pub status: ExecutionStatus,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    pub error: Option<String>,
    /// Reports of this attempt refused (409) because it was no longer live.
    pub stale_reports: u32,
}

impl From<Execution> for ExecutionView {
    fn from(e: Execution) -> Self {
        ExecutionView {
            attempt: e.attempt,
            worker: e.worker,
            status: e.status,
            started_at: e.started_at,
            ended_at: e.ended_at,
            error: e.error,
            stale_reports: e.stale_reports,
        }
    }
}

/// Create a robot: 202 once it is durable (it survives a crash), or with `?wait` its final
/// state (200) if it finishes in time.
#[utoipa::path(
    post,
    path = "/api/v1/robots",
    tag = "robots",
    params(CreateParams),
    request_body(content = RobotRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "With `?wait`: the robot finished in time; its final state", body = RobotView),
        (status = 202, description = "Durable and queued (or still running when `?wait` ended)", body = RobotAccepted),
        (status = 400, description = "Malformed JSON or `wait`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only operator and admin keys create robots", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The input is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown module, input refused (JSON pointers in `errors`), or an idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry later", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds to wait"))),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("operate")))
)]
pub async fn create_robot(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    ApiQuery(params): ApiQuery<CreateParams>,
    ApiJson(request): ApiJson<RobotRequest>,
) -> Result<Response, ApiError> {
    let wait = parse_wait(params.wait.as_deref())?;
    let (robot, _created) = state
        .robots
        .create(
            &caller,
            CreateRobot {
                module: request.module,
                input: request.input,
                priority: request.priority,
                idempotency_key: request.idempotency_key,
                timeout_s: request.timeout_s,
            },
            &client,
        )
        .await?;
    let mut robot = robot;
    if let Some(wait) = wait {
        let deadline = Instant::now() + wait;
        // Polls the store (the truth, whichever process runs the robot), faster at first
        // so a fast robot's answer comes back quickly.
        let mut pause = Duration::from_millis(5);
        while !robot.status.is_terminal() && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
            robot = state.robots.get(&caller, robot.id).await?;
        }
    }
    if robot.status.is_terminal() && wait.is_some() {
        return Ok((StatusCode::OK, Json(RobotView::from(robot))).into_response());
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(RobotAccepted {
            id: robot.id,
            status: robot.status,
        }),
    )
        .into_response())
}

fn parse_wait(text: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    let seconds = text
        .strip_suffix('s')
        .filter(|n| !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|&n| n <= MAX_WAIT_S)
        .ok_or_else(|| {
            ApiError::bad_parameter(
                "wait",
                format!("must be whole seconds, 0s to {MAX_WAIT_S}s"),
            )
        })?;
    Ok(Some(Duration::from_secs(seconds)))
}

/// Filters and paging of the robot list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RobotListParams {
    /// Only robots in this status; all when absent or empty.
    #[param(
        pattern = "^(queued|waiting_for_module|running|succeeded|failed|cancelled|timed_out|dead)?$"
    )]
    status: Option<String>,
    /// Only robots of this module.
    #[param(
        min_length = 1,
        max_length = 100,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
    )]
    module: Option<String>,
    /// Robots per page, newest first, 1–1000; default 100.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// Opaque: from the previous page's `Link: <…>; rel="next"` header; absent or empty
    /// for the first page.
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
}

/// List the tenant's robots, newest first, one page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/robots",
    tag = "robots",
    params(RobotListParams),
    responses(
        (status = 200, description = "A page of robots, newest first", body = Vec<RobotView>,
            headers(("link" = String, description = "`<URL>; rel=\"next\"` when more follow"))),
        (status = 400, description = "Invalid query parameter (`status`, `module`, `limit`, `cursor`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not read", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn list_robots(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<RobotListParams>,
) -> Result<Paged<RobotView>, ApiError> {
    let limit = pagination::limit(params.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let before: Option<i64> = pagination::position(CursorKind::Robots, params.cursor.as_deref())?;
    let status = match params.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(
            RobotStatus::parse(text)
                .ok_or_else(|| ApiError::bad_parameter("status", "not a robot status"))?,
        ),
    };
    if let Some(module) = &params.module {
        if !vigia_services::robots::is_valid_name(module) {
            return Err(ApiError::bad_parameter(
                "module",
                "must be 1 to 100 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
            ));
        }
    }
    let page = state
        .robots
        .list(&caller, status, params.module, before.map(RobotId), limit)
        .await?;
    let page = vigia_services::Page {
        items: page.items.into_iter().map(RobotView::from).collect(),
        has_more: page.has_more,
    };
    Ok(Paged::of(page, CursorKind::Robots, uri, |last| {
        last.id.to_string()
    }))
}

/// Get one robot: status, progress, and its output once it succeeded.
#[utoipa::path(
    get,
    path = "/api/v1/robots/{id}",
    tag = "robots",
    params(("id" = i64, Path, description = "Robot id", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)),
    responses(
        (status = 200, description = "The robot", body = RobotView),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such robot in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn get_robot(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RobotView>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.robots.get(&caller, id).await?.into()))
}

/// The robot's attempts, first first.
#[utoipa::path(
    get,
    path = "/api/v1/robots/{id}/executions",
    tag = "robots",
    params(("id" = i64, Path, description = "Robot id", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)),
    responses(
        (status = 200, description = "Its attempts", body = Vec<ExecutionView>),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such robot in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn robot_executions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<ExecutionView>>, ApiError> {
    let id = parse_id(&id)?;
    let executions = state.robots.executions(&caller, id).await?;
    Ok(Json(executions.into_iter().map(Into::into).collect()))
}

/// Cancel a robot: a queued one at once; a running one is asked to stop (its worker sees
/// `cancel_requested_at`) and is stopped by force after `robots.cancel_grace`.
#[utoipa::path(
    post,
    path = "/api/v1/robots/{id}/cancel",
    tag = "robots",
    params(("id" = i64, Path, description = "Robot id", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)),
    responses(
        (status = 200, description = "Cancelled, or asked to stop", body = RobotView),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only operator and admin keys cancel robots", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such robot in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The robot is already finished", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("operate")))
)]
pub async fn cancel_robot(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(id): Path<String>,
) -> Result<Json<RobotView>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(
        state.robots.cancel(&caller, id, &client).await?.into(),
    ))
}

/// Re-queue a dead robot (every attempt failed); it runs again with a new attempt number.
#[utoipa::path(
    post,
    path = "/api/v1/robots/{id}/retry",
    tag = "robots",
    params(("id" = i64, Path, description = "Robot id", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)),
    responses(
        (status = 200, description = "Queued again", body = RobotView),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only operator and admin keys retry robots", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such robot in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The robot is not dead", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("operate")))
)]
pub async fn retry_robot(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(id): Path<String>,
) -> Result<Json<RobotView>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.robots.retry(&caller, id, &client).await?.into()))
}

/// A worker's progress report (also its heartbeat).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressBody {
    /// The attempt this report belongs to (from the dispatch).
    #[schema(minimum = 0, maximum = 4294967295u32)]
    #[serde(deserialize_with = "crate::extract::integer::required")]
    pub attempt: u32,
    /// 0–100; absent for a bare heartbeat.
    #[schema(minimum = 0, maximum = 100)]
    #[serde(default, deserialize_with = "crate::extract::integer::optional")]
    pub progress: Option<u8>,
    /// What the worker is doing, at most 4000 characters.
    #[schema(max_length = 4000)]
    pub step: Option<String>,
}

/// A worker's report of success.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    #[schema(minimum = 0, maximum = 4294967295u32)]
    #[serde(deserialize_with = "crate::extract::integer::required")]
    pub attempt: u32,
    /// What the robot produced (bounded like inputs).
    #[schema(value_type = Object)]
    pub output: serde_json::Value,
}

/// A worker's report of failure.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    #[schema(minimum = 0, maximum = 4294967295u32)]
    #[serde(deserialize_with = "crate::extract::integer::required")]
    pub attempt: u32,
    /// Why, at most 4000 characters.
    #[schema(max_length = 4000)]
    pub error: String,
    /// `false`: no retry can help (the robot fails for good); default `true` (retried with
    /// backoff until `robots.max_attempts`, then dead).
    pub retryable: Option<bool>,
}

/// Report progress of the live attempt; extends its lease.
#[utoipa::path(
    post,
    path = "/api/v1/robots/{id}/progress",
    tag = "robots",
    params(("id" = i64, Path, description = "Robot id", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)),
    request_body(content = ProgressBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded; `cancel_requested_at` set means stop", body = RobotView),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only operator and admin keys report", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such robot", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The attempt is not the live one, or the robot is finished (recorded)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is out of range", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("operate")))
)]
pub async fn robot_progress(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ProgressBody>,
) -> Result<Json<RobotView>, ApiError> {
    let id = parse_id(&id)?;
    let robot = state
        .robots
        .progress(
            &caller,
            id,
            ProgressReport {
                attempt: body.attempt,
                progress: body.progress,
                step: body.step,
            },
        )
        .await?;
    Ok(Json(robot.into()))
}

/// Report that the live attempt succeeded, with its output.
#[utoipa::path(
    post,
    path = "/api/v1/robots/{id}/complete",
    tag = "robots",
    params(("id" = i64, Path, description = "Robot id", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)),
    request_body(content = CompleteBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The robot, succeeded", body = RobotView),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only operator and admin keys report", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such robot", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The attempt is not the live one, or the robot is finished (recorded)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The output is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The output is refused (JSON pointers in `errors`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("operate")))
)]
pub async fn robot_complete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CompleteBody>,
) -> Result<Json<RobotView>, ApiError> {
    let id = parse_id(&id)?;
    let robot = state
        .robots
        .report(
            &caller,
            id,
            body.attempt,
            Outcome::Completed {
                output: body.output,
            },
        )
        .await?;
    Ok(Json(robot.into()))
}

/// Report that the live attempt failed: retried with backoff, dead after
/// `robots.max_attempts`, or failed for good when not `retryable`.
#[utoipa::path(
    post,
    path = "/api/v1/robots/{id}/fail",
    tag = "robots",
    params(("id" = i64, Path, description = "Robot id", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)),
    request_body(content = FailBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The robot, queued for a retry, dead or failed", body = RobotView),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only operator and admin keys report", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such robot", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The attempt is not the live one, or the robot is finished (recorded)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is out of range", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("operate")))
)]
pub async fn robot_fail(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<FailBody>,
) -> Result<Json<RobotView>, ApiError> {
    let id = parse_id(&id)?;
    let robot = state
        .robots
        .report(
            &caller,
            id,
            body.attempt,
            Outcome::Failed {
                error: body.error,
                retryable: body.retryable.unwrap_or(true),
            },
        )
        .await?;
    Ok(Json(robot.into()))
}

fn parse_id(text: &str) -> Result<RobotId, ApiError> {
    text.parse::<i64>()
        .map(RobotId)
        .map_err(|_| ApiError::bad_id("a robot", text))
}
