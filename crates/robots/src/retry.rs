//! What happens after an attempt fails (retry later or dead-letter), and which reports of an
//! attempt still count (the attempt number as a fencing token).
//!
//! # Backoff: full jitter, computed here rather than by `backon`
//!
//! The delay before retry number `n` (0 for the first retry, i.e. after attempt 1 failed) is
//! drawn uniformly from `0 ..= min(cap, base · 2ⁿ)` ("full jitter"). `backon`'s
//! `ExponentialBuilder` was checked (1.6) and not used: its jitter *adds* `rand(0, delay)` to
//! the delay (so a capped delay can reach twice the cap, and retries still cluster above
//! `delay`), its RNG is a `fastrand` it owns (only a seed can be given, not an RNG), and it is
//! an iterator that must be replayed from attempt 1, whereas the orchestrator knows only the
//! attempt number it read from the store. The formula is three lines; the RNG is passed in,
//! so tests are deterministic.
//!
//! A waiting retry is a `not_before` time on the queued robot, not a sleeping task: it holds
//! no worker slot.

use rand::Rng;

use crate::ConfigError;

/// How often and how patiently a robot is retried. Times are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; after the last one fails the robot is dead.
    /// Default 5.
    pub max_attempts: u32,
    /// The ceiling of the first retry's delay, in ms. Default 1,000.
    pub base_delay_ms: u64,
    /// No delay ever exceeds this, in ms. Default 300,000 (five minutes).
    pub max_delay_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay_ms: 1_000,
            max_delay_ms: 300_000,
        }
    }
}

/// What to do with a robot whose attempt just failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Queue it again; it may be claimed from `not_before` (ms) on.
    Retry {
        /// Earliest claim time, `now + delay_ms`.
        not_before: i64,
        /// The drawn delay, for logs and metrics.
        delay_ms: u64,
    },
    /// Every attempt is spent: dead-letter it (`POST …/retry` re-queues it by hand).
    Dead,
}

impl RetryPolicy {
    /// Checks that the policy can work: at least one attempt, a cap no smaller than the base.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::new(
                "retry",
                "max_attempts",
                "must be at least 1",
            ));
        }
        if self.max_delay_ms < self.base_delay_ms {
            return Err(ConfigError::new(
                "retry",
                "max_delay_ms",
                "must be at least base_delay_ms",
            ));
        }
        Ok(())
    }

    /// The largest delay retry number `retry` (0-based) can draw: `min(cap, base · 2^retry)`,
    /// saturating instead of overflowing.
    pub fn delay_ceiling_ms(&self, retry: u32) -> u64 {
        let factor = 1u64.checked_shl(retry).unwrap_or(u64::MAX);
        self.base_delay_ms
            .saturating_mul(factor)
            .min(self.max_delay_ms)
    }

    /// Decides after attempt `failed_attempt` (1-based) failed at `now` (ms): dead once
    /// `max_attempts` attempts have run, otherwise a retry after a delay drawn with `rng`.
    pub fn after_failure<R: Rng + ?Sized>(
        &self,
        failed_attempt: u32,
        now: i64,
        rng: &mut R,
    ) -> RetryDecision {
        if failed_attempt >= self.max_attempts {
            return RetryDecision::Dead;
        }
        let ceiling = self.delay_ceiling_ms(failed_attempt.saturating_sub(1));
        let delay_ms = rng.random_range(0..=ceiling);
        RetryDecision::Retry {
            not_before: now.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX)),
            delay_ms,
        }
    }
}

/// A robot's status, as far as these rules need it. The store port defines its own; the
/// orchestrator maps one onto the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RobotStatus {
    /// Waiting to be claimed (first time, or a retry waiting for its `not_before`).
    Queued,
    /// Waiting because no instance of its module can take it.
    WaitingForModule,
    /// An attempt holds its lease.
    Running,
    /// Finished well.
    Succeeded,
    /// Finished with a failure that retrying cannot fix.
    Failed,
    /// Cancelled by a caller.
    Cancelled,
    /// Ran past its `timeout_s`.
    TimedOut,
    /// Every attempt failed.
    Dead,
}

impl RobotStatus {
    /// Whether the robot is finished: nothing may change it any more, but a `retry` of a
    /// dead one.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RobotStatus::Succeeded
                | RobotStatus::Failed
                | RobotStatus::Cancelled
                | RobotStatus::TimedOut
                | RobotStatus::Dead
        )
    }
}

/// Whether a worker's report (progress, complete, fail) carrying an attempt number counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// The report belongs to the live attempt: apply it.
    Accept,
    /// The attempt is not the live one (superseded after its lease expired, or never
    /// existed): refuse with 409 and record it. `live` is the current attempt, if one runs.
    Stale {
        /// The attempt that is live now, if the robot is running.
        live: Option<u32>,
    },
    /// The robot is already finished: refuse with 409 (completion happens exactly once).
    Finished {
        /// The status it finished with.
        status: RobotStatus,
    },
}

