//! `GET /api/v1/jobs`: the scheduler's named jobs with their last and next runs.

use axum::extract::State;
use axum::Json;
use vigia_core::Permission;
use vigia_scheduler::JobStatus;

use crate::error::{ApiError, Problem};
use crate::{AppState, Caller};

/// List the background jobs: schedule, last run (start, duration, outcome, message),
/// next run, counts, and whether this process leads.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    responses(
        (status = 200, description = "Jobs in registration order", body = Vec<JobStatus>),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only admin keys see jobs", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This process does not have the scheduler role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("administer")))
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<JobStatus>>, ApiError> {
    caller.require(Permission::Administer)?;
    let jobs = state.jobs.as_ref().ok_or_else(|| {
        ApiError::not_found("this process does not have the `scheduler` role; ask one that does")
    })?;
    Ok(Json(jobs.status()))
}
