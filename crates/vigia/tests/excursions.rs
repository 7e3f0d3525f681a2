//! Excursions end to end: a backlog with its own timestamps goes through the real binary
//! (ingest → bus → worker → store) and comes back from `GET /api/v1/sensors/{key}/excursions`
//! and, for the duration rule's alert, with its `details`.

mod common;

use common::*;
use serde_json::{json, Value};

fn rfc3339(ms: i64) -> String {
    vigia_core::Timestamp(ms).to_rfc3339()
}

const MIN: i64 = 60_000;

async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    client()
        .get(server.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request")
}

/// CF-5 at -20 °C, then -16 °C from minute 5 to minute 80 with a 10-minute silence and a
/// peak of -12 °C, then back at -20: one excursion per rule from minute 5 to minute 80,
/// 75 minutes out (the silence counted), one gap, the peak; the duration rule (1 h)
/// opened an alert whose details say how long, the threshold rule's has none.
#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_makes_excursions_read_back_by_range_and_page() {
    let server = TestServer::start(Options::default());
    let res = client()
        .put(server.url("/api/v1/sensors/CF-5"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "kind": "freezer",
            "rules": [
                {"kind": "threshold", "max": -18, "severity": "critical"},
                {"kind": "duration", "name": "cold", "max": -18, "critical_after": "1h", "window": "24h"}
            ]
        }))
        .send()
        .await
        .expect("put");
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );

    // Three hours ago, so every reading is in the past, at the sensor's 5 s spacing.
    let t0 = (vigia_core::Timestamp::now().0 - 180 * MIN) / 1000 * 1000;
    let mut points: Vec<(i64, f64)> = Vec::new();
    let mut ts = t0;
    while ts < t0 + 90 * MIN {
        let minute = (ts - t0) / MIN;
        let silent = (30 * MIN..40 * MIN).contains(&(ts - t0));
        if !silent {
            let value = match minute {
                50 if ts - t0 == 50 * MIN => -12.0,
                5..=79 => -16.0,
                _ => -20.0,
            };
            points.push((ts, value));
        }
        ts += 5_000;
    }
    // Two requests: the excursion is opened by one batch and extended and closed by others.
    let (first, second) = points.split_at(points.len() / 2);
    for part in [first, second] {
        let body = Value::Array(
            part.iter()
                .map(|(ts, v)| json!({"sensor": "CF-5", "ts": rfc3339(*ts), "value": v}))
                .collect(),
        );
        let res = post_json(&server.url("/api/v1/readings"), &body).await;
        assert_eq!(
            res.status(),
            202,
            "{}",
            res.text().await.unwrap_or_default()
        );
    }
    drained(&server).await;

    let all = get_json(&server.url("/api/v1/sensors/CF-5/excursions")).await;
    let all = all.as_array().expect("array");
    assert_eq!(all.len(), 2, "one per rule: {all:#?}");
    let rules: Vec<&str> = all.iter().map(|e| e["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["cold", "threshold-critical"], "by (start, rule)");
    for e in all {
        assert_eq!(e["start"], rfc3339(t0 + 5 * MIN), "{e}");
        assert_eq!(e["end"], rfc3339(t0 + 80 * MIN), "{e}");
        assert_eq!(e["ongoing"], false);
        assert_eq!(e["peak"], -12.0);
        assert_eq!(e["seconds_out"], 75.0 * 60.0, "the silence counts as out");
        assert_eq!(e["gaps"], 1, "{e}");
        // From the last reading before the silence to the first after it.
        assert_eq!(e["gap_seconds"], 10.0 * 60.0 + 5.0, "{e}");
        assert_eq!(e["metric"], "temperature");
    }

    // By range: one ending before `from` is left out; `to` is exclusive.
    let path = |from: i64, to: i64| format!("/api/v1/sensors/CF-5/excursions?from={from}&to={to}");
    let count = |v: Value| v.as_array().expect("array").len();
    let cases = [
        (t0 + 80 * MIN, t0 + 90 * MIN, 2),
        (t0 + 80 * MIN + 1, t0 + 90 * MIN, 0),
        (t0, t0 + 5 * MIN, 0),
        (t0, t0 + 5 * MIN + 1, 2),
    ];
    for (from, to, want) in cases {
        let got = count(get_json(&server.url(&path(from, to))).await);
        assert_eq!(got, want, "[{from}, {to})");
    }

    // Pages of one, following the Link header.
    let res = get(&server, "/api/v1/sensors/CF-5/excursions?limit=1").await;
    assert_eq!(res.status(), 200);
    let link = res.headers()["link"].to_str().expect("link").to_string();
    let page: Value = res.json().await.expect("json");
    assert_eq!(page[0]["rule"], "cold");
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .expect("url")
        .to_string();
    // The link is the request's own path and query with the next cursor.
    let next = if next.starts_with('/') {
        server.url(&next)
    } else {
        next
    };
    let res = client()
        .get(&next)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("next");
    assert!(res.headers().get("link").is_none(), "the last page");
    let page: Value = res.json().await.expect("json");
    assert_eq!(page[0]["rule"], "threshold-critical");

    // The duration rule's alert says how long it was out when it opened: an hour in.
    let alerts = get_json(&server.url("/api/v1/alerts?sensor=CF-5")).await;
    let alerts = alerts.as_array().expect("array");
    let cold = alerts.iter().find(|a| a["rule"] == "cold").expect("cold");
    assert_eq!(cold["opened_at"], rfc3339(t0 + 65 * MIN), "{cold}");
    assert_eq!(cold["details"]["kind"], "duration", "{cold}");
    assert_eq!(cold["details"]["out_of_range_ms"], 60 * MIN);
    assert_eq!(cold["details"]["limit_ms"], 60 * MIN);
    assert_eq!(cold["details"]["window"], "24h");
    let threshold = alerts
        .iter()
        .find(|a| a["rule"] == "threshold-critical")
        .expect("threshold");
    assert_eq!(threshold["details"], Value::Null, "{threshold}");

    // Bad input names the field; an unknown sensor is 404.
    let problems = [
        ("/api/v1/sensors/CF-5/excursions?from=10&to=5", 400, "from"),
        ("/api/v1/sensors/CF-5/excursions?to=yesterday", 400, "to"),
        ("/api/v1/sensors/CF-5/excursions?limit=0", 400, "limit"),
        (
            "/api/v1/sensors/CF-5/excursions?cursor=bm9wZQ",
            400,
            "cursor",
        ),
    ];
    for (path, status, field) in problems {
        let res = get(&server, path).await;
        assert_eq!(res.status(), status, "{path}");
        let problem: Value = res.json().await.expect("problem");
        assert!(
            problem.to_string().contains(field),
            "{path}: the problem names `{field}`: {problem}"
        );
    }
    assert_eq!(
        get(&server, "/api/v1/sensors/NOPE/excursions")
            .await
            .status(),
        404
    );
}
