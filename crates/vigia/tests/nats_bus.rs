//! `vigia serve` with the NATS JetStream bus (`VIGIA_BUS=nats://…`, the shared NATS on
//! 127.0.0.1:4222, streams under a prefix of this test's own, deleted at the end):
//! readings posted get 202 and are stored; what an ingest-only process accepted waits
//! on NATS through a `kill -9` of that process until a worker starts.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use vigia_bus::nats::{NatsBus, NatsConfig};

const ADDR: &str = "127.0.0.1:4222";

fn nats_up(test: &str) -> bool {
    vigia_core::services::service_available(&format!("nats ({test})"), ADDR)
}

/// A bus URL whose streams belong to this test; they are deleted when it is dropped.
struct Streams {
    url: String,
}

impl Streams {
    fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let prefix = format!("vt-e2e-{test}-{}-{nanos:x}", std::process::id());
        Self {
            url: format!("nats://{ADDR}/?stream_prefix={prefix}"),
        }
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        let config = NatsConfig::parse(&self.url).unwrap();
        let deleted = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup")
                .block_on(NatsBus::delete_streams(&config))
        })
        .join();
        if !matches!(deleted, Ok(Ok(_))) {
            eprintln!("could not delete the streams of {}: {deleted:?}", self.url);
        }
    }
}

fn serve(streams: &Streams, roles: &str) -> TestServer {
    TestServer::start(Options {
        env: vec![("VIGIA_BUS".into(), streams.url.clone())],
        args: vec!["--roles".into(), roles.into()],
        ..Options::default()
    })
}

/// The sensor's stored values; none while the sensor does not exist yet (workers, not
/// the ingest process, provision sensors, so a fresh worker may answer 404 at first).
async fn stored_values(server: &TestServer, sensor: &str) -> Vec<f64> {
    let url = server.url(&format!(
        "/api/v1/sensors/{sensor}/readings?from=0&to=4000000000000&limit=1000"
    ));
    let res = client()
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET readings");
    if res.status() == 404 {
        return Vec::new();
    }
    assert!(res.status().is_success(), "GET {url}: {}", res.status());
    let series: Value = res.json().await.expect("JSON");
    series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_posted_through_the_nats_bus_are_stored() {
    if !nats_up("readings_posted_through_the_nats_bus_are_stored") {
        return;
    }
    let streams = Streams::new("all");
    let server = serve(&streams, "all");
    let t0 = vigia_core::Timestamp::now().0 - 60_000;
    for batch in 0..5i64 {
        let rows: Vec<_> = (0..20i64)
            .map(|k| json!({"sensor": "NATS-1", "ts": t0 + batch * 20 + k, "value": (batch * 20 + k) as f64}))
            .collect();
        let res = post_json(&server.url("/api/v1/readings"), &json!(rows)).await;
        assert_eq!(res.status(), 202, "{}", server.log());
    }
    drained(&server).await;
    let values = eventually(Duration::from_secs(20), "100 stored readings", || async {
        let values = stored_values(&server, "NATS-1").await;
        (values.len() == 100).then_some(values)
    })
    .await;
    let expected: Vec<f64> = (0..100).map(f64::from).collect();
    assert_eq!(values, expected);
    let ready = client()
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert!(ready.status().is_success(), "readyz: {}", ready.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_an_ingest_process_accepted_wait_on_nats_through_its_kill() {
    if !nats_up("readings_an_ingest_process_accepted_wait_on_nats_through_its_kill") {
        return;
    }
    let streams = Streams::new("split");
    let mut ingest = serve(&streams, "ingest");
    let t0 = vigia_core::Timestamp::now().0 - 60_000;
    let rows: Vec<_> = (0..50i64)
        .map(|k| json!({"sensor": "NATS-2", "ts": t0 + k, "value": k as f64}))
        .collect();
    let res = post_json(&ingest.url("/api/v1/readings"), &json!(rows)).await;
    assert_eq!(res.status(), 202, "{}", ingest.log());
    // No worker runs: the readings wait on NATS, not in the process.
    assert_eq!(metric(&ingest, "vigia_bus_depth_readings").await, 50.0);
    ingest.kill9();

    // A worker (on the same store) started later finds them there.
    let worker = TestServer::start(Options {
        env: vec![("VIGIA_BUS".into(), streams.url.clone())],
        args: vec!["--roles".into(), "worker,api".into()],
        data_dir: Some(ingest.data_dir().to_path_buf()),
        ..Options::default()
    });
    let values = eventually(
        Duration::from_secs(20),
        "the worker to store what the killed ingest process accepted",
        || async {
            let values = stored_values(&worker, "NATS-2").await;
            (values.len() == 50).then_some(values)
        },
    )
    .await;
    assert_eq!(values, (0..50).map(f64::from).collect::<Vec<_>>());
    drained(&worker).await;
}
