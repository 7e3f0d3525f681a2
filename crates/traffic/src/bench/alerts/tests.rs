//! Tests of the alert benchmark: its pure parts as tables, and its orchestration
//! against a stand-in server with a real WebSocket that opens an alert for every
//! out-of-range reading — unless told to lose some, fail, or hang up.

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::Mutex;

use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use tokio::sync::broadcast;

use super::phase::{reading_body, Outcome, Tally, Timing, FEED_GONE, NO_FRAME};
use super::setup::SENSOR_SPEC;
use super::*;
use crate::test_server::{free_port, parse_args};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

const TOKEN: &str = "tok";

fn parse(args: &[&str]) -> Result<BenchAlertsArgs, clap::Error> {
    parse_args(args)
}

fn small(url: &str, samples: u64) -> BenchAlertsArgs {
    let mut args = parse(&["--url", url, "--token", TOKEN]).expect("valid");
    args.alerts = samples;
    args.wait = Duration::from_secs(2);
    args
}

#[test]
fn arguments_parse_with_defaults() {
    let args = parse(&[]).expect("defaults");
    assert_eq!(args.target.url, "http://127.0.0.1:8080");
    assert_eq!(args.target.token, None);
    assert_eq!((args.alerts, args.concurrency), (1000, 1));
    assert_eq!(args.wait, Duration::from_secs(5));
    assert!(!args.server.spawn && !args.json && !args.server.keep_data);

    let args = parse(&[
        "--alerts",
        "2k",
        "--concurrency",
        "8",
        "--wait",
        "250ms",
        "--spawn",
        "--keep-data",
        "--json",
        "--token",
        "secret",
    ])
    .expect("all flags");
    assert_eq!((args.alerts, args.concurrency), (2000, 8));
    assert_eq!(args.wait, Duration::from_millis(250));
    assert!(args.server.spawn && args.server.keep_data && args.json);
    assert!(!format!("{args:?}").contains("secret"));

    for bad in [
        &["--alerts", "lots"][..],
        &["--wait", "5"][..],
        &["--keep-data"][..],
        &["--server-bin", "/x"][..],
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

type Tweak = Box<dyn Fn(&mut BenchAlertsArgs)>;

#[tokio::test]
async fn rejects_unusable_arguments() {
    let cases: Vec<(Tweak, &str)> = vec![
        (Box::new(|a| a.alerts = 0), "--alerts"),
        (Box::new(|a| a.alerts = 100_001), "--alerts"),
        (Box::new(|a| a.concurrency = 0), "--concurrency"),
        (Box::new(|a| a.concurrency = 257), "--concurrency"),
        (
            Box::new(|a| {
                a.alerts = 4;
                a.concurrency = 5
            }),
            "must not exceed --alerts",
        ),
        (Box::new(|a| a.wait = Duration::from_millis(5)), "--wait"),
        (Box::new(|a| a.wait = Duration::from_secs(61)), "--wait"),
        (Box::new(|a| a.target.token = None), "--token"),
    ];
    for (tweak, needle) in cases {
        let mut args = small("http://127.0.0.1:1", 10);
        tweak(&mut args);
        let err = bench_alerts(args).await.expect_err(needle);
        assert!(format!("{err:#}").contains(needle), "{needle}: {err:#}");
    }
}

#[test]
fn timings_from_three_instants() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    // (sent, 202, frame) in ms → (sent→202, 202→ws, sent→ws) in µs, frame before 202
    type Case = (u64, u64, u64, (u32, u32, u32), bool);
    let cases: &[Case] = &[
        (0, 1, 3, (1_000, 2_000, 3_000), false),
        (0, 1, 1, (1_000, 0, 1_000), false),
        (0, 2, 1, (2_000, 0, 1_000), true),
        (5, 5, 5, (0, 0, 0), false),
    ];
    for &(sent, accepted, frame, (a, b, c), before) in cases {
        let t = Timing::new(at(sent), at(accepted), at(frame));
        assert_eq!(
            t,
            Timing {
                sent_to_202_us: a,
                accepted_to_ws_us: b,
                sent_to_ws_us: c,
                before_202: before
            },
            "{sent} {accepted} {frame}"
        );
    }
    let huge = Timing::new(t0, t0, t0 + Duration::from_secs(5_000));
    assert_eq!(huge.accepted_to_ws_us, u32::MAX, "saturates, never wraps");
}

#[test]
fn tallies_count_every_outcome() {
    let timing = |us| Timing {
        sent_to_202_us: 100,
        accepted_to_ws_us: us,
        sent_to_ws_us: us + 100,
        before_202: us == 0,
    };
    let wait = Duration::from_secs(5);
    let mut a = Tally::default();
    assert!(!a.record(Outcome::Arrived(timing(300), Some(7)), wait));
    assert!(!a.record(Outcome::Arrived(timing(0), None), wait));
    assert!(a.record(Outcome::Missing(120), wait));
    let mut b = Tally::default();
    assert!(b.record(
        Outcome::Failed {
            class: "503".into(),
            problem: "busy".into()
        },
        wait
    ));
    assert!(b.record(Outcome::FeedGone(90), wait));
    assert!(!b.record(Outcome::Arrived(timing(500), Some(8)), wait));
    a.merge(b);
    assert_eq!((a.arrived, a.missing, a.before_202), (3, 1, 1));
    assert_eq!(a.alert_ids, [7, 8]);
    assert_eq!(
        a.failures.by_class,
        BTreeMap::from([
            (NO_FRAME.to_string(), 1),
            ("503".to_string(), 1),
            (FEED_GONE.to_string(), 1)
        ])
    );
    assert!(a
        .failures
        .first_problem
        .as_deref()
        .expect("some")
        .contains("5s"));

    let phase = Phase {
        name: "alerts",
        frame: "alert opened",
        watch: Watch::AlertOpened,
        value: OUT_OF_RANGE,
        ts_offset_ms: 1,
    };
    let report = a.into_report(phase, 10, Some("why".into()));
    // Missing and feed-gone samples were accepted (202); the 503 was not.
    assert_eq!((report.planned, report.accepted), (10, 5));
    let ws = report.accepted_to_ws.expect("three arrived");
    assert_eq!((ws.count, ws.p50_us, ws.max_us), (3, 300, 500));
    assert_eq!(report.sent_to_202.expect("five").count, 5);
    assert_eq!(report.stopped.as_deref(), Some("why"));
}

#[test]
fn load_averages_parse() {
    let cases: &[(&str, Option<[f64; 3]>)] = &[
        ("0.52 0.58 0.59 1/467 12345\n", Some([0.52, 0.58, 0.59])),
        ("2.65 2.63 2.81", Some([2.65, 2.63, 2.81])),
        ("", None),
        ("0.5 0.5", None),
        ("a b c", None),
        ("1 -1 1", None),
        ("NaN 1 1", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_loadavg(text), *want, "{text:?}");
    }
}

#[test]
fn sensor_keys_and_bodies() {
    assert_eq!(sensor_key(0), "alert-bench-0000");
    assert_eq!(sensor_key(42), "alert-bench-0042");
    assert_eq!(sensor_key(12_345), "alert-bench-12345");
    let body: serde_json::Value =
        serde_json::from_slice(&reading_body("alert-bench-0001", 1_700_000_000_000, -1.0))
            .expect("json");
    assert_eq!(
        body,
        serde_json::json!({"sensor": "alert-bench-0001", "ts": 1_700_000_000_000_i64, "value": -1.0})
    );
    let spec: serde_json::Value = serde_json::from_str(SENSOR_SPEC).expect("json");
    assert_eq!(spec["rules"][0]["max"], 0);
    const { assert!(IN_RANGE <= 0.0 && OUT_OF_RANGE > 0.0) };
}

/// How the stand-in server misbehaves.
#[derive(Default)]
struct Script {
    /// Sensors whose alerts are opened but never pushed on the feed.
    lose_alert: Option<fn(&str) -> bool>,
    /// Open alerts an earlier run left behind: (sensor, id).
    stale: Vec<(String, i64)>,
    /// Close every WebSocket after pushing this many frames.
    hang_up_after: Option<usize>,
    /// Answer readings with this status instead of 202.
    reject_readings: Option<u16>,
    /// Delay between the 202 and the frames.
    frame_delay: Duration,
}

#[derive(Default)]
struct Seen {
    puts: Vec<String>,
    lists: Vec<String>,
    resolved: Vec<i64>,
    /// (sensor, ts, value) of every reading taken.
    readings: Vec<(String, i64, f64)>,
}

struct Fake {
    script: Script,
    feed: broadcast::Sender<String>,
    next_id: AtomicI64,
    seen: Mutex<Seen>,
}

type FakeState = Arc<Fake>;

fn authorised(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer tok")
}

fn unauthorised() -> Response {
    (AxStatus::UNAUTHORIZED, "no").into_response()
}

async fn start(script: Script) -> (String, FakeState) {
    let (feed, _) = broadcast::channel(4096);
    let fake = Arc::new(Fake {
        script,
        feed,
        next_id: AtomicI64::new(1),
        seen: Mutex::new(Seen::default()),
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/sensors/{key}", put(put_sensor))
        .route("/api/v1/readings", post(post_reading))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}/resolve", post(resolve))
        .route("/api/v1/ws", get(ws))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, fake)
}

async fn put_sensor(
    State(fake): State<FakeState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: String,
) -> Response {
    if !authorised(&headers) {
        return unauthorised();
    }
    assert_eq!(body, SENSOR_SPEC);
    fake.seen.lock().expect("lock").puts.push(key);
    AxStatus::CREATED.into_response()
}

async fn post_reading(
    State(fake): State<FakeState>,
    headers: HeaderMap,
    Json(reading): Json<serde_json::Value>,
) -> Response {
    if !authorised(&headers) {
        return unauthorised();
    }
    if let Some(status) = fake.script.reject_readings {
        let status = AxStatus::from_u16(status).expect("valid status");
        return (status, "scripted failure").into_response();
    }
    let sensor = reading["sensor"].as_str().expect("sensor").to_string();
    let ts = reading["ts"].as_i64().expect("ts");
    let value = reading["value"].as_f64().expect("value");
    fake.seen
        .lock()
        .expect("lock")
        .readings
        .push((sensor.clone(), ts, value));
    let id = fake.next_id.fetch_add(1, Ordering::SeqCst);
    let lose = fake.script.lose_alert.is_some_and(|lose| lose(&sensor));
    let (feed, delay) = (fake.feed.clone(), fake.script.frame_delay);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = feed.send(
            serde_json::json!({"type": "readings", "readings": [
                {"sensor": sensor, "metric": "temperature", "ts": ts, "value": value}]})
            .to_string(),
        );
        if value > 0.0 && !lose {
            let _ = feed.send(
                serde_json::json!({"type": "alert", "change": "opened",
                    "alert": {"id": id, "sensor": sensor, "state": "open"}})
                .to_string(),
            );
        }
    });
    (AxStatus::ACCEPTED, r#"{"accepted":1}"#).into_response()
}

