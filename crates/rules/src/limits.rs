//! Excursions past a rule's limits, as data: when one began and ended, how far it went,
//! how long it lasted and where the sensor fell silent inside it.
//!
//! Kept for threshold rules and for the limits of duration rules. An excursion runs from
//! the first out-of-range reading to the first in-range one, in event time. A silence
//! inside it counts as out of range (conservative for food safety: nobody knows when the
//! value came back) and is reported as a gap when the spacing between two readings is
//! more than [`GAP_FACTOR`] times the metric's typical spacing (the median of its last
//! [`SPACINGS`] spacings, once at least [`MIN_SPACINGS`] are known: before that a silence
//! still counts as out of range but is not called a gap).
//!
//! Late readings (not newer than the newest of the metric) neither open, extend nor close
//! an excursion, so a redelivered batch changes nothing. Records carry absolute values
//! computed from this state, never increments: writing one twice is writing it once.
//!
//! # Bound
//!
//! One open excursion per rule, and the metric's last [`SPACINGS`] spacings.

/// Spacings remembered per metric to tell its typical spacing.
pub(crate) const SPACINGS: usize = 8;

/// Spacings needed before a silence can be called a gap.
pub(crate) const MIN_SPACINGS: usize = 3;

/// A spacing longer than this many typical spacings is a gap.
pub const GAP_FACTOR: i64 = 2;

/// One excursion past a rule's limits, as the engine last saw it: what the caller stores
/// (keyed by sensor, rule and `start`; a later record of the same excursion replaces
/// the earlier one).
#[derive(Debug, Clone, PartialEq)]
pub struct ExcursionRecord {
    /// The rule whose limits were left.
    pub rule: String,
    /// The metric the rule watches.
    pub metric: String,
    /// Event time of the first out-of-range reading, epoch milliseconds.
    pub start: i64,
    /// Event time of the first in-range reading after it; `None` while it goes on.
    pub end: Option<i64>,
    /// Event time of the newest reading counted (the closing one once ended).
    pub last: i64,
    /// The reading farthest past the limits.
    pub peak: f64,
    /// Time out of range, milliseconds: `end` (or `last` while open) minus `start`.
    pub out_ms: i64,
    /// Silences inside the excursion (see the module doc), and their total length.
    pub gaps: u32,
    pub gap_ms: i64,
}

impl ExcursionRecord {
    /// Whether the excursion has ended.
    pub fn is_closed(&self) -> bool {
        self.end.is_some()
    }
}

/// The recent spacings of one metric's readings, for telling a gap from normal spacing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Spacings {
    ring: [i64; SPACINGS],
    len: u8,
    next: u8,
}

impl Spacings {
    pub(crate) fn push(&mut self, spacing: i64) {
        self.ring[self.next as usize] = spacing;
        self.next = ((self.next as usize + 1) % SPACINGS) as u8;
        self.len = (self.len as usize + 1).min(SPACINGS) as u8;
    }

    /// The median spacing, once enough are known.
    pub(crate) fn typical(&self) -> Option<i64> {
        let n = self.len as usize;
        if n < MIN_SPACINGS {
            return None;
        }
        let mut sorted = self.ring;
        let known = &mut sorted[..n];
        known.sort_unstable();
        Some(known[n / 2])
    }
}

/// One rule's open excursion.
#[derive(Debug, Clone)]
pub(crate) struct OpenExcursion {
    record: ExcursionRecord,
    /// How far past the limits `record.peak` is.
    excess: f64,
    /// Changed since the caller last collected it.
    pub(crate) dirty: bool,
}

/// How far `value` is past `[min, max]` (0 inside).
pub(crate) fn excess(min: Option<f64>, max: Option<f64>, value: f64) -> f64 {
    let below = min.map_or(0.0, |lo| lo - value);
    let above = max.map_or(0.0, |hi| value - hi);
    below.max(above).max(0.0)
}

/// What one live reading did to a rule's excursion.
pub(crate) enum Step {
    Nothing,
    /// It began one.
    Opened(OpenExcursion),
    /// It ended the open one (whose record now has its `end`).
    Closed,
}

/// What one live reading does to a rule's excursion (`open`, if one is); `typical` is
/// the metric's typical spacing before this reading.
#[allow(clippy::too_many_arguments)] // one call site, reads best flat
pub(crate) fn observe(
    open: Option<&mut OpenExcursion>,
    rule: &str,
    metric: &str,
    min: Option<f64>,
    max: Option<f64>,
    typical: Option<i64>,
    ts: i64,
    value: f64,
) -> Step {
    let past = excess(min, max, value);
    let out_of_range = past > 0.0;
    let Some(exc) = open else {
        if !out_of_range {
            return Step::Nothing;
        }
        return Step::Opened(OpenExcursion {
            record: ExcursionRecord {
                rule: rule.to_string(),
                metric: metric.to_string(),
                start: ts,
                end: None,
                last: ts,
                peak: value,
                out_ms: 0,
                gaps: 0,
                gap_ms: 0,
            },
            excess: past,
            dirty: true,
        });
    };
    let r = &mut exc.record;
    // Every live reading of the metric passes here, so `last` is the one before.
    let spacing = ts.saturating_sub(r.last);
    if typical.is_some_and(|t| spacing > t.saturating_mul(GAP_FACTOR)) {
        r.gaps += 1;
        r.gap_ms += spacing;
    }
    r.last = ts;
    r.out_ms = ts - r.start;
    if out_of_range {
        if past > exc.excess {
            exc.excess = past;
            r.peak = value;
        }
        exc.dirty = true;
        Step::Nothing
    } else {
        r.end = Some(ts);
        Step::Closed
    }
}

/// An open excursion restored from its stored record (rebuild after a restart).
pub(crate) fn restore(
    record: ExcursionRecord,
    min: Option<f64>,
    max: Option<f64>,
) -> OpenExcursion {
    OpenExcursion {
        excess: excess(min, max, record.peak),
        record,
        dirty: false,
    }
}

impl OpenExcursion {
    pub(crate) fn record(&self) -> &ExcursionRecord {
        &self.record
    }

    pub(crate) fn into_record(self) -> ExcursionRecord {
        self.record
    }
}
