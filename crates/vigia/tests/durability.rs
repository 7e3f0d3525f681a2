//! "202 means durable": SIGKILL during sustained ingest loses nothing that was
//! acknowledged and stores nothing twice; SIGTERM drains in-flight work.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const WRITERS: usize = 6;
const BATCH: i64 = 20;

/// Every reading of `sensor` stored, by timestamp, paging through the API.
async fn stored(server: &TestServer, sensor: &str, from: i64, to: i64) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    let mut cursor = from;
    loop {
        let series = get_json(&server.url(&format!(
            "/api/v1/sensors/{sensor}/readings?from={cursor}&to={to}&limit=10000"
        )))
        .await;
        let points = series["points"].as_array().unwrap();
        for p in points {
            let ts = vigia_core::Timestamp::parse_rfc3339(p["ts"].as_str().unwrap())
                .unwrap()
                .0;
            out.push((ts, p["value"].as_f64().unwrap()));
        }
        if points.len() < 10_000 {
            return out;
        }
        cursor = out.last().unwrap().0 + 1;
    }
}

/// Posts batches as fast as it can until `stop`; records which batches got 202.
async fn writer(
    base: String,
    id: usize,
    t0: i64,
    acked: Arc<Mutex<BTreeSet<(usize, i64)>>>,
    stop: Instant,
) -> usize {
    let client = client();
    let mut seq = 0i64;
    let mut failures = 0;
    while Instant::now() < stop {
        let rows: Vec<Value> = (0..BATCH)
            .map(|k| {
                let ts = t0 + seq * BATCH + k;
                json!({"sensor": format!("KILL-{id}"), "ts": ts, "value": ts as f64})
            })
            .collect();
        let res = client
            .post(format!("{base}/api/v1/readings"))
            .bearer_auth(TOKEN)
            .json(&rows)
            .send()
            .await;
        match res {
            Ok(r) if r.status() == 202 => {
                let mut acked = acked.lock().unwrap();
                for k in 0..BATCH {
                    acked.insert((id, t0 + seq * BATCH + k));
                }
            }
            // The server is gone (killed) or refused: not acknowledged, not counted.
            _ => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        seq += 1;
    }
    failures
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_ingest_loses_no_acknowledged_reading() {
    let mut server = TestServer::start(Options::default());
    let t0 = vigia_core::Timestamp::now().0 - 3_600_000;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Instant::now() + Duration::from_secs(4);
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(server.base.clone(), id, t0, acked.clone(), stop)))
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acked_before_kill = acked.lock().unwrap().len();
    server.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked_before_kill > 0,
        "no reading was acknowledged before the kill"
    );
    println!("acknowledged before SIGKILL: {}", acked.len());

    server.restart();
    drained(&server).await;

    let mut by_sensor: BTreeMap<usize, BTreeSet<i64>> = BTreeMap::new();
    for (id, ts) in &acked {
        by_sensor.entry(*id).or_default().insert(*ts);
    }
    let mut total = 0;
    for (id, want) in by_sensor {
        let got = stored(&server, &format!("KILL-{id}"), t0, t0 + 10_000_000).await;
        let got_ts: Vec<i64> = got.iter().map(|(ts, _)| *ts).collect();
        let unique: BTreeSet<i64> = got_ts.iter().copied().collect();
        assert_eq!(
            unique.len(),
            got_ts.len(),
            "KILL-{id}: a reading was stored twice"
        );
        let missing: Vec<_> = want.difference(&unique).take(5).collect();
        assert!(
            missing.is_empty(),
            "KILL-{id}: acknowledged readings lost, e.g. {missing:?}"
        );
        for (ts, value) in &got {
            assert_eq!(*value, *ts as f64, "KILL-{id}: value corrupted at {ts}");
        }
        total += want.len();
    }
    assert_eq!(total, acked.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_work_and_exits_cleanly() {
    let mut server = TestServer::start(Options::default());
    let t0 = vigia_core::Timestamp::now().0 - 3_600_000;
    let url = server.url("/api/v1/readings");
    let mut sent = 0;
    for batch in 0..40i64 {
        let rows: Vec<Value> = (0..250)
            .map(|k| json!({"sensor": "TERM", "ts": t0 + batch * 250 + k, "value": 1.0}))
            .collect();
        assert_eq!(post_json(&url, &Value::Array(rows)).await.status(), 202);
        sent += 250;
    }
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    assert!(server.log().contains("workers drained"), "{}", server.log());

    server.restart();
    assert!(
        !server.log().contains("replaying readings left on the bus"),
        "a drained shutdown leaves nothing to replay:\n{}",
        server.log()
    );
    let got = stored(&server, "TERM", t0, t0 + 1_000_000).await;
    assert_eq!(got.len(), sent);
}

/// A 202 counts what is stored: readings of one sensor without `ts`, two in one batch and
/// many single requests in quick succession (several in one millisecond), are all kept —
/// none folded into another by sharing the arrival millisecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_without_ts_are_all_stored_as_acknowledged() {
    let server = TestServer::start(Options::default());
    let url = server.url("/api/v1/readings");
    let res = post_json(
        &url,
        &json!([{"sensor": "NOTS-1", "value": 1}, {"sensor": "NOTS-1", "value": 2}]),
    )
    .await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"accepted": 2}));
    let bodies: Vec<Value> = (0..50)
        .map(|i| json!({"sensor": "NOTS-1", "value": 10 + i}))
        .collect();
    let singles =
        futures_util::future::join_all(bodies.iter().map(|body| post_json(&url, body))).await;
    assert!(singles.iter().all(|r| r.status() == 202));
    // Drained means taken by a worker, not yet committed: wait for the commits.
    let series_url = server.url("/api/v1/sensors/NOTS-1/readings?limit=1000");
    let mut values: Vec<f64> = eventually(Duration::from_secs(20), "52 readings", || async {
        let series = get_json(&series_url).await;
        let values: Vec<f64> = series["points"]
            .as_array()?
            .iter()
            .filter_map(|p| p["value"].as_f64())
            .collect();
        (values.len() >= 52).then_some(values)
    })
    .await;
    values.sort_by(f64::total_cmp);
    let mut expected: Vec<f64> = [1.0, 2.0]
        .into_iter()
        .chain((10..60).map(f64::from))
        .collect();
    expected.sort_by(f64::total_cmp);
    assert_eq!(values, expected, "every acknowledged reading is stored");
}
