//! `GET /api/v1/ingest/rejections`: the last messages a protocol front end (MQTT) refused
//! for the caller's tenant, since a device publishing over MQTT gets no error back.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use vigia_services::Rejection;

use crate::error::{ApiError, Problem};
use crate::{AppState, Caller};

/// The tenant's recent rejections.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rejections {
    /// Newest first; at most 100 per tenant, kept in the memory of this ingest process
    /// (each process lists its own; a restart forgets them).
    pub rejections: Vec<Rejection>,
}

/// List the messages refused lately for the caller's tenant (bad topic, bad payload,
/// foreign tenant, unprovisioned sensor), newest first.
#[utoipa::path(
    get,
    path = "/api/v1/ingest/rejections",
    tag = "readings",
    responses(
        (status = 200, description = "Recent rejections of this process, newest first", body = Rejections),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role does not allow reading", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn list_rejections(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Rejections>, ApiError> {
    let rejections = state.rejections.list(&caller)?;
    Ok(Json(Rejections { rejections }))
}
