//! The robots' decision logic (issue #18), pure: which instance takes a call, when an
//! instance is cut off and let back, when a failed robot is retried or dead, which worker
//! reports still count, and whether an input may enter at all.
//!
//! This crate does no I/O, spawns nothing and never reads a clock or an entropy source:
//! every function takes `now` as epoch milliseconds (`i64`) and, where it draws, an RNG. So
//! every rule is a data table in its tests. The orchestrator that owns time, storage and
//! the network is the crate `vigia-orchestrator` (`crates/orchestrator`), kept apart so
//! these modules stay pure and light (`vigia-services` depends on this crate for input
//! checks without pulling an HTTP client or the loop).
//!
//! # How the pieces fit the seed's flow
//!
//! ```text
//! POST /api/v1/robots ─▶ key (401) ─▶ rate limit (429) ─▶ input::sanitise (413 / 422)
//!        │                 (web layers)                   size, depth, control chars,
//!        ▼                                                module's JSON Schema
//!   store: robot queued (durable) ─▶ 202
//!        │
//!   orchestrator loop (role `robots`, several processes share the queue):
//!     claim a queued robot whose not_before has passed (lease + heartbeat, attempt += 1)
//!        ▼
//!     balancer::choose(instances, now) ── health, score ◀── cache::ScoreCache ◀── store
//!        │   skips unhealthy, full, drained and breaker-refused instances
//!        │   None ─▶ robot waits (`waiting_for_module`) or 503 + Retry-After
//!        ▼
//!     instance: POST {robot, attempt, input, callback}
//!        │
//!     worker reports progress | complete | fail carrying `attempt`
//!        ▼
//!     retry::fence(current attempt, status, reported) ─ Stale / Finished ─▶ 409, recorded
//!        │ Accept
//!        ▼
//!     Instance::finish(permit, outcome, duration) ─▶ tracker (success EWMA, latency EWMA)
//!        │                                         └▶ breaker (closed/open/half-open)
//!        ▼
//!     failure ─▶ retry::RetryPolicy::after_failure ─▶ Retry{not_before} (re-queued, holding
//!                no worker slot) | Dead (dead letter; `POST …/retry` re-queues)
//! ```
//!
//! A lease ([`lease::LeasePolicy`]) whose heartbeats stop (the worker or the `robots`
//! process died) expires, one without progress stalls; the orchestrator then treats the
//! attempt as failed (`finish` with `Failure`, or `abandon` if the call was never sent) and
//! asks the retry policy; an overdue cancel ends the robot `cancelled` instead. The next claim bumps the attempt
//! number, which is the fencing token: the old attempt's late report is `Stale`, so no robot
//! ever completes twice (execution is at least once, completion exactly once).
//!
//! # Modules
//!
//! - [`breaker`]: the per-instance circuit breaker and its permits.
//! - [`retry`]: exponential backoff with full jitter, `max_attempts`, dead letters, and the
//!   fencing rule over attempt numbers.
//! - [`tracker`]: per-instance success rate and latency (the seed's `PerformanceTracker`).
//! - [`balancer`]: the score and the choice (the seed's `LoadBalancer`).
//! - [`cache`]: health and scores with a TTL per kind (the seed's `CacheManager`).
//! - [`input`]: the seed's `SecurityValidator` input sanitisation.
//! - [`lease`]: an attempt's lease: heartbeats, expiry, stalls, cancel grace.
//!
//! # Where the rest lives
//!
//! The store port `vigia_store::robots` (robots, executions, modules, instances) defines
//! its own status and instance rows; the orchestrator (`crates/orchestrator`: the claim
//! loop, the lease sweep, the `http` and in-process `echo` modules) maps them onto
//! [`balancer::Instance`] here, so this crate depends on neither `vigia-core` nor
//! `vigia-store`. `vigia_services::robots` applies [`input`] and [`retry`] to the API's
//! requests and the workers' reports. Still to come: the health (5 min), score (15 min)
//! and cleanup (daily) jobs on the scheduler, the score cache in the dispatch path (cache
//! hits and misses are [`cache::CacheStats`]), and `[robots]` keys for the breaker and
//! balancer settings (their documented defaults apply). The orchestrator exports
//! `vigia_module_breaker_state{instance}` from [`breaker::BreakerState::gauge`].

/// A configuration value that cannot work, naming its key (`breaker.half_open_probes`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{section}.{field}: {message}")]
pub struct ConfigError {
    /// The config struct: `breaker`, `retry`, `balancer`, `cache`, `input`, `lease`.
    pub section: &'static str,
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: &'static str,
}

impl ConfigError {
    fn new(section: &'static str, field: &'static str, message: &'static str) -> Self {
        Self {
            section,
            field,
            message,
        }
    }
}

