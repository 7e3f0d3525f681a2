//! The duration accumulator: time out of range added up over a window, in event time.
//!
//! An excursion runs from the first out-of-range reading to the first in-range one, and
//! the silence between two readings counts as out of range when the earlier of them was
//! (conservative for food safety: nobody knows when it came back). One good reading ends
//! an excursion but never resets the total: only time leaving the window (or a new
//! product lot, for a `batch` window) does.
//!
//! # Bound
//!
//! At most [`MAX_INTERVALS`] intervals are kept per rule. Past that, the two oldest are
//! merged into one spanning both that remembers their exact time out, so the total stays
//! exact while the merged interval lies wholly inside the window; once it straddles the
//! window's start, all of its time out still inside its span is counted
//! (`min(out, end − window start)`): an overstatement, never an understatement.

use std::collections::VecDeque;

use vigia_core::DurationWindow;

/// Most out-of-range intervals kept per duration rule (see the module doc).
pub(crate) const MAX_INTERVALS: usize = 64;

/// One stored excursion, to seed an accumulator after a restart (from the excursions
/// table: raw readings cannot be replayed over a whole 24-hour window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    /// Event time of the first out-of-range reading, epoch milliseconds.
    pub start: i64,
    /// Event time of the first in-range reading after it or, while `ongoing`, of the
    /// latest reading (still out of range), epoch milliseconds.
    pub end: i64,
    /// Whether the excursion had not ended when it was stored.
    pub ongoing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    start: i64,
    end: i64,
    /// Time out of range inside `[start, end]`: the whole span unless merged.
    out_ms: i64,
}

/// One duration rule's accumulator.
#[derive(Debug, Clone, Default)]
pub(crate) struct DurationAccumulator {
    /// Oldest first; the last one is ongoing when `last` is out of range.
    intervals: VecDeque<Interval>,
    /// The newest reading counted: event time and whether it was out of range.
    last: Option<(i64, bool)>,
    /// The product lot the total belongs to (a `batch` window restarts on a new one).
    batch: Option<String>,
}

impl DurationAccumulator {
    /// Counts a reading at `ts` and returns the time out of range within the window that
    /// ends at `ts`. A reading not newer than the last one counted changes nothing.
    pub(crate) fn observe(
        &mut self,
        ts: i64,
        out_of_range: bool,
        window: DurationWindow,
        batch: Option<&str>,
    ) -> i64 {
        if window == DurationWindow::Batch && self.batch.as_deref() != batch {
            *self = DurationAccumulator {
                batch: batch.map(str::to_string),
                ..DurationAccumulator::default()
            };
        }
        match self.last {
            Some((last, _)) if ts <= last => return self.total(ts, window),
            Some((last, true)) => {
                let ongoing = self
                    .intervals
                    .back_mut()
                    .expect("an out-of-range last reading has its interval");
                ongoing.end = ts;
                ongoing.out_ms += ts - last;
            }
            _ if out_of_range => self.push(Interval {
                start: ts,
                end: ts,
                out_ms: 0,
            }),
            _ => {}
        }
        // An in-range reading after an out-of-range one closes the interval above; an
        // out-of-range one after an out-of-range one extends it.
        self.last = Some((ts, out_of_range));
        if let DurationWindow::Rolling(span) = window {
            let from = ts.saturating_sub(span.0);
            while self.intervals.len() > 1 && self.intervals[0].end <= from {
                self.intervals.pop_front();
            }
        }
        self.total(ts, window)
    }

    /// Time out of range within the window ending at `now`.
    fn total(&self, now: i64, window: DurationWindow) -> i64 {
        let from = match window {
            DurationWindow::Rolling(span) => now.saturating_sub(span.0),
            DurationWindow::Batch => i64::MIN,
        };
        self.intervals
            .iter()
            .map(|iv| {
                if iv.start >= from {
                    iv.out_ms
                } else {
                    iv.out_ms.min(iv.end - from).max(0)
                }
            })
            .sum()
    }

    fn push(&mut self, interval: Interval) {
        self.intervals.push_back(interval);
        if self.intervals.len() > MAX_INTERVALS {
            let oldest = self.intervals.pop_front().expect("more than the bound");
            let next = &mut self.intervals[0];
            next.start = oldest.start;
            next.out_ms += oldest.out_ms;
        }
    }

    /// Replaces the accumulator with stored excursions (any order, overlaps merged),
    /// counted for `batch`.
    pub(crate) fn seed(excursions: &[OutOfRange], batch: Option<&str>) -> Self {
        let mut sorted: Vec<OutOfRange> = excursions
            .iter()
            .filter(|e| e.end >= e.start)
            .copied()
            .collect();
        sorted.sort_by_key(|e| (e.start, e.end));
        let mut acc = DurationAccumulator {
            batch: batch.map(str::to_string),
            ..DurationAccumulator::default()
        };
        // Whether the newest interval was still going on when stored.
        let mut ongoing = false;
        for e in sorted {
            match acc.intervals.back_mut() {
                Some(prev) if e.start <= prev.end => {
                    if e.end >= prev.end {
                        ongoing = e.ongoing;
                        prev.out_ms += e.end - prev.end;
                        prev.end = e.end;
                    }
                }
                _ => {
                    ongoing = e.ongoing;
                    acc.push(Interval {
                        start: e.start,
                        end: e.end,
                        out_ms: e.end - e.start,
                    });
                }
            }
        }
        acc.last = acc.intervals.back().map(|iv| (iv.end, ongoing));
        acc
    }

