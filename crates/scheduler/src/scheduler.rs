//! The registry of jobs by name, and the handle of a started scheduler.

mod engine;
mod run;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::job::Job;
use crate::lease::Leases;
use crate::schedule::{Plan, Schedule, ScheduleError};
use crate::status::JobStatus;

/// How the scheduler elects its leader and reads the time.
#[derive(Clone)]
pub struct SchedulerOptions {
    /// The lease every process of one deployment competes for; the holder runs the jobs.
    pub lease_name: String,
    /// Who this process is in the lease table: unique per process, readable in a
    /// diagnosis (default: host name, process id and start time).
    pub holder: String,
    /// How long the lease lasts without renewal; renewed every third of it. A leader
    /// that dies is replaced within this time. At least one second.
    pub lease_ttl: Duration,
    /// The wall clock for cron schedules and status ([`SystemClock`] in production).
    pub clock: Arc<dyn Clock>,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            lease_name: "scheduler".to_owned(),
            holder: default_holder(),
            lease_ttl: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for SchedulerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerOptions")
            .field("lease_name", &self.lease_name)
            .field("holder", &self.holder)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

/// `host-pid-start`: unique per process, and says which machine leads.
fn default_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vigia".to_owned());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{host}-{}-{started:x}", std::process::id())
}

/// Per-job settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOptions {
    /// A disabled job is listed in the status but never runs.
    pub enabled: bool,
    /// A run still going after this long is dropped and recorded as `timed_out`.
    /// `None`: no limit (the job must honour cancellation at shutdown itself).
    pub timeout: Option<Duration>,
    /// Also run once as soon as the scheduler starts (if this process leads), instead
    /// of waiting for the first fire time.
    pub run_at_start: bool,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            enabled: true,
            timeout: None,
            run_at_start: false,
        }
    }
}

/// Why the scheduler refused a registration or its options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// A job needs a name for status, metrics and configuration.
    #[error("job name must not be empty")]
    EmptyName,
    /// Two jobs cannot share a name.
    #[error("a job named {0:?} is already registered")]
    DuplicateName(String),
    /// The job's schedule is invalid.
    #[error("job {name:?}: {source}")]
    Schedule {
        /// The job's registered name.
        name: String,
        /// What is wrong with the schedule.
        #[source]
        source: ScheduleError,
    },
    /// A zero timeout would fail every run at once.
    #[error("job {name:?}: timeout must be longer than zero")]
    ZeroTimeout {
        /// The job's registered name.
        name: String,
    },
    /// The scheduler's own options are unusable.
    #[error("scheduler options: {0}")]
    Options(String),
}

/// One registered job.
pub(crate) struct Entry {
    pub(crate) name: Arc<str>,
    pub(crate) schedule: Schedule,
    pub(crate) plan: Plan,
    pub(crate) job: Arc<dyn Job>,
    pub(crate) options: JobOptions,
}

/// The registry of jobs, before it starts. Register every job, then [`Scheduler::start`].
pub struct Scheduler {
    leases: Arc<dyn Leases>,
    options: SchedulerOptions,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|e| &*e.name).collect();
        f.debug_struct("Scheduler")
            .field("options", &self.options)
            .field("jobs", &names)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler that competes for its lease in `leases`.
    pub fn new(
        leases: Arc<dyn Leases>,
        options: SchedulerOptions,
    ) -> Result<Scheduler, SchedulerError> {
        if options.lease_name.trim().is_empty() {
            return Err(SchedulerError::Options(
                "lease_name must not be empty".into(),
            ));
        }
        if options.holder.trim().is_empty() {
            return Err(SchedulerError::Options("holder must not be empty".into()));
        }
        // Backends time leases with their own clocks, some to the second; below that
        // renewals would race the clock's resolution.
        if options.lease_ttl < Duration::from_secs(1) {
            return Err(SchedulerError::Options(format!(
                "lease_ttl must be at least 1s, got {:?}",
                options.lease_ttl
            )));
        }
        Ok(Scheduler {
            leases,
            options,
            entries: Vec::new(),
        })
    }

    /// Adds a job under `name`. Refuses an empty or duplicate name, an invalid schedule
    /// and a zero timeout, so configuration mistakes surface at start-up.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        schedule: Schedule,
        job: impl Job + 'static,
        options: JobOptions,
    ) -> Result<(), SchedulerError> {
        let name = name.into();
        if name.trim().is_empty() {
            return Err(SchedulerError::EmptyName);
        }
        if self.entries.iter().any(|e| *e.name == *name) {
            return Err(SchedulerError::DuplicateName(name));
        }
        if options.timeout.is_some_and(|t| t.is_zero()) {
            return Err(SchedulerError::ZeroTimeout { name });
        }
        let plan = schedule.plan().map_err(|source| SchedulerError::Schedule {
            name: name.clone(),
            source,
        })?;
        self.entries.push(Entry {
            name: Arc::from(name),
            schedule,
            plan,
            job: Arc::new(job),
            options,
        });
        Ok(())
    }

    /// The registered jobs, none run yet and no next run planned.
    pub fn status(&self) -> Vec<JobStatus> {
        self.entries.iter().map(initial_status).collect()
    }

    /// Spawns the scheduler's task on the current tokio runtime. It first tries to take
    /// the lease, then runs due jobs while it leads.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(self) -> SchedulerHandle {
        let board = Arc::new(Board {
            jobs: Mutex::new(self.entries.iter().map(initial_status).collect()),
            leader: AtomicBool::new(false),
        });
        let (stop_tx, stop_rx) = watch::channel(None);
        let holder = self.options.holder.clone();
        let engine = engine::Engine::new(
            self.entries,
            Arc::clone(&board),
            self.leases,
            self.options,
            stop_rx,
        );
        let task = tokio::spawn(engine.run());
        SchedulerHandle {
            inner: Arc::new(HandleInner {
                board,
                holder,
                stop_tx,
                task: tokio::sync::Mutex::new(Some(task)),
            }),
        }
    }
}

