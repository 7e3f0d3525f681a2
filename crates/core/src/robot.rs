//! Robots (the seed-002 jobs), their attempts, and the modules and module instances that
//! run them: plain data shared by the store, the orchestrator and the API.
//!
//! A robot moves `queued → running → succeeded | failed | cancelled | timed_out | dead`;
//! `waiting_for_module` is `queued` parked because no instance could take it, and a
//! failed attempt that will be retried goes back to `queued` with a `not_before`. The
//! attempt number counts the attempts started and is the fencing token: only the report
//! of the live attempt counts.

use serde::{Deserialize, Serialize};

use crate::{TenantId, Timestamp};

/// Identifies a robot (unique across tenants).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct RobotId(pub i64);

impl std::fmt::Display for RobotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Declares a closed set of names stored as text, with `as_str`, `parse` and `ALL` from
/// one list, so the spelling in the database and in the API cannot drift.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The name as stored and as the API spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The value called `text`, if any.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Where a robot is in its life.
    RobotStatus {
        /// Waiting to be claimed (first time, or a retry waiting for its `not_before`).
        Queued => "queued",
        /// Parked because no instance of its module could take it; claimable again from
        /// its `not_before`.
        WaitingForModule => "waiting_for_module",
        /// An attempt holds its lease.
        Running => "running",
        /// Finished well.
        Succeeded => "succeeded",
        /// Finished with a failure that retrying cannot fix.
        Failed => "failed",
        /// Cancelled by a caller.
        Cancelled => "cancelled",
        /// Ran past its `timeout_s`.
        TimedOut => "timed_out",
        /// Every attempt failed (a dead letter; a retry re-queues it).
        Dead => "dead",
    }
);

impl RobotStatus {
    /// Whether nothing may change the robot any more (but a retry of a dead one).
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            RobotStatus::Queued | RobotStatus::WaitingForModule | RobotStatus::Running
        )
    }

    /// Whether a claim may take the robot (once its `not_before` has passed).
    pub fn is_claimable(self) -> bool {
        matches!(self, RobotStatus::Queued | RobotStatus::WaitingForModule)
    }
}

text_enum!(
    /// How one attempt ended, or that it still runs.
    ExecutionStatus {
        /// The attempt holds the robot's lease.
        Running => "running",
        /// The worker completed it.
        Succeeded => "succeeded",
        /// The worker (or the orchestrator for it) reported a failure.
        Failed => "failed",
        /// It was cancelled.
        Cancelled => "cancelled",
        /// It ran past the robot's timeout.
        TimedOut => "timed_out",
        /// Its lease ran out without a heartbeat: the worker or its process died.
        Expired => "expired",
        /// It ended without running: no instance of the module could take it.
        Abandoned => "abandoned",
    }
);

text_enum!(
    /// Health as the health loop last saw an instance.
    InstanceHealth {
        /// Never probed yet.
        Unknown => "unknown",
        /// The last probe answered well.
        Healthy => "healthy",
        /// The last probe failed.
        Unhealthy => "unhealthy",
    }
);

text_enum!(
    /// An instance's circuit breaker, as shown to people and metrics.
    BreakerPosition {
        /// Calls flow.
        Closed => "closed",
        /// Calls are refused until the cool-down ends.
        Open => "open",
        /// A few probes decide.
        HalfOpen => "half_open",
    }
);

/// A robot: one job for one module, with its input and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Robot {
    pub id: RobotId,
    pub tenant: TenantId,
    /// The module that runs it (a registry name).
    pub module: String,
    /// The caller's input, already sanitised.
    pub input: serde_json::Value,
    /// Higher goes first.
    pub priority: i32,
    pub status: RobotStatus,
    /// Attempts started so far (0 before the first claim); the live attempt's number
    /// while running: the fencing token.
    pub attempt: u32,
    /// Progress of the live or last attempt, 0–100.
    pub progress: u8,
    /// The worker's last step message.
    pub step: Option<String>,
    /// What a successful attempt returned.
    pub result: Option<serde_json::Value>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// How long one attempt may run, if the caller set it.
    pub timeout_s: Option<u32>,
    /// The caller's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// Not claimed before this time (a retry's backoff).
    pub not_before: Timestamp,
    /// Who holds the live attempt (a `robots` process's worker id).
    pub worker: Option<String>,
    /// The live attempt dies at this time unless a heartbeat extends it.
    pub lease_expires_at: Option<Timestamp>,
    /// The live attempt's last progress report (or its claim).
    pub last_progress_at: Option<Timestamp>,
    /// When a caller asked to cancel the running attempt.
    pub cancel_requested_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When it reached a terminal status.
    pub finished_at: Option<Timestamp>,
}

/// One attempt of a robot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Execution {
    pub robot: RobotId,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The worker that claimed it.
    pub worker: String,
    pub status: ExecutionStatus,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Reports of this attempt refused because it was no longer live (409s), counted.
    pub stale_reports: u32,
}

/// A module: a kind of work, registered by name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Module {
    /// Unique; what a robot names.
    pub name: String,
    /// How it runs: `http` (external instances) or `in_process`.
    pub kind: String,
    /// The JSON Schema inputs must satisfy, if any.
    pub input_schema: Option<serde_json::Value>,
    pub updated_at: Timestamp,
}

/// One instance of a module (an external worker, or an in-process runner).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModuleInstance {
    pub module: String,
    /// Unique within its module.
    pub name: String,
    /// Where an `http` instance listens.
    pub url: Option<String>,
    /// The operator's weight (0 drains it).
    pub weight: f64,
    /// Calls it may run at once.
    pub capacity: u32,
    pub health: InstanceHealth,
    /// The balancer's last score.
    pub score: f64,
    pub breaker: BreakerPosition,
    /// Calls running on it now.
    pub in_flight: u32,
    /// When the health loop last probed it.
    pub checked_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_terminal_states() {
        for &status in RobotStatus::ALL {
            assert_eq!(RobotStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).expect("json");
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(
                status.is_terminal(),
                !status.is_claimable() && status != RobotStatus::Running
            );
        }
        for &status in ExecutionStatus::ALL {
            assert_eq!(ExecutionStatus::parse(status.as_str()), Some(status));
        }
        for &health in InstanceHealth::ALL {
            assert_eq!(InstanceHealth::parse(health.as_str()), Some(health));
        }
        for &breaker in BreakerPosition::ALL {
            assert_eq!(BreakerPosition::parse(breaker.as_str()), Some(breaker));
        }
        assert_eq!(RobotStatus::parse("QUEUED"), None);
        assert_eq!(RobotStatus::WaitingForModule.as_str(), "waiting_for_module");
        let terminal: Vec<_> = RobotStatus::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal.len(), 5);
    }
}