/// The fencing rule. `current_attempt` is the robot's attempt counter in the store (the
/// attempt last started), `status` its status, `reported_attempt` what the worker sent.
/// Only a running robot has a live attempt; a report for any other number, or for a robot
/// that is queued again (its attempt lost its lease), is stale.
pub fn fence(current_attempt: u32, status: RobotStatus, reported_attempt: u32) -> Fence {
    if status.is_terminal() {
        return Fence::Finished { status };
    }
    let live = (status == RobotStatus::Running).then_some(current_attempt);
    if live == Some(reported_attempt) {
        Fence::Accept
    } else {
        Fence::Stale { live }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay_ms: 1_000,
            max_delay_ms: 5_000,
        }
    }

    #[test]
    fn ceilings_double_then_cap() {
        let table = [
            (0, 1_000),
            (1, 2_000),
            (2, 4_000),
            (3, 5_000),
            (10, 5_000),
            (63, 5_000),
            (64, 5_000),
            (u32::MAX, 5_000),
        ];
        for (retry, ceiling) in table {
            assert_eq!(policy().delay_ceiling_ms(retry), ceiling, "retry {retry}");
        }
        let uncapped = RetryPolicy {
            max_delay_ms: u64::MAX,
            ..policy()
        };
        assert_eq!(uncapped.delay_ceiling_ms(80), u64::MAX, "saturates");
    }

    #[test]
    fn dead_after_max_attempts() {
        let mut rng = StdRng::seed_from_u64(7);
        let table = [
            (1, false),
            (2, false),
            (3, false),
            (4, true),
            (5, true),
            (u32::MAX, true),
        ];
        for (failed_attempt, dead) in table {
            let decision = policy().after_failure(failed_attempt, 10_000, &mut rng);
            assert_eq!(
                decision == RetryDecision::Dead,
                dead,
                "attempt {failed_attempt}"
            );
        }
        let once = RetryPolicy {
            max_attempts: 1,
            ..policy()
        };
        assert_eq!(once.after_failure(1, 0, &mut rng), RetryDecision::Dead);
    }

    #[test]
    fn jitter_spreads_over_the_whole_range() {
        // Full jitter, not "delay + jitter": over many draws both ends of 0..=ceiling appear.
        let mut rng = StdRng::seed_from_u64(42);
        let delays: Vec<u64> = (0..2_000)
            .map(|_| match policy().after_failure(2, 0, &mut rng) {
                RetryDecision::Retry { delay_ms, .. } => delay_ms,
                RetryDecision::Dead => unreachable!("attempt 2 of 4 is retried"),
            })
            .collect();
        assert!(delays.iter().all(|&d| d <= 2_000));
        assert!(delays.iter().any(|&d| d < 200), "low end drawn");
        assert!(delays.iter().any(|&d| d > 1_800), "high end drawn");
    }

    proptest! {
        #[test]
        fn delay_is_bounded_by_ceiling_and_cap(
            max_attempts in 1u32..20,
            base in 0u64..100_000,
            cap in 0u64..10_000_000,
            failed_attempt in 1u32..40,
            now in 0i64..4_000_000_000_000,
            seed in any::<u64>(),
        ) {
            let policy = RetryPolicy { max_attempts, base_delay_ms: base, max_delay_ms: cap };
            let mut rng = StdRng::seed_from_u64(seed);
            match policy.after_failure(failed_attempt, now, &mut rng) {
                RetryDecision::Retry { not_before, delay_ms } => {
                    prop_assert!(failed_attempt < max_attempts);
                    prop_assert!(delay_ms <= cap);
                    prop_assert!(delay_ms <= policy.delay_ceiling_ms(failed_attempt - 1));
                    prop_assert_eq!(not_before, now + delay_ms as i64);
                }
                RetryDecision::Dead => prop_assert!(failed_attempt >= max_attempts),
            }
        }

        /// Retrying until dead runs exactly `max_attempts` attempts, never more.
        #[test]
        fn attempts_never_exceed_max(max_attempts in 1u32..30, seed in any::<u64>()) {
            let policy = RetryPolicy { max_attempts, ..RetryPolicy::default() };
            let mut rng = StdRng::seed_from_u64(seed);
            let mut attempt = 1;
            let mut now = 0;
            while let RetryDecision::Retry { not_before, .. } =
                policy.after_failure(attempt, now, &mut rng)
            {
                prop_assert!(not_before >= now);
                now = not_before;
                attempt += 1;
            }
            prop_assert_eq!(attempt, max_attempts);
        }
    }

    #[test]
    fn fencing() {
        use RobotStatus::*;
        let table = [
            // (current attempt, status, reported attempt) → verdict
            (3, Running, 3, Fence::Accept),
            (3, Running, 2, Fence::Stale { live: Some(3) }),
            (3, Running, 1, Fence::Stale { live: Some(3) }),
            (3, Running, 4, Fence::Stale { live: Some(3) }),
            (3, Running, 0, Fence::Stale { live: Some(3) }),
            // Attempt 3 lost its lease and the robot waits for attempt 4: 3 is no longer live.
            (3, Queued, 3, Fence::Stale { live: None }),
            (3, WaitingForModule, 3, Fence::Stale { live: None }),
            (0, Queued, 1, Fence::Stale { live: None }),
            (3, Succeeded, 3, Fence::Finished { status: Succeeded }),
            (3, Succeeded, 2, Fence::Finished { status: Succeeded }),
            (2, Failed, 2, Fence::Finished { status: Failed }),
            (2, Cancelled, 2, Fence::Finished { status: Cancelled }),
            (2, TimedOut, 2, Fence::Finished { status: TimedOut }),
            (5, Dead, 5, Fence::Finished { status: Dead }),
        ];
        for (current, status, reported, verdict) in table {
            assert_eq!(
                fence(current, status, reported),
                verdict,
                "current {current}, {status:?}, reported {reported}"
            );
        }
    }
}
