//! Rollups and retention end to end (issue 14), on the real binary and the embedded
//! store: a year of hourly points answered from the 1-hour rollups in one query, late
//! readings fixing their buckets, `step=auto`, and retention deleting exactly what is
//! older than set — never a sensor's with an unresolved alert, never a rollup whose raw
//! readings are gone.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Settings that run the rollups every second with no grace.
fn fast_rollups() -> Vec<(String, String)> {
    vec![
        ("VIGIA_ROLLUPS__EVERY".into(), "1s".into()),
        ("VIGIA_ROLLUPS__GRACE".into(), "0s".into()),
    ]
}

async fn post_readings(server: &TestServer, sensor: &str, points: &[(i64, f64)]) {
    for chunk in points.chunks(5_000) {
        let body: Vec<Value> = chunk
            .iter()
            .map(|&(ts, value)| json!({"sensor": sensor, "ts": ts, "value": value}))
            .collect();
        let res = post_json(&server.url("/api/v1/readings"), &Value::Array(body)).await;
        assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    }
}

/// A series; waits out the 404 of a sensor whose first readings are accepted but not yet
/// committed (an empty bus means taken by a worker, not committed).
async fn series(server: &TestServer, sensor: &str, query: &str) -> Value {
    let url = server.url(&format!("/api/v1/sensors/{sensor}/readings?{query}"));
    eventually(Duration::from_secs(20), "the sensor to exist", || async {
        let res = client().get(&url).bearer_auth(TOKEN).send().await.ok()?;
        if res.status() == 404 {
            return None;
        }
        assert!(res.status().is_success(), "GET {url}: {}", res.status());
        res.json().await.ok()
    })
    .await
}

fn points(series: &Value) -> Vec<(i64, f64)> {
    series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ts = p["ts"].as_str().unwrap();
            let ms = chrono_ms(ts);
            (ms, p["value"].as_f64().unwrap())
        })
        .collect()
}

/// Epoch ms of an RFC 3339 instant as the API writes it (`…Z`, milliseconds).
fn chrono_ms(text: &str) -> i64 {
    vigia_core::Timestamp::parse_rfc3339(text)
        .unwrap_or_else(|| panic!("not RFC 3339: {text}"))
        .0
}

