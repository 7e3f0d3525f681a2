//! Capacity as lag: admitting a publish against a topic's lag ([`reserve`]), and the
//! drain-rate estimate behind the `retry_after` hint of [`crate::BusError::Full`] (how
//! long until consumers have acked enough for a refused message to fit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::BusError;

/// Counts `weight` into `lag`, or refuses it with `Full` when that would pass
/// `capacity`. A message heavier than the whole capacity is still let into an empty
/// topic, so it can never be refused forever.
pub(crate) fn reserve(
    lag: &AtomicU64,
    weight: u64,
    capacity: u64,
    drain: &Mutex<DrainMeter>,
) -> Result<(), BusError> {
    lag.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |pending| {
        let fits = pending
            .checked_add(weight)
            .is_some_and(|after| after <= capacity);
        (pending == 0 || fits).then(|| pending.saturating_add(weight))
    })
    .map(drop)
    .map_err(|pending| {
        let excess = pending.saturating_add(weight).saturating_sub(capacity);
        let retry_after = drain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retry_after(excess, Instant::now());
        BusError::Full {
            pending,
            capacity,
            retry_after,
        }
    })
}

/// The hint when no drain rate has been observed yet (consumers stalled or just started).
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
const MIN_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// How long acks are counted before the rate is recomputed.
const WINDOW: Duration = Duration::from_secs(1);

/// Acked readings per second, measured over consecutive windows of about [`WINDOW`].
#[derive(Debug)]
pub(crate) struct DrainMeter {
    window_start: Instant,
    acked_in_window: u64,
    /// Readings per second over the last complete window, if one has completed.
    rate: Option<f64>,
}

impl DrainMeter {
    /// A meter whose first window starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            acked_in_window: 0,
            rate: None,
        }
    }

    /// Records `readings` acked at `now`.
    pub fn record(&mut self, readings: u64, now: Instant) {
        self.roll(now);
        self.acked_in_window += readings;
    }

    /// How long until `excess` more readings have drained, clamped to a sane range.
    pub fn retry_after(&mut self, excess: u64, now: Instant) -> Duration {
        self.roll(now);
        match self.rate {
            Some(rate) if rate > 0.0 => {
                Duration::from_secs_f64(excess as f64 / rate).clamp(MIN_RETRY, MAX_RETRY)
            }
            _ => DEFAULT_RETRY,
        }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return;
        }
        // A window long past (idle consumers) honestly reports a low rate, which is
        // what a stalled drain should advertise.
        self.rate = Some(self.acked_in_window as f64 / elapsed.as_secs_f64());
        self.window_start = now;
        self.acked_in_window = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (acks recorded as (readings, at ms), excess, asked at ms, expected hint)
    type Case = (&'static [(u64, u64)], u64, u64, Duration);

    #[test]
    fn reserve_admits_up_to_capacity_and_always_into_an_empty_topic() {
        // (lag before, weight, capacity, admitted)
        let cases: &[(u64, u64, u64, bool)] = &[
            (0, 5, 10, true),
            (5, 5, 10, true),
            (6, 5, 10, false),
            (10, 0, 10, true),
            (11, 0, 10, false),
            (0, 50, 10, true),
            (1, 50, 10, false),
            (u64::MAX, 1, u64::MAX, false),
            (0, u64::MAX, 1, true),
        ];
        for &(before, weight, capacity, admitted) in cases {
            let lag = AtomicU64::new(before);
            let drain = Mutex::new(DrainMeter::new(Instant::now()));
            let outcome = reserve(&lag, weight, capacity, &drain);
            let after = lag.load(Ordering::SeqCst);
            match outcome {
                Ok(()) => {
                    assert!(admitted, "{before}+{weight} of {capacity} admitted");
                    assert_eq!(after, before.saturating_add(weight));
                }
                Err(BusError::Full {
                    pending,
                    capacity: c,
                    retry_after,
                }) => {
                    assert!(!admitted, "{before}+{weight} of {capacity} refused");
                    assert_eq!((pending, c, after), (before, capacity, before));
                    assert_eq!(retry_after, DEFAULT_RETRY, "no drain observed yet");
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
    }

    #[test]
    fn estimates_from_the_last_complete_window() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let cases: &[Case] = &[
            (&[], 100, 10, DEFAULT_RETRY),
            (&[(500, 100)], 100, 900, DEFAULT_RETRY),
            (&[(1000, 100)], 500, 1000, Duration::from_millis(500)),
            (&[(1000, 100)], 1, 1000, MIN_RETRY),
            (&[(10, 100)], 1_000_000, 1000, MAX_RETRY),
            (&[(0, 100)], 5, 1000, DEFAULT_RETRY),
            (
                &[(1000, 100), (4000, 1500)],
                2000,
                2500,
                Duration::from_millis(500),
            ),
        ];
        for (acks, excess, at, expected) in cases {
            let mut meter = DrainMeter::new(t0);
            for &(readings, when) in *acks {
                meter.record(readings, ms(when));
            }
            assert_eq!(
                meter.retry_after(*excess, ms(*at)),
                *expected,
                "{acks:?} excess {excess} at {at}"
            );
        }
    }
}
