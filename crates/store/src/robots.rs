//! The robots port: robots, their attempts (executions), modules and module instances —
//! the state a robots orchestrator shares between its processes.
//!
//! # Claims and dispatch order
//!
//! [`RobotRepo::claim`] takes up to `limit` claimable robots (`queued` or
//! `waiting_for_module`, `not_before` reached) for one worker, starts their next attempt
//! under a lease and records the execution, all in one transaction. Backends with several
//! writers lock with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never take one robot
//! twice and never wait on each other's rows.
//!
//! The order is priority first (higher first); within one priority, tenants take turns:
//! every tenant's oldest robot comes before any tenant's second one (round-robin by rank
//! within the tenant), and among equal ranks the tenant served longest ago goes first
//! (each claim stamps the tenants it served in `robot_turns`), then the oldest robot. So a
//! tenant with 10,000 queued robots cannot starve another's single robot, even when
//! claims take one robot at a time. Whether a module has capacity is the orchestrator's
//! call, not the store's.
//!
//! # Fencing
//!
//! A robot's `attempt` counts the attempts started and is the fencing token: progress and
//! the end of an attempt are accepted only for the live attempt of a running robot.
//! Another attempt's report is [`RobotError::Stale`] and one for a finished robot is
//! [`RobotError::Finished`]; both are recorded (the reported attempt's execution counts
//! its `stale_reports`) in the same transaction that refuses them. Reports are addressed
//! by robot id and attempt, not by tenant: the worker of another tenant's module instance
//! reports them, and the attempt is what proves the right to.
//!
//! # Idempotent creates
//!
//! A create with an idempotency key stores the key with a hash of the request body
//! (computed by the caller). The same key in the same tenant with the same hash returns
//! the original robot (`created: false`); with another hash it is
//! [`RobotError::IdempotencyMismatch`]. Keys of different tenants never meet.
//!
//! # Limits
//!
//! Step messages are cut to [`MAX_STEP_CHARS`] characters, errors to [`MAX_ERROR_CHARS`]
//! (a worker cannot grow a row without bound; the cut is marked with `…`). A claim takes
//! at most [`MAX_CLAIM`] robots, a list page at most [`MAX_PAGE`], a sweep or cleanup
//! whatever `limit`/`chunk` says (at most [`MAX_CLAIM`] per call).

use async_trait::async_trait;
use vigia_core::{
    Execution, ExecutionStatus, Module, ModuleInstance, Robot, RobotId, RobotStatus, TenantId,
    Timestamp,
};

use crate::StoreError;

pub(crate) mod rows;

/// Most robots one claim, sweep or cleanup call handles.
pub const MAX_CLAIM: usize = 1_000;
/// Most robots one list page returns.
pub const MAX_PAGE: usize = 1_000;
/// Longest step message kept, in characters.
pub const MAX_STEP_CHARS: usize = 500;
/// Longest error kept, in characters.
pub const MAX_ERROR_CHARS: usize = 4_000;
/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;
/// Longest module or instance name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// Why a robots operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RobotError {
    /// The store failed (or the robot does not exist in this tenant: `NotFound`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The idempotency key was used in this tenant for a request with another body (422).
    #[error("idempotency key already used for another request (robot {robot})")]
    IdempotencyMismatch { robot: RobotId },
    /// The report's attempt is not the live one (409, recorded). `live` is the running
    /// attempt, if the robot runs.
    #[error("attempt is stale (live attempt: {live:?})")]
    Stale { live: Option<u32> },
    /// The robot is finished; nothing changes it any more (409).
    #[error("robot is already {status}")]
    Finished { status: RobotStatus },
    /// Only a dead robot can be retried (409).
    #[error("robot is {status}, not dead")]
    NotDead { status: RobotStatus },
    /// A value the store refuses, naming its field (422).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

pub type RobotResult<T> = Result<T, RobotError>;

/// An idempotency key with the hash of the body it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    /// A hash of the request body (the caller's choice, e.g. SHA-256).
    pub body_hash: Vec<u8>,
}

/// A robot to create, `queued` and claimable at once.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRobot {
    pub tenant: TenantId,
    pub module: String,
    pub input: serde_json::Value,
    pub priority: i32,
    pub timeout_s: Option<u32>,
    pub idempotency: Option<Idempotency>,
}

