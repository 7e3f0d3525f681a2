//! The bad-input matrix: every malformed or refused request gets its documented status
//! and problem body, and nothing from it — nor anything else — is lost or written.

mod common;

use common::*;
use serde_json::{json, Value};

const LIMIT: usize = 1024 * 1024;

fn now_ms() -> i64 {
    vigia_core::Timestamp::now().0
}

struct Case {
    name: &'static str,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    token: Option<&'static str>,
    status: u16,
    /// (row, field) pairs the problem must list, in order.
    fields: Vec<(Option<usize>, &'static str)>,
}

fn case(name: &'static str, body: impl Into<Vec<u8>>, status: u16) -> Case {
    Case {
        name,
        body: body.into(),
        content_type: Some("application/json"),
        token: Some(TOKEN),
        status,
        fields: vec![],
    }
}

fn batch_with_bad_rows(rows: usize, bad: &[usize]) -> Vec<u8> {
    let t = now_ms() - 3_600_000;
    let rows: Vec<Value> = (0..rows)
        .map(|i| {
            if bad.contains(&i) {
                match i % 3 {
                    0 => json!({"sensor": "BAD-BATCH", "value": "warm"}),
                    1 => json!({"sensor": "BAD-BATCH", "ts": "not-a-time", "value": 1}),
                    _ => json!({"value": 1}),
                }
            } else {
                json!({"sensor": "BAD-BATCH", "ts": t + i as i64, "value": -20.0})
            }
        })
        .collect();
    serde_json::to_vec(&rows).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_matrix() {
    let server = TestServer::start(Options {
        env: vec![("VIGIA_INGEST__MAX_BODY_BYTES".into(), LIMIT.to_string())],
        ..Options::default()
    });
    let url = server.url("/api/v1/readings");

    // Good data first, to prove later failures do not touch it.
    let t0 = now_ms() - 600_000;
    let good: Vec<Value> = (0..50)
        .map(|i| json!({"sensor": "GOOD", "ts": t0 + i * 1000, "value": i as f64}))
        .collect();
    assert_eq!(post_json(&url, &Value::Array(good)).await.status(), 202);
    drained(&server).await;
    let accepted_before = metric(&server, "vigia_ingest_readings_total").await;

    let future = vigia_core::Timestamp(now_ms() + 25 * 3_600_000).to_rfc3339();
    let oversize = {
        let row = r#"{"sensor":"HUGE","value":1.0},"#;
        let mut body = String::from("[");
        while body.len() < LIMIT + 10 {
            body.push_str(row);
        }
        body.pop();
        body.push(']');
        body.into_bytes()
    };
    let cases = vec![
        case("malformed JSON", r#"{"sensor":"X","value":"#, 400),
        case("not JSON at all", "temperature=5", 400),
        case("NaN literal", r#"{"sensor":"X","value":NaN}"#, 400),
        Case {
            fields: vec![(None, "value")],
            ..case(
                "Infinity by overflow",
                r#"{"sensor":"X","value":1e999}"#,
                422,
            )
        },
        Case {
            fields: vec![(None, "value")],
            ..case(
                "value of wrong type",
                r#"{"sensor":"X","value":"hot"}"#,
                422,
            )
        },
        Case {
            fields: vec![(None, "sensor")],
            ..case("sensor of wrong type", r#"{"sensor":5,"value":1}"#, 422)
        },
        Case {
            fields: vec![(None, "sensor")],
            ..case("missing sensor", r#"{"value":1}"#, 422)
        },
        Case {
            fields: vec![(None, "value")],
            ..case("missing value", r#"{"sensor":"X"}"#, 422)
        },
        Case {
            fields: vec![(None, "valeu"), (None, "value")],
            ..case("unknown field", r#"{"sensor":"X","valeu":1}"#, 422)
        },
        Case {
            fields: vec![(None, "sensor")],
            ..case("empty sensor", r#"{"sensor":"","value":1}"#, 422)
        },
        Case {
            fields: vec![(None, "ts")],
            ..case(
                "future timestamp",
                format!(r#"{{"sensor":"X","ts":"{future}","value":1}}"#),
                422,
            )
        },
        Case {
            fields: vec![(None, "ts")],
            ..case(
                "bad timestamp",
                r#"{"sensor":"X","ts":"yesterday","value":1}"#,
                422,
            )
        },
        case("empty batch", "[]", 422),
        case("body over the limit", oversize, 413),
        Case {
            fields: vec![
                (Some(15), "value"),
                (Some(5002), "ts"),
                (Some(9998), "sensor"),
            ],
            ..case(
                "10,000-row batch with 3 bad rows",
                batch_with_bad_rows(10_000, &[15, 5002, 9998]),
                422,
            )
        },
        Case {
            content_type: Some("text/plain"),
            ..case("wrong content type", r#"{"sensor":"X","value":1}"#, 415)
        },
        Case {
            token: None,
            ..case("no token", r#"{"sensor":"X","value":1}"#, 401)
        },
        Case {
            token: Some("wrong-token"),
            ..case("wrong token", r#"{"sensor":"X","value":1}"#, 401)
        },
    ];

    for c in &cases {
        let mut req = client().post(&url).body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        if let Some(token) = c.token {
            req = req.bearer_auth(token);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let retry = res.headers().get("retry-after").is_some();
        let www = res.headers().get("www-authenticate").is_some();
        let text = res.text().await.unwrap();
        assert_eq!(status, c.status, "{}: {text}", c.name);
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{}",
            c.name
        );
        let problem: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{}: {text}", c.name));
        assert_eq!(problem["status"], c.status, "{}: {text}", c.name);
        assert!(
            problem["type"].as_str().unwrap().starts_with("https://"),
            "{}",
            c.name
        );
        assert!(!problem["title"].as_str().unwrap().is_empty(), "{}", c.name);
        assert!(
            !problem["detail"].as_str().unwrap().is_empty(),
            "{}",
            c.name
        );
        assert!(!retry, "{}: no Retry-After on a client error", c.name);
        assert_eq!(
            www,
            c.status == 401,
            "{}: WWW-Authenticate on 401 only",
            c.name
        );
        if !c.fields.is_empty() {
            let errors = problem["errors"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: {text}", c.name));
            let got: Vec<(Option<usize>, String)> = errors
                .iter()
                .map(|e| {
                    (
                        e["row"].as_u64().map(|r| r as usize),
                        e["field"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            assert_eq!(got.len(), c.fields.len(), "{}: {text}", c.name);
            for ((row, field), (want_row, want_field)) in got.iter().zip(&c.fields) {
                assert_eq!(row, want_row, "{}: {text}", c.name);
                if !want_field.is_empty() {
                    assert_eq!(field, want_field, "{}: {text}", c.name);
                }
            }
            if c.fields.iter().any(|(r, _)| r.is_some()) {
                assert_eq!(problem["rows_with_errors"], c.fields.len(), "{}", c.name);
            }
        }
    }

    // Nothing from any refused request was accepted or written...
    drained(&server).await;
    assert_eq!(
        metric(&server, "vigia_ingest_readings_total").await,
        accepted_before
    );
    let sensors = get_json(&server.url("/api/v1/sensors")).await;
    let keys: Vec<&str> = sensors
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["GOOD"],
        "refused requests must not provision sensors"
    );
    // ...and the good data is intact.
    let series = get_json(&server.url(&format!(
        "/api/v1/sensors/GOOD/readings?from={}&to={}",
        t0,
        t0 + 60_000
    )))
    .await;
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 50);
    assert_eq!(points[49]["value"], 49.0);

    // The server still takes good data after all that.
    let res = post_json(&url, &json!({"sensor": "GOOD", "value": 1.5})).await;
    assert_eq!(res.status(), 202);
}

/// Other routes refuse bad input the same way.
#[tokio::test(flavor = "multi_thread")]
async fn sensor_and_query_errors_are_problems() {
    let server = TestServer::start(Options::default());
    let put = |key: &str, body: &'static str| {
        client()
            .put(server.url(&format!("/api/v1/sensors/{key}")))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(&str, &'static str, u16, &str)> = vec![
        (
            "A",
            r#"{"rules":[{"kind":"threshold","severity":"critical"}]}"#,
            422,
            "rules[0].max",
        ),
        (
            "A",
            r#"{"rules":[{"kind":"rate","max_per_min":-1,"severity":"warning"}]}"#,
            422,
            "rules[0].max_per_min",
        ),
        ("A", r#"{"kind":"submarine"}"#, 422, "kind"),
        ("A", r#"{"colour":"red"}"#, 422, "colour"),
        ("A", r#"{"kind":"#, 400, ""),
    ];
    for (key, body, status, field) in cases {
        let res = put(key, body).await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{body}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{body}"
        );
        let problem: Value = res.json().await.unwrap();
        if !field.is_empty() {
            assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
        }
    }
    assert!(get_json(&server.url("/api/v1/sensors"))
        .await
        .as_array()
        .unwrap()
        .is_empty());

    for (path, status) in [
        ("/api/v1/sensors/NOPE/readings", 404),
        ("/api/v1/sensors/NOPE", 404),
        ("/api/v1/sensors/X/readings?limit=0", 400),
        ("/api/v1/sensors/X/readings?step=fast", 400),
        ("/api/v1/sensors/X/readings?from=2026-13-01", 400),
        ("/api/v1/nothing-here", 404),
    ] {
        let res = client()
            .get(server.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "{path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    for path in [
        "/api/v1/sensors",
        "/api/v1/alerts",
        "/api/v1/sensors/X/readings",
    ] {
        let res = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 401, "{path}");
        let res = client()
            .get(server.url(path))
            .header("x-api-key", "nope")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path}");
        let res = client()
            .get(server.url(path))
            .header("x-api-key", TOKEN)
            .send()
            .await
            .unwrap();
        assert_ne!(res.status(), 401, "{path}: X-API-Key is accepted");
    }
}

/// With `ingest.provisioning = required`, readings of unknown sensors are refused whole.
#[tokio::test(flavor = "multi_thread")]
async fn provisioning_required_refuses_unknown_sensors() {
    let server = TestServer::start(Options {
        env: vec![("VIGIA_INGEST__PROVISIONING".into(), "required".into())],
        ..Options::default()
    });
    let res = client()
        .put(server.url("/api/v1/sensors/KNOWN"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let url = server.url("/api/v1/readings");
    let res = post_json(
        &url,
        &json!([{"sensor":"KNOWN","value":1},{"sensor":"STRANGER","value":2}]),
    )
    .await;
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["row"], 1);
    assert_eq!(problem["errors"][0]["field"], "sensor");
    assert_eq!(
        post_json(&url, &json!({"sensor":"KNOWN","value":1}))
            .await
            .status(),
        202
    );
    drained(&server).await;
    let sensors = get_json(&server.url("/api/v1/sensors")).await;
    assert_eq!(sensors.as_array().unwrap().len(), 1);
}