/// The last outcome of a job once it has run at least `runs` times.
async fn job_after(server: &TestServer, name: &str, runs: u64) -> Value {
    eventually(Duration::from_secs(60), name, || async {
        let jobs = get_json(&server.url("/api/v1/jobs")).await;
        let job = jobs.as_array()?.iter().find(|j| j["name"] == name)?.clone();
        (job["runs"].as_u64().unwrap_or(0) >= runs && !job["last_run"].is_null()).then_some(job)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_of_hourly_points_comes_from_the_rollups_in_one_query() {
    let mut env = fast_rollups();
    for key in [
        "VIGIA_INGEST__MAX_AGE",
        "VIGIA_RETENTION__RAW",
        "VIGIA_RETENTION__ROLLUPS",
    ] {
        env.push((key.into(), "400d".into()));
    }
    // Small steps: the backlog takes many, and the 1-hour resolution trails the 1-minute
    // one across them.
    env.push(("VIGIA_ROLLUPS__MAX_ROWS_PER_STEP".into(), "1000".into()));
    let server = TestServer::start(Options {
        env,
        ..Options::default()
    });
    let end = now_ms().div_euclid(HOUR) * HOUR - HOUR;
    let start = end - 365 * 24 * HOUR;
    // Two readings an hour (at :10 and :40), so each point is an average of two.
    let readings: Vec<(i64, f64)> = (0..365 * 24)
        .flat_map(|h| {
            let hour = start + h * HOUR;
            [
                (hour + 10 * MINUTE, h as f64),
                (hour + 40 * MINUTE, h as f64 + 1.0),
            ]
        })
        .collect();
    post_readings(&server, "YEAR-1", &readings).await;
    drained(&server).await;

    let query = format!("step=1h&from={start}&to={}&limit=10000", end - 1);
    let answer = eventually(Duration::from_secs(60), "the year's rollups", || async {
        let answer = series(&server, "YEAR-1", &query).await;
        (answer["source"] == "1h" && answer["points"].as_array()?.len() == 365 * 24)
            .then_some(answer)
    })
    .await;
    assert_eq!(answer["step_ms"], HOUR);
    let job = job_after(&server, "rollups", 1).await;
    assert_eq!(job["last_run"]["outcome"], "ok", "{job}");
    let hourly = points(&answer);
    for (h, &(ts, value)) in hourly.iter().enumerate() {
        assert_eq!(ts, start + h as i64 * HOUR);
        assert_eq!(value, h as f64 + 0.5, "hour {h}");
    }

    // Whole days from the same rows: the mean of 48 readings.
    let days = series(
        &server,
        "YEAR-1",
        &format!("step=1d&from={start}&to={}&limit=400", end - 1),
    )
    .await;
    assert_eq!(days["source"], "1h");
    let day_points = points(&days);
    assert!(
        (365..=366).contains(&day_points.len()),
        "{}",
        day_points.len()
    );

    // `auto` aims at the point count and still reads the rollups.
    let auto = series(
        &server,
        "YEAR-1",
        &format!("step=auto&points=60&from={start}&to={end}"),
    )
    .await;
    assert_eq!(auto["source"], "1h", "{auto}");
    assert_eq!(auto["step_ms"], 146 * HOUR);
    let n = auto["points"].as_array().unwrap().len();
    assert!((60..=61).contains(&n), "{n} points");

    // Raw readings are still all there: the raw series agrees.
    let raw = series(
        &server,
        "YEAR-1",
        &format!(
            "step=raw&from={start}&to={}&limit=10000",
            start + 24 * HOUR - 1
        ),
    )
    .await;
    assert_eq!(raw["source"], "raw");
    assert_eq!(raw["step_ms"], Value::Null);
    assert_eq!(raw["points"].as_array().unwrap().len(), 48);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_readings_fix_their_buckets_and_the_newest_come_from_raw() {
    let server = TestServer::start(Options {
        env: fast_rollups(),
        ..Options::default()
    });
    let minute = (now_ms() - 2 * HOUR).div_euclid(MINUTE) * MINUTE;
    post_readings(
        &server,
        "LATE-1",
        &[(minute + 1_000, 10.0), (minute + 2_000, 20.0)],
    )
    .await;
    drained(&server).await;
    let query = format!("step=1m&from={minute}&to={}", minute + MINUTE - 1);
    eventually(Duration::from_secs(30), "the minute rolled up", || async {
        let answer = series(&server, "LATE-1", &query).await;
        (answer["source"] == "1m" && points(&answer) == [(minute, 15.0)]).then_some(())
    })
    .await;
    let job = job_after(&server, "rollups", 1).await;
    assert_eq!(job["last_run"]["outcome"], "ok", "{job}");

    // A reading for that minute arrives late: its bucket is marked dirty with it and the
    // next roll-up recomputes it.
    post_readings(&server, "LATE-1", &[(minute + 30_000, 60.0)]).await;
    eventually(
        Duration::from_secs(30),
        "the late reading counted",
        || async {
            let answer = series(&server, "LATE-1", &query).await;
            (points(&answer) == [(minute, 30.0)]).then_some(())
        },
    )
    .await;
    let hour = minute.div_euclid(HOUR) * HOUR;
    let hourly = series(
        &server,
        "LATE-1",
        &format!("step=1h&from={hour}&to={}", hour + HOUR - 1),
    )
    .await;
    assert_eq!(points(&hourly), [(hour, 30.0)], "{hourly}");

    // Readings of this very minute are not rolled up yet, yet a stepped query has them.
    let now = now_ms();
    post_readings(&server, "LATE-1", &[(now, 7.0)]).await;
    drained(&server).await;
    let recent = series(
        &server,
        "LATE-1",
        &format!("step=1m&from={minute}&to={}", now + 1),
    )
    .await;
    let minute_point = &recent["points"][0];
    assert_eq!(
        (
            &minute_point["min"],
            &minute_point["max"],
            &minute_point["count"]
        ),
        (&json!(10.0), &json!(60.0), &json!(3)),
        "{recent}"
    );
    let recent = points(&recent);
    assert_eq!(recent.first(), Some(&(minute, 30.0)));
    assert_eq!(recent.last(), Some(&(now.div_euclid(MINUTE) * MINUTE, 7.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_exactly_what_is_older_than_set() {
    // First with the default retention: the old readings are accepted and rolled up.
    let mut server = TestServer::start(Options {
        env: fast_rollups(),
        ..Options::default()
    });
    let now = now_ms();
    let aged = |minutes: i64| now - minutes * MINUTE;
    // Raw retention 2 h deletes whole hours: its cutoff lies between 3 h and 2 h ago.
    // Rollup retention 4 h deletes buckets that start more than 4 h ago.
    let plain = [
        (aged(300), 1.0), // raw and rollups past retention: all gone
        (aged(200), 2.0), // raw gone; its 1-minute rollup stays
        (aged(90), 3.0),  // kept
        (aged(30), 4.0),  // kept
    ];
    post_readings(&server, "RET-1", &plain).await;
    // A sensor with an open alert keeps everything, however old.
    let res = client()
        .put(server.url("/api/v1/sensors/RET-ALARM"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "kind": "freezer",
            "unit": "°C",
            "rules": [{"kind": "threshold", "max": 5, "severity": "critical"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    post_readings(&server, "RET-ALARM", &[(aged(300), 1.0), (aged(200), 2.0)]).await;
    post_readings(&server, "RET-ALARM", &[(now, 9.0)]).await;
    // Tenant `acme` keeps raw readings 4 h and rollups 5 h (overrides below).
    let acme_key = new_key(server.data_dir(), "acme", "plant");
    let acme = [(aged(360), 1.0), (aged(200), 2.0), (aged(90), 3.0)];
    let body: Vec<Value> = acme
        .iter()
        .map(|&(ts, value)| json!({"sensor": "RET-1", "ts": ts, "value": value}))
        .collect();
    let res = client()
        .post(server.url("/api/v1/readings"))
        .bearer_auth(&acme_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    drained(&server).await;
    eventually(Duration::from_secs(20), "the alert to open", || async {
        let alerts = get_json(&server.url("/api/v1/alerts?state=open")).await;
        alerts.to_string().contains("RET-ALARM").then_some(())
    })
    .await;
    let whole = format!("from={}&to={}&limit=100", aged(360), now + 1);
    eventually(
        Duration::from_secs(30),
        "the old minutes rolled up",
        || async {
            let answer = series(&server, "RET-1", &format!("step=1m&{whole}")).await;
            (answer["points"].as_array()?.len() == 4).then_some(())
        },
    )
    .await;
    server.terminate();

    // Then on the same data with a short retention and small chunks.
    let mut env = fast_rollups();
    env.extend([
        ("VIGIA_RETENTION__EVERY".to_string(), "1s".to_string()),
        ("VIGIA_RETENTION__RAW".to_string(), "2h".to_string()),
        ("VIGIA_INGEST__MAX_AGE".to_string(), "1h".to_string()),
        ("VIGIA_RETENTION__ROLLUPS".to_string(), "4h".to_string()),
        ("VIGIA_RETENTION__CHUNK".to_string(), "1".to_string()),
        ("VIGIA_RETENTION__PAUSE".to_string(), "1ms".to_string()),
        (
            "VIGIA_RETENTION__TENANTS__ACME__RAW".to_string(),
            "4h".to_string(),
        ),
        (
            "VIGIA_RETENTION__TENANTS__ACME__ROLLUPS".to_string(),
            "5h".to_string(),
        ),
    ]);
    let server = TestServer::start(Options {
        env,
        data_dir: Some(server.data_dir().to_path_buf()),
        ..Options::default()
    });
    let job = job_after(&server, "readings-retention", 1).await;
    assert_eq!(job["last_run"]["outcome"], "ok", "{job}");
    let message = job["last_run"]["message"].as_str().unwrap().to_string();
    // Raw: the two oldest of RET-1 and acme's oldest. Rollups: the oldest minute and hour
    // of RET-1 and of acme's RET-1, and the hour of the default tenant's 200-minute-old
    // reading when that hour started more than 4 h ago.
    let deleted: Vec<u64> = message
        .split(' ')
        .filter_map(|word| word.parse().ok())
        .collect();
    assert_eq!(deleted.first(), Some(&3), "{message}");
    assert!(matches!(deleted.get(1), Some(4 | 5)), "{message}");
    let raw = points(&series(&server, "RET-1", &format!("step=raw&{whole}")).await);
    assert_eq!(raw, [plain[2], plain[3]]);
    let minutes = series(&server, "RET-1", &format!("step=1m&{whole}")).await;
    let minutes: Vec<f64> = points(&minutes).into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        minutes,
        [2.0, 3.0, 4.0],
        "the 200-minute-old rollup outlives its raw row"
    );

    // Acme's sensor of the same key kept what its longer retention keeps.
    let acme_raw = client()
        .get(server.url(&format!("/api/v1/sensors/RET-1/readings?step=raw&{whole}")))
        .bearer_auth(&acme_key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(points(&acme_raw), [acme[1], acme[2]], "{acme_raw}");

    let alarm = points(&series(&server, "RET-ALARM", &format!("step=raw&{whole}")).await);
    assert_eq!(alarm.len(), 3, "{alarm:?}");
    let alarm = series(&server, "RET-ALARM", &format!("step=1m&{whole}")).await;
    assert_eq!(alarm["points"].as_array().unwrap().len(), 3, "{alarm}");

    // A later run finds nothing more to delete.
    let again = job_after(&server, "readings-retention", 2).await;
    assert!(
        again["last_run"]["message"]
            .as_str()
            .unwrap()
            .starts_with("0 raw reading(s) and 0 rollup row(s)"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_series_parameters_are_refused_clearly() {
    let server = TestServer::start(Options::default());
    post_readings(&server, "Q-1", &[(now_ms(), 1.0)]).await;
    drained(&server).await;
    for (query, needle) in [
        ("step=auto&points=0", "points"),
        ("points=10001", "points"),
        ("step=fortnight", "or `auto`"),
        ("step=0.1ms", "at least 1 ms"),
    ] {
        let res = client()
            .get(server.url(&format!("/api/v1/sensors/Q-1/readings?{query}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{query}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
        let body = res.text().await.unwrap();
        assert!(body.contains(needle), "{query}: {body}");
    }
    // A reading older than `ingest.max_age` (7 d) is refused, naming the limit.
    let res = post_json(
        &server.url("/api/v1/readings"),
        &json!({"sensor": "Q-1", "ts": now_ms() - 8 * 24 * HOUR, "value": 1.0}),
    )
    .await;
    assert_eq!(res.status(), 422);
    let body = res.text().await.unwrap();
    assert!(body.contains("7 d in the past"), "{body}");
    // `points` alone means `auto`; beside another step it is ignored.
    let auto = series(&server, "Q-1", "points=10").await;
    assert!(auto["step_ms"].as_i64().unwrap() > 0, "{auto}");
    let hourly = series(&server, "Q-1", "step=1h&points=5").await;
    assert_eq!(hourly["step_ms"], HOUR, "{hourly}");
    let raw = series(&server, "Q-1", "step=raw&points=5").await;
    assert_eq!(raw["step_ms"], Value::Null, "{raw}");
}