/// What [`RobotRepo::create`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub robot: Robot,
    /// False when an idempotent repeat returned the original robot.
    pub created: bool,
}

/// Which robots of a tenant to list: newest first, keyset paged like alerts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RobotFilter {
    pub status: Option<RobotStatus>,
    pub module: Option<String>,
    /// At most this many (capped at [`MAX_PAGE`]).
    pub limit: usize,
    /// Only robots older than this one (ids grow with time): the next page after it.
    pub before: Option<RobotId>,
}

/// A claim: up to `limit` robots for `worker`, leased until `lease_until`.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub worker: String,
    /// At most this many (capped at [`MAX_CLAIM`]).
    pub limit: usize,
    /// Robots whose `not_before` is after this wait.
    pub now: Timestamp,
    pub lease_until: Timestamp,
}

/// A heartbeat of the live attempt, optionally with progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub robot: RobotId,
    pub attempt: u32,
    /// 0–100; `None` for a bare heartbeat (the stall clock keeps running).
    pub progress: Option<u8>,
    /// The step message (kept when `None`).
    pub step: Option<String>,
    pub now: Timestamp,
    /// The lease runs until then, or later if it already did.
    pub lease_until: Timestamp,
}

/// How an attempt ends, and what becomes of its robot.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptEnd {
    /// Succeeded with this result: the robot is `succeeded`.
    Succeeded { result: serde_json::Value },
    /// Failed for good: the robot is `failed`.
    Failed { error: String },
    /// Ran past its timeout: the robot is `timed_out`.
    TimedOut { error: String },
    /// Stopped on a caller's request: the robot is `cancelled`.
    Cancelled,
    /// Failed, retried later: the robot is `queued` from `not_before` on.
    Retry {
        error: String,
        not_before: Timestamp,
    },
    /// Failed with every attempt spent: the robot is `dead`.
    Dead { error: String },
    /// Never ran, no instance could take it: the robot is `waiting_for_module` until
    /// `not_before`.
    WaitForModule { not_before: Timestamp },
}

impl AttemptEnd {
    /// The robot's status and the execution's status after it.
    pub fn statuses(&self) -> (RobotStatus, ExecutionStatus) {
        match self {
            AttemptEnd::Succeeded { .. } => (RobotStatus::Succeeded, ExecutionStatus::Succeeded),
            AttemptEnd::Failed { .. } => (RobotStatus::Failed, ExecutionStatus::Failed),
            AttemptEnd::TimedOut { .. } => (RobotStatus::TimedOut, ExecutionStatus::TimedOut),
            AttemptEnd::Cancelled => (RobotStatus::Cancelled, ExecutionStatus::Cancelled),
            AttemptEnd::Retry { .. } => (RobotStatus::Queued, ExecutionStatus::Failed),
            AttemptEnd::Dead { .. } => (RobotStatus::Dead, ExecutionStatus::Failed),
            AttemptEnd::WaitForModule { .. } => {
                (RobotStatus::WaitingForModule, ExecutionStatus::Abandoned)
            }
        }
    }

    /// The error it carries, cut to [`MAX_ERROR_CHARS`].
    pub fn error(&self) -> Option<String> {
        match self {
            AttemptEnd::Failed { error }
            | AttemptEnd::TimedOut { error }
            | AttemptEnd::Retry { error, .. }
            | AttemptEnd::Dead { error } => Some(truncate(error, MAX_ERROR_CHARS)),
            _ => None,
        }
    }

    /// When the robot may be claimed again, for the ends that re-queue it.
    pub fn not_before(&self) -> Option<Timestamp> {
        match self {
            AttemptEnd::Retry { not_before, .. } | AttemptEnd::WaitForModule { not_before } => {
                Some(*not_before)
            }
            _ => None,
        }
    }

    /// The result of a success.
    pub fn result(&self) -> Option<&serde_json::Value> {
        match self {
            AttemptEnd::Succeeded { result } => Some(result),
            _ => None,
        }
    }
}

