//! Tests of the simulator: the demo sensor definitions against the core's validation,
//! argument parsing, and whole runs against a scripted server (good and bad paths).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use vigia_core::{Condition, RateDirection, Reading, SensorKind, SensorSpec, Severity};

use super::*;
use crate::test_server::{free_port, parse_args, FakeServer, Recorded, Reply};

fn parse(args: &[&str]) -> Result<SimulateArgs, clap::Error> {
    parse_args(args)
}

fn quick(url: &str) -> SimulateArgs {
    SimulateArgs {
        interval: Duration::from_millis(40),
        duration: Some(Duration::from_millis(300)),
        seed: Some(1),
        ..SimulateArgs::new(url, "tok")
    }
}

/// A shutdown signal that fires once the server has seen `n` reading posts (or after
/// 20 s, so a broken test fails instead of hanging). Tests stop on what happened, not
/// on wall-clock time, so they hold on a loaded machine.
async fn after_posts(server: &FakeServer, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while posts(server).len() < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn posts(server: &FakeServer) -> Vec<Recorded> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == READINGS_PATH)
        .collect()
}

fn readings_of(request: &Recorded) -> Vec<Reading> {
    serde_json::from_slice::<Vec<Reading>>(&request.body)
        .or_else(|_| serde_json::from_slice::<Reading>(&request.body).map(|r| vec![r]))
        .expect("a reading or an array of readings in the contract's shape")
}

#[test]
fn seed_sensors_pass_the_core_validation() {
    let sensors = seed_000_sensors();
    let keys: Vec<_> = sensors.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["CF-1", "CF-2", "REF-3"]);
    let mut specs = Vec::new();
    for (key, body) in sensors {
        let mut spec: SensorSpec = serde_json::from_value(body).expect(&key);
        spec.normalise().expect(&key);
        specs.push(spec);
    }
    let expected = [
        (
            "Freezer CF-1",
            SensorKind::Freezer,
            None,
            -18.0,
            RateDirection::Rise,
            1200.0,
            "frozen salmon",
        ),
        (
            "Freezer CF-2",
            SensorKind::Freezer,
            None,
            -18.0,
            RateDirection::Rise,
            800.0,
            "frozen shrimp",
        ),
        (
            "Fridge REF-3",
            SensorKind::Fridge,
            Some(0.0),
            5.0,
            RateDirection::Both,
            350.0,
            "fresh cheese",
        ),
    ];
    for (spec, (name, kind, min, max, direction, stock, product)) in specs.iter().zip(expected) {
        assert_eq!(spec.name.as_deref(), Some(name));
        assert_eq!(spec.kind, kind, "{name}");
        assert_eq!(spec.unit.as_deref(), Some("°C"), "{name}");
        assert_eq!(spec.stock, Some(stock), "{name}");
        assert_eq!(spec.product.as_deref(), Some(product), "{name}");
        assert_eq!(spec.rules.len(), 2, "{name}");
        assert_eq!(spec.rules[0].severity, Severity::Critical, "{name}");
        assert_eq!(
            spec.rules[0].condition,
            Condition::Threshold {
                min,
                max: Some(max)
            },
            "{name}"
        );
        assert_eq!(spec.rules[1].severity, Severity::Warning, "{name}");
        assert_eq!(
            spec.rules[1].condition,
            Condition::Rate {
                max_per_min: 1.0,
                direction
            },
            "{name}"
        );
    }
}

#[test]
fn fleets_start_with_the_seed_rooms_then_alternate() {
    let summary = |n| {
        fleet(n)
            .iter()
            .map(|s| (s.chamber.key().to_string(), s.chamber.profile().kind))
            .collect::<Vec<_>>()
    };
    assert_eq!(summary(1), [("CF-1".to_string(), SensorKind::Freezer)]);
    let six = summary(6);
    let expected = [
        ("CF-1", SensorKind::Freezer),
        ("CF-2", SensorKind::Freezer),
        ("REF-3", SensorKind::Fridge),
        ("SIM-0004", SensorKind::Freezer),
        ("SIM-0005", SensorKind::Fridge),
        ("SIM-0006", SensorKind::Freezer),
    ];
    assert_eq!(six.len(), expected.len());
    for ((key, kind), (want_key, want_kind)) in six.iter().zip(expected) {
        assert_eq!((key.as_str(), *kind), (want_key, want_kind));
    }
    for sensor in fleet(6).into_iter().skip(3) {
        let mut spec: SensorSpec = serde_json::from_value(sensor.spec).expect("valid body");
        spec.normalise().expect("valid rules");
        assert!(spec.name.expect("named").starts_with("Simulated "));
        assert_eq!(spec.stock, None);
    }
}

#[test]
fn path_segments_are_escaped() {
    let cases = [
        ("CF-1", "CF-1"),
        ("a b", "a%20b"),
        ("cámara", "c%C3%A1mara"),
        ("x?y#z%", "x%3Fy%23z%25"),
        ("A.b_c~9", "A.b_c~9"),
    ];
    for (key, want) in cases {
        assert_eq!(path_segment(key), want, "{key}");
    }
}

