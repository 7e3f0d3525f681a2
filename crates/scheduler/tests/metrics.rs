//! The metrics a scheduler records, read back through the Prometheus exporter the
//! binary uses. A thread-local recorder and a current-thread runtime keep this test's
//! metrics apart from any other test's.

mod common;

use std::time::Duration;

use common::{scheduler, RunLog};
use metrics_exporter_prometheus::PrometheusBuilder;
use vigia_scheduler::{job_fn, JobContext, JobError, JobOptions, JobReport, Schedule};

/// The value of the sample line that starts with `series` (name and labels).
fn sample(rendered: &str, series: &str) -> Option<f64> {
    rendered
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn runs_outcomes_durations_last_success_and_leadership_are_recorded() {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(
                vigia_scheduler::metrics::JOB_DURATION_SECONDS.to_owned(),
            ),
            vigia_scheduler::metrics::DURATION_BUCKETS,
        )
        .expect("buckets")
        .build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");

    let (during, after) = metrics::with_local_recorder(&recorder, || {
        vigia_scheduler::metrics::describe();
        runtime.block_on(async {
            let log = RunLog::new();
            let mut s = scheduler();
            s.register(
                "tick",
                Schedule::Every(Duration::from_secs(10)),
                log.job(Duration::from_millis(200)),
                JobOptions::default(),
            )
            .expect("register");
            s.register(
                "broken",
                Schedule::Every(Duration::from_secs(10)),
                job_fn("test.broken", |_ctx: JobContext| async {
                    Err::<JobReport, _>(JobError::failed("no"))
                }),
                JobOptions::default(),
            )
            .expect("register");
            s.register(
                "slow",
                Schedule::Every(Duration::from_secs(10)),
                log.job(Duration::from_secs(15)),
                JobOptions::default(),
            )
            .expect("register");
            let scheduler = s.start();
            tokio::time::sleep(Duration::from_secs(31)).await;
            let during = handle.render();
            scheduler.stop(Duration::from_secs(1)).await;
            (during, handle.render())
        })
    });

    let cases = [
        (r#"vigia_job_runs_total{job="tick",outcome="ok"}"#, 3.0),
        (
            r#"vigia_job_runs_total{job="broken",outcome="failed"}"#,
            3.0,
        ),
        (r#"vigia_job_duration_seconds_count{job="tick"}"#, 3.0),
        (r#"vigia_job_duration_seconds_sum{job="tick"}"#, 0.6),
        (
            r#"vigia_job_duration_seconds_bucket{job="tick",le="0.5"}"#,
            3.0,
        ),
        (
            r#"vigia_job_duration_seconds_bucket{job="tick",le="0.1"}"#,
            0.0,
        ),
        // Slow: runs 10-25; fire time 20 came during it; the catch-up run at 25 moved
        // the next fire time to 35.
        (r#"vigia_job_missed_total{job="slow"}"#, 1.0),
        (r#"vigia_job_runs_total{job="slow",outcome="ok"}"#, 1.0),
        ("vigia_scheduler_leader", 1.0),
    ];
    for (series, want) in cases {
        let got = sample(&during, series).unwrap_or_else(|| panic!("{series} missing:\n{during}"));
        assert!((got - want).abs() < 1e-9, "{series}: {got} != {want}");
    }
    // Last success: START (Unix 1772359650) + 30 s + the 200 ms run.
    let last = sample(
        &during,
        r#"vigia_job_last_success_timestamp_seconds{job="tick"}"#,
    )
    .expect("last success of tick");
    assert!((last - 1_772_359_680.2).abs() < 1e-3, "{last}");
    assert!(
        sample(
            &during,
            r#"vigia_job_last_success_timestamp_seconds{job="broken"}"#
        )
        .is_none(),
        "a job that never succeeded has no last success"
    );
    assert!(during.contains("# HELP vigia_job_runs_total"), "{during}");

    assert_eq!(sample(&after, "vigia_scheduler_leader"), Some(0.0));
    // The slow run still going at stop was dropped and counted as cancelled.
    assert_eq!(
        sample(
            &after,
            r#"vigia_job_runs_total{job="slow",outcome="cancelled"}"#
        ),
        Some(1.0)
    );
}
