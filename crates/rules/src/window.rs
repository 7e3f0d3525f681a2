//! The rate window: recent readings of one metric, and the rate of change they show.
//!
//! The rate is the change over the last `rate_window_ms`, expressed per minute. The
//! baseline is the value at the window's start, interpolated between the newest reading
//! before the window and the oldest inside it when the history reaches that far back
//! without a hole longer than the window; otherwise (cold start, restart, after a gap)
//! the baseline is the oldest reading inside the window, and only if it is at least
//! `rate_min_interval_ms` old. Either way the change is divided by the whole window, never
//! by the short span between two close readings: two readings 5 s apart cannot tell
//! noise of ±0.3 °C from a trend (0.6 in 5 s would read 7.2/min), while a real jump of
//! 4 °C still shows as 4/min. The cost is that a trend is under-read during the first
//! window after a cold start, which a rule then sees one window later.

use std::collections::VecDeque;

use crate::EngineConfig;

/// Hard cap on readings kept per metric, so memory stays bounded at any sampling rate.
pub(crate) const MAX_ENTRIES: usize = 256;

/// Recent `(ts, value)` readings of one metric, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct RateWindow {
    entries: VecDeque<(i64, f64)>,
    /// The newest reading that has left the window: the left end for interpolation.
    before: Option<(i64, f64)>,
}

impl RateWindow {
    /// Forgets everything and starts from one known reading (rebuild after a restart).
    pub(crate) fn seed(&mut self, ts: i64, value: f64) {
        self.entries.clear();
        self.before = None;
        self.entries.push_back((ts, value));
    }

    /// Takes a live reading (newer than every reading seen) and returns the rate of
    /// change per minute it completes, if the history is long enough to tell.
    pub(crate) fn observe(&mut self, cfg: &EngineConfig, ts: i64, value: f64) -> Option<f64> {
        let window = cfg.rate_window_ms;
        if window <= 0 {
            return None;
        }
        let start = ts.saturating_sub(window);
        while let Some(&front) = self.entries.front() {
            if front.0 >= start {
                break;
            }
            self.before = Some(front);
            self.entries.pop_front();
        }
        let rate = self
            .baseline(cfg, start, ts)
            .map(|base| (value - base) * 60_000.0 / window as f64);
        self.push(window, ts, value);
        rate
    }

    /// The value the rate is measured from, as described in the module doc.
    fn baseline(&self, cfg: &EngineConfig, start: i64, ts: i64) -> Option<f64> {
        if cfg.rate_window_ms < cfg.rate_min_interval_ms {
            return None;
        }
        let &(t0, v0) = self.entries.front()?;
        match self.before {
            Some((tb, vb)) if t0 - tb <= cfg.rate_window_ms && tb < start => {
                // tb < start <= t0, so the fraction is within [0, 1].
                let frac = (start - tb) as f64 / (t0 - tb) as f64;
                Some(vb + (v0 - vb) * frac)
            }
            _ if ts - t0 >= cfg.rate_min_interval_ms => Some(v0),
            _ => None,
        }
    }

    fn push(&mut self, window: i64, ts: i64, value: f64) {
        // Thinning to at most MAX_ENTRIES per window keeps the window's full time span even
        // when a device samples every few milliseconds; the baseline is still a real reading.
        let spacing = window / MAX_ENTRIES as i64;
        if let Some(&(last, _)) = self.entries.back() {
            if ts - last < spacing {
                return;
            }
        }
        self.entries.push_back((ts, value));
        if self.entries.len() > MAX_ENTRIES {
            self.before = self.entries.pop_front();
        }
    }

    /// Readings held, for the memory bound.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(seconds, value)` readings.
    type Series = Vec<(f64, f64)>;

    fn cfg() -> EngineConfig {
        EngineConfig::default()
    }

    /// Feeds `(seconds, value)` readings and returns the last rate, rounded to 0.01.
    fn last_rate(readings: &[(f64, f64)]) -> Option<f64> {
        let mut w = RateWindow::default();
        let mut rate = None;
        for &(s, v) in readings {
            rate = w.observe(&cfg(), (s * 1000.0) as i64, v);
        }
        rate.map(|r| (r * 100.0).round() / 100.0)
    }

    #[test]
    fn rates_from_data() {
        let steady: Vec<(f64, f64)> = (0..20).map(|i| (i as f64 * 5.0, -20.0)).collect();
        let mut jump = steady.clone();
        jump.push((100.0, -16.0));
        let ramp: Vec<(f64, f64)> = (0..30)
            .map(|i| (i as f64 * 5.0, i as f64 * 5.0 / 30.0))
            .collect();
        let sparse_ramp: Vec<(f64, f64)> =
            (0..6).map(|i| (i as f64 * 45.0, i as f64 * 1.5)).collect();
        let cases: Vec<(&str, Series, Option<f64>)> = vec![
            ("one reading", vec![(0.0, 1.0)], None),
            (
                "two readings 1 ms apart",
                vec![(0.0, 1.0), (0.001, 5.0)],
                None,
            ),
            (
                "two readings 3 s apart (under the minimum)",
                vec![(0.0, 1.0), (3.0, 5.0)],
                None,
            ),
            (
                "cold start divides by the window",
                vec![(0.0, -20.0), (5.0, -16.0)],
                Some(4.0),
            ),
            ("steady", steady, Some(0.0)),
            ("jump of 4 after a steady minute", jump, Some(4.0)),
            ("ramp of 2/min", ramp, Some(2.0)),
            ("ramp of 2/min sampled every 45 s", sparse_ramp, Some(2.0)),
            (
                "gap longer than the window",
                vec![(0.0, 1.0), (61.0, 9.0)],
                None,
            ),
            (
                "gap longer than the window, then a cold restart",
                vec![(0.0, 1.0), (100.0, 9.0), (106.0, 9.5)],
                Some(0.5),
            ),
        ];
        for (name, readings, want) in cases {
            assert_eq!(last_rate(&readings), want, "{name}");
        }
    }

    #[test]
    fn memory_stays_bounded_at_any_rate() {
        let mut w = RateWindow::default();
        for i in 0..100_000i64 {
            w.observe(&cfg(), i, (i % 7) as f64);
            assert!(w.len() <= MAX_ENTRIES, "at {i}: {}", w.len());
        }
        // One reading per millisecond is thinned but still spans the window.
        let span = w.entries.back().unwrap().0 - w.entries.front().unwrap().0;
        assert!(span > cfg().rate_window_ms - 1000, "span {span}");
    }

    #[test]
    fn seeded_window_is_cold() {
        let mut w = RateWindow::default();
        w.seed(0, -20.0);
        assert_eq!(
            w.observe(&cfg(), 5_000, -19.4)
                .map(|r| (r * 10.0).round() / 10.0),
            Some(0.6)
        );
    }
}
