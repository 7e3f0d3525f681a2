//! One scheduler on paused time: when jobs run, that they never overlap, how failures,
//! panics, timeouts and shutdown are recorded, and what registration refuses.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{scheduler, secs, RunLog, START};
use time::macros::datetime;
use tokio::time::{sleep, Instant};
use vigia_scheduler::{
    job_fn, JobContext, JobError, JobOptions, JobReport, JobStatus, MemoryLeases, Outcome,
    Schedule, ScheduleError, Scheduler, SchedulerError, SchedulerOptions,
};

fn every(seconds: u64) -> Schedule {
    Schedule::Every(Duration::from_secs(seconds))
}

fn explode() -> Result<JobReport, JobError> {
    panic!("boom")
}

fn status_of(statuses: &[JobStatus], name: &str) -> JobStatus {
    statuses
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no status for {name}"))
        .clone()
}

#[tokio::test(start_paused = true)]
async fn interval_job_runs_once_per_period_from_one_period_after_start() {
    let log = RunLog::new();
    let mut s = scheduler();
    s.register(
        "tick",
        every(10),
        log.job(Duration::from_millis(500)),
        JobOptions::default(),
    )
    .expect("register");
    let handle = s.start();

    sleep(Duration::from_secs(35)).await;
    assert_eq!(log.starts(), secs(&[10, 20, 30]));

    let status = status_of(&handle.status(), "tick");
    assert_eq!(status.runs, 3);
    assert_eq!((status.failures, status.missed), (0, 0));
    assert!(status.leader && status.enabled && !status.running);
    assert_eq!(status.schedule, "every 10s");
    assert_eq!(status.kind, "test.logged");
    let last = status.last_run.expect("ran");
    assert_eq!(last.outcome, Outcome::Ok);
    assert_eq!(last.message, "logged");
    assert_eq!(last.duration_ms, 500);
    assert_eq!(last.started_at, datetime!(2026-03-01 10:08:00 UTC));
    assert_eq!(status.next_run, Some(datetime!(2026-03-01 10:08:10 UTC)));

    assert_eq!(
        handle.stop(Duration::from_secs(1)).await.dropped,
        Vec::<String>::new()
    );
}