#[test]
fn arguments_parse_with_defaults() {
    let args = parse(&["--token", "t"]).expect("defaults");
    assert_eq!(args.url, "http://127.0.0.1:8080");
    assert_eq!(args.sensors, 3);
    assert_eq!(args.interval, Duration::from_secs(5));
    assert_eq!(args.duration, None);
    assert!(args.batch && args.provision);
    assert_eq!(args.seed, None);

    let args = parse(&[
        "--token",
        "t",
        "--interval",
        "250ms",
        "--duration",
        "1m",
        "--batch",
        "false",
        "--provision=false",
        "--sensors",
        "7",
        "--seed",
        "9",
    ])
    .expect("all flags");
    assert_eq!(args.interval, Duration::from_millis(250));
    assert_eq!(args.duration, Some(Duration::from_secs(60)));
    assert!(!args.batch && !args.provision);
    assert_eq!((args.sensors, args.seed), (7, Some(9)));
    assert!(
        parse(&["--token", "t", "--batch"])
            .expect("bare flag")
            .batch
    );

    for bad in [
        &["--token", "t", "--interval", "5"][..],
        &["--token", "t", "--batch", "maybe"][..],
        &["--token", "t", "--sensors", "-1"][..],
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
    assert!(!format!("{:?}", parse(&["--token", "secret"]).expect("ok")).contains("secret"));
}

#[tokio::test]
async fn rejects_unusable_arguments() {
    let cases: Vec<(SimulateArgs, &str)> = vec![
        (
            SimulateArgs {
                interval: Duration::ZERO,
                ..SimulateArgs::new("http://127.0.0.1:1", "t")
            },
            "--interval",
        ),
        (
            SimulateArgs {
                sensors: 0,
                ..SimulateArgs::new("http://127.0.0.1:1", "t")
            },
            "--sensors",
        ),
        (SimulateArgs::new("https://127.0.0.1:1", "t"), "https"),
        (SimulateArgs::new("http://127.0.0.1:1", "a\nb"), "token"),
    ];
    for (args, needle) in cases {
        let err = simulate(args, std::future::pending())
            .await
            .expect_err(needle);
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
}

#[tokio::test]
async fn provisions_then_posts_batches_with_timestamps() {
    let server = FakeServer::start(|r| match r.method.as_str() {
        "PUT" => Reply::new(201, "{}"),
        _ => Reply::new(202, r#"{"accepted":3}"#),
    })
    .await;
    let before = Timestamp::now();
    let args = SimulateArgs {
        duration: None,
        ..quick(&server.url)
    };
    let report = simulate(args, after_posts(&server, 5)).await.expect("runs");
    let after = Timestamp::now();

    let requests = server.requests();
    let puts: Vec<_> = requests.iter().filter(|r| r.method == "PUT").collect();
    let paths: Vec<_> = puts.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/sensors/CF-1",
            "/api/v1/sensors/CF-2",
            "/api/v1/sensors/REF-3"
        ]
    );
    let body: Value = serde_json::from_slice(&puts[0].body).expect("json");
    assert_eq!(body["name"], "Freezer CF-1");
    assert!(requests
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer tok")));

    let posts = posts(&server);
    assert!(posts.len() >= 5, "{}", posts.len());
    for post in &posts {
        let readings = readings_of(post);
        let keys: Vec<_> = readings.iter().map(|r| r.sensor.as_str()).collect();
        assert_eq!(keys, ["CF-1", "CF-2", "REF-3"]);
        for r in &readings {
            assert_eq!(r.metric, "temperature");
            assert!(r.ts >= before && r.ts <= after, "ts is now");
            assert_eq!(r.ts, readings[0].ts, "one tick, one timestamp");
        }
        assert!(
            (-22.0..-18.0).contains(&readings[0].value),
            "{}",
            readings[0].value
        );
        assert!(
            (0.0..5.0).contains(&readings[2].value),
            "{}",
            readings[2].value
        );
    }
    assert_eq!(report.sent, report.ticks * 3);
    // The last post may still be in flight when the run stops: its readings are pending.
    assert!(
        report.accepted >= (posts.len() as u64 - 1) * 3,
        "{report:?}"
    );
    assert_eq!(
        report.sent,
        report.accepted + report.failed + report.pending
    );
    assert_eq!((report.retried, report.failed), (0, 0));
}

#[tokio::test]
async fn honours_retry_after_and_resends_the_same_body() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let server = FakeServer::start(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::new(503, r#"{"title":"busy"}"#).header("Retry-After", "0.1")
        } else {
            Reply::new(202, r#"{"accepted":3}"#)
        }
    })
    .await;
    let started = std::time::Instant::now();
    let args = SimulateArgs {
        provision: false,
        duration: None,
        ..quick(&server.url)
    };
    let report = simulate(args, after_posts(&server, 4)).await.expect("runs");
    let posts = posts(&server);
    assert!(posts.len() >= 4);
    assert_eq!(posts[0].body, posts[1].body, "resent as is");
    assert_eq!(posts[1].body, posts[2].body, "resent as is");
    assert_eq!(report.retried, 2);
    assert_eq!(report.failed, 0);
    assert!(report.accepted >= 3);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "waited twice 100 ms"
    );
}

