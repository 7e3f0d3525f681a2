//! Names of the metrics the scheduler records, and their help texts. Alert on
//! `time() - vigia_job_last_success_timestamp_seconds` for a job that should have
//! succeeded recently, and on `sum(vigia_scheduler_leader) != 1` across the fleet.

/// Counter: finished runs, by `job` (registered name) and `outcome`
/// (`ok`, `failed`, `timed_out`, `cancelled`).
pub const JOB_RUNS: &str = "vigia_job_runs_total";
/// Histogram: seconds one run took, by `job`.
pub const JOB_DURATION_SECONDS: &str = "vigia_job_duration_seconds";
/// Gauge: Unix time of the last successful run, by `job`.
pub const JOB_LAST_SUCCESS: &str = "vigia_job_last_success_timestamp_seconds";
/// Counter: fire times that came while the previous run was still going, by `job`.
pub const JOB_MISSED: &str = "vigia_job_missed_total";
/// Gauge: 1 while this process holds the scheduler's lease and runs the jobs, else 0.
pub const SCHEDULER_LEADER: &str = "vigia_scheduler_leader";

/// Histogram buckets for [`JOB_DURATION_SECONDS`]: jobs range from a millisecond
/// checkpoint to a long rollup, so the buckets span 1 ms to 30 min.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0,
];

/// Registers help texts, and starts the leader gauge at 0 so the first scrape shows it.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        JOB_RUNS,
        Unit::Count,
        "Finished scheduled job runs, by job and outcome."
    );
    describe_histogram!(
        JOB_DURATION_SECONDS,
        Unit::Seconds,
        "Time one scheduled job run took, by job."
    );
    describe_gauge!(
        JOB_LAST_SUCCESS,
        Unit::Seconds,
        "Unix time of the last successful run, by job."
    );
    describe_counter!(
        JOB_MISSED,
        Unit::Count,
        "Fire times that came while the job's previous run was still going, by job."
    );
    describe_gauge!(
        SCHEDULER_LEADER,
        Unit::Count,
        "1 while this process holds the scheduler lease and runs the jobs, else 0."
    );
    metrics::gauge!(SCHEDULER_LEADER).set(0.0);
}

/// Sets [`SCHEDULER_LEADER`] for this process.
pub(crate) fn set_leader(leader: bool) {
    metrics::gauge!(SCHEDULER_LEADER).set(if leader { 1.0 } else { 0.0 });
}
