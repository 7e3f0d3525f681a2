//! Modules and their instances (issue #18): the registry robots name. `echo` runs in
//! process; `http` modules are external workers registered as instances
//! (`PUT …/instances/{name}`), each shown with its health, score, breaker and in-flight
//! calls as the orchestrator last saw them.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vigia_core::{BreakerPosition, InstanceHealth, ModuleInstance, Timestamp};
use vigia_services::robots::{ModuleView, PutInstance};

use crate::error::{ApiError, Problem};
use crate::extract::ApiJson;
use crate::routes::keys::ClientAddress;
use crate::{AppState, Caller};

/// A module with its instances.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModuleBody {
    pub name: String,
    /// `in_process` (runs inside the `robots` process) or `http` (external instances).
    pub kind: String,
    /// The JSON Schema inputs must satisfy, if any.
    #[schema(value_type = Option<Object>)]
    pub input_schema: Option<serde_json::Value>,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    pub instances: Vec<InstanceBody>,
}

/// One instance of an `http` module.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceBody {
    pub module: String,
    pub name: String,
    pub url: Option<String>,
    /// The operator's weight; 0 drains it.
    pub weight: f64,
    /// Calls it may run at once.
    pub capacity: u32,
    pub health: InstanceHealth,
    /// The balancer's last score (0 when it cannot take a call).
    pub score: f64,
    pub breaker: BreakerPosition,
    /// Calls running on it, as the orchestrator last counted them.
    pub in_flight: u32,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub checked_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl From<ModuleInstance> for InstanceBody {
    fn from(i: ModuleInstance) -> Self {
        InstanceBody {
            module: i.module,
            name: i.name,
            url: i.url,
            weight: i.weight,
            capacity: i.capacity,
            health: i.health,
            score: i.score,
            breaker: i.breaker,
            in_flight: i.in_flight,
            checked_at: i.checked_at,
            updated_at: i.updated_at,
        }
    }
}

impl From<ModuleView> for ModuleBody {
    fn from(v: ModuleView) -> Self {
        ModuleBody {
            name: v.module.name,
            kind: v.module.kind,
            input_schema: v.module.input_schema,
            updated_at: v.module.updated_at,
            instances: v.instances.into_iter().map(Into::into).collect(),
        }
    }
}

/// An instance to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceRequest {
    /// Where the worker takes `POST {robot, attempt, input, callback}`: `http://` or
    /// `https://` and a host, at most 2000 characters, no spaces.
    #[schema(
        min_length = 8,
        max_length = 2000,
        pattern = r"^https?://[^/\s\x00-\x1F\x7F-\x9F][^\s\x00-\x1F\x7F-\x9F]*$"
    )]
    pub url: String,
    /// Relative preference, 0–1000 (0 drains it); default 1.
    #[schema(minimum = 0, maximum = 1000)]
    pub weight: Option<f64>,
    /// Calls it may run at once, 1–10000; default 8.
    #[schema(minimum = 1, maximum = 10000)]
    #[serde(default, deserialize_with = "crate::extract::integer::optional")]
    pub capacity: Option<u32>,
}

/// A module to register (an `http` module: its instances are registered separately).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleRequest {
    /// The JSON Schema robot inputs must satisfy (draft 2020-12 unless `$schema` says
    /// otherwise; no remote `$ref`).
    #[schema(value_type = Option<Object>)]
    pub input_schema: Option<serde_json::Value>,
}

/// List the modules with their instances.
#[utoipa::path(
    get,
    path = "/api/v1/modules",
    tag = "robots",
    responses(
        (status = 200, description = "Every module, by name", body = Vec<ModuleBody>),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not read", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn list_modules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ModuleBody>>, ApiError> {
    let modules = state.robots.modules(&caller).await?;
    Ok(Json(modules.into_iter().map(Into::into).collect()))
}

/// Get one module with its instances.
#[utoipa::path(
    get,
    path = "/api/v1/modules/{module}",
    tag = "robots",
    params(("module" = String, Path, description = "1–100 letters, digits, `.`, `_` or `-`, starting with a letter or digit", min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")),
    responses(
        (status = 200, description = "The module", body = ModuleBody),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role may not read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such module", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a module name", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn get_module(
    State(state): State<AppState>,
    caller: Caller,
    Path(module): Path<String>,
) -> Result<Json<ModuleBody>, ApiError> {
    Ok(Json(state.robots.module(&caller, &module).await?.into()))
}

/// Register or replace an `http` module and its input schema (admin only).
#[utoipa::path(
    put,
    path = "/api/v1/modules/{module}",
    tag = "robots",
    params(("module" = String, Path, description = "1–100 letters, digits, `.`, `_` or `-`, starting with a letter or digit", min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")),
    request_body(content = ModuleRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The module as stored", body = ModuleBody),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only admin keys register modules", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A built-in module cannot be replaced", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a module name, or the schema does not compile", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("administer")))
)]
pub async fn put_module(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path(module): Path<String>,
    ApiJson(body): ApiJson<ModuleRequest>,
) -> Result<Json<ModuleBody>, ApiError> {
    let view = state
        .robots
        .put_module(&caller, &module, body.input_schema, &client)
        .await?;
    Ok(Json(view.into()))
}

/// Register or replace an instance of an `http` module (admin only); the module is
/// created, without a schema, if it does not exist.
#[utoipa::path(
    put,
    path = "/api/v1/modules/{module}/instances/{name}",
    tag = "robots",
    params(
        ("module" = String, Path, description = "1–100 letters, digits, `.`, `_` or `-`, starting with a letter or digit", min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"),
        ("name" = String, Path, description = "1–100 letters, digits, `.`, `_` or `-`, starting with a letter or digit", min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"),
    ),
    request_body(content = InstanceRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The instance as stored", body = InstanceBody),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only admin keys register instances", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The module runs in process and takes no instances", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A name, the URL, the weight or the capacity is refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("administer")))
)]
pub async fn put_instance(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddress(client): ClientAddress,
    Path((module, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<InstanceRequest>,
) -> Result<Json<InstanceBody>, ApiError> {
    let instance = state
        .robots
        .put_instance(
            &caller,
            &module,
            &name,
            PutInstance {
                url: body.url,
                weight: body.weight,
                capacity: body.capacity,
            },
            &client,
        )
        .await?;
    Ok(Json(instance.into()))
}
