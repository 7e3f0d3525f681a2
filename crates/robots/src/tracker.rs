//! The seed's `PerformanceTracker`: per-instance success rate and latency, as exponentially
//! weighted moving averages that fade back towards a neutral prior while an instance is idle.
//!
//! An EWMA keeps O(1) state per instance and weighs recent calls most, which is what a
//! balancer wants; a window of samples would cost memory per call. Plain EWMAs have one
//! flaw for balancing: an instance that did badly stops being chosen, so it never gets the
//! samples that would rehabilitate it. Here the averages are read through a decay: with no
//! sample for `t` ms, the distance to the prior shrinks by `0.5^(t / recovery_half_life_ms)`.
//! Health probes and the breaker still keep a truly broken instance out; this only lets a
//! recovered one earn traffic back.

/// Tuning of [`InstanceStats`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// Weight of the newest sample in the success-rate EWMA, in (0, 1]. Default 0.1
    /// (roughly the last 20 calls matter).
    pub success_alpha: f64,
    /// Weight of the newest sample in the latency EWMA, in (0, 1]. Default 0.2.
    pub latency_alpha: f64,
    /// Idle time after which an average is halfway back to its prior, in ms. Default
    /// 600,000 (ten minutes).
    pub recovery_half_life_ms: i64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            success_alpha: 0.1,
            latency_alpha: 0.2,
            recovery_half_life_ms: 600_000,
        }
    }
}

/// How a call to an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The instance did its job.
    Success,
    /// The instance failed, timed out or could not be reached.
    Failure,
}

/// One instance's performance, fed by [`record`](Self::record) after every call.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceStats {
    success_ewma: f64,
    latency_ewma_ms: Option<f64>,
    last_sample_at: Option<i64>,
    samples: u64,
    failures: u64,
}

impl Default for InstanceStats {
    fn default() -> Self {
        Self::new()
    }
}

/// The success rate an instance with no history is credited with: optimistic, so a new
/// instance gets traffic and is measured.
pub const PRIOR_SUCCESS_RATE: f64 = 1.0;

impl InstanceStats {
    /// No history: success rate at the prior, latency unknown.
    pub fn new() -> Self {
        Self {
            success_ewma: PRIOR_SUCCESS_RATE,
            latency_ewma_ms: None,
            last_sample_at: None,
            samples: 0,
            failures: 0,
        }
    }

    /// Records a call that ended at `now` (ms) after `duration_ms`. The averages are first
    /// decayed to `now`, so an old bad streak weighs less than a fresh one.
    pub fn record(&mut self, config: &TrackerConfig, outcome: Outcome, duration_ms: f64, now: i64) {
        let success = self.success_rate(config, now);
        let latency = self.latency_ms();
        let hit = if outcome == Outcome::Success {
            1.0
        } else {
            0.0
        };
        self.success_ewma = ewma(success, hit, config.success_alpha);
        let duration_ms = if duration_ms.is_finite() {
            duration_ms.max(0.0)
        } else {
            0.0
        };
        self.latency_ewma_ms = Some(match latency {
            Some(previous) => ewma(previous, duration_ms, config.latency_alpha),
            None => duration_ms,
        });
        self.last_sample_at = Some(self.last_sample_at.map_or(now, |at| at.max(now)));
        self.samples += 1;
        if outcome == Outcome::Failure {
            self.failures += 1;
        }
    }

    /// The success rate at `now`, in [0, 1], faded towards [`PRIOR_SUCCESS_RATE`] by idle time.
    pub fn success_rate(&self, config: &TrackerConfig, now: i64) -> f64 {
        let keep = self.decay(config, now);
        PRIOR_SUCCESS_RATE + (self.success_ewma - PRIOR_SUCCESS_RATE) * keep
    }

    /// The latency EWMA in ms; `None` before the first call. It does not fade:
    /// a slow instance stays slow until measured again (the score's latency term is bounded).
    pub fn latency_ms(&self) -> Option<f64> {
        self.latency_ewma_ms
    }

    /// Calls recorded, and how many of them failed.
    pub fn counts(&self) -> (u64, u64) {
        (self.samples, self.failures)
    }

