//! Tests of the benchmark's orchestration against a scripted server that counts the
//! readings it takes and reports them on `/metrics`, like Vigía does.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::test_server::{free_port, parse_args, FakeServer, Recorded, Reply};

fn parse(args: &[&str]) -> Result<BenchIngestArgs, clap::Error> {
    parse_args(args)
}

fn small(url: &str) -> BenchIngestArgs {
    let mut args = parse(&["--url", url, "--token", "tok"]).expect("valid");
    args.concurrency = 4;
    args.readings = 5_000;
    args.single_requests = 300;
    args.batch_size = 500;
    args.sensors = 10;
    args.baseline = Duration::from_millis(200);
    args
}

/// Single mode only, one request at a time, no baseline: for counting what each
/// request met.
fn one_at_a_time(url: &str, requests: u64) -> BenchIngestArgs {
    let mut args = small(url);
    args.mode = BenchMode::Single;
    args.baseline = Duration::ZERO;
    args.concurrency = 1;
    args.single_requests = requests;
    args
}

/// A server that takes readings with 202 and counts them as written.
async fn counting_server(
    reply: impl Fn(&Recorded, u64) -> Option<Reply> + Send + Sync + 'static,
) -> (FakeServer, Arc<AtomicU64>) {
    let written = Arc::new(AtomicU64::new(0));
    let count = written.clone();
    let calls = AtomicU64::new(0);
    let server = FakeServer::start(move |r| match r.path.as_str() {
        "/healthz" => Reply::new(200, "ok"),
        "/metrics" => Reply::new(
            200,
            &format!(
                "# TYPE vigia_store_readings_written_total counter\n\
                 vigia_store_readings_written_total{{backend=\"sqlite\"}} {}\n\
                 vigia_bus_depth_readings 3\n\
                 vigia_process_resident_memory_bytes 20000000\n\
                 vigia_process_peak_resident_memory_bytes 25000000\n",
                count.load(Ordering::SeqCst)
            ),
        ),
        _ => {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if let Some(reply) = reply(r, n) {
                return reply;
            }
            let readings = r.body.windows(9).filter(|w| w == b"\"sensor\":").count() as u64;
            count.fetch_add(readings, Ordering::SeqCst);
            Reply::new(202, &format!("{{\"accepted\":{readings}}}"))
        }
    })
    .await;
    (server, written)
}

