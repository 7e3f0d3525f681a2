//! A circuit breaker per module instance: the seed's state diagram
//! (closed → open → half-open → closed | open), over a clock the caller passes in.
//!
//! - **Closed**: every call is admitted. A failure is remembered with its time; once
//!   `failure_threshold` failures fall within the last `failure_window_ms`, the breaker opens.
//!   Successes do not erase failures: an instance failing one call in two still trips, and
//!   failures older than the window simply stop counting.
//! - **Open**: every call is refused until `cool_down_ms` has passed since it opened.
//! - **Half-open**: exactly `half_open_probes` calls are admitted (permits handed out by
//!   [`Breaker::try_acquire`], so concurrent dispatchers cannot stampede a recovering
//!   instance); the next is refused. The first probe to succeed closes the breaker, the first
//!   to fail re-opens it with a fresh cool-down. A probe that never reports (its worker and
//!   its lease vanished with the process that held it) is counted as failed once
//!   `probe_timeout_ms` has passed since the last permit went out, so the breaker cannot stay
//!   half-open with no permits left forever.
//!
//! Every permit carries the breaker's generation (bumped at each state change), so a late
//! result of a call admitted in an earlier state (a slow call admitted while closed that
//! fails after the breaker already opened, an extra probe finishing after another closed it)
//! moves nothing: only results of the current state count.

use std::collections::VecDeque;

use crate::ConfigError;

/// Tuning of a [`Breaker`]. Times are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures within `failure_window_ms` that open the breaker. Default 5.
    pub failure_threshold: u32,
    /// How far back failures count, in ms. Default 60,000 (one minute).
    pub failure_window_ms: i64,
    /// How long the breaker stays open before letting probes through, in ms. Default 30,000.
    pub cool_down_ms: i64,
    /// Calls admitted while half-open. Default 1: one probe, as the acceptance asks.
    pub half_open_probes: u32,
    /// A half-open breaker whose probes have all gone out and none reported within this many
    /// ms re-opens as if a probe had failed. Default 300,000 (five minutes), longer than a
    /// lease's heartbeat timeout, so a probe normally reports (or its lease expires) first.
    pub probe_timeout_ms: i64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            failure_window_ms: 60_000,
            cool_down_ms: 30_000,
            half_open_probes: 1,
            probe_timeout_ms: 300_000,
        }
    }
}

impl BreakerConfig {
    /// Checks that every field can work: thresholds and probes at least 1, times positive.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let error = |field, message| Err(ConfigError::new("breaker", field, message));
        if self.failure_threshold == 0 {
            return error("failure_threshold", "must be at least 1");
        }
        if self.failure_window_ms <= 0 {
            return error("failure_window_ms", "must be positive");
        }
        if self.cool_down_ms <= 0 {
            return error("cool_down_ms", "must be positive");
        }
        if self.half_open_probes == 0 {
            return error("half_open_probes", "must be at least 1");
        }
        if self.probe_timeout_ms <= 0 {
            return error("probe_timeout_ms", "must be positive");
        }
        Ok(())
    }
}

/// The breaker's state as metrics and the API show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// A few probes decide whether to close or re-open.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `vigia_module_breaker_state{instance}` gauge: 0 closed, 1 open,
    /// 2 half-open.
    pub fn gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    /// `closed`, `open` or `half_open`, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Leave to make one call, handed out by [`Breaker::try_acquire`] and given back with the
/// call's outcome to [`Breaker::on_success`] or [`Breaker::on_failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    generation: u64,
    probe: bool,
}

impl Permit {
    /// Whether this call is one of the half-open probes.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Open: probes start at `half_open_at` (ms).
    Open { half_open_at: i64 },
    /// Half-open with every probe permit out; they decide before anything else goes.
    ProbesOut,
}

/// The phase once time alone has moved it, without the failure log.
#[derive(Debug, Clone, Copy)]
enum Settled {
    Closed,
    Open { since: i64 },
    HalfOpen { permits_left: u32 },
}

#[derive(Debug, Clone)]
enum Phase {
    /// Times of the failures still inside the window, oldest first (at most the threshold).
    Closed {
        failures: VecDeque<i64>,
    },
    Open {
        since: i64,
    },
    HalfOpen {
        permits_left: u32,
        last_permit_at: Option<i64>,
    },
}

/// One instance's circuit breaker. Never reads a clock: every call takes `now` (ms).
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    phase: Phase,
    generation: u64,
}

