//! Robots as callers and workers handle them (issue #18): create (sanitised input, the
//! module's JSON Schema, idempotency), read, list, cancel, retry a dead one; the worker's
//! reports (progress, complete, fail) fenced by the attempt number; modules and their
//! instances. Role checks here: `operate` creates and acts, `read` reads, `administer`
//! registers modules and instances.
//!
//! The decisions are `vigia_robots`' pure rules (input checks, retry policy); the state is
//! the store's `robots` port; the orchestrator (`vigia-orchestrator`) calls the same
//! attempt-ending methods a worker's report does ([`RobotService::end_attempt`]), so a
//! failure is judged by one retry policy whoever reports it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use vigia_core::{
    Execution, Module, ModuleInstance, Permission, Robot, RobotId, RobotStatus, Timestamp,
};
use vigia_robots::input::{check_value, InputError, InputLimits, InputSchema};
use vigia_robots::retry::{RetryDecision, RetryPolicy};
use vigia_store::{
    AttemptEnd, AuditEvent, AuditOutcome, Heartbeat, Idempotency, NewRobot, RobotError,
    RobotFilter, Store, StoreError,
};

use crate::{AuditTrail, Caller, Page, ServiceError};

/// The in-process module that returns its input: always registered.
pub const ECHO: &str = "echo";
/// Module kind of external workers reached over HTTP.
pub const KIND_HTTP: &str = "http";
/// Module kind of modules run inside the `robots` process.
pub const KIND_IN_PROCESS: &str = "in_process";
/// The in-process modules this build runs.
pub const BUILTIN_MODULES: &[&str] = &[ECHO];

/// Module and instance names: what the OpenAPI document states as their pattern, so a
/// name valid by the document is valid here (1–100 characters, a letter or digit first,
/// then letters, digits, `.`, `_`, `-`).
pub const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$";
/// Highest and lowest priority a robot may ask for.
pub const MAX_PRIORITY: i32 = 1_000;
/// Longest `timeout_s` (one day).
pub const MAX_TIMEOUT_S: u32 = 86_400;
/// Longest step message and error a worker may send, in characters (the store cuts
/// longer ones, the API refuses them so a worker learns its limit).
pub const MAX_REPORT_CHARS: usize = 4_000;

/// Tuning the service applies.
#[derive(Debug, Clone)]
pub struct RobotLimits {
    /// Size and depth of inputs and outputs.
    pub input: InputLimits,
    /// What becomes of a failed attempt.
    pub retry: RetryPolicy,
    /// How long an attempt lives past each report (`robots.lease`), ms.
    pub lease_ms: i64,
    /// How long a cancel waits for a running worker before it is forced (`robots.cancel_grace`), ms.
    pub cancel_grace_ms: i64,
}

impl Default for RobotLimits {
    fn default() -> Self {
        Self {
            input: InputLimits::default(),
            retry: RetryPolicy::default(),
            lease_ms: 30_000,
            cancel_grace_ms: 30_000,
        }
    }
}

/// A create request, as the API parsed it.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRobot {
    pub module: String,
    pub input: serde_json::Value,
    pub priority: Option<i32>,
    pub idempotency_key: Option<String>,
    pub timeout_s: Option<u32>,
}

/// A worker's progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressReport {
    pub attempt: u32,
    pub progress: Option<u8>,
    pub step: Option<String>,
}

/// How a worker says an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done, with what it produced.
    Completed { output: serde_json::Value },
    /// Failed; `retryable: false` fails the robot for good (no retry can help).
    Failed { error: String, retryable: bool },
}

/// A module with its instances.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleView {
    pub module: Module,
    pub instances: Vec<ModuleInstance>,
}

/// An instance as an admin registers it.
#[derive(Debug, Clone, PartialEq)]
pub struct PutInstance {
    pub url: String,
    pub weight: Option<f64>,
    pub capacity: Option<u32>,
}

/// Robots, their attempts, modules and instances.
pub struct RobotService {
    store: Arc<dyn Store>,
    audit: Arc<AuditTrail>,
    limits: RobotLimits,
    /// Compiled input schemas by module, with the module's `updated_at` they came from (a
    /// module re-registered elsewhere is recompiled on its next use).
    schemas: Mutex<HashMap<String, (Timestamp, Arc<InputSchema>)>>,
}