/// Robots, executions, modules and instances.
#[async_trait]
pub trait RobotRepo: Send + Sync {
    /// Creates a queued robot at `at` (durable when this returns), or returns the original
    /// of an idempotent repeat. Errors: `IdempotencyMismatch`, `Invalid` (module name,
    /// key length).
    async fn create(&self, robot: &NewRobot, at: Timestamp) -> RobotResult<Created>;
    /// The tenant's robot; `NotFound` for another tenant's or an unknown one.
    async fn get(&self, tenant: TenantId, id: RobotId) -> RobotResult<Robot>;
    /// The tenant's robots, newest first.
    async fn list(&self, tenant: TenantId, filter: &RobotFilter) -> RobotResult<Vec<Robot>>;
    /// Claims robots in dispatch order (module docs), each now `running` with its next
    /// attempt, leased to `claim.worker`; returns them in that order.
    async fn claim(&self, claim: &Claim) -> RobotResult<Vec<Robot>>;
    /// Extends the live attempt's lease, with progress if given; returns the robot (a
    /// worker sees `cancel_requested_at` in it). `Stale`/`Finished` are recorded.
    async fn heartbeat(&self, beat: &Heartbeat) -> RobotResult<Robot>;
    /// Ends the live attempt at `now` as `end` says. `Stale`/`Finished` are recorded.
    async fn finish(
        &self,
        robot: RobotId,
        attempt: u32,
        end: &AttemptEnd,
        now: Timestamp,
    ) -> RobotResult<Robot>;
    /// A caller's cancel: a queued or waiting robot is `cancelled` at once; a running one
    /// gets `cancel_requested_at` (kept from the first request), for its worker to see
    /// and the orchestrator to enforce. `Finished` for a finished robot.
    async fn cancel(&self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot>;
    /// Re-queues a dead robot, claimable at once (its attempt count goes on, so old
    /// attempts stay stale). `NotDead` for any other status.
    async fn retry(&self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot>;
    /// Ends up to `limit` running attempts whose lease expired by `now` as `expired`:
    /// a robot with a cancel request becomes `cancelled`, one whose attempt was its
    /// `max_attempts`-th becomes `dead`, the others are `queued` again at once. Returns
    /// the robots as changed.
    async fn sweep_expired(
        &self,
        now: Timestamp,
        max_attempts: u32,
        limit: usize,
    ) -> RobotResult<Vec<Robot>>;
    /// The tenant's robot's attempts, first first; `NotFound` like [`get`](Self::get).
    async fn executions(&self, tenant: TenantId, id: RobotId) -> RobotResult<Vec<Execution>>;
    /// Deletes at most `chunk` finished robots (terminal, `finished_at` before `before`)
    /// and their executions; returns how many robots went (the caller repeats while it
    /// returns `chunk`).
    async fn cleanup(&self, before: Timestamp, chunk: usize) -> RobotResult<u64>;

    /// Creates or replaces a module by name.
    async fn put_module(&self, module: &Module) -> RobotResult<()>;
    async fn module(&self, name: &str) -> RobotResult<Option<Module>>;
    /// Every module, by name.
    async fn modules(&self) -> RobotResult<Vec<Module>>;
    /// Creates or replaces an instance by (module, name); the module must exist
    /// (`NotFound` otherwise).
    async fn put_instance(&self, instance: &ModuleInstance) -> RobotResult<()>;
    async fn instance(&self, module: &str, name: &str) -> RobotResult<Option<ModuleInstance>>;
    /// The instances of `module`, or of every module, by (module, name).
    async fn instances(&self, module: Option<&str>) -> RobotResult<Vec<ModuleInstance>>;
}

/// `text` cut to `max` characters, the cut marked with `…`.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if !vigia_core::longer_than(text, max) {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Checks a name (module, instance): 1..=[`MAX_NAME_CHARS`] characters, no control ones.
pub(crate) fn check_name(field: &'static str, name: &str) -> RobotResult<()> {
    if name.is_empty() || vigia_core::longer_than(name, MAX_NAME_CHARS) {
        return Err(RobotError::Invalid {
            field,
            message: format!("must be 1 to {MAX_NAME_CHARS} characters"),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(RobotError::Invalid {
            field,
            message: "must not contain control characters".into(),
        });
    }
    Ok(())
}

/// Checks what a create carries before any backend sees it.
pub(crate) fn check_new(robot: &NewRobot) -> RobotResult<()> {
    check_name("module", &robot.module)?;
    if let Some(idem) = &robot.idempotency {
        if idem.key.is_empty() || vigia_core::longer_than(&idem.key, MAX_IDEMPOTENCY_KEY_CHARS) {
            return Err(RobotError::Invalid {
                field: "idempotency_key",
                message: format!("must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
            });
        }
    }
    Ok(())
}

/// Checks a heartbeat's progress.
pub(crate) fn check_heartbeat(beat: &Heartbeat) -> RobotResult<()> {
    match beat.progress {
        Some(p) if p > 100 => Err(RobotError::Invalid {
            field: "progress",
            message: "must be 0 to 100".into(),
        }),
        _ => Ok(()),
    }
}

/// Checks an instance before it is stored.
pub(crate) fn check_instance(instance: &ModuleInstance) -> RobotResult<()> {
    check_name("module", &instance.module)?;
    check_name("name", &instance.name)?;
    if !(instance.weight.is_finite() && instance.weight >= 0.0) {
        return Err(RobotError::Invalid {
            field: "weight",
            message: "must be a finite number, 0 or more".into(),
        });
    }
    if !instance.score.is_finite() {
        return Err(RobotError::Invalid {
            field: "score",
            message: "must be a finite number".into(),
        });
    }
    Ok(())
}

/// The fencing rule over a robot's stored state: `Ok` when `attempt` is live.
pub(crate) fn fence(status: RobotStatus, live_attempt: u32, attempt: u32) -> RobotResult<()> {
    if status.is_terminal() {
        return Err(RobotError::Finished { status });
    }
    let live = (status == RobotStatus::Running).then_some(live_attempt);
    if live == Some(attempt) {
        Ok(())
    } else {
        Err(RobotError::Stale { live })
    }
}

/// What a sweep does with an expired attempt: the robot's status afterwards.
pub(crate) fn swept_status(attempt: u32, cancel_requested: bool, max_attempts: u32) -> RobotStatus {
    if cancel_requested {
        RobotStatus::Cancelled
    } else if attempt >= max_attempts {
        RobotStatus::Dead
    } else {
        RobotStatus::Queued
    }
}

/// The error a swept robot carries.
pub(crate) const LEASE_EXPIRED: &str = "lease expired: no heartbeat from the worker in time";

/// The limit actually used for `asked`, under `cap` (at least 0).
pub(crate) fn capped(asked: usize, cap: usize) -> usize {
    asked.min(cap)
}

/// `asked` capped at `cap`, as SQL `LIMIT` takes it.
pub(crate) fn sql_limit(asked: usize, cap: usize) -> i64 {
    i64::try_from(capped(asked, cap)).unwrap_or(i64::MAX)
}

/// Whether the refusal must be recorded against the reported attempt.
pub(crate) fn records_stale(error: &RobotError) -> bool {
    matches!(
        error,
        RobotError::Stale { .. } | RobotError::Finished { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_and_sweeping_rules() {
        use RobotStatus::*;
        let table: &[(RobotStatus, u32, u32, &str)] = &[
            (Running, 3, 3, "ok"),
            (Running, 3, 2, "stale Some(3)"),
            (Queued, 3, 3, "stale None"),
            (WaitingForModule, 1, 1, "stale None"),
            (Succeeded, 3, 3, "finished"),
            (Dead, 3, 3, "finished"),
        ];
        for &(status, live, reported, want) in table {
            let got = match fence(status, live, reported) {
                Ok(()) => "ok".to_string(),
                Err(RobotError::Stale { live }) => format!("stale {live:?}"),
                Err(RobotError::Finished { .. }) => "finished".into(),
                Err(e) => format!("{e}"),
            };
            assert_eq!(got, want, "{status} live {live} reported {reported}");
        }
        assert_eq!(swept_status(1, false, 3), Queued);
        assert_eq!(swept_status(3, false, 3), Dead);
        assert_eq!(swept_status(1, true, 3), Cancelled);
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ñññññ", 4).chars().count(), 4);
    }
}
