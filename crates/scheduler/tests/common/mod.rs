//! Helpers shared by the scheduler's integration tests: a job that logs when it runs,
//! and schedulers on a wall clock that follows tokio's paused time.

#![allow(dead_code)] // each test file uses a different part

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::macros::datetime;
use time::OffsetDateTime;
use tokio::time::Instant;
use vigia_scheduler::{
    job_fn, Job, JobContext, JobError, JobReport, Leases, MemoryLeases, Scheduler,
    SchedulerOptions, TokioClock,
};

/// The wall-clock time every test starts at: a Sunday.
pub const START: OffsetDateTime = datetime!(2026-03-01 10:07:30 UTC);

/// A scheduler on `leases`, whose wall clock starts at [`START`] and follows tokio's.
pub fn scheduler_on(leases: Arc<dyn Leases>, holder: &str) -> Scheduler {
    let options = SchedulerOptions {
        holder: holder.to_owned(),
        lease_ttl: Duration::from_secs(3),
        clock: Arc::new(TokioClock::starting_at(START)),
        ..SchedulerOptions::default()
    };
    Scheduler::new(leases, options).expect("valid options")
}

/// A scheduler alone with its own leases.
pub fn scheduler() -> Scheduler {
    scheduler_on(Arc::new(MemoryLeases::new()), "solo")
}

/// Records when runs start and end (as offsets from the log's creation on tokio's
/// clock) and how many run at once.
#[derive(Clone)]
pub struct RunLog {
    origin: Instant,
    starts: Arc<Mutex<Vec<Duration>>>,
    ends: Arc<Mutex<Vec<Duration>>>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}

impl RunLog {
    pub fn new() -> Self {
        RunLog {
            origin: Instant::now(),
            starts: Arc::default(),
            ends: Arc::default(),
            running: Arc::default(),
            max_running: Arc::default(),
        }
    }

    pub fn starts(&self) -> Vec<Duration> {
        self.starts.lock().expect("log lock").clone()
    }

    pub fn ends(&self) -> Vec<Duration> {
        self.ends.lock().expect("log lock").clone()
    }

    /// Now, as an offset from the log's creation (comparable with starts and ends).
    pub fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn max_running(&self) -> usize {
        self.max_running.load(Ordering::SeqCst)
    }

    /// A job that logs its run and then takes `work` (ignoring cancellation, as a
    /// blocking-minded job would).
    pub fn job(&self, work: Duration) -> impl Job + 'static {
        let log = self.clone();
        job_fn("test.logged", move |_ctx: JobContext| {
            let log = log.clone();
            async move {
                log.enter();
                tokio::time::sleep(work).await;
                log.leave();
                Ok(JobReport::new("logged"))
            }
        })
    }

    /// A job that logs its run and then waits for its cancellation.
    pub fn job_until_cancelled(&self) -> impl Job + 'static {
        let log = self.clone();
        job_fn("test.until_cancelled", move |ctx: JobContext| {
            let log = log.clone();
            async move {
                log.enter();
                ctx.cancelled().await;
                log.leave();
                Err::<JobReport, _>(JobError::Cancelled)
            }
        })
    }

    fn enter(&self) {
        self.starts
            .lock()
            .expect("log lock")
            .push(self.origin.elapsed());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.ends
            .lock()
            .expect("log lock")
            .push(self.origin.elapsed());
    }
}

/// Whole seconds, for readable expectations.
pub fn secs(list: &[u64]) -> Vec<Duration> {
    list.iter().map(|s| Duration::from_secs(*s)).collect()
}