async fn list_alerts(
    State(fake): State<FakeState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !authorised(&headers) {
        return unauthorised();
    }
    let sensor = query.get("sensor").cloned().unwrap_or_default();
    let state = query.get("state").cloned().unwrap_or_default();
    fake.seen
        .lock()
        .expect("lock")
        .lists
        .push(format!("{sensor} {state}"));
    let found: Vec<serde_json::Value> = fake
        .script
        .stale
        .iter()
        .filter(|(s, _)| *s == sensor && state == "open")
        .map(|(s, id)| serde_json::json!({"id": id, "sensor": s, "state": "open"}))
        .collect();
    Json(found).into_response()
}

async fn resolve(
    State(fake): State<FakeState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    if !authorised(&headers) {
        return unauthorised();
    }
    fake.seen.lock().expect("lock").resolved.push(id);
    Json(serde_json::json!({"id": id, "state": "resolved"})).into_response()
}

async fn ws(
    State(fake): State<FakeState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !authorised(&headers) {
        return unauthorised();
    }
    // Subscribed before the upgrade completes, so no frame can slip past a new client.
    let mut frames = fake.feed.subscribe();
    let hang_up_after = fake.script.hang_up_after;
    upgrade.on_upgrade(move |mut socket| async move {
        let mut sent = 0;
        while let Ok(text) = frames.recv().await {
            if hang_up_after.is_some_and(|n| sent >= n) {
                let _ = socket.send(WsMessage::Close(None)).await;
                return;
            }
            if socket.send(WsMessage::Text(text.into())).await.is_err() {
                return;
            }
            sent += 1;
        }
    })
}

