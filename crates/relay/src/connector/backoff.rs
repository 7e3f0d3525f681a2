//! Reconnection delays: exponential backoff with full jitter (AWS's "full jitter": a delay
//! drawn uniformly from zero to the capped exponential), honouring a router's retry-after.
//!
//! Full jitter is what keeps a router restart from becoming a reconnect storm: hundreds of
//! connectors dropped at the same instant spread their attempts over the whole window
//! instead of arriving together at each step. A router-sent retry-after is a floor — no
//! attempt before it — and the jitter is added on top over a window at least as wide as the
//! retry-after itself, so a restarting router asking everyone for "10 s" sees them arrive
//! spread over 10–20 s rather than all at 10 s.

use std::time::Duration;

use rand::Rng;

/// The backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The window of the first retry.
    pub base: Duration,
    /// The largest window (60 s).
    pub cap: Duration,
    /// The longest retry-after honoured; a larger one is clamped (a router bug must not
    /// park connectors for days).
    pub max_retry_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(600),
        }
    }
}

impl BackoffPolicy {
    /// The jitter window of retry number `attempt` (0 for the first): `base · 2^attempt`,
    /// at most `cap`.
    pub fn window(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry `attempt`, given `unit`, a uniform draw in `[0, 1)`, and the
    /// router's `retry_after` if it sent one. Pure, for tests.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        let window = self.window(attempt);
        match retry_after {
            None => window.mul_f64(unit),
            Some(after) => {
                let after = after.min(self.max_retry_after);
                after + window.max(after).min(self.cap.max(after)).mul_f64(unit)
            }
        }
    }
}

/// The retry counter of one connector.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self { policy, attempt: 0 }
    }

    /// The delay before the next attempt; each call widens the window.
    pub fn next_delay(&mut self, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let delay = self
            .policy
            .delay(self.attempt, retry_after, rng.random::<f64>());
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// After a session was accepted: the next failure starts from the smallest window.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Retries since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn windows_double_up_to_the_cap() {
        let policy = BackoffPolicy::default();
        let windows: Vec<u64> = (0..10).map(|a| policy.window(a).as_secs()).collect();
        assert_eq!(windows, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert_eq!(policy.window(u32::MAX), 60 * SECOND);
    }

    #[test]
    fn delays_as_data() {
        let policy = BackoffPolicy::default();
        let ms = |d: Duration| d.as_millis() as u64;
        let cases: &[(u32, Option<u64>, f64, u64)] = &[
            // (attempt, retry_after s, unit, expected ms)
            (0, None, 0.0, 0),
            (0, None, 0.5, 500),
            (3, None, 0.25, 2_000),
            (20, None, 0.999, 59_940),
            (0, Some(10), 0.0, 10_000),
            (0, Some(10), 0.5, 15_000),
            (7, Some(10), 0.5, 40_000),
            (7, Some(120), 0.5, 180_000),
            (0, Some(100_000), 0.0, 600_000),
            (0, None, 7.0, 1_000),
        ];
        for &(attempt, after, unit, expected) in cases {
            let got = policy.delay(attempt, after.map(Duration::from_secs), unit);
            assert_eq!(
                ms(got),
                expected,
                "attempt {attempt}, retry-after {after:?}, unit {unit}"
            );
        }
    }

    /// 200 connectors dropped at once: their first retries cover the window evenly instead
    /// of landing together, with or without a retry-after; none waits past the cap.
    #[test]
    fn a_restart_spreads_reconnections_over_the_window() {
        let policy = BackoffPolicy::default();
        let mut rng = StdRng::seed_from_u64(17);
        for (retry_after, low, high) in [(None, 0.0, 1.0), (Some(10 * SECOND), 10.0, 20.0)] {
            let delays: Vec<f64> = (0..200)
                .map(|_| {
                    Backoff::new(policy)
                        .next_delay(retry_after, &mut rng)
                        .as_secs_f64()
                })
                .collect();
            assert!(delays.iter().all(|d| (low..high).contains(d)), "{delays:?}");
            let mut buckets = [0usize; 10];
            for d in &delays {
                buckets[((d - low) / (high - low) * 10.0) as usize] += 1;
            }
            // Uniform would put 20 in each tenth; none empty or holding a crowd.
            assert!(
                buckets.iter().all(|&n| (6..=40).contains(&n)),
                "{buckets:?}"
            );
        }
        // Later attempts never exceed the cap, and keep spreading.
        let mut backoff = Backoff::new(policy);
        let late: Vec<Duration> = (0..50)
            .map(|_| backoff.next_delay(None, &mut rng))
            .collect();
        assert!(late.iter().all(|d| *d < 60 * SECOND));
        assert!(late[10..].iter().any(|d| *d > 30 * SECOND));
        assert_eq!(backoff.attempt(), 50);
        backoff.reset();
        assert!(backoff.next_delay(None, &mut rng) < SECOND);
    }
}
