//! One run of one job: its span, its timeout, and turning whatever happened (report,
//! error, panic, timeout) into a [`Finished`] record.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::job::{Job, JobContext, JobError};
use crate::status::Outcome;
use crate::text;

/// How a run ended, for the status and the metrics.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub(crate) started_at: OffsetDateTime,
    pub(crate) duration: Duration,
    pub(crate) outcome: Outcome,
    pub(crate) message: String,
}

/// Runs `job` once under `timeout`; never panics (the job's panic is caught).
pub(crate) async fn execute(
    name: Arc<str>,
    job: Arc<dyn Job>,
    cancel: CancellationToken,
    timeout: Option<Duration>,
    started_at: OffsetDateTime,
) -> Finished {
    let span = tracing::info_span!("job", job = %name, kind = job.name());
    async move {
        tracing::debug!("job started");
        let started = Instant::now();
        let ctx = JobContext::new(Arc::clone(&name), cancel.clone());
        // The future is dropped on timeout (or at shutdown), so the job cannot outlive
        // its run record and overlap the next run.
        let work = AssertUnwindSafe(job.run(ctx)).catch_unwind();
        let result = match timeout {
            Some(limit) => tokio::time::timeout(limit, work).await.ok(),
            None => Some(work.await),
        };
        let duration = started.elapsed();
        let (outcome, message) = match result {
            None => {
                cancel.cancel();
                let limit = timeout.map_or_else(String::new, text::duration);
                (Outcome::TimedOut, format!("timed out after {limit}"))
            }
            Some(Err(panic)) => (
                Outcome::Failed,
                format!("panicked: {}", panic_message(panic.as_ref())),
            ),
            Some(Ok(Ok(report))) => (Outcome::Ok, report.summary),
            Some(Ok(Err(JobError::Cancelled))) => (Outcome::Cancelled, "cancelled".to_owned()),
            Some(Ok(Err(error))) => (Outcome::Failed, error_chain(&error)),
        };
        let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Outcome::Ok | Outcome::Cancelled => {
                tracing::info!(outcome = outcome.as_str(), duration_ms, %message, "job finished")
            }
            Outcome::Failed | Outcome::TimedOut => {
                tracing::warn!(outcome = outcome.as_str(), duration_ms, %message, "job failed")
            }
        }
        Finished {
            started_at,
            duration,
            outcome,
            message,
        }
    }
    .instrument(span)
    .await
}

/// The text a panic was raised with (`panic!("…")` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-text panic payload".to_owned()
    }
}

/// `outer: inner: root cause`, so the status shows why, not only what.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Transparent wrappers repeat their cause's text; say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("checkpoint failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chains_name_every_cause_once() {
        let error = JobError::from_error(Outer(std::io::Error::other("database is locked")));
        assert_eq!(error_chain(&error), "checkpoint failed: database is locked");
        assert_eq!(error_chain(&JobError::failed("plain")), "plain");
    }

    #[test]
    fn panic_messages_are_read_from_text_payloads() {
        let from_str: Box<dyn Any + Send> = Box::new("boom");
        let from_string: Box<dyn Any + Send> = Box::new(String::from("bang"));
        let other: Box<dyn Any + Send> = Box::new(42_u8);
        assert_eq!(panic_message(from_str.as_ref()), "boom");
        assert_eq!(panic_message(from_string.as_ref()), "bang");
        assert_eq!(panic_message(other.as_ref()), "a non-text panic payload");
    }
}