#[tokio::test]
async fn measures_both_phases_and_cleans_up() {
    for concurrency in [1, 3] {
        let (url, fake) = start(Script {
            stale: vec![(sensor_key(3), 900)],
            frame_delay: Duration::from_millis(2),
            ..Script::default()
        })
        .await;
        let mut args = small(&url, 12);
        args.concurrency = concurrency;
        let report = bench_alerts(args).await.expect("runs");

        for phase in [&report.baseline, &report.alerts] {
            assert_eq!(
                (phase.planned, phase.accepted, phase.arrived, phase.missing),
                (12, 12, 12, 0),
                "{phase:?}"
            );
            assert!(
                phase.errors.is_empty() && phase.stopped.is_none(),
                "{phase:?}"
            );
            let ws = phase.accepted_to_ws.expect("arrived");
            let e2e = phase.sent_to_ws.expect("arrived");
            assert_eq!((ws.count, e2e.count), (12, 12));
            // The stand-in holds every frame 2 ms after its 202.
            assert!(ws.p50_us >= 2_000, "{ws:?}");
            assert!(e2e.p50_us >= ws.p50_us && e2e.max_us >= ws.max_us);
        }
        assert_eq!(report.baseline.frame, "readings");
        assert_eq!(report.alerts.frame, "alert opened");
        assert_eq!(report.within_budget, Some(true), "{}", report.render());
        assert!(report.alert_vs_baseline_p99.is_some());
        // Baseline: 12 readings frames; alerts: 12 readings + 12 alert frames.
        assert_eq!(report.feed.frames, 36, "{:?}", report.feed);
        assert_eq!(report.feed.ended, None);

        let seen = fake.seen.lock().expect("lock");
        let mut puts = seen.puts.clone();
        puts.sort();
        assert_eq!(puts, (0..12).map(sensor_key).collect::<Vec<_>>());
        assert_eq!(seen.lists.len(), 24, "open and acked, per sensor");
        assert!(seen.lists.contains(&format!("{} acked", sensor_key(11))));
        // The leftover alert first, then every alert this run opened.
        let mut resolved = seen.resolved.clone();
        assert_eq!(resolved.first(), Some(&900), "{resolved:?}");
        resolved.sort();
        assert_eq!(resolved.len(), 13);
        assert!(resolved.windows(2).all(|w| w[0] != w[1]), "{resolved:?}");
        // Each sensor: one in-range reading, then one newer out-of-range reading.
        for key in (0..12).map(sensor_key) {
            let mine: Vec<_> = seen.readings.iter().filter(|r| r.0 == key).collect();
            assert_eq!(mine.len(), 2, "{key}");
            assert_eq!((mine[0].2, mine[1].2), (IN_RANGE, OUT_OF_RANGE), "{key}");
            assert!(
                mine[1].1 > mine[0].1,
                "{key}: the alert reading is the newest"
            );
        }
    }
}