fn initial_status(entry: &Entry) -> JobStatus {
    JobStatus {
        name: entry.name.to_string(),
        kind: entry.job.name().to_owned(),
        schedule: entry.schedule.to_string(),
        enabled: entry.options.enabled,
        running: false,
        last_run: None,
        next_run: None,
        runs: 0,
        failures: 0,
        missed: 0,
        leader: false,
    }
}

/// What the engine publishes for [`SchedulerHandle::status`]; one short lock per update.
pub(crate) struct Board {
    pub(crate) jobs: Mutex<Vec<JobStatus>>,
    pub(crate) leader: AtomicBool,
}

impl Board {
    pub(crate) fn update(&self, index: usize, change: impl FnOnce(&mut JobStatus)) {
        // Updates are plain field writes; a panic elsewhere cannot leave one half done,
        // so a poisoned lock still holds consistent data.
        let mut jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(status) = jobs.get_mut(index) {
            change(status);
        }
    }

    fn snapshot(&self) -> Vec<JobStatus> {
        let leader = self.leader.load(Ordering::Relaxed);
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        jobs.iter()
            .cloned()
            .map(|mut s| {
                s.leader = leader;
                s
            })
            .collect()
    }
}

/// A started scheduler; clone it to read the status from elsewhere (the HTTP route).
/// Dropping every clone without [`SchedulerHandle::stop`] stops the scheduler without
/// waiting for its jobs.
#[derive(Clone)]
pub struct SchedulerHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    board: Arc<Board>,
    holder: String,
    stop_tx: watch::Sender<Option<Duration>>,
    task: tokio::sync::Mutex<Option<JoinHandle<StopReport>>>,
}

impl std::fmt::Debug for SchedulerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerHandle")
            .field("holder", &self.inner.holder)
            .field("leader", &self.is_leader())
            .finish_non_exhaustive()
    }
}

/// How a [`SchedulerHandle::stop`] went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Jobs still running at the deadline; they were dropped mid-run and recorded as
    /// `cancelled`.
    pub dropped: Vec<String>,
}

impl SchedulerHandle {
    /// Every registered job, in registration order.
    pub fn status(&self) -> Vec<JobStatus> {
        self.inner.board.snapshot()
    }

    /// Whether this process holds the lease and so runs the jobs.
    pub fn is_leader(&self) -> bool {
        self.inner.board.leader.load(Ordering::Relaxed)
    }

    /// This process's name in the lease table.
    pub fn holder(&self) -> &str {
        &self.inner.holder
    }

    /// Stops starting jobs, cancels the running ones' contexts, waits for them up to
    /// `deadline`, drops those still running, and releases the lease so another
    /// process takes over at once. Keep `deadline` under the lease TTL: the lease is
    /// not renewed meanwhile. Calling it again returns at once with an empty report.
    pub async fn stop(&self, deadline: Duration) -> StopReport {
        let mut task = self.inner.task.lock().await;
        let Some(handle) = task.take() else {
            return StopReport::default();
        };
        // The engine holds the receiver until it returns, so this cannot fail while
        // `handle` is still ours to await.
        let _ = self.inner.stop_tx.send(Some(deadline));
        match handle.await {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %e, "scheduler task ended abnormally");
                StopReport::default()
            }
        }
    }
}
