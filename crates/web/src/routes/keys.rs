//! API keys of the caller's tenant (admin only): create (the secret is shown once), list
//! (never the secret), revoke (takes effect at once, caches included).

use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vigia_core::{ApiKeyId, ApiKeyInfo, Role, Timestamp};

use crate::auth::client_address;
use crate::error::{ApiError, Problem};
use crate::extract::ApiJson;
use crate::{AppState, Caller};

/// A key to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// What the key is for: 1–64 characters, not only white space, no control characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    /// What the key may do; default `viewer`.
    #[serde(default = "default_role")]
    pub role: Role,
}

fn default_role() -> Role {
    Role::Viewer
}

/// A key just created: the only answer that ever holds its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub id: ApiKeyId,
    pub name: String,
    pub role: Role,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The secret: send it as `Authorization: Bearer <key>`. Shown once; only its hash is
    /// stored.
    pub key: String,
}

/// The client's address, for the audit log.
pub struct ClientAddress(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_address(parts)))
    }
}

/// Create an API key.
#[utoipa::path(
    post,
    path = "/api/v1/keys",
    tag = "keys",
    request_body(content = KeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; the secret is in `key` and is never shown again", body = CreatedKey),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only admin keys manage keys", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("administer")))
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    ApiJson(request): ApiJson<KeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let created = state
        .keys
        .create(&caller, &request.name, request.role, &client)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            id: created.info.id,
            name: created.info.name,
            role: created.info.role,
            created_at: created.info.created_at,
            key: created.secret,
        }),
    ))
}

/// List the tenant's API keys (never their secrets).
#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "keys",
    responses(
        (status = 200, description = "Live keys, oldest first", body = Vec<ApiKeyInfo>),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only admin keys manage keys", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("administer")))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ApiKeyInfo>>, ApiError> {
    Ok(Json(state.keys.list(&caller).await?))
}

/// Revoke an API key: its next request gets 401, in every process.
#[utoipa::path(
    delete,
    path = "/api/v1/keys/{id}",
    tag = "keys",
    params(("id" = i64, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only admin keys manage keys", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live key in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key making the request cannot revoke itself", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("administer")))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = id
        .parse::<i64>()
        .map(ApiKeyId)
        .map_err(|_| ApiError::bad_id("a key", &id))?;
    state.keys.revoke(&caller, id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