impl Breaker {
    /// A closed breaker. The config should have passed [`BreakerConfig::validate`]; a zero
    /// threshold or probe count is read as 1.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            phase: Phase::Closed {
                failures: VecDeque::new(),
            },
            generation: 0,
        }
    }

    /// The configuration this breaker runs with.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state at `now`: an open breaker whose cool-down has passed reads half-open, and a
    /// half-open one whose probes timed out reads open, before any call moves it.
    pub fn state(&self, now: i64) -> BreakerState {
        match self.settled(now) {
            Settled::Closed => BreakerState::Closed,
            Settled::Open { .. } => BreakerState::Open,
            Settled::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether [`try_acquire`](Self::try_acquire) at `now` would hand out a permit, without
    /// taking one: the balancer filters candidates with it and acquires only on its choice.
    pub fn admits(&self, now: i64) -> bool {
        match self.settled(now) {
            Settled::Closed => true,
            Settled::Open { .. } => false,
            Settled::HalfOpen { permits_left } => permits_left > 0,
        }
    }

    /// When an open breaker lets its first probe through (ms), or `None` if it is not open
    /// at `now`: the earliest `Retry-After` a caller can be given.
    pub fn half_open_at(&self, now: i64) -> Option<i64> {
        match self.settled(now) {
            Settled::Open { since } => Some(since + self.config.cool_down_ms),
            Settled::Closed | Settled::HalfOpen { .. } => None,
        }
    }

    /// Asks to make one call at `now`. Closed: always granted. Open: refused until the
    /// cool-down ends, then the breaker turns half-open. Half-open: granted while probe
    /// permits remain, each grant using one.
    pub fn try_acquire(&mut self, now: i64) -> Result<Permit, Refusal> {
        self.advance(now);
        let generation = self.generation;
        match &mut self.phase {
            Phase::Closed { .. } => Ok(Permit {
                generation,
                probe: false,
            }),
            Phase::Open { since } => Err(Refusal::Open {
                half_open_at: *since + self.config.cool_down_ms,
            }),
            Phase::HalfOpen {
                permits_left,
                last_permit_at,
            } => {
                if *permits_left == 0 {
                    return Err(Refusal::ProbesOut);
                }
                *permits_left -= 1;
                *last_permit_at = Some(now);
                Ok(Permit {
                    generation,
                    probe: true,
                })
            }
        }
    }

    /// The call made under `permit` succeeded at `now`. A probe's success closes the breaker
    /// with no failures remembered.
    pub fn on_success(&mut self, permit: Permit, now: i64) {
        self.advance(now);
        if permit.generation != self.generation {
            return;
        }
        if let Phase::HalfOpen { .. } = self.phase {
            self.enter(Phase::Closed {
                failures: VecDeque::new(),
            });
        }
    }

    /// The call made under `permit` failed at `now`. While closed it counts towards the
    /// threshold; a probe's failure re-opens the breaker with a fresh cool-down from `now`.
    pub fn on_failure(&mut self, permit: Permit, now: i64) {
        self.advance(now);
        if permit.generation != self.generation {
            return;
        }
        let threshold = self.config.failure_threshold.max(1) as usize;
        let window = self.config.failure_window_ms;
        match &mut self.phase {
            Phase::Closed { failures } => {
                // Kept in order even if callers' clocks disagree slightly: a result reported
                // with an earlier time than the last failure counts at that failure's time.
                failures.push_back(failures.back().map_or(now, |&last| last.max(now)));
                forget_before(failures, now - window);
                while failures.len() > threshold {
                    failures.pop_front();
                }
                if failures.len() >= threshold {
                    self.enter(Phase::Open { since: now });
                }
            }
            Phase::HalfOpen { .. } => self.enter(Phase::Open { since: now }),
            Phase::Open { .. } => {}
        }
    }

    /// A call admitted under `permit` never reached the instance (the dispatcher gave up
    /// before sending it): a probe permit goes back to the pool, and nothing is counted.
    pub fn on_abandoned(&mut self, permit: Permit, now: i64) {
        self.advance(now);
        if permit.generation != self.generation || !permit.probe {
            return;
        }
        if let Phase::HalfOpen { permits_left, .. } = &mut self.phase {
            *permits_left = (*permits_left + 1).min(self.config.half_open_probes.max(1));
        }
    }

    /// Failures currently counted towards the threshold at `now` (0 unless closed).
    pub fn recent_failures(&self, now: i64) -> usize {
        match &self.phase {
            Phase::Closed { failures } => failures
                .iter()
                .filter(|&&at| at > now - self.config.failure_window_ms)
                .count(),
            _ => 0,
        }
    }

    /// Applies the transitions that time alone makes: open → half-open after the cool-down,
    /// half-open → open when every probe went out and none reported in time (opened at the
    /// moment the timeout ran out, so a long-idle breaker may go on to half-open at once).
    fn advance(&mut self, now: i64) {
        loop {
            match self.phase {
                Phase::Open { since } if now - since >= self.config.cool_down_ms => {
                    self.enter(Phase::HalfOpen {
                        permits_left: self.config.half_open_probes.max(1),
                        last_permit_at: None,
                    });
                }
                Phase::HalfOpen {
                    permits_left: 0,
                    last_permit_at: Some(at),
                } if now - at >= self.config.probe_timeout_ms => {
                    self.enter(Phase::Open {
                        since: at + self.config.probe_timeout_ms,
                    });
                }
                _ => return,
            }
        }
    }

    /// What [`advance`](Self::advance) would make of the phase at `now`, without moving it.
    fn settled(&self, now: i64) -> Settled {
        let cool_down = self.config.cool_down_ms;
        let open = |since: i64| {
            if now - since >= cool_down {
                Settled::HalfOpen {
                    permits_left: self.config.half_open_probes.max(1),
                }
            } else {
                Settled::Open { since }
            }
        };
        match self.phase {
            Phase::Closed { .. } => Settled::Closed,
            Phase::Open { since } => open(since),
            Phase::HalfOpen {
                permits_left: 0,
                last_permit_at: Some(at),
            } if now - at >= self.config.probe_timeout_ms => {
                open(at + self.config.probe_timeout_ms)
            }
            Phase::HalfOpen { permits_left, .. } => Settled::HalfOpen { permits_left },
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation += 1;
    }
}

/// Drops failures at or before `cutoff`: a failure counts while `now - at < window`.
fn forget_before(failures: &mut VecDeque<i64>, cutoff: i64) {
    while failures.front().is_some_and(|&at| at <= cutoff) {
        failures.pop_front();
    }
}

#[cfg(test)]
mod tests;
