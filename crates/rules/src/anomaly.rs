//! The anomaly model of one metric: a streaming, fixed-size summary of its recent past.
//!
//! Three robust exponentially weighted averages in event time (weights follow the time
//! between readings, so irregular sampling reads the same):
//! - a short-term level (`fast`, time constant [`TAU_FAST_MS`]) and the mean absolute
//!   deviation of readings from it (`spread`, [`TAU_SPREAD_MS`]): a reading far from the
//!   level in units of spread is a **deviation** (a spike, or the first reading of a
//!   level shift);
//! - a long-term level (`slow`, [`TAU_SLOW_MS`]) and the mean absolute gap between the
//!   two levels (`trend_spread`, [`TAU_TREND_SPREAD_MS`]): the short-term level moving
//!   away from the long-term one is a **trend** (a drift, or a level shift once the
//!   short-term level has followed it);
//! - how long the value has repeated exactly: on a sensor whose spread says it varies,
//!   that is a **flat line** (a stuck sensor).
//!
//! Robustness: a reading moves the levels by at most [`CLIP`] spreads (a spike cannot
//! drag them), and the spreads learn only from readings that are not themselves
//! anomalous (above [`LEARN_LIMIT`]), nor from exact repeats, so an anomaly does not
//! teach the model that it is normal; an exact repeat of the previous value teaches
//! nothing at all (so a stuck sensor does not drag the levels). The model is shared by every anomaly rule of the
//! metric: rules differ only in sensitivity, warm-up and flat-line length, which are
//! applied when judging, never when learning.

use vigia_core::AnomalySignal;

/// Short-term level time constant: a minute.
pub(crate) const TAU_FAST_MS: f64 = 60_000.0;
/// Long-term level time constant: half an hour.
pub(crate) const TAU_SLOW_MS: f64 = 1_800_000.0;
/// Spread of readings around the short-term level: half an hour.
pub(crate) const TAU_SPREAD_MS: f64 = 1_800_000.0;
/// Spread of the gap between the two levels: two hours, so a slow drift does not become
/// the norm before it is reported.
pub(crate) const TAU_TREND_SPREAD_MS: f64 = 7_200_000.0;
/// Largest step a reading moves a level by, in spreads.
const CLIP: f64 = 3.0;
/// Scores above this (whatever the rule's sensitivity) do not teach the spreads.
const LEARN_LIMIT: f64 = 4.0;
/// Alert threshold at sensitivity 1, in spreads (mean absolute deviations): 6 of them
/// are about 4.8 standard deviations of Gaussian noise.
pub(crate) const BASE_THRESHOLD: f64 = 6.0;
/// An open anomaly alert stays breached until its score falls under this fraction of the
/// threshold: hysteresis against flapping while the model settles.
pub(crate) const STAY_OPEN_FRACTION: f64 = 0.7;
/// The smallest spread, relative to the level (and at least this much in absolute
/// terms): a sensor that never varied does not alert on its first change of a few
/// thousandths.
const SPREAD_FLOOR: f64 = 1e-3;
/// A silence longer than this starts learning over (the metric may have changed while
/// nothing came): an hour.
pub(crate) const RELEARN_AFTER_MS: i64 = 3_600_000;
/// Readings a model needs before it judges, whatever the warm-up time.
pub(crate) const MIN_SAMPLES: u32 = 30;

/// What the model says about one reading, before the reading updates it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Score {
    /// Event time learning started at (the first reading, or the first after a long gap).
    pub since: i64,
    /// Readings learnt from, this one excluded.
    pub samples: u32,
    pub deviation: f64,
    pub trend: f64,
    /// How long the value has repeated exactly, milliseconds (0 when it just changed).
    pub flat_ms: i64,
    /// Whether the spread says the metric normally varies (a flat line means something).
    pub varies: bool,
    pub fast: f64,
    pub slow: f64,
    pub spread: f64,
}

impl Score {
    /// The strongest signal against `threshold` (in spreads) and `flatline` (ms), as
    /// (signal, score, threshold of that signal); `None` when nothing reaches its limit.
    pub(crate) fn breach(
        &self,
        threshold: f64,
        flatline: Option<i64>,
    ) -> Option<(AnomalySignal, f64, f64)> {
        if let Some(limit) = flatline.filter(|_| self.varies) {
            if self.flat_ms >= limit {
                return Some((
                    AnomalySignal::Flatline,
                    self.flat_ms as f64 / limit as f64,
                    1.0,
                ));
            }
        }
        if self.deviation >= threshold {
            return Some((AnomalySignal::Deviation, self.deviation, threshold));
        }
        if self.trend >= threshold {
            return Some((AnomalySignal::Trend, self.trend, threshold));
        }
        None
    }

