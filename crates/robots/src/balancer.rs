//! The seed's `LoadBalancer`: which instance of a module takes the next call.
//!
//! # Score
//!
//! For an instance that may take a call:
//!
//! ```text
//! score = weight × success × ref / (ref + latency) × (capacity − in_flight) / capacity
//! ```
//!
//! - `success`: the tracker's success rate at `now`, in [0, 1] (1 with no history);
//! - `latency`: the tracker's latency EWMA in ms; `ref` is [`BalancerConfig::latency_reference_ms`],
//!   the latency that halves the score (an unmeasured instance gets the factor 1, so it is
//!   tried and measured);
//! - the last factor is the instance's free share: an idle instance keeps its whole score,
//!   one at capacity is not a candidate at all;
//! - `weight` (> 0 and finite, default 1) lets an operator favour a bigger machine; weight 0
//!   drains an instance (never chosen, its running calls finish).
//!
//! Each factor is in [0, 1] but the weight, so the score is in [0, weight].
//!
//! # Candidates and ties
//!
//! An instance is a candidate when its health is not [`Health::Unhealthy`] (an instance
//! never probed yet counts: the health loop runs every few minutes, and a newly registered
//! worker must not wait for it), it has room (`in_flight < capacity`), its weight is
//! positive, and its breaker admits a call at `now`. A half-open candidate goes first: its
//! probe is due, and it would otherwise wait until its faded score beat the others', so a
//! recovered instance is back in the pool as soon as its cool-down ends (the cost: at most
//! `half_open_probes` calls per cool-down to an instance that may still fail, and those are
//! retried). Among the rest the best score wins; equal scores go to the fewest calls in
//! flight, then to the smallest name, so the choice is deterministic.
//! [`choose`] takes the breaker's permit and counts the call in flight on the chosen one only.
//! No candidate: `None`, and the caller parks the robot (`waiting_for_module`) or answers 503.
//!
//! In-flight counts are this process's; several `robots` processes each balance their own
//! calls, and the shared picture (health, scores) comes through the store and the
//! [`ScoreCache`](crate::cache::ScoreCache).

use crate::breaker::{Breaker, BreakerConfig, BreakerState, Permit};
use crate::tracker::{InstanceStats, Outcome, TrackerConfig};
use crate::ConfigError;

/// Health as the health loop last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Never probed: treated as healthy until the first probe.
    Unknown,
    /// The last probe answered well.
    Healthy,
    /// The last probe failed: not a candidate.
    Unhealthy,
}

/// Tuning of the balancer.
#[derive(Debug, Clone, PartialEq)]
pub struct BalancerConfig {
    /// The latency (ms) at which an instance's latency factor is one half. Default 1,000.
    pub latency_reference_ms: f64,
    /// How calls feed each instance's stats.
    pub tracker: TrackerConfig,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            latency_reference_ms: 1_000.0,
            tracker: TrackerConfig::default(),
        }
    }
}

impl BalancerConfig {
    /// Checks that the score can be computed: a positive latency reference, EWMA weights in
    /// (0, 1], a positive recovery half-life.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let error = |field, message| Err(ConfigError::new("balancer", field, message));
        if !(self.latency_reference_ms.is_finite() && self.latency_reference_ms > 0.0) {
            return error("latency_reference_ms", "must be a positive number");
        }
        let alpha_ok = |alpha: f64| alpha > 0.0 && alpha <= 1.0;
        if !alpha_ok(self.tracker.success_alpha) {
            return error("success_alpha", "must be in (0, 1]");
        }
        if !alpha_ok(self.tracker.latency_alpha) {
            return error("latency_alpha", "must be in (0, 1]");
        }
        if self.tracker.recovery_half_life_ms <= 0 {
            return error("recovery_half_life_ms", "must be positive");
        }
        Ok(())
    }
}

/// One instance of a module, as the balancer sees it.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Unique within its module; the tie-breaker of last resort.
    pub name: String,
    /// Calls it may run at once (at least 1).
    pub capacity: u32,
    /// Relative preference, > 0; 0 drains it.
    pub weight: f64,
    /// From the health loop.
    pub health: Health,
    /// Calls dispatched by this process and not yet finished.
    pub in_flight: u32,
    /// Success rate and latency.
    pub stats: InstanceStats,
    /// Its circuit breaker.
    pub breaker: Breaker,
}

impl Instance {
    /// A fresh instance: health unknown, nothing in flight, no history, breaker closed.
    pub fn new(
        name: impl Into<String>,
        capacity: u32,
        weight: f64,
        breaker: BreakerConfig,
    ) -> Self {
        Self {
            name: name.into(),
            capacity,
            weight,
            health: Health::Unknown,
            in_flight: 0,
            stats: InstanceStats::new(),
            breaker: Breaker::new(breaker),
        }
    }

    /// Whether it may take a call at `now`: not unhealthy, room left, positive weight,
    /// breaker admitting.
    pub fn is_candidate(&self, now: i64) -> bool {
        self.health != Health::Unhealthy
            && self.in_flight < self.capacity
            && self.has_usable_weight()
            && self.breaker.admits(now)
    }

