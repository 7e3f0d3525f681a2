//! The rules of an attempt's lease: how long a claimed robot stays with its attempt without
//! news, and what the sweeper does with one that went quiet.
//!
//! A claim grants a lease of `lease_ms`; every heartbeat or progress report extends it to
//! `now + lease_ms` (never shortens it). The sweeper asks [`LeasePolicy::verdict`]:
//!
//! - **cancel overdue**: a cancel was asked `cancel_grace_ms` ago and the attempt still runs:
//!   the robot is cancelled by force (a cooperative worker sees the request in its next
//!   heartbeat's answer and stops before that). Checked first: a robot being cancelled is
//!   not retried.
//! - **expired**: no heartbeat for `lease_ms` — the worker or the process that held the call
//!   died. The attempt failed; the retry policy decides (a re-queued robot gets a new attempt
//!   number, so the dead attempt's late report is stale). With the default 30 s lease and a
//!   sweep every few seconds, a killed run is re-queued within about 30 s.
//! - **stalled**: heartbeats come but no progress for `stall_timeout_ms`: alive but stuck.
//!   The attempt failed, as above, so a stuck robot does not hold its slot for ever.

use crate::ConfigError;

/// Tuning of attempt leases. Times are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasePolicy {
    /// How long an attempt lives without a heartbeat. Default 30,000; workers should beat
    /// at a third of it.
    pub lease_ms: i64,
    /// How long an attempt may go without progress while heartbeating. Default 600,000.
    pub stall_timeout_ms: i64,
    /// How long a cancel waits for the worker to stop by itself. Default 30,000.
    pub cancel_grace_ms: i64,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        Self {
            lease_ms: 30_000,
            stall_timeout_ms: 600_000,
            cancel_grace_ms: 30_000,
        }
    }
}

/// What the store keeps of a running attempt's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The attempt dies at this time (ms) unless a heartbeat extends it.
    pub expires_at: i64,
    /// The last progress report, or the claim (ms).
    pub last_progress_at: i64,
    /// When a caller asked to cancel, if one did (ms).
    pub cancel_requested_at: Option<i64>,
}

/// What the sweeper does with a running attempt at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseVerdict {
    /// Leave it be.
    Alive,
    /// Cancel it by force (terminal `cancelled`).
    CancelOverdue,
    /// No heartbeat in time: the attempt failed (retry policy).
    Expired,
    /// No progress in time: the attempt failed (retry policy).
    Stalled,
}

impl LeasePolicy {
    /// Checks that every duration is positive.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fields = [
            ("lease_ms", self.lease_ms),
            ("stall_timeout_ms", self.stall_timeout_ms),
            ("cancel_grace_ms", self.cancel_grace_ms),
        ];
        match fields.into_iter().find(|&(_, value)| value <= 0) {
            Some((field, _)) => Err(ConfigError::new("lease", field, "must be positive")),
            None => Ok(()),
        }
    }

    /// The lease of an attempt claimed at `now`.
    pub fn grant(&self, now: i64) -> Lease {
        Lease {
            expires_at: now.saturating_add(self.lease_ms),
            last_progress_at: now,
            cancel_requested_at: None,
        }
    }

    /// A heartbeat at `now`: the lease runs until `now + lease_ms`, or later if it already
    /// did (a delayed heartbeat cannot shorten it).
    pub fn heartbeat(&self, lease: Lease, now: i64) -> Lease {
        Lease {
            expires_at: lease.expires_at.max(now.saturating_add(self.lease_ms)),
            ..lease
        }
    }

    /// A progress report at `now`: a heartbeat that also resets the stall clock.
    pub fn progress(&self, lease: Lease, now: i64) -> Lease {
        Lease {
            last_progress_at: lease.last_progress_at.max(now),
            ..self.heartbeat(lease, now)
        }
    }

    /// A cancel asked at `now`; a second request keeps the first one's time.
    pub fn cancel(&self, lease: Lease, now: i64) -> Lease {
        Lease {
            cancel_requested_at: Some(lease.cancel_requested_at.unwrap_or(now)),
            ..lease
        }
    }

    /// What to do with the attempt at `now` (see the module doc for the order).
    pub fn verdict(&self, lease: Lease, now: i64) -> LeaseVerdict {
        if lease
            .cancel_requested_at
            .is_some_and(|at| now - at >= self.cancel_grace_ms)
        {
            LeaseVerdict::CancelOverdue
        } else if now >= lease.expires_at {
            LeaseVerdict::Expired
        } else if now - lease.last_progress_at >= self.stall_timeout_ms {
            LeaseVerdict::Stalled
        } else {
            LeaseVerdict::Alive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LeaseVerdict::*;

    #[derive(Debug, Clone, Copy)]
    enum Event {
        Heartbeat(i64),
        Progress(i64),
        Cancel(i64),
        /// The verdict at this time must be this.
        Expect(i64, LeaseVerdict),
    }
    use Event::*;

    #[test]
    fn verdicts() {
        let policy = LeasePolicy {
            lease_ms: 30_000,
            stall_timeout_ms: 100_000,
            cancel_grace_ms: 10_000,
        };
        #[rustfmt::skip]
        let cases: &[(&str, &[Event])] = &[
            ("alive until the lease ends", &[Expect(0, Alive), Expect(29_999, Alive), Expect(30_000, Expired)]),
            ("a heartbeat extends it", &[Heartbeat(20_000), Expect(49_999, Alive), Expect(50_000, Expired)]),
            ("a late-arriving old heartbeat does not shorten it", &[
                Heartbeat(20_000), Heartbeat(5_000), Expect(49_999, Alive),
            ]),
            ("heartbeats without progress stall", &[
                Heartbeat(25_000), Heartbeat(50_000), Heartbeat(75_000), Expect(99_999, Alive),
                Expect(100_000, Stalled),
            ]),
            ("progress resets the stall clock", &[
                Progress(25_000), Heartbeat(50_000), Heartbeat(75_000), Heartbeat(100_000),
                Expect(124_999, Alive), Expect(125_000, Stalled),
            ]),
            ("a cancel waits for its grace", &[
                Cancel(5_000), Expect(14_999, Alive), Expect(15_000, CancelOverdue),
            ]),
            ("a second cancel keeps the first one's time", &[
                Cancel(5_000), Cancel(12_000), Expect(15_000, CancelOverdue),
            ]),
            ("an overdue cancel wins over an expired lease", &[
                Cancel(25_000), Expect(30_000, Expired), Expect(35_000, CancelOverdue),
            ]),
            ("expired wins over stalled", &[Expect(200_000, Expired)]),
        ];
        for (name, events) in cases {
            let mut lease = policy.grant(0);
            for event in events.iter() {
                match *event {
                    Heartbeat(at) => lease = policy.heartbeat(lease, at),
                    Progress(at) => lease = policy.progress(lease, at),
                    Cancel(at) => lease = policy.cancel(lease, at),
                    Expect(at, verdict) => {
                        assert_eq!(policy.verdict(lease, at), verdict, "{name}, at {at}")
                    }
                }
            }
        }
    }
}