#[test]
fn arguments_parse_with_defaults() {
    let args = parse(&[]).expect("defaults");
    assert_eq!(args.target.url, "http://127.0.0.1:8080");
    assert_eq!(args.target.token, None);
    assert_eq!(args.concurrency, 64);
    assert_eq!(args.readings, 2_000_000);
    assert_eq!(args.single_requests, 200_000);
    assert_eq!(args.batch_size, 1000);
    assert_eq!(args.sensors, 100);
    assert_eq!(args.mode, BenchMode::Both);
    assert_eq!(args.baseline, Duration::from_secs(2));
    assert!(!args.server.spawn && !args.json && !args.server.keep_data);

    let args = parse(&[
        "--readings",
        "2M",
        "--single-requests",
        "20_000",
        "--mode",
        "batched",
        "--spawn",
        "--keep-data",
        "--json",
        "--baseline",
        "0s",
        "--token",
        "secret",
    ])
    .expect("all flags");
    assert_eq!((args.readings, args.single_requests), (2_000_000, 20_000));
    assert_eq!(args.mode, BenchMode::Batched);
    assert!(args.server.spawn && args.server.keep_data && args.json);
    assert!(!format!("{args:?}").contains("secret"));

    for bad in [
        &["--mode", "fast"][..],
        &["--readings", "lots"][..],
        &["--keep-data"][..],
        &["--server-bin", "/x"][..],
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

type Tweak = Box<dyn Fn(&mut BenchIngestArgs)>;

#[tokio::test]
async fn rejects_unusable_arguments() {
    let url = "http://127.0.0.1:1";
    let cases: Vec<(Tweak, &str)> = vec![
        (Box::new(|a| a.concurrency = 0), "--concurrency"),
        (Box::new(|a| a.batch_size = 0), "--batch-size"),
        (Box::new(|a| a.sensors = 0), "--sensors"),
        (Box::new(|a| a.single_requests = 0), "--single-requests"),
        (Box::new(|a| a.readings = 0), "--readings"),
        (Box::new(|a| a.target.token = None), "--token"),
        (Box::new(|_| {}), "no server at"),
    ];
    for (tweak, needle) in cases {
        let mut args = small(url);
        tweak(&mut args);
        let err = bench_ingest(args).await.expect_err(needle);
        assert!(format!("{err:#}").contains(needle), "{needle}: {err:#}");
    }
    let mut args = small(url);
    args.mode = BenchMode::Batched;
    args.single_requests = 0;
    args.target.url = format!("http://127.0.0.1:{}", free_port());
    let err = bench_ingest(args).await.expect_err("no server");
    assert!(err.to_string().contains("no server"), "{err}");
}

#[tokio::test]
async fn measures_both_modes_end_to_end() {
    let (server, written) = counting_server(|_, _| None).await;
    let report = bench_ingest(small(&server.url)).await.expect("runs");

    let baseline = report.baseline.as_ref().expect("baseline ran");
    assert!(baseline.requests > 0 && baseline.requests_per_sec > 0.0);
    assert!(baseline.errors.is_empty());

    let single = report.single.as_ref().expect("single ran");
    assert_eq!(
        (single.requests_planned, single.requests_accepted),
        (300, 300)
    );
    assert_eq!(single.readings_accepted, 300);
    assert_eq!(single.latency.expect("latencies").count, 300);
    assert!(single.commit.complete, "{:?}", single.commit);
    assert_eq!(single.commit.committed, 300);
    assert!(single.commit.end_to_end_readings_per_sec.expect("e2e") > 0.0);
    assert!(single.commit.seconds.expect("time") >= 0.0);

    let batched = report.batched.as_ref().expect("batched ran");
    assert_eq!(
        (batched.requests_planned, batched.readings_accepted),
        (10, 5_000)
    );
    assert_eq!(batched.readings_per_request, 500);
    assert!(batched.commit.complete && batched.commit.committed == 5_000);
    assert_eq!(batched.bus_depth_peak, Some(3.0));
    assert!(batched.errors.is_empty() && batched.retries == 0);

    assert_eq!(written.load(Ordering::SeqCst), 5_300);
    assert!(report.single_vs_baseline.expect("ratio") > 0.0);
    assert_eq!(report.memory.peak_rss_after_bytes, Some(25_000_000.0));
    assert_eq!(report.memory.rss_before_bytes, Some(20_000_000.0));

    let posts: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 310);
    assert!(posts
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer tok")));
    let gets = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/healthz");
    assert!(
        gets.into_iter()
            .all(|r| r.header("authorization").is_none()),
        "the floor is unauthenticated"
    );
    assert!(
        // Three phases of 4 workers, plus the metrics and sampler connections: far
        // fewer than the 310 posts and the baseline's GETs.
        server.connections() <= 24,
        "keep-alive: {} connections",
        server.connections()
    );
}

#[tokio::test]
async fn honours_retry_after_and_counts_errors() {
    let (server, _) = counting_server(|r, n| match n {
        0 | 1 => Some(Reply::new(429, "{}").header("Retry-After", "0.05")),
        // A rejected request is counted by status, and its problem body kept.
        2 if r.body.starts_with(b"{") => Some(Reply::new(400, r#"{"title":"bad reading"}"#)),
        _ => None,
    })
    .await;
    let report = bench_ingest(one_at_a_time(&server.url, 20))
        .await
        .expect("runs");
    assert!(
        report.baseline.is_none()
            && report.batched.is_none()
            && report.single_vs_baseline.is_none()
    );
    let single = report.single.expect("single ran");
    assert_eq!(single.retries, 2);
    assert_eq!(single.errors.get("400"), Some(&1));
    assert_eq!(single.requests_accepted, 19);
    assert!(single
        .first_problem
        .as_deref()
        .expect("kept")
        .contains("bad reading"));
    assert!(single.commit.complete, "19 accepted, 19 committed");
}

#[tokio::test]
async fn endless_backpressure_ends_as_errors() {
    let (server, written) =
        counting_server(|_, _| Some(Reply::new(503, "{}").header("Retry-After", "0"))).await;
    let report = bench_ingest(one_at_a_time(&server.url, 2))
        .await
        .expect("ends");
    let single = report.single.expect("single ran");
    assert_eq!(single.retries, 2 * 60);
    assert_eq!(single.errors.get("503"), Some(&2));
    assert_eq!(single.requests_accepted, 0);
    assert!(
        single.commit.complete,
        "nothing accepted, nothing to wait for"
    );
    assert_eq!(written.load(Ordering::SeqCst), 0);
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count(),
        2 * 61
    );
}

#[tokio::test]
async fn a_refused_token_stops_the_run() {
    let (server, _) = counting_server(|_, _| Some(Reply::new(401, "{}"))).await;
    let mut args = small(&server.url);
    args.baseline = Duration::ZERO;
    let err = bench_ingest(args).await.expect_err("401");
    assert!(err.to_string().contains("token was refused"), "{err}");
    let posts = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert!(posts <= 4, "workers stop at the first 401: {posts} posts");
}

#[tokio::test]
async fn a_server_without_the_commit_counter_still_gets_figures() {
    let server = FakeServer::start(|r| match r.path.as_str() {
        "/healthz" => Reply::new(200, "ok"),
        "/metrics" => Reply::new(404, "no metrics"),
        _ => Reply::new(202, "{}"),
    })
    .await;
    let mut args = small(&server.url);
    args.mode = BenchMode::Batched;
    args.baseline = Duration::ZERO;
    let report = bench_ingest(args).await.expect("runs");
    let batched = report.batched.as_ref().expect("batched ran");
    assert_eq!(batched.readings_accepted, 5_000);
    assert!(!batched.commit.complete && batched.commit.end_to_end_readings_per_sec.is_none());
    assert!(batched
        .commit
        .note
        .as_ref()
        .expect("explained")
        .contains("vigia_store_readings_written_total"));
    assert_eq!(report.memory.peak_rss_after_bytes, None);
    assert!(report.render().contains("commit time unknown"));
}

#[tokio::test]
async fn spawn_reports_a_server_that_cannot_start() {
    let mut args = small("http://unused");
    args.server.spawn = true;
    args.server.server_bin = Some("/bin/false".into());
    let err = bench_ingest(args).await.expect_err("false is no server");
    assert!(format!("{err:#}").contains("exited"), "{err:#}");
}