impl RobotService {
    pub fn new(store: Arc<dyn Store>, audit: Arc<AuditTrail>, limits: RobotLimits) -> Self {
        Self {
            store,
            audit,
            limits,
            schemas: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> &RobotLimits {
        &self.limits
    }

    /// Registers the in-process modules (idempotent; at startup of every process).
    pub async fn register_builtins(&self) -> Result<(), ServiceError> {
        for name in BUILTIN_MODULES {
            let current = self
                .store
                .robots()
                .module(name)
                .await
                .map_err(robot_error)?;
            if current.is_some_and(|m| m.kind == KIND_IN_PROCESS) {
                continue;
            }
            self.store
                .robots()
                .put_module(&Module {
                    name: (*name).to_string(),
                    kind: KIND_IN_PROCESS.into(),
                    input_schema: None,
                    updated_at: Timestamp::now(),
                })
                .await
                .map_err(robot_error)?;
        }
        Ok(())
    }

    /// Creates a robot, durable when this returns; an idempotent repeat returns the
    /// original (`created: false`).
    pub async fn create(
        &self,
        caller: &Caller,
        request: CreateRobot,
        client: &str,
    ) -> Result<(Robot, bool), ServiceError> {
        caller.require(Permission::Operate)?;
        check_name("module", &request.module)?;
        let priority = request.priority.unwrap_or(0);
        if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&priority) {
            return Err(ServiceError::invalid_field(
                "invalid robot",
                "priority",
                format!("must be between {} and {MAX_PRIORITY}", -MAX_PRIORITY),
            ));
        }
        if let Some(t) = request.timeout_s {
            if t == 0 || t > MAX_TIMEOUT_S {
                return Err(ServiceError::invalid_field(
                    "invalid robot",
                    "timeout_s",
                    format!("must be between 1 and {MAX_TIMEOUT_S}"),
                ));
            }
        }
        if let Some(key) = &request.idempotency_key {
            if key.is_empty()
                || vigia_core::longer_than(key, vigia_store::robots::MAX_IDEMPOTENCY_KEY_CHARS)
                || key.chars().any(char::is_control)
            {
                return Err(ServiceError::invalid_field(
                    "invalid robot",
                    "idempotency_key",
                    format!(
                        "must be 1 to {} characters without control characters",
                        vigia_store::robots::MAX_IDEMPOTENCY_KEY_CHARS
                    ),
                ));
            }
        }
        let module = self
            .store
            .robots()
            .module(&request.module)
            .await
            .map_err(robot_error)?
            .ok_or_else(|| {
                ServiceError::invalid_field(
                    format!("unknown module `{}`", request.module),
                    "module",
                    "no module of this name is registered (GET /api/v1/modules lists them)",
                )
            })?;
        if !request.input.is_object() {
            return Err(ServiceError::invalid_field(
                "the input is refused",
                "/input",
                "must be a JSON object",
            ));
        }
        let schema = self.schema_of(&module)?;
        check_value(&request.input, &self.limits.input, "/input").map_err(input_error)?;
        if let Some(schema) = &schema {
            schema
                .validate(&request.input, "/input")
                .map_err(input_error)?;
        }
        let idempotency = request.idempotency_key.clone().map(|key| Idempotency {
            key,
            body_hash: body_hash(&request, priority),
        });
        let created = self
            .store
            .robots()
            .create(
                &NewRobot {
                    tenant: caller.tenant,
                    module: request.module.clone(),
                    input: request.input,
                    priority,
                    timeout_s: request.timeout_s,
                    idempotency,
                },
                Timestamp::now(),
            )
            .await
            .map_err(robot_error)?;
        if created.created {
            metrics::counter!("vigia_robots_created_total", "module" => request.module)
                .increment(1);
        }
        // Aggregated per minute (a create flood grows a counter, not the table).
        self.audit
            .record(event(caller, "robot.create", "robots", client));
        Ok((created.robot, created.created))
    }

    /// The tenant's robot.
    pub async fn get(&self, caller: &Caller, id: RobotId) -> Result<Robot, ServiceError> {
        caller.require(Permission::Read)?;
        self.store
            .robots()
            .get(caller.tenant, id)
            .await
            .map_err(robot_not_found(id))
    }

    /// A page of the tenant's robots, newest first.
    pub async fn list(
        &self,
        caller: &Caller,
        status: Option<RobotStatus>,
        module: Option<String>,
        before: Option<RobotId>,
        limit: usize,
    ) -> Result<Page<Robot>, ServiceError> {
        caller.require(Permission::Read)?;
        if let Some(module) = &module {
            check_name("module", module)?;
        }
        let mut items = self
            .store
            .robots()
            .list(
                caller.tenant,
                &RobotFilter {
                    status,
                    module,
                    limit: limit.saturating_add(1),
                    before,
                },
            )
            .await
            .map_err(robot_error)?;
        let has_more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, has_more })
    }

    /// The robot's attempts, first first.
    pub async fn executions(
        &self,
        caller: &Caller,
        id: RobotId,
    ) -> Result<Vec<Execution>, ServiceError> {
        caller.require(Permission::Read)?;
        self.store
            .robots()
            .executions(caller.tenant, id)
            .await
            .map_err(robot_not_found(id))
    }

    /// Cancels a queued robot at once, asks a running one to stop (forced after
    /// `robots.cancel_grace`); 409 for a finished one.
    pub async fn cancel(
        &self,
        caller: &Caller,
        id: RobotId,
        client: &str,
    ) -> Result<Robot, ServiceError> {
        caller.require(Permission::Operate)?;
        let robot = self
            .store
            .robots()
            .cancel(caller.tenant, id, Timestamp::now())
            .await
            .map_err(robot_not_found(id))?;
        self.audit.record(event(
            caller,
            "robot.cancel",
            &format!("robot:{id}"),
            client,
        ));
        Ok(robot)
    }

    /// Re-queues a dead robot; 409 for any other status.
    pub async fn retry(
        &self,
        caller: &Caller,
        id: RobotId,
        client: &str,
    ) -> Result<Robot, ServiceError> {
        caller.require(Permission::Operate)?;
        let robot = self
            .store
            .robots()
            .retry(caller.tenant, id, Timestamp::now())
            .await
            .map_err(robot_not_found(id))?;
        self.audit
            .record(event(caller, "robot.retry", &format!("robot:{id}"), client));
        Ok(robot)
    }

    /// A worker's progress of the live attempt (a heartbeat, extending its lease). The
    /// answer carries `cancel_requested_at` for a cooperative worker; past the cancel
    /// grace the attempt is ended `cancelled` and the report gets 409.
    pub async fn progress(
        &self,
        caller: &Caller,
        id: RobotId,
        report: ProgressReport,
    ) -> Result<Robot, ServiceError> {
        caller.require(Permission::Operate)?;
        if report.progress.is_some_and(|p| p > 100) {
            return Err(ServiceError::invalid_field(
                "invalid progress",
                "progress",
                "must be 0 to 100",
            ));
        }
        if let Some(step) = &report.step {
            check_report_text("step", step)?;
        }
        let now = Timestamp::now();
        let robot = self
            .store
            .robots()
            .heartbeat(&Heartbeat {
                robot: id,
                attempt: report.attempt,
                progress: report.progress,
                step: report.step,
                now,
                lease_until: Timestamp(now.0.saturating_add(self.limits.lease_ms)),
            })
            .await
            .map_err(robot_not_found(id))?;
        if let Some(asked) = robot.cancel_requested_at {
            if now.0 - asked.0 >= self.limits.cancel_grace_ms {
                self.store
                    .robots()
                    .finish(id, report.attempt, &AttemptEnd::Cancelled, now)
                    .await
                    .map_err(robot_not_found(id))?;
                return Err(ServiceError::Conflict(format!(
                    "robot {id} was cancelled: the worker did not stop within robots.cancel_grace"
                )));
            }
        }
        Ok(robot)
    }

    /// A worker's report that the live attempt completed or failed.
    pub async fn report(
        &self,
        caller: &Caller,
        id: RobotId,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<Robot, ServiceError> {
        caller.require(Permission::Operate)?;
        match &outcome {
            Outcome::Completed { output } => {
                if !output.is_object() {
                    return Err(ServiceError::invalid_field(
                        "the output is refused",
                        "/output",
                        "must be a JSON object",
                    ));
                }
                check_value(output, &self.limits.input, "/output").map_err(input_error)?
            }
            Outcome::Failed { error, .. } => check_report_text("error", error)?,
        }
        self.end_attempt(id, attempt, outcome).await
    }

    /// Ends attempt `attempt` of robot `id` as `outcome` says, a failure judged by the
    /// retry policy (retry later or dead). For the worker's reports and the orchestrator.
    pub async fn end_attempt(
        &self,
        id: RobotId,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<Robot, ServiceError> {
        let now = Timestamp::now();
        let end = match outcome {
            Outcome::Completed { output } => AttemptEnd::Succeeded { result: output },
            Outcome::Failed {
                error,
                retryable: false,
            } => AttemptEnd::Failed { error },
            Outcome::Failed {
                error,
                retryable: true,
            } => match self
                .limits
                .retry
                .after_failure(attempt, now.0, &mut rand::rng())
            {
                RetryDecision::Retry { not_before, .. } => AttemptEnd::Retry {
                    error,
                    not_before: Timestamp(not_before),
                },
                RetryDecision::Dead => AttemptEnd::Dead { error },
            },
        };
        self.finish(id, attempt, &end, now).await
    }

    /// Ends an attempt exactly as `end` says (timeouts, cancels, waiting for a module).
    pub async fn finish(
        &self,
        id: RobotId,
        attempt: u32,
        end: &AttemptEnd,
        now: Timestamp,
    ) -> Result<Robot, ServiceError> {
        let robot = self
            .store
            .robots()
            .finish(id, attempt, end, now)
            .await
            .map_err(robot_not_found(id))?;
        if robot.status.is_terminal() {
            metrics::counter!(
                "vigia_robots_finished_total",
                "module" => robot.module.clone(),
                "outcome" => robot.status.as_str()
            )
            .increment(1);
        }
        Ok(robot)
    }

    /// Every module with its instances, by name.
    pub async fn modules(&self, caller: &Caller) -> Result<Vec<ModuleView>, ServiceError> {
        caller.require(Permission::Read)?;
        let modules = self.store.robots().modules().await.map_err(robot_error)?;
        let mut instances = self
            .store
            .robots()
            .instances(None)
            .await
            .map_err(robot_error)?;
        let mut views = Vec::with_capacity(modules.len());
        for module in modules {
            let (mine, rest): (Vec<_>, Vec<_>) =
                instances.into_iter().partition(|i| i.module == module.name);
            instances = rest;
            views.push(ModuleView {
                module,
                instances: mine,
            });
        }
        Ok(views)
    }

    /// One module with its instances.
    pub async fn module(&self, caller: &Caller, name: &str) -> Result<ModuleView, ServiceError> {
        caller.require(Permission::Read)?;
        check_name("module", name)?;
        let module = self
            .store
            .robots()
            .module(name)
            .await
            .map_err(robot_error)?
            .ok_or_else(|| ServiceError::NotFound(format!("no module `{name}`")))?;
        let instances = self
            .store
            .robots()
            .instances(Some(name))
            .await
            .map_err(robot_error)?;
        Ok(ModuleView { module, instances })
    }

    /// Registers (or replaces) an `http` module with its input schema.
    pub async fn put_module(
        &self,
        caller: &Caller,
        name: &str,
        input_schema: Option<serde_json::Value>,
        client: &str,
    ) -> Result<ModuleView, ServiceError> {
        caller.require(Permission::Administer)?;
        check_name("module", name)?;
        if BUILTIN_MODULES.contains(&name) {
            return Err(ServiceError::Conflict(format!(
                "`{name}` is a built-in module; it cannot be replaced"
            )));
        }
        if let Some(schema) = &input_schema {
            // The document (and `GET …/modules`) states an object; a boolean schema
            // (`true`/`false`) says nothing a module needs.
            if !schema.is_object() {
                return Err(ServiceError::invalid_field(
                    "invalid module",
                    "input_schema",
                    "must be a JSON object",
                ));
            }
            InputSchema::compile(schema).map_err(|e| {
                ServiceError::invalid_field("invalid module", "input_schema", e.to_string())
            })?;
        }
        self.store
            .robots()
            .put_module(&Module {
                name: name.to_string(),
                kind: KIND_HTTP.into(),
                input_schema,
                updated_at: Timestamp::now(),
            })
            .await
            .map_err(robot_error)?;
        self.audit_now(caller, "module.put", &format!("module:{name}"), client)
            .await?;
        self.module(caller, name).await
    }

    /// Registers (or replaces) an instance of an `http` module, creating the module
    /// (without a schema) when it does not exist yet.
    pub async fn put_instance(
        &self,
        caller: &Caller,
        module: &str,
        name: &str,
        put: PutInstance,
        client: &str,
    ) -> Result<ModuleInstance, ServiceError> {
        caller.require(Permission::Administer)?;
        check_name("module", module)?;
        check_name("name", name)?;
        check_url(&put.url)?;
        let weight = put.weight.unwrap_or(1.0);
        if !(weight.is_finite() && (0.0..=1_000.0).contains(&weight)) {
            return Err(ServiceError::invalid_field(
                "invalid instance",
                "weight",
                "must be a number from 0 to 1000",
            ));
        }
        let capacity = put.capacity.unwrap_or(8);
        if !(1..=10_000).contains(&capacity) {
            return Err(ServiceError::invalid_field(
                "invalid instance",
                "capacity",
                "must be between 1 and 10000",
            ));
        }
        let robots = self.store.robots();
        match robots.module(module).await.map_err(robot_error)? {
            Some(m) if m.kind != KIND_HTTP => {
                return Err(ServiceError::Conflict(format!(
                    "module `{module}` runs in process; it takes no instances"
                )))
            }
            Some(_) => {}
            None => robots
                .put_module(&Module {
                    name: module.to_string(),
                    kind: KIND_HTTP.into(),
                    input_schema: None,
                    updated_at: Timestamp::now(),
                })
                .await
                .map_err(robot_error)?,
        }
        let previous = robots.instance(module, name).await.map_err(robot_error)?;
        let instance = ModuleInstance {
            module: module.to_string(),
            name: name.to_string(),
            url: Some(put.url),
            weight,
            capacity,
            // What the orchestrator learnt of it stays; a new one starts unknown.
            health: previous
                .as_ref()
                .map_or(vigia_core::InstanceHealth::Unknown, |p| p.health),
            score: previous.as_ref().map_or(1.0, |p| p.score),
            breaker: previous
                .as_ref()
                .map_or(vigia_core::BreakerPosition::Closed, |p| p.breaker),
            in_flight: previous.as_ref().map_or(0, |p| p.in_flight),
            checked_at: previous.as_ref().and_then(|p| p.checked_at),
            updated_at: Timestamp::now(),
        };
        robots.put_instance(&instance).await.map_err(robot_error)?;
        self.audit_now(
            caller,
            "module.instance.put",
            &format!("module:{module}/{name}"),
            client,
        )
        .await?;
        Ok(instance)
    }

    /// The newest audit rows of the caller's tenant (admin only).
    pub async fn audit_log(
        &self,
        caller: &Caller,
        limit: usize,
    ) -> Result<Vec<vigia_store::AuditRecord>, ServiceError> {
        caller.require(Permission::Administer)?;
        Ok(self.store.audit().list(Some(caller.tenant), limit).await?)
    }

    async fn audit_now(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        client: &str,
    ) -> Result<(), ServiceError> {
        self.audit
            .record_now(event(caller, action, target, client))
            .await?;
        Ok(())
    }

    /// The module's compiled schema, compiled once per registration.
    fn schema_of(&self, module: &Module) -> Result<Option<Arc<InputSchema>>, ServiceError> {
        let Some(raw) = &module.input_schema else {
            return Ok(None);
        };
        let mut schemas = self.schemas.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, schema)) = schemas.get(&module.name) {
            if *at == module.updated_at {
                return Ok(Some(schema.clone()));
            }
        }
        // A schema stored through the API compiled when it was registered; one that does
        // not is the operator's to fix, not the caller's.
        let schema = Arc::new(InputSchema::compile(raw).map_err(|e| {
            ServiceError::Conflict(format!(
                "module `{}` has an unusable input schema: {e}",
                module.name
            ))
        })?);
        if schemas.len() > 1_000 {
            schemas.clear();
        }
        schemas.insert(module.name.clone(), (module.updated_at, schema.clone()));
        Ok(Some(schema))
    }
}

