//! Wall-clock time for cron schedules and status, behind a trait so tests can make it
//! follow tokio's paused clock.
//!
//! Intervals never read the wall clock: they wait on tokio's monotonic clock, so a clock
//! step cannot stretch or shrink them. Cron fire times are wall-clock (UTC) times; the
//! scheduler re-reads the clock at least once a minute, so a stepped clock delays or
//! advances a cron run by at most that.

use std::time::Duration;

use time::OffsetDateTime;

/// Tells the current UTC time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in UTC.
    fn now_utc(&self) -> OffsetDateTime;
}

/// The system's real-time clock; the one to use in production.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_utc(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A wall clock that starts at a chosen time and moves with tokio's clock, so under
/// `#[tokio::test(start_paused = true)]` cron schedules advance exactly with
/// `tokio::time::advance` (or with tokio's auto-advance while every task sleeps).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start_wall: OffsetDateTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `now` at this moment of tokio's clock.
    pub fn starting_at(now: OffsetDateTime) -> Self {
        TokioClock {
            start_wall: now,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_utc(&self) -> OffsetDateTime {
        let elapsed: Duration = self.start.elapsed();
        // Saturate rather than panic: a test would need to run for ~10^4 years to overflow.
        self.start_wall
            .checked_add(time::Duration::try_from(elapsed).unwrap_or(time::Duration::MAX))
            .unwrap_or(self.start_wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::starting_at(datetime!(2026-01-01 00:00:00 UTC));
        assert_eq!(clock.now_utc(), datetime!(2026-01-01 00:00:00 UTC));
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now_utc(), datetime!(2026-01-01 00:01:30 UTC));
    }

    #[test]
    fn system_clock_is_utc() {
        assert!(SystemClock.now_utc().offset().is_utc());
    }
}