pub mod balancer;
pub mod breaker;
pub mod cache;
pub mod input;
pub mod lease;
pub mod retry;
pub mod tracker;

pub use balancer::{choose, next_available_at, BalancerConfig, Dispatch, Health, Instance};
pub use breaker::{Breaker, BreakerConfig, BreakerState, Permit, Refusal};
pub use cache::{CacheTtls, DataKind, ScoreCache};
pub use input::{sanitise, InputError, InputLimits, InputSchema, Violation};
pub use lease::{Lease, LeasePolicy, LeaseVerdict};
pub use retry::{fence, Fence, RetryDecision, RetryPolicy, RobotStatus};
pub use tracker::{InstanceStats, Outcome, TrackerConfig};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every config's `validate`, each refusal naming its key as `[robots]` config will.
    #[test]
    #[rustfmt::skip]
    fn config_errors_name_the_key() {
        type Validate = fn() -> Result<(), ConfigError>;
        let cases: &[(Validate, Option<&str>)] = &[
            (|| BreakerConfig::default().validate(), None),
            (|| BreakerConfig { failure_threshold: 0, ..Default::default() }.validate(), Some("breaker.failure_threshold: must be at least 1")),
            (|| BreakerConfig { failure_window_ms: 0, ..Default::default() }.validate(), Some("breaker.failure_window_ms: must be positive")),
            (|| BreakerConfig { cool_down_ms: -1, ..Default::default() }.validate(), Some("breaker.cool_down_ms: must be positive")),
            (|| BreakerConfig { half_open_probes: 0, ..Default::default() }.validate(), Some("breaker.half_open_probes: must be at least 1")),
            (|| BreakerConfig { probe_timeout_ms: 0, ..Default::default() }.validate(), Some("breaker.probe_timeout_ms: must be positive")),
            (|| RetryPolicy::default().validate(), None),
            (|| RetryPolicy { max_attempts: 0, ..Default::default() }.validate(), Some("retry.max_attempts: must be at least 1")),
            (|| RetryPolicy { base_delay_ms: 10, max_delay_ms: 9, ..Default::default() }.validate(), Some("retry.max_delay_ms: must be at least base_delay_ms")),
            (|| BalancerConfig::default().validate(), None),
            (|| BalancerConfig { latency_reference_ms: 0.0, ..Default::default() }.validate(), Some("balancer.latency_reference_ms: must be a positive number")),
            (|| BalancerConfig { latency_reference_ms: f64::NAN, ..Default::default() }.validate(), Some("balancer.latency_reference_ms: must be a positive number")),
            (|| BalancerConfig { tracker: TrackerConfig { success_alpha: 0.0, ..Default::default() }, ..Default::default() }.validate(), Some("balancer.success_alpha: must be in (0, 1]")),
            (|| BalancerConfig { tracker: TrackerConfig { success_alpha: 1.0, ..Default::default() }, ..Default::default() }.validate(), None),
            (|| BalancerConfig { tracker: TrackerConfig { latency_alpha: 1.5, ..Default::default() }, ..Default::default() }.validate(), Some("balancer.latency_alpha: must be in (0, 1]")),
            (|| BalancerConfig { tracker: TrackerConfig { recovery_half_life_ms: 0, ..Default::default() }, ..Default::default() }.validate(), Some("balancer.recovery_half_life_ms: must be positive")),
            (|| CacheTtls::default().validate(), None),
            (|| CacheTtls { health_ms: 0, ..Default::default() }.validate(), Some("cache.health_ms: must be positive")),
            (|| CacheTtls { score_ms: -1, ..Default::default() }.validate(), Some("cache.score_ms: must be positive")),
            (|| InputLimits::default().validate(), None),
            (|| InputLimits { max_bytes: 0, ..Default::default() }.validate(), Some("input.max_bytes: must be positive")),
            (|| InputLimits { max_depth: 0, ..Default::default() }.validate(), Some("input.max_depth: must be at least 1")),
            (|| LeasePolicy::default().validate(), None),
            (|| LeasePolicy { lease_ms: 0, ..Default::default() }.validate(), Some("lease.lease_ms: must be positive")),
            (|| LeasePolicy { stall_timeout_ms: -5, ..Default::default() }.validate(), Some("lease.stall_timeout_ms: must be positive")),
            (|| LeasePolicy { cancel_grace_ms: 0, ..Default::default() }.validate(), Some("lease.cancel_grace_ms: must be positive")),
        ];
        for (index, (validate, expected)) in cases.iter().enumerate() {
            let message = validate().err().map(|e| e.to_string());
            assert_eq!(message.as_deref(), *expected, "case {index}");
        }
    }
}