#[tokio::test]
async fn lost_alerts_are_errors_not_figures() {
    let (url, _fake) = start(Script {
        lose_alert: Some(|s| s.ends_with('0') || s.ends_with('5')),
        ..Script::default()
    })
    .await;
    let mut args = small(&url, 10);
    args.wait = Duration::from_millis(100);
    let report = bench_alerts(args.clone()).await.expect("runs");
    assert_eq!(report.baseline.missing, 0);
    assert_eq!(
        (report.alerts.arrived, report.alerts.missing),
        (8, 2),
        "{:?}",
        report.alerts
    );
    assert_eq!(report.alerts.errors.get(NO_FRAME), Some(&2));
    assert_eq!(report.alerts.accepted_to_ws.expect("some").count, 8);
    assert_eq!(report.within_budget, Some(false));
    assert!(report.render().contains("2 MISSING"), "{}", report.render());

    let err = run(args).await.expect_err("a lost alert fails the command");
    assert!(
        err.to_string()
            .contains("2 alert frame(s) and 0 readings frame(s)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_feed_that_ends_stops_the_run_at_once() {
    let (url, _fake) = start(Script {
        hang_up_after: Some(3),
        ..Script::default()
    })
    .await;
    let started = Instant::now();
    // Waiting out 50 samples × 5 s would take minutes; an ended feed must not.
    let mut args = small(&url, 50);
    args.wait = Duration::from_secs(5);
    let report = bench_alerts(args).await.expect("runs");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let b = &report.baseline;
    assert_eq!(b.arrived, 3, "{b:?}");
    assert!(b.accepted < 50, "{b:?}");
    assert!(b.errors.contains_key(FEED_GONE), "{b:?}");
    assert_eq!(b.stopped.as_deref(), Some("the WebSocket feed ended"));
    assert_eq!(report.alerts.arrived, 0);
    assert!(report.alerts.stopped.is_some());
    assert!(report.feed.ended.is_some(), "{:?}", report.feed);
}

#[tokio::test]
async fn a_server_refusing_readings_stops_after_five() {
    let (url, _fake) = start(Script {
        reject_readings: Some(503),
        ..Script::default()
    })
    .await;
    let report = bench_alerts(small(&url, 40)).await.expect("runs");
    for phase in [&report.baseline, &report.alerts] {
        assert_eq!(phase.errors.get("503"), Some(&5), "{phase:?}");
        assert_eq!(phase.accepted, 0);
        assert_eq!(
            phase.stopped.as_deref(),
            Some("5 samples in a row failed"),
            "{phase:?}"
        );
        assert_eq!(
            phase.first_problem.as_deref(),
            Some("503: scripted failure")
        );
    }
    assert_eq!(report.within_budget, None);
}

#[tokio::test]
async fn a_wrong_token_or_no_server_is_a_clear_error() {
    let (url, _fake) = start(Script::default()).await;
    let mut args = small(&url, 3);
    args.target.token = Some("wrong".into());
    let err = bench_alerts(args).await.expect_err("wrong token");
    assert!(format!("{err:#}").contains("401"), "{err:#}");

    let nobody = format!("http://127.0.0.1:{}", free_port());
    let err = bench_alerts(small(&nobody, 3))
        .await
        .expect_err("no server");
    assert!(format!("{err:#}").contains("no server at"), "{err:#}");
}