#[tokio::test]
async fn a_refused_token_stops_with_a_clear_message() {
    for provision in [true, false] {
        let server = FakeServer::start(|_| Reply::new(401, r#"{"title":"unauthorized"}"#)).await;
        let args = SimulateArgs {
            provision,
            ..quick(&server.url)
        };
        let err = simulate(args, std::future::pending())
            .await
            .expect_err("401 is fatal");
        assert_eq!(
            err.to_string(),
            "the token was refused: check --token / VIGIA_TOKEN"
        );
        assert_eq!(server.requests().len(), 1, "no retry on 401");
    }
}

#[tokio::test]
async fn a_refused_sensor_names_the_problem() {
    let server = FakeServer::start(|_| Reply::new(422, r#"{"title":"bad rules"}"#)).await;
    let err = simulate(quick(&server.url), std::future::pending())
        .await
        .expect_err("422");
    let text = err.to_string();
    assert!(
        text.contains("CF-1") && text.contains("422") && text.contains("bad rules"),
        "{text}"
    );
}

#[tokio::test]
async fn refused_readings_are_counted_and_the_run_goes_on() {
    let server = FakeServer::start(|_| Reply::new(400, r#"{"title":"nope"}"#)).await;
    let args = SimulateArgs {
        provision: false,
        batch: false,
        duration: None,
        ..quick(&server.url)
    };
    let report = simulate(args, after_posts(&server, 12))
        .await
        .expect("keeps going");
    assert!(report.ticks >= 4);
    assert_eq!(report.accepted, 0);
    assert_eq!(report.failed + report.pending, report.sent);
    assert!(
        report.pending <= 3,
        "at most the tick in flight: {report:?}"
    );
    let posts = posts(&server);
    assert!(
        posts.len() as u64 >= report.failed,
        "one request per reading without --batch"
    );
    assert!(
        serde_json::from_slice::<Reading>(&posts[0].body).is_ok(),
        "a single object"
    );
}

#[tokio::test]
async fn keeps_readings_while_unreachable() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let args = SimulateArgs {
        provision: false,
        duration: Some(Duration::from_millis(500)),
        ..quick(&url)
    };
    let report = simulate(args, std::future::pending())
        .await
        .expect("keeps going");
    assert!(report.ticks >= 2, "{report:?}");
    assert_eq!((report.accepted, report.failed), (0, 0));
    assert_eq!(report.pending, report.sent);
}

#[tokio::test]
async fn waits_for_a_server_that_is_not_up_yet() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let report = simulate(quick(&url), std::future::pending())
        .await
        .expect("provisioning is retried, not fatal");
    assert_eq!(
        report,
        SimulateReport::default(),
        "no readings before provisioning"
    );
}

#[tokio::test]
async fn sends_the_backlog_late_when_the_server_returns() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let server = FakeServer::start(move |_| {
        // The server "restarts" for two ticks: it hangs up on their requests (each on a
        // fresh connection, so the client does not resend them within the tick).
        if counter.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::hang_up()
        } else {
            Reply::new(202, "{}")
        }
    })
    .await;
    let args = SimulateArgs {
        provision: false,
        duration: None,
        ..quick(&server.url)
    };
    let report = simulate(args, after_posts(&server, 4))
        .await
        .expect("keeps going");
    assert_eq!(report.failed, 0);
    assert_eq!(report.sent, report.accepted + report.pending);
    let delivered: Vec<_> = posts(&server).iter().skip(2).map(readings_of).collect();
    let first = delivered.first().expect("delivered after recovery");
    assert_eq!(first.len(), 9, "three ticks of three rooms in one request");
    assert!(
        first[0].ts < first[3].ts && first[3].ts < first[6].ts,
        "original timestamps kept"
    );
}

#[tokio::test]
async fn the_tick_in_flight_at_the_end_is_still_delivered() {
    let server =
        FakeServer::start(|_| Reply::new(202, "{}").delay(Duration::from_millis(300))).await;
    let args = SimulateArgs {
        provision: false,
        duration: Some(Duration::from_millis(100)),
        ..quick(&server.url)
    };
    let report = simulate(args, std::future::pending()).await.expect("runs");
    assert_eq!(report.ticks, 1);
    assert_eq!((report.sent, report.accepted, report.pending), (3, 3, 0));
    let posts = posts(&server);
    assert_eq!(posts.len(), 2, "cut off by the deadline, then resent");
    assert_eq!(posts[0].body, posts[1].body);
}

#[tokio::test]
async fn stops_on_shutdown() {
    let server = FakeServer::start(|_| Reply::new(202, "{}")).await;
    let args = SimulateArgs {
        duration: None,
        ..quick(&server.url)
    };
    let started = std::time::Instant::now();
    let report = simulate(args, tokio::time::sleep(Duration::from_millis(150)))
        .await
        .expect("runs");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(report.ticks >= 2);
}