/// The hash idempotency compares: what the request asks for, independent of how its JSON
/// was spelled (serde_json's maps are ordered, so key order does not matter).
fn body_hash(request: &CreateRobot, priority: i32) -> Vec<u8> {
    let canonical = serde_json::json!({
        "module": request.module,
        "input": request.input,
        "priority": priority,
        "timeout_s": request.timeout_s,
    });
    Sha256::digest(canonical.to_string().as_bytes()).to_vec()
}

fn event(caller: &Caller, action: &str, target: &str, client: &str) -> AuditEvent {
    AuditEvent {
        tenant: Some(caller.tenant),
        actor: caller.actor(),
        action: action.to_string(),
        target: target.to_string(),
        outcome: AuditOutcome::Allowed,
        client: client.to_string(),
    }
}

/// Whether `name` matches [`NAME_PATTERN`].
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && name.len() <= 100
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn check_name(field: &str, name: &str) -> Result<(), ServiceError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(ServiceError::invalid_field(
            format!("invalid {field} name"),
            field,
            "must be 1 to 100 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
        ))
    }
}

fn check_report_text(field: &str, text: &str) -> Result<(), ServiceError> {
    if vigia_core::longer_than(text, MAX_REPORT_CHARS) {
        return Err(ServiceError::invalid_field(
            "invalid report",
            field,
            format!("must be at most {MAX_REPORT_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Longest instance URL.
pub const MAX_URL_CHARS: usize = 2_000;

fn check_url(url: &str) -> Result<(), ServiceError> {
    let bad = |message: &str| ServiceError::invalid_field("invalid instance", "url", message);
    if vigia_core::longer_than(url, MAX_URL_CHARS) {
        return Err(bad("must be at most 2000 characters"));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("must name a host"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    Ok(())
}

fn input_error(e: InputError) -> ServiceError {
    match e {
        InputError::TooLarge { limit } => ServiceError::TooLarge(format!(
            "the input is larger than {limit} bytes (robots.max_input_bytes)"
        )),
        InputError::Invalid(violations) => ServiceError::Invalid {
            detail: "the input is refused".into(),
            errors: violations
                .into_iter()
                .map(|v| {
                    let pointer = if v.pointer.is_empty() {
                        "/".to_string()
                    } else {
                        v.pointer
                    };
                    vigia_core::FieldError::new(pointer, v.message)
                })
                .collect(),
        },
    }
}

/// Maps the port's errors to the service's.
pub fn robot_error(e: RobotError) -> ServiceError {
    match e {
        RobotError::Store(e) => ServiceError::Store(e),
        RobotError::IdempotencyMismatch { robot } => ServiceError::invalid_field(
            format!("idempotency key already used for another request (robot {robot})"),
            "idempotency_key",
            "was used with another body; use a new key for a new request",
        ),
        e @ (RobotError::Stale { .. }
        | RobotError::Finished { .. }
        | RobotError::NotDead { .. }) => ServiceError::Conflict(e.to_string()),
        RobotError::Invalid { field, message } => {
            ServiceError::invalid_field(format!("{field}: {message}"), field, message)
        }
    }
}

fn robot_not_found(id: RobotId) -> impl FnOnce(RobotError) -> ServiceError {
    move |e| match e {
        RobotError::Store(StoreError::NotFound) => {
            ServiceError::NotFound(format!("no robot {id} in this tenant"))
        }
        other => robot_error(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_pattern() {
        for good in [
            "echo",
            "ocr",
            "a",
            "mail-watch",
            "w1.example_2",
            &"a".repeat(100),
        ] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "ñ",
            "a/b",
            &"a".repeat(101),
            "a\u{7}",
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_body_hash_ignores_key_order_but_not_values() {
        let request = |input: &str| CreateRobot {
            module: "echo".into(),
            input: serde_json::from_str(input).unwrap(),
            priority: None,
            idempotency_key: Some("k".into()),
            timeout_s: None,
        };
        assert_eq!(
            body_hash(&request(r#"{"a":1,"b":2}"#), 0),
            body_hash(&request(r#"{"b":2,"a":1}"#), 0)
        );
        assert_ne!(
            body_hash(&request(r#"{"a":1}"#), 0),
            body_hash(&request(r#"{"a":2}"#), 0)
        );
        assert_ne!(
            body_hash(&request(r#"{"a":1}"#), 0),
            body_hash(&request(r#"{"a":1}"#), 1)
        );
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        for good in ["http://127.0.0.1:9000/run", "https://ocr.example"] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in ["ftp://x", "http://", "http:///x", "http://a b", "x"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
