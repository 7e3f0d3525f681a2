//! What `GET /api/v1/jobs` shows: one [`JobStatus`] per registered job.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::text;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The job returned its report.
    Ok,
    /// The job returned an error or panicked.
    Failed,
    /// The job ran past its timeout and was stopped.
    TimedOut,
    /// The job stopped because the scheduler shut down or lost the leader lease, or it
    /// was still running at the end of the shutdown deadline and was dropped.
    Cancelled,
}

impl Outcome {
    /// The label value in metrics, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// Whether the run counts as a failure (`failures` in the status).
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TimedOut)
    }
}

/// The most recent finished run of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastRun {
    /// When the run started (RFC 3339, UTC).
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: OffsetDateTime,
    /// How long it ran, in milliseconds.
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The job's summary when it succeeded, the reason otherwise.
    pub message: String,
}

/// One registered job, as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStatus {
    /// The registered name (unique within the scheduler).
    pub name: String,
    /// The kind of work ([`Job::name`](crate::Job::name)).
    pub kind: String,
    /// The schedule as text: `every 5m` or `cron 0 3 * * *` (cron times are UTC).
    pub schedule: String,
    /// False when the job is registered but switched off in configuration.
    pub enabled: bool,
    /// Whether a run is going on in this process now.
    pub running: bool,
    /// The last finished run, if any since this process started.
    pub last_run: Option<LastRun>,
    /// When the next run is due (RFC 3339, UTC); absent when disabled or not started.
    /// On a process that is not the leader, this is when the leader should run it.
    #[serde(serialize_with = "ser_opt_time", deserialize_with = "de_opt_time")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_run: Option<OffsetDateTime>,
    /// Finished runs since this process started, whatever their outcome.
    pub runs: u64,
    /// Runs that failed or timed out.
    pub failures: u64,
    /// Fire times that came while the previous run was still going; they were folded
    /// into one run started when it ended.
    pub missed: u64,
    /// Whether this process holds the scheduler's lease (only the leader runs jobs).
    pub leader: bool,
}

fn ser_time<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&text::rfc3339(*t))
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    let raw = String::deserialize(d)?;
    text::parse_rfc3339(&raw)
        .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {raw:?}")))
}

fn ser_opt_time<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&text::rfc3339(*t)),
        None => s.serialize_none(),
    }
}

fn de_opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(raw) => text::parse_rfc3339(&raw)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {raw:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sample() -> JobStatus {
        JobStatus {
            name: "wal_checkpoint".into(),
            kind: "sqlite.wal_checkpoint".into(),
            schedule: "every 5m".into(),
            enabled: true,
            running: false,
            last_run: Some(LastRun {
                started_at: datetime!(2026-03-01 03:00:00.250 UTC),
                duration_ms: 42,
                outcome: Outcome::TimedOut,
                message: "timed out after 30s".into(),
            }),
            next_run: Some(datetime!(2026-03-01 03:05:00 UTC)),
            runs: 3,
            failures: 1,
            missed: 0,
            leader: true,
        }
    }

    #[test]
    fn serialises_times_as_rfc3339_and_outcomes_in_snake_case() {
        let json = serde_json::to_value(sample()).expect("serialise");
        assert_eq!(json["last_run"]["started_at"], "2026-03-01T03:00:00.250Z");
        assert_eq!(json["last_run"]["outcome"], "timed_out");
        assert_eq!(json["next_run"], "2026-03-01T03:05:00.000Z");
        let back: JobStatus = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, sample());
    }

    #[test]
    fn absent_times_are_null_and_bad_times_are_refused() {
        let mut status = sample();
        status.next_run = None;
        status.last_run = None;
        let json = serde_json::to_value(&status).expect("serialise");
        assert!(json["next_run"].is_null());
        assert!(json["last_run"].is_null());
        assert_eq!(
            serde_json::from_value::<JobStatus>(json).expect("parse"),
            status
        );

        let mut bad = serde_json::to_value(sample()).expect("serialise");
        bad["next_run"] = "tomorrow".into();
        let err = serde_json::from_value::<JobStatus>(bad).expect_err("refused");
        assert!(err.to_string().contains("not an RFC 3339 time"), "{err}");
    }

    #[test]
    fn outcome_labels_match_json() {
        for outcome in [
            Outcome::Ok,
            Outcome::Failed,
            Outcome::TimedOut,
            Outcome::Cancelled,
        ] {
            let json = serde_json::to_value(outcome).expect("serialise");
            assert_eq!(json, outcome.as_str());
        }
        assert!(Outcome::TimedOut.is_failure() && Outcome::Failed.is_failure());
        assert!(!Outcome::Ok.is_failure() && !Outcome::Cancelled.is_failure());
    }
}