    /// Time of the last sample, ms.
    pub fn last_sample_at(&self) -> Option<i64> {
        self.last_sample_at
    }

    /// The share of the average's distance to its prior still kept at `now`.
    fn decay(&self, config: &TrackerConfig, now: i64) -> f64 {
        match self.last_sample_at {
            Some(at) if now > at && config.recovery_half_life_ms > 0 => {
                0.5f64.powf((now - at) as f64 / config.recovery_half_life_ms as f64)
            }
            _ => 1.0,
        }
    }
}

fn ewma(previous: f64, sample: f64, alpha: f64) -> f64 {
    let alpha = alpha.clamp(f64::MIN_POSITIVE, 1.0);
    previous + alpha * (sample - previous)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn averages_follow_the_samples() {
        let config = TrackerConfig {
            success_alpha: 0.5,
            latency_alpha: 0.5,
            recovery_half_life_ms: 1_000,
        };
        // (outcome, duration, at) → (success rate, latency) right after
        let table = [
            (Outcome::Success, 100.0, 0, 1.0, 100.0),
            (Outcome::Failure, 300.0, 0, 0.5, 200.0),
            (Outcome::Failure, 200.0, 0, 0.25, 200.0),
            (Outcome::Success, f64::NAN, 0, 0.625, 100.0),
            (Outcome::Success, -5.0, 0, 0.8125, 50.0),
        ];
        let mut stats = InstanceStats::new();
        for (index, (outcome, duration, at, success, latency)) in table.into_iter().enumerate() {
            stats.record(&config, outcome, duration, at);
            assert!(
                close(stats.success_rate(&config, at), success),
                "row {index}: {stats:?}"
            );
            assert_eq!(stats.latency_ms(), Some(latency), "row {index}");
        }
        assert_eq!(stats.counts(), (5, 2));
    }

    #[test]
    fn idle_time_fades_the_success_rate_back_to_the_prior() {
        let config = TrackerConfig {
            success_alpha: 1.0,
            latency_alpha: 1.0,
            recovery_half_life_ms: 1_000,
        };
        let mut stats = InstanceStats::new();
        stats.record(&config, Outcome::Failure, 10.0, 5_000);
        // (now) → success rate
        let table = [
            (4_000, 0.0), // before the sample: no decay
            (5_000, 0.0),
            (6_000, 0.5),
            (7_000, 0.75),
            (15_000, 1.0 - 0.5f64.powi(10)),
        ];
        for (now, rate) in table {
            assert!(close(stats.success_rate(&config, now), rate), "at {now}");
        }
        // A sample after idle time starts from the faded value.
        stats.record(&config, Outcome::Failure, 10.0, 6_000);
        assert!(close(stats.success_rate(&config, 6_000), 0.0));
        let gentle = TrackerConfig {
            success_alpha: 0.5,
            ..config
        };
        let mut stats = InstanceStats::new();
        stats.record(&gentle, Outcome::Failure, 10.0, 0); // 0.5
        stats.record(&gentle, Outcome::Failure, 10.0, 1_000); // faded to 0.75, then 0.375
        assert!(close(stats.success_rate(&gentle, 1_000), 0.375));
    }

    proptest! {
        #[test]
        fn rates_stay_within_bounds(
            samples in proptest::collection::vec((any::<bool>(), 0.0f64..1e7, 0i64..100_000), 0..100),
            alpha in 0.0f64..=1.0,
            read_at in 0i64..10_000_000,
        ) {
            let config = TrackerConfig {
                success_alpha: alpha,
                latency_alpha: alpha,
                ..TrackerConfig::default()
            };
            let mut stats = InstanceStats::new();
            let mut now = 0;
            for (ok, duration, step) in samples {
                now += step;
                let outcome = if ok { Outcome::Success } else { Outcome::Failure };
                stats.record(&config, outcome, duration, now);
                let latency = stats.latency_ms().expect("measured");
                prop_assert!((0.0..=1e7).contains(&latency));
            }
            let rate = stats.success_rate(&config, read_at);
            prop_assert!((0.0..=1.0).contains(&rate), "rate {}", rate);
        }
    }
}