    /// Intervals held, for the memory bound.
    pub(crate) fn len(&self) -> usize {
        self.intervals.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigia_core::DurationMs;

    const DAY: DurationWindow = DurationWindow::Rolling(DurationMs(86_400_000));
    const MIN: i64 = 60_000;

    /// `(minute, out of range)` readings → the total after each, in minutes.
    fn totals(readings: &[(i64, bool)], window: DurationWindow) -> Vec<i64> {
        let mut acc = DurationAccumulator::default();
        readings
            .iter()
            .map(|&(m, out)| acc.observe(m * MIN, out, window, None) / MIN)
            .collect()
    }

    /// Name, window, `(minute, out of range)` readings, expected totals in minutes.
    type Case = (&'static str, DurationWindow, Vec<(i64, bool)>, Vec<i64>);

    #[test]
    fn totals_from_data() {
        let hour = DurationWindow::Rolling(DurationMs(60 * MIN));
        let cases: Vec<Case> = vec![
            ("in range", DAY, vec![(0, false), (5, false)], vec![0, 0]),
            (
                "out from the first out reading to the first in one",
                DAY,
                vec![(0, false), (5, true), (10, true), (12, false), (20, false)],
                vec![0, 0, 5, 7, 7],
            ),
            (
                "a silence while out counts as out",
                DAY,
                vec![(0, true), (90, true)],
                vec![0, 90],
            ),
            (
                "one good reading never resets the total",
                DAY,
                vec![(0, true), (30, false), (31, true), (61, true)],
                vec![0, 30, 30, 60],
            ),
            (
                "old time leaves a rolling window",
                hour,
                vec![(0, true), (30, false), (80, false), (100, false)],
                vec![0, 30, 10, 0],
            ),
            (
                "late readings change nothing",
                DAY,
                vec![(10, true), (5, false), (20, true)],
                vec![0, 0, 10],
            ),
        ];
        for (name, window, readings, want) in cases {
            assert_eq!(totals(&readings, window), want, "{name}");
        }
    }

    #[test]
    fn a_new_batch_starts_from_zero() {
        let mut acc = DurationAccumulator::default();
        let batch = DurationWindow::Batch;
        assert_eq!(acc.observe(0, true, batch, Some("L1")), 0);
        assert_eq!(acc.observe(100 * MIN, true, batch, Some("L1")), 100 * MIN);
        assert_eq!(acc.observe(101 * MIN, true, batch, Some("L2")), 0);
        assert_eq!(acc.observe(111 * MIN, false, batch, Some("L2")), 10 * MIN);
    }

    #[test]
    fn flapping_stays_bounded_and_never_undercounts() {
        let mut acc = DurationAccumulator::default();
        let mut exact = 0;
        // Out for a minute, in for a minute, for 20 hours: 600 excursions.
        for m in 0..1200 {
            let out = m % 2 == 0;
            if m > 0 && (m - 1) % 2 == 0 {
                exact += MIN;
            }
            let total = acc.observe(m * MIN, out, DAY, None);
            assert!(acc.len() <= MAX_INTERVALS, "{}", acc.len());
            assert_eq!(
                total, exact,
                "merged intervals inside the window stay exact"
            );
        }
        // Four hours later the oldest merged interval straddles the window start.
        let later = acc.observe((1200 + 300) * MIN, false, DAY, None);
        let truly_inside = (1200 + 300 - 1440..1200).filter(|m| m % 2 == 0).count() as i64 * MIN;
        assert!(later >= truly_inside, "{later} < {truly_inside}");
        assert!(later <= exact, "{later} > {exact}");
    }

    #[test]
    fn seeds_from_stored_excursions() {
        let stored = [
            OutOfRange {
                start: 60 * MIN,
                end: 90 * MIN,
                ongoing: false,
            },
            OutOfRange {
                start: 0,
                end: 30 * MIN,
                ongoing: false,
            },
            OutOfRange {
                start: 100 * MIN,
                end: 120 * MIN,
                ongoing: true,
            },
        ];
        let mut acc = DurationAccumulator::seed(&stored, None);
        // Still out: the silence since the last stored reading counts.
        assert_eq!(acc.observe(130 * MIN, true, DAY, None), 90 * MIN);
        let mut closed = DurationAccumulator::seed(&stored[..2], None);
        assert_eq!(closed.observe(130 * MIN, true, DAY, None), 60 * MIN);
        assert_eq!(closed.observe(140 * MIN, false, DAY, None), 70 * MIN);
    }
}