    /// The range the model expected a reading in, for `threshold` spreads: around the
    /// short-term level for a deviation, around the long-term one for a trend.
    pub(crate) fn expected(&self, signal: AnomalySignal, threshold: f64) -> (f64, f64) {
        let centre = match signal {
            AnomalySignal::Trend => self.slow,
            AnomalySignal::Deviation | AnomalySignal::Flatline => self.fast,
        };
        let half = threshold * self.spread;
        (centre - half, centre + half)
    }
}

/// The learned state (see the module doc): a few numbers, whatever the history.
#[derive(Debug, Clone)]
pub(crate) struct AnomalyModel {
    since: i64,
    samples: u32,
    last_ts: i64,
    last_value: f64,
    flat_since: i64,
    fast: f64,
    slow: f64,
    spread: f64,
    spread_samples: u32,
    trend_spread: f64,
    trend_samples: u32,
}

/// Weight of a new reading `dt_ms` after the previous one, for time constant `tau_ms`;
/// while few samples are in, at least that of a plain mean, so the start learns fast.
fn weight(dt_ms: f64, tau_ms: f64, samples: u32) -> f64 {
    let w = 1.0 - (-dt_ms / tau_ms).exp();
    w.max(1.0 / (samples as f64 + 1.0))
}

impl AnomalyModel {
    pub(crate) fn new(ts: i64, value: f64) -> Self {
        AnomalyModel {
            since: ts,
            samples: 1,
            last_ts: ts,
            last_value: value,
            flat_since: ts,
            fast: value,
            slow: value,
            spread: 0.0,
            spread_samples: 0,
            trend_spread: 0.0,
            trend_samples: 0,
        }
    }

    fn spread_floor(&self) -> f64 {
        SPREAD_FLOOR * self.fast.abs().max(1.0)
    }

    /// Judges a live reading (newer than every one seen) against the past, then learns
    /// from it. A silence longer than [`RELEARN_AFTER_MS`] starts learning over.
    pub(crate) fn observe(&mut self, ts: i64, value: f64) -> Score {
        if ts - self.last_ts > RELEARN_AFTER_MS {
            *self = AnomalyModel::new(ts, value);
        }
        let floor = self.spread_floor();
        let spread = self.spread.max(floor);
        let residual = value - self.fast;
        let deviation = residual.abs() / spread;
        let repeated = value == self.last_value;
        if !repeated {
            self.flat_since = ts;
        }
        let before = Score {
            since: self.since,
            samples: self.samples,
            deviation,
            trend: (self.fast - self.slow).abs() / self.trend_spread.max(floor),
            flat_ms: ts - self.flat_since,
            varies: self.spread > floor,
            fast: self.fast,
            slow: self.slow,
            spread,
        };

        if !repeated {
            self.learn(ts, residual, spread, deviation, floor);
        }
        self.samples = self.samples.saturating_add(1);
        self.last_ts = ts;
        self.last_value = value;
        before
    }

    /// Moves the levels and spreads by one reading that differs from the one before (an
    /// exact repeat teaches nothing: it is the same reading again, or a stuck sensor).
    fn learn(&mut self, ts: i64, residual: f64, spread: f64, deviation: f64, floor: f64) {
        let dt = (ts - self.last_ts).max(1) as f64;
        let step = residual.clamp(-CLIP * spread, CLIP * spread);
        let learning = self.spread_samples < MIN_SAMPLES;
        // While learning, the levels take readings whole: the spread is not known yet.
        let moved = if learning { residual } else { step };
        self.fast += weight(dt, TAU_FAST_MS, self.samples) * moved;
        self.slow += weight(dt, TAU_SLOW_MS, self.samples) * (self.fast - self.slow);
        if learning || deviation <= LEARN_LIMIT {
            let w = weight(dt, TAU_SPREAD_MS, self.spread_samples);
            let sample = if learning {
                residual.abs()
            } else {
                residual.abs().min(CLIP * spread)
            };
            self.spread += w * (sample - self.spread);
            self.spread_samples = self.spread_samples.saturating_add(1);
        }
        let gap = (self.fast - self.slow).abs();
        if learning || gap / self.trend_spread.max(floor) <= LEARN_LIMIT {
            let w = weight(dt, TAU_TREND_SPREAD_MS, self.trend_samples);
            self.trend_spread += w * (gap - self.trend_spread);
            self.trend_samples = self.trend_samples.saturating_add(1);
        }
    }

    /// Event time of the newest reading learnt from.
    pub(crate) fn last_ts(&self) -> i64 {
        self.last_ts
    }
}
