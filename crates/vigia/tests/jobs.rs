//! `GET /api/v1/jobs`: the scheduler's housekeeping job with its last outcome, in the
//! answer and in the metrics; absent on a process without the scheduler role.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_housekeeping_job_is_listed_with_its_last_outcome() {
    let server = TestServer::start(Options::default());
    let job: Value = eventually(Duration::from_secs(20), "housekeeping to run", || async {
        let jobs = get_json(&server.url("/api/v1/jobs")).await;
        jobs.as_array()?
            .iter()
            .find(|j| j["name"] == "store-housekeeping" && !j["last_run"].is_null())
            .cloned()
    })
    .await;
    assert_eq!(job["last_run"]["outcome"], "ok", "{job}");
    assert!(
        job["last_run"]["message"]
            .as_str()
            .unwrap()
            .contains("WAL checkpointed"),
        "{job}"
    );
    assert_eq!(job["schedule"], "every 5m");
    assert_eq!(job["leader"], true);
    assert!(job["next_run"].as_str().is_some(), "{job}");
    let jobs = get_json(&server.url("/api/v1/jobs")).await;
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == "retention" && j["schedule"] == "cron 17 3 * * *"),
        "{jobs}"
    );
    let runs = metric(&server, "vigia_job_runs_total").await;
    assert!(runs >= 1.0, "runs in the metrics: {runs}");
    assert_eq!(metric(&server, "vigia_scheduler_leader").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_scheduler_role_there_are_no_jobs_here() {
    let server = TestServer::start(Options {
        args: vec!["--roles".into(), "api".into()],
        ..Options::default()
    });
    let res = client()
        .get(server.url("/api/v1/jobs"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("scheduler"),
        "{body}"
    );
}
