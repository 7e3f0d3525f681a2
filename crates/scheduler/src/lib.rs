//! The scheduler: named jobs on an interval or a cron expression, run by one leader when
//! the service is scaled out, with their last and next run in [`Scheduler`]'s status and
//! in metrics.
//!
//! How it fits together:
//! - a [`Job`] does one piece of periodic work (a WAL checkpoint, a retention sweep) and
//!   honours the cancellation in its [`JobContext`]; [`job_fn`] makes one from a closure;
//! - a [`Schedule`] says when: [`Schedule::Every`] a period, or [`Schedule::Cron`] a 5- or
//!   6-field expression in UTC;
//! - the [`Scheduler`] is the registry by name; [`Scheduler::start`] spawns one task that
//!   starts due jobs and returns a [`SchedulerHandle`] for [`SchedulerHandle::status`] and
//!   [`SchedulerHandle::stop`];
//! - [`Leases`] is the port through which several processes agree on one leader: only the
//!   process holding the scheduler's lease runs jobs. [`MemoryLeases`] serves one process
//!   and the tests; a store-backed lease table serves a fleet, and passes the same
//!   `conformance` suite (feature `conformance`).
//!
//! Semantics every job gets:
//! - a job never overlaps itself: a fire time that comes while the previous run is still
//!   going is counted as `missed`, and all such times fold into ONE run started as soon as
//!   the long run ends (no pile-up);
//! - a panic is caught and recorded as a failure; the scheduler carries on;
//! - a run past its [`JobOptions::timeout`] is dropped and recorded as `timed_out`;
//! - [`SchedulerHandle::stop`] cancels every [`JobContext`], waits for running jobs up to a
//!   deadline, drops the rest, and releases the lease so another process takes over at once.
//!
//! Why not `tokio-cron-scheduler` (the first choice in the style guide): it owns the loop,
//! so it has no notion of a leader lease (two replicas would both run every job), no
//! per-job status (last/next run, outcome, duration) to serve at `GET /api/v1/jobs`, no
//! overlap rule of ours, and 0.15 pulls in chrono, chrono-tz (a compiled-in time zone
//! database), uuid and an older croner. The loop here is small; the hard part, cron
//! arithmetic, comes from `croner`.
//!
//! Why `croner` 4 and not `cron` 0.17 (compared with `cargo tree`): croner builds without
//! chrono and lets us plug in the `time` crate the workspace already uses (its
//! `CronDateTime` trait, implemented in [`schedule`]); its only new crates are build-time
//! macros (derive_builder, darling, strum). `cron` needs chrono (with its local time zone
//! lookup), phf and a second `rand`; it reads only 6- or 7-field expressions (seconds
//! first) where operators write the classic 5 fields; it numbers weekdays from Sunday = 1
//! where POSIX has Sunday = 0; and it requires day-of-month AND day-of-week to match where
//! Vixie cron (and croner) accept either.

#![warn(missing_docs)]

pub mod clock;
pub mod job;
pub mod lease;
pub mod metrics;
pub mod schedule;
mod scheduler;
pub mod status;
mod text;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use clock::{Clock, SystemClock, TokioClock};
pub use job::{job_fn, FnJob, Job, JobContext, JobError, JobReport, ManualCancel};
pub use lease::{LeaseError, Leases, MemoryLeases};
pub use schedule::{Schedule, ScheduleError};
pub use scheduler::{
    JobOptions, Scheduler, SchedulerError, SchedulerHandle, SchedulerOptions, StopReport,
};
pub use status::{JobStatus, LastRun, Outcome};
