//! What a job is: the [`Job`] trait, the context a run gets, and what a run returns.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

/// One piece of periodic work (a WAL checkpoint, a retention sweep, a health loop).
///
/// The scheduler calls [`Job::run`] from its own task, never twice at once for one
/// registration. A run should return soon after [`JobContext::cancelled`] fires
/// (shutdown, or this process lost the leader lease), with [`JobError::Cancelled`] or
/// with whatever it finished.
#[async_trait]
pub trait Job: Send + Sync {
    /// The kind of work, for logs (e.g. `sqlite.wal_checkpoint`). The name given to
    /// [`Scheduler::register`](crate::Scheduler::register) identifies one scheduled
    /// instance in status and metrics, so one kind can be registered several times.
    fn name(&self) -> &str;

    /// Does the work once.
    async fn run(&self, ctx: JobContext) -> Result<JobReport, JobError>;
}

/// What a run gets from the scheduler.
#[derive(Debug, Clone)]
pub struct JobContext {
    name: Arc<str>,
    cancel: CancellationToken,
}

impl JobContext {
    pub(crate) fn new(name: Arc<str>, cancel: CancellationToken) -> Self {
        JobContext { name, cancel }
    }

    /// A context outside any scheduler (tests, a one-off run from the CLI), with the
    /// handle that cancels it.
    pub fn manual(name: &str) -> (JobContext, ManualCancel) {
        let cancel = CancellationToken::new();
        (
            JobContext::new(Arc::from(name), cancel.clone()),
            ManualCancel(cancel),
        )
    }

    /// The registered name of the job this run belongs to.
    pub fn job_name(&self) -> &str {
        &self.name
    }

    /// Whether the run should stop: the scheduler is shutting down or this process is
    /// no longer the leader. Cheap; check it between units of work.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the run should stop; `select!` on it around long awaits.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}

/// Cancels a context made by [`JobContext::manual`].
#[derive(Debug, Clone)]
pub struct ManualCancel(CancellationToken);

impl ManualCancel {
    /// Fires the context's cancellation, as a shutdown would.
    pub fn cancel(&self) {
        self.0.cancel();
    }
}

/// What a successful run did, in a few words for the status page
/// (e.g. "checkpointed 1,234 pages").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobReport {
    /// Short human summary; empty when there is nothing worth saying.
    pub summary: String,
}

impl JobReport {
    /// A report with this summary.
    pub fn new(summary: impl Into<String>) -> Self {
        JobReport {
            summary: summary.into(),
        }
    }
}

impl From<String> for JobReport {
    fn from(summary: String) -> Self {
        JobReport { summary }
    }
}

impl From<&str> for JobReport {
    fn from(summary: &str) -> Self {
        JobReport::new(summary)
    }
}

/// Why a run did not complete its work.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The work failed; the message goes to the status page and the log.
    #[error("{0}")]
    Failed(String),
    /// The work failed because of this error (its chain goes to the log).
    #[error(transparent)]
    Source(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The run stopped early because its context was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl JobError {
    /// A failure with this message.
    pub fn failed(message: impl fmt::Display) -> Self {
        JobError::Failed(message.to_string())
    }

    /// A failure caused by `error`.
    pub fn from_error(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        JobError::Source(Box::new(error))
    }
}

/// A [`Job`] made from an async closure by [`job_fn`].
pub struct FnJob<F> {
    name: String,
    run: F,
}

impl<F> fmt::Debug for FnJob<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnJob").field("name", &self.name).finish()
    }
}

/// Makes a [`Job`] of kind `name` from an async closure, for jobs that need no struct:
///
/// ```
/// use vigia_scheduler::{job_fn, JobReport};
/// let job = job_fn("demo.hello", |ctx| async move {
///     if ctx.is_cancelled() {
///         return Err(vigia_scheduler::JobError::Cancelled);
///     }
///     Ok(JobReport::new("said hello"))
/// });
/// # let _ = job;
/// ```
pub fn job_fn<F, Fut>(name: impl Into<String>, run: F) -> FnJob<F>
where
    F: Fn(JobContext) -> Fut + Send + Sync,
    Fut: Future<Output = Result<JobReport, JobError>> + Send,
{
    FnJob {
        name: name.into(),
        run,
    }
}

#[async_trait]
impl<F, Fut> Job for FnJob<F>
where
    F: Fn(JobContext) -> Fut + Send + Sync,
    Fut: Future<Output = Result<JobReport, JobError>> + Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, ctx: JobContext) -> Result<JobReport, JobError> {
        (self.run)(ctx).await
    }
}

/// Shared jobs: registering an `Arc` of a job (even `Arc<dyn Job>`) works like
/// registering the job.
#[async_trait]
impl<J: Job + ?Sized> Job for Arc<J> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn run(&self, ctx: JobContext) -> Result<JobReport, JobError> {
        (**self).run(ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closure_job_runs_and_sees_its_context() {
        let job = job_fn("kind", |ctx: JobContext| async move {
            Ok(JobReport::new(format!("ran {}", ctx.job_name())))
        });
        assert_eq!(job.name(), "kind");
        let (ctx, _cancel) = JobContext::manual("instance");
        let report = job.run(ctx).await.expect("closure job succeeds");
        assert_eq!(report.summary, "ran instance");
    }

    #[tokio::test]
    async fn manual_cancel_reaches_the_job() {
        let job = job_fn("waits", |ctx: JobContext| async move {
            ctx.cancelled().await;
            Err::<JobReport, _>(JobError::Cancelled)
        });
        let (ctx, cancel) = JobContext::manual("waits");
        assert!(!ctx.is_cancelled());
        let observer = ctx.clone();
        let run = tokio::spawn(async move { job.run(ctx).await });
        cancel.cancel();
        assert!(observer.is_cancelled());
        let result = run.await.expect("job task");
        assert!(matches!(result, Err(JobError::Cancelled)));
    }

    #[test]
    fn errors_render_their_message() {
        assert_eq!(JobError::failed("disk full").to_string(), "disk full");
        let io = std::io::Error::other("no such table");
        assert_eq!(JobError::from_error(io).to_string(), "no such table");
        assert_eq!(JobError::Cancelled.to_string(), "cancelled");
        assert_eq!(JobReport::from("x"), JobReport::new("x"));
    }
}
