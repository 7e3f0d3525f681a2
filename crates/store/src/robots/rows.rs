//! Rows of the robots tables → domain types, once for every SQL backend: each backend
//! reads a column through [`Columns`], the mapping and its checks live here.

use vigia_core::{
    BreakerPosition, Execution, ExecutionStatus, InstanceHealth, Module, ModuleInstance, Robot,
    RobotId, RobotStatus, TenantId, Timestamp,
};

use crate::{StoreError, StoreResult};

/// The columns of `robots` every robot read selects, in this order.
pub(crate) const ROBOT_COLUMNS: &str = "id, tenant_id, module, input, priority, status, attempt, \
     progress, step, result, error, timeout_s, idempotency_key, not_before, worker, \
     lease_expires_at, last_progress_at, cancel_requested_at, created_at, updated_at, finished_at";

/// The columns of `robot_executions`, in this order.
pub(crate) const EXECUTION_COLUMNS: &str =
    "robot_id, attempt, worker, status, started_at, ended_at, error, stale_reports";

/// The columns of `modules`.
pub(crate) const MODULE_COLUMNS: &str = "name, kind, input_schema, updated_at";

/// The columns of `module_instances`.
pub(crate) const INSTANCE_COLUMNS: &str = "module, name, url, weight, capacity, health, score, \
     breaker, in_flight, checked_at, updated_at";

/// One row as a backend reads it: every integer column is a 64-bit integer, text is
/// text, reals are doubles; `None` for NULL.
pub(crate) trait Columns {
    fn int(&self, name: &str) -> StoreResult<Option<i64>>;
    fn text(&self, name: &str) -> StoreResult<Option<String>>;
    fn float(&self, name: &str) -> StoreResult<Option<f64>>;
}

fn corrupt(name: &str, what: &str) -> StoreError {
    StoreError::Internal(format!("robots table column `{name}`: {what}"))
}

fn required<T>(value: Option<T>, name: &str) -> StoreResult<T> {
    value.ok_or_else(|| corrupt(name, "NULL where a value is required"))
}

fn int(row: &impl Columns, name: &str) -> StoreResult<i64> {
    required(row.int(name)?, name)
}

fn text(row: &impl Columns, name: &str) -> StoreResult<String> {
    required(row.text(name)?, name)
}

fn narrow<T: TryFrom<i64>>(value: i64, name: &str) -> StoreResult<T> {
    T::try_from(value).map_err(|_| corrupt(name, "out of range"))
}

fn time(row: &impl Columns, name: &str) -> StoreResult<Timestamp> {
    int(row, name).map(Timestamp)
}

fn opt_time(row: &impl Columns, name: &str) -> StoreResult<Option<Timestamp>> {
    Ok(row.int(name)?.map(Timestamp))
}

fn json(value: String, name: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(&value).map_err(|e| corrupt(name, &format!("not JSON: {e}")))
}

fn opt_json(row: &impl Columns, name: &str) -> StoreResult<Option<serde_json::Value>> {
    row.text(name)?.map(|v| json(v, name)).transpose()
}

fn parsed<T>(row: &impl Columns, name: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
    let value = text(row, name)?;
    parse(&value).ok_or_else(|| corrupt(name, &format!("unknown value `{value}`")))
}

/// JSON as stored.
pub(crate) fn json_text(value: &serde_json::Value) -> String {
    value.to_string()
}

pub(crate) fn robot_from(row: &impl Columns) -> StoreResult<Robot> {
    Ok(Robot {
        id: RobotId(int(row, "id")?),
        tenant: TenantId(int(row, "tenant_id")?),
        module: text(row, "module")?,
        input: json(text(row, "input")?, "input")?,
        priority: narrow(int(row, "priority")?, "priority")?,
        status: parsed(row, "status", RobotStatus::parse)?,
        attempt: narrow(int(row, "attempt")?, "attempt")?,
        progress: narrow(int(row, "progress")?, "progress")?,
        step: row.text("step")?,
        result: opt_json(row, "result")?,
        error: row.text("error")?,
        timeout_s: row
            .int("timeout_s")?
            .map(|t| narrow(t, "timeout_s"))
            .transpose()?,
        idempotency_key: row.text("idempotency_key")?,
        not_before: time(row, "not_before")?,
        worker: row.text("worker")?,
        lease_expires_at: opt_time(row, "lease_expires_at")?,
        last_progress_at: opt_time(row, "last_progress_at")?,
        cancel_requested_at: opt_time(row, "cancel_requested_at")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        finished_at: opt_time(row, "finished_at")?,
    })
}

pub(crate) fn execution_from(row: &impl Columns) -> StoreResult<Execution> {
    Ok(Execution {
        robot: RobotId(int(row, "robot_id")?),
        attempt: narrow(int(row, "attempt")?, "attempt")?,
        worker: text(row, "worker")?,
        status: parsed(row, "status", ExecutionStatus::parse)?,
        started_at: time(row, "started_at")?,
        ended_at: opt_time(row, "ended_at")?,
        error: row.text("error")?,
        stale_reports: narrow(int(row, "stale_reports")?, "stale_reports")?,
    })
}

pub(crate) fn module_from(row: &impl Columns) -> StoreResult<Module> {
    Ok(Module {
        name: text(row, "name")?,
        kind: text(row, "kind")?,
        input_schema: opt_json(row, "input_schema")?,
        updated_at: time(row, "updated_at")?,
    })
}

pub(crate) fn instance_from(row: &impl Columns) -> StoreResult<ModuleInstance> {
    Ok(ModuleInstance {
        module: text(row, "module")?,
        name: text(row, "name")?,
        url: row.text("url")?,
        weight: required(row.float("weight")?, "weight")?,
        capacity: narrow(int(row, "capacity")?, "capacity")?,
        health: parsed(row, "health", InstanceHealth::parse)?,
        score: required(row.float("score")?, "score")?,
        breaker: parsed(row, "breaker", BreakerPosition::parse)?,
        in_flight: narrow(int(row, "in_flight")?, "in_flight")?,
        checked_at: opt_time(row, "checked_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

/// The values a robot's row gets when an attempt ends (or a robot that never ran is
/// cancelled): status, error (kept when `None`), `not_before` (kept when `None`), and
/// `finished_at` for a terminal status. Worker, lease and cancel request are cleared.
#[derive(Debug, Clone)]
pub(crate) struct EndRow {
    pub status: &'static str,
    pub error: Option<String>,
    pub not_before: Option<i64>,
    pub finished_at: Option<i64>,
    pub result: Option<String>,
    pub now: i64,
}

impl EndRow {
    pub(crate) fn new(
        status: RobotStatus,
        error: Option<String>,
        not_before: Option<Timestamp>,
        result: Option<&serde_json::Value>,
        now: Timestamp,
    ) -> EndRow {
        EndRow {
            status: status.as_str(),
            error,
            not_before: not_before.map(|t| t.0),
            finished_at: status.is_terminal().then_some(now.0),
            result: result.map(json_text),
            now: now.0,
        }
    }
}