#[tokio::test(start_paused = true)]
async fn run_at_start_runs_at_once_then_every_period() {
    let log = RunLog::new();
    let mut s = scheduler();
    let options = JobOptions {
        run_at_start: true,
        ..JobOptions::default()
    };
    s.register("tick", every(10), log.job(Duration::ZERO), options)
        .expect("register");
    let handle = s.start();
    sleep(Duration::from_secs(25)).await;
    assert_eq!(log.starts(), secs(&[0, 10, 20]));
    handle.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn cron_job_runs_at_its_utc_fire_times() {
    // START is 10:07:30; "*/15 * * * *" fires at 10:15, 10:30, 10:45.
    let log = RunLog::new();
    let mut s = scheduler();
    s.register(
        "quarterly",
        Schedule::Cron("*/15 * * * *".into()),
        log.job(Duration::from_secs(1)),
        JobOptions::default(),
    )
    .expect("register");
    let handle = s.start();
    // Let the scheduler's task plan (it runs on its own once this test task waits).
    sleep(Duration::from_millis(1)).await;
    assert_eq!(
        status_of(&handle.status(), "quarterly").next_run,
        Some(datetime!(2026-03-01 10:15:00 UTC))
    );

    sleep(Duration::from_secs(31 * 60)).await;
    assert_eq!(log.starts(), secs(&[450, 450 + 900]));
    let status = status_of(&handle.status(), "quarterly");
    assert_eq!(status.schedule, "cron */15 * * * *");
    assert_eq!(status.next_run, Some(datetime!(2026-03-01 10:45:00 UTC)));
    assert_eq!(
        status.last_run.expect("ran").started_at,
        datetime!(2026-03-01 10:30:00 UTC)
    );
    handle.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn slow_job_never_overlaps_and_missed_fire_times_fold_into_one_run() {
    // Every 10 s, each run takes 25 s: runs at 10 (to 35), catch-up at 35 (to 60),
    // catch-up at 60. The fire times at 20, 30, 45 and 55 came during runs.
    let log = RunLog::new();
    let mut s = scheduler();
    s.register(
        "slow",
        every(10),
        log.job(Duration::from_secs(25)),
        JobOptions::default(),
    )
    .expect("register");
    let handle = s.start();

    sleep(Duration::from_secs(62)).await;
    assert_eq!(log.starts(), secs(&[10, 35, 60]));
    assert_eq!(log.ends(), secs(&[35, 60]));
    assert_eq!(log.max_running(), 1, "a job must never overlap itself");
    let status = status_of(&handle.status(), "slow");
    assert_eq!(status.missed, 4);
    assert_eq!(status.runs, 2);
    assert!(status.running);
    // After a catch-up run the period counts from its start.
    assert_eq!(status.next_run, Some(START + time::Duration::seconds(70)));
    handle.stop(Duration::from_secs(30)).await;
}

#[tokio::test(start_paused = true)]
async fn a_run_that_ends_before_the_next_fire_time_needs_no_catch_up() {
    let log = RunLog::new();
    let mut s = scheduler();
    s.register(
        "brisk",
        every(10),
        log.job(Duration::from_secs(9)),
        JobOptions::default(),
    )
    .expect("register");
    let handle = s.start();
    sleep(Duration::from_secs(41)).await;
    assert_eq!(log.starts(), secs(&[10, 20, 30, 40]));
    assert_eq!(status_of(&handle.status(), "brisk").missed, 0);
    handle.stop(Duration::from_secs(10)).await;
}

#[tokio::test(start_paused = true)]
async fn failures_panics_and_timeouts_are_recorded_and_the_scheduler_survives() {
    let mut s = scheduler();
    s.register(
        "fails",
        every(10),
        job_fn("test.fails", |_ctx: JobContext| async {
            Err::<JobReport, _>(JobError::failed("disk full"))
        }),
        JobOptions::default(),
    )
    .expect("register");
    s.register(
        "panics",
        every(10),
        job_fn("test.panics", |_ctx: JobContext| async { explode() }),
        JobOptions::default(),
    )
    .expect("register");
    let log = RunLog::new();
    s.register(
        "hangs",
        every(10),
        log.job(Duration::from_secs(3600)),
        JobOptions {
            timeout: Some(Duration::from_secs(5)),
            ..JobOptions::default()
        },
    )
    .expect("register");
    let handle = s.start();

    sleep(Duration::from_secs(16)).await;
    let statuses = handle.status();
    let expect = [
        ("fails", Outcome::Failed, "disk full"),
        ("panics", Outcome::Failed, "panicked: boom"),
        ("hangs", Outcome::TimedOut, "timed out after 5s"),
    ];
    for (name, outcome, message) in expect {
        let status = status_of(&statuses, name);
        let last = status.last_run.clone().expect("ran");
        assert_eq!(
            (last.outcome, last.message.as_str()),
            (outcome, message),
            "{name}"
        );
        assert_eq!((status.runs, status.failures), (1, 1), "{name}");
        assert!(!status.running, "{name}");
    }
    assert_eq!(
        status_of(&statuses, "hangs")
            .last_run
            .expect("ran")
            .duration_ms,
        5000
    );
    // The timed-out run was dropped, not left running.
    assert_eq!(log.ends(), Vec::<Duration>::new());

    // Every job runs again on schedule: nothing was poisoned by the panic.
    sleep(Duration::from_secs(10)).await;
    for status in handle.status() {
        assert_eq!((status.runs, status.failures), (2, 2), "{}", status.name);
    }
    assert!(handle.is_leader());
    handle.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn error_causes_reach_the_status() {
    #[derive(Debug, thiserror::Error)]
    #[error("checkpoint failed")]
    struct CheckpointError(#[source] std::io::Error);

    let mut s = scheduler();
    s.register(
        "checkpoint",
        every(10),
        job_fn("sqlite.wal_checkpoint", |_ctx: JobContext| async {
            Err::<JobReport, _>(JobError::from_error(CheckpointError(
                std::io::Error::other("database is locked"),
            )))
        }),
        JobOptions::default(),
    )
    .expect("register");
    let handle = s.start();
    sleep(Duration::from_secs(11)).await;
    let last = status_of(&handle.status(), "checkpoint")
        .last_run
        .expect("ran");
    assert_eq!(last.message, "checkpoint failed: database is locked");
    handle.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn stop_waits_for_a_running_job_within_the_deadline() {
    let log = RunLog::new();
    let mut s = scheduler();
    s.register(
        "finishing",
        every(60),
        log.job(Duration::from_secs(3)),
        JobOptions {
            run_at_start: true,
            ..JobOptions::default()
        },
    )
    .expect("register");
    let handle = s.start();
    sleep(Duration::from_secs(1)).await;
    assert!(status_of(&handle.status(), "finishing").running);

    let asked = Instant::now();
    let report = handle.stop(Duration::from_secs(10)).await;
    assert_eq!(
        asked.elapsed(),
        Duration::from_secs(2),
        "stop returns when the job ends"
    );
    assert!(report.dropped.is_empty());
    assert_eq!(log.ends(), secs(&[3]));
    let status = status_of(&handle.status(), "finishing");
    assert_eq!(status.last_run.expect("ran").outcome, Outcome::Ok);
    assert_eq!(status.next_run, None);
    assert!(!status.leader && !handle.is_leader());

    // A second stop has nothing left to do.
    assert!(handle
        .stop(Duration::from_secs(10))
        .await
        .dropped
        .is_empty());
}

#[tokio::test(start_paused = true)]
async fn stop_cancels_jobs_and_drops_those_past_the_deadline() {
    let stubborn = RunLog::new();
    let polite = RunLog::new();
    let mut s = scheduler();
    let at_start = JobOptions {
        run_at_start: true,
        ..JobOptions::default()
    };
    s.register(
        "stubborn",
        every(600),
        stubborn.job(Duration::from_secs(3600)),
        at_start.clone(),
    )
    .expect("register");
    s.register("polite", every(600), polite.job_until_cancelled(), at_start)
        .expect("register");
    let handle = s.start();
    sleep(Duration::from_secs(1)).await;

    let asked = Instant::now();
    let report = handle.stop(Duration::from_secs(2)).await;
    assert_eq!(asked.elapsed(), Duration::from_secs(2));
    assert_eq!(report.dropped, vec!["stubborn".to_owned()]);

    let statuses = handle.status();
    let polite_run = status_of(&statuses, "polite").last_run.expect("ended");
    assert_eq!(polite_run.outcome, Outcome::Cancelled);
    assert_eq!(
        polite_run.duration_ms, 1000,
        "it honoured the cancellation at once"
    );
    let stubborn_status = status_of(&statuses, "stubborn");
    let stubborn_run = stubborn_status.last_run.expect("dropped");
    assert_eq!(stubborn_run.outcome, Outcome::Cancelled);
    assert!(
        stubborn_run.message.contains("shutdown deadline of 2s"),
        "{}",
        stubborn_run.message
    );
    assert_eq!(stubborn_run.duration_ms, 3000);
    assert!(!stubborn_status.running);
    assert_eq!(
        stubborn_status.failures, 0,
        "a cancelled run is not a failure"
    );

    // The dropped job really stopped: it never reaches its end.
    sleep(Duration::from_secs(7200)).await;
    assert_eq!(stubborn.ends(), Vec::<Duration>::new());
}

#[tokio::test(start_paused = true)]
async fn disabled_jobs_are_listed_but_never_run() {
    let log = RunLog::new();
    let mut s = scheduler();
    let off = JobOptions {
        enabled: false,
        run_at_start: true,
        ..JobOptions::default()
    };
    s.register("off", every(1), log.job(Duration::ZERO), off)
        .expect("register");
    let handle = s.start();
    sleep(Duration::from_secs(30)).await;
    assert!(log.starts().is_empty());
    let status = status_of(&handle.status(), "off");
    assert!(!status.enabled);
    assert_eq!((status.runs, status.next_run), (0, None));
    handle.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_stops_the_scheduler() {
    let log = RunLog::new();
    let mut s = scheduler();
    s.register(
        "tick",
        every(1),
        log.job(Duration::ZERO),
        JobOptions::default(),
    )
    .expect("register");
    drop(s.start());
    sleep(Duration::from_secs(10)).await;
    assert!(log.starts().len() <= 1, "{:?}", log.starts());
}

#[test]
fn registration_refuses_bad_names_schedules_and_timeouts() {
    let mut s = scheduler();
    let noop = || {
        job_fn("test.noop", |_ctx: JobContext| async {
            Ok(JobReport::default())
        })
    };
    s.register("a", every(1), noop(), JobOptions::default())
        .expect("first registration");

    assert_eq!(
        s.register("a", every(5), noop(), JobOptions::default()),
        Err(SchedulerError::DuplicateName("a".into()))
    );
    assert_eq!(
        s.register(" ", every(5), noop(), JobOptions::default()),
        Err(SchedulerError::EmptyName)
    );
    assert_eq!(
        s.register(
            "zero",
            Schedule::Every(Duration::ZERO),
            noop(),
            JobOptions::default()
        ),
        Err(SchedulerError::Schedule {
            name: "zero".into(),
            source: ScheduleError::ZeroPeriod
        })
    );
    let bad_cron = s
        .register(
            "bad",
            Schedule::Cron("61 * * * *".into()),
            noop(),
            JobOptions::default(),
        )
        .expect_err("refused");
    let text = bad_cron.to_string();
    assert!(
        text.starts_with("job \"bad\": invalid cron expression \"61 * * * *\": minute field"),
        "{text}"
    );
    assert!(matches!(
        bad_cron,
        SchedulerError::Schedule {
            source: ScheduleError::InvalidCron { .. },
            ..
        }
    ));
    assert_eq!(
        s.register(
            "never",
            Schedule::Cron("0 0 30 2 *".into()),
            noop(),
            JobOptions::default()
        ),
        Err(SchedulerError::Schedule {
            name: "never".into(),
            source: ScheduleError::NeverFires {
                expr: "0 0 30 2 *".into()
            }
        })
    );
    let zero_timeout = JobOptions {
        timeout: Some(Duration::ZERO),
        ..JobOptions::default()
    };
    assert_eq!(
        s.register("t", every(1), noop(), zero_timeout),
        Err(SchedulerError::ZeroTimeout { name: "t".into() })
    );

    // Refused registrations leave nothing behind.
    let names: Vec<String> = s.status().into_iter().map(|st| st.name).collect();
    assert_eq!(names, ["a"]);
    let status = &s.status()[0];
    assert_eq!(
        (status.next_run, status.running, status.leader),
        (None, false, false)
    );
}

#[test]
fn scheduler_options_are_validated() {
    let leases = || Arc::new(MemoryLeases::new());
    let cases = [
        (
            SchedulerOptions {
                lease_ttl: Duration::from_millis(999),
                ..SchedulerOptions::default()
            },
            "lease_ttl must be at least 1s",
        ),
        (
            SchedulerOptions {
                holder: String::new(),
                ..SchedulerOptions::default()
            },
            "holder must not be empty",
        ),
        (
            SchedulerOptions {
                lease_name: " ".into(),
                ..SchedulerOptions::default()
            },
            "lease_name must not be empty",
        ),
    ];
    for (options, words) in cases {
        let error = Scheduler::new(leases(), options).expect_err("refused");
        assert!(error.to_string().contains(words), "{error}");
    }
    let defaults = SchedulerOptions::default();
    assert_eq!(defaults.lease_name, "scheduler");
    assert!(!defaults.holder.is_empty());
    assert!(Scheduler::new(leases(), defaults).is_ok());
}