    /// A weight the score can use: finite and positive (0, a negative or a NaN drains).
    fn has_usable_weight(&self) -> bool {
        self.weight.is_finite() && self.weight > 0.0
    }

    /// The score at `now` (see the module doc); 0 when it has no room.
    pub fn score(&self, config: &BalancerConfig, now: i64) -> f64 {
        if self.capacity == 0 || self.in_flight >= self.capacity || !self.has_usable_weight() {
            return 0.0;
        }
        let success = self
            .stats
            .success_rate(&config.tracker, now)
            .clamp(0.0, 1.0);
        let reference = config.latency_reference_ms.max(f64::MIN_POSITIVE);
        let latency = self
            .stats
            .latency_ms()
            .map_or(1.0, |ms| reference / (reference + ms.max(0.0)));
        let free = f64::from(self.capacity - self.in_flight) / f64::from(self.capacity);
        let weight = if self.weight.is_finite() {
            self.weight
        } else {
            0.0
        };
        weight * success * latency * free
    }

    /// The call dispatched under `permit` ended at `now` after `duration_ms`: it leaves the
    /// in-flight count, feeds the stats and the breaker.
    pub fn finish(
        &mut self,
        config: &BalancerConfig,
        permit: Permit,
        outcome: Outcome,
        duration_ms: f64,
        now: i64,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.stats
            .record(&config.tracker, outcome, duration_ms, now);
        match outcome {
            Outcome::Success => self.breaker.on_success(permit, now),
            Outcome::Failure => self.breaker.on_failure(permit, now),
        }
    }

    /// The call dispatched under `permit` was never sent: it leaves the in-flight count and
    /// its probe permit (if it was one) goes back; nothing is recorded.
    pub fn abandon(&mut self, permit: Permit, now: i64) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.breaker.on_abandoned(permit, now);
    }
}

/// The balancer's pick: which instance, under which breaker permit, with what score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dispatch {
    /// Index into the slice given to [`choose`].
    pub index: usize,
    /// Give it back through [`Instance::finish`] or [`Instance::abandon`].
    pub permit: Permit,
    /// The winning score.
    pub score: f64,
}

/// Picks the best candidate at `now`, takes its breaker permit and counts the call in
/// flight; `None` when no instance may take a call.
pub fn choose(instances: &mut [Instance], config: &BalancerConfig, now: i64) -> Option<Dispatch> {
    let index = (0..instances.len())
        .filter(|&i| instances[i].is_candidate(now))
        .max_by(|&a, &b| preference(instances, config, now, a, b))?;
    let score = instances[index].score(config, now);
    let chosen = &mut instances[index];
    let permit = chosen.breaker.try_acquire(now).ok()?;
    chosen.in_flight += 1;
    Some(Dispatch {
        index,
        permit,
        score,
    })
}

/// `Greater` when instance `a` should be chosen before `b` at `now`: candidates first, then
/// a due probe, the score, fewer calls in flight, the smaller name.
fn preference(
    instances: &[Instance],
    config: &BalancerConfig,
    now: i64,
    a: usize,
    b: usize,
) -> std::cmp::Ordering {
    let (first, second) = (&instances[a], &instances[b]);
    let probe_due = |i: &Instance| i.breaker.state(now) == BreakerState::HalfOpen;
    first
        .is_candidate(now)
        .cmp(&second.is_candidate(now))
        .then_with(|| probe_due(first).cmp(&probe_due(second)))
        .then_with(|| {
            first
                .score(config, now)
                .total_cmp(&second.score(config, now))
        })
        .then_with(|| second.in_flight.cmp(&first.in_flight))
        .then_with(|| second.name.cmp(&first.name))
}

/// When choosing may succeed again by time alone, for a 503's `Retry-After` when
/// [`choose`] found nothing: the earliest moment an open breaker of an otherwise usable
/// instance (not unhealthy, weighted, with room) lets a probe through. `None` when no such
/// moment is known: every instance is unhealthy, drained or full (a health probe or a
/// finishing call changes that), or one is available already (`Some(now)`).
pub fn next_available_at(instances: &[Instance], now: i64) -> Option<i64> {
    instances
        .iter()
        .filter(|i| i.health != Health::Unhealthy && i.has_usable_weight())
        .filter(|i| i.in_flight < i.capacity)
        .filter_map(|i| {
            if i.breaker.admits(now) {
                Some(now)
            } else {
                i.breaker.half_open_at(now)
            }
        })
        .min()
}

/// Orders instances best first, as `GET /api/v1/modules/{module}` lists them: candidates
/// before the rest, then by the same rule [`choose`] applies.
pub fn ranking(instances: &[Instance], config: &BalancerConfig, now: i64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..instances.len()).collect();
    order.sort_by(|&a, &b| preference(instances, config, now, b, a));
    order
}

#[cfg(test)]
mod tests;
