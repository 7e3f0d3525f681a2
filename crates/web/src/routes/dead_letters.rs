//! Dead letters (admin only): ingest batches the store refused for good, kept whole with
//! the store's reason instead of being retried forever. List, read, replay, drop.

use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use vigia_store::{DeadLetter, DeadLetterSummary};

use crate::error::{ApiError, Problem};
use crate::extract::ApiQuery;
use crate::pagination::{self, CursorKind, Paged};
use crate::routes::keys::ClientAddress;
use crate::routes::readings::Accepted;
use crate::{AppState, Caller};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

/// Paging of the dead-letter list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    /// Dead letters per page, newest first, 1–1000; default 100.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// Opaque: from the previous page's `Link: <…>; rel="next"` header; absent or empty
    /// for the first page.
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
}

/// List the tenant's dead letters, newest first, one page at a time (without their
/// readings).
///
/// A dead letter is a batch of readings the store refused for good (a constraint, a
/// value it cannot hold) twice, the second time alone. Transient failures (the store
/// down, locked or full) never make one: those batches are retried until they commit.
#[utoipa::path(
    get,
    path = "/api/v1/dead-letters",
    tag = "readings",
    params(DeadLetterParams),
    responses(
        (status = 200, description = "A page of dead letters, newest first", body = Vec<DeadLetterSummary>,
            headers(("link" = String, description = "`<URL>; rel=\"next\"` when more follow"))),
        (status = 400, description = "Invalid query parameter (`limit`, `cursor`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only admin keys see dead letters", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("administer")))
)]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<DeadLetterParams>,
) -> Result<Paged<DeadLetterSummary>, ApiError> {
    let limit = pagination::limit(params.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let before = pagination::position(CursorKind::DeadLetters, params.cursor.as_deref())?;
    let page = state.dead_letters.list(&caller, before, limit).await?;
    Ok(Paged::of(page, CursorKind::DeadLetters, uri, |last| {
        last.id.to_string()
    }))
}

/// Get one dead letter with its readings (`batch`).
#[utoipa::path(
    get,
    path = "/api/v1/dead-letters/{id}",
    tag = "readings",
    params(("id" = u64, Path, description = "Dead letter id", minimum = 0)),
    responses(
        (status = 200, description = "The dead letter and its readings", body = DeadLetter),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only admin keys see dead letters", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead letter in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("administer")))
)]
pub async fn get_dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeadLetter>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.dead_letters.get(&caller, id).await?))
}

/// Drop a dead letter without replaying it.
#[utoipa::path(
    delete,
    path = "/api/v1/dead-letters/{id}",
    tag = "readings",
    params(("id" = u64, Path, description = "Dead letter id", minimum = 0)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only admin keys manage dead letters", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead letter in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("administer")))
)]
pub async fn delete_dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    state.dead_letters.delete(&caller, id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replay a dead letter once its cause is fixed: its readings are published again, as a
/// new batch (durable when this answers 202), and the letter is deleted. Readings already
/// stored are not stored twice; a batch the store still refuses becomes a new dead letter.
#[utoipa::path(
    post,
    path = "/api/v1/dead-letters/{id}/replay",
    tag = "readings",
    params(("id" = u64, Path, description = "Dead letter id", minimum = 0)),
    responses(
        (status = 202, description = "Its readings are durable and queued again; the letter is gone", body = Accepted),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only admin keys manage dead letters", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead letter in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The bus is unavailable or full, or this process has none; retry later", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds to wait"))),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("administer")))
)]
pub async fn replay_dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let id = parse_id(&id)?;
    let accepted = state.dead_letters.replay(&caller, id, &client).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted })))
}

fn parse_id(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>()
        .map_err(|_| ApiError::bad_id("a dead letter", text))
}
