//! Tenant isolation end to end: a second tenant's key made with `vigia keys create` while
//! the server runs, then two tenants using the same sensor key over HTTP, WebSocket and
//! SSE, each seeing only its own readings, sensors and alerts.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn rfc3339(ms: i64) -> String {
    vigia_core::Timestamp(ms).to_rfc3339()
}

fn now_ms() -> i64 {
    vigia_core::Timestamp::now().0
}

/// Runs `vigia keys create` with `args`, in an environment free of `VIGIA_*` settings.
async fn get(server: &TestServer, token: &str, path: &str) -> reqwest::Response {
    client()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn get_ok(server: &TestServer, token: &str, path: &str) -> Value {
    let res = get(server, token, path).await;
    assert_eq!(res.status(), 200, "GET {path}");
    res.json().await.expect("json")
}

async fn post(server: &TestServer, token: &str, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(server.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn post_readings(server: &TestServer, token: &str, key: &str, points: &[(i64, f64)]) {
    let body = Value::Array(
        points
            .iter()
            .map(|(ts, v)| json!({"sensor": key, "ts": rfc3339(*ts), "value": v}))
            .collect(),
    );
    let res = post(server, token, "/api/v1/readings", &body).await;
    assert_eq!(
        res.status(),
        202,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

/// A freezer whose readings above -18 °C are critical.
async fn provision_freezer(server: &TestServer, token: &str, key: &str) {
    let res = client()
        .put(server.url(&format!("/api/v1/sensors/{key}")))
        .bearer_auth(token)
        .json(&json!({
            "kind": "freezer",
            "unit": "°C",
            "rules": [{"kind": "threshold", "max": -18, "severity": "critical"}]
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

async fn assert_problem(res: reqwest::Response, status: u16, what: &str) {
    assert_eq!(res.status(), status, "{what}");
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    let body: Value = res.json().await.expect("problem body");
    assert_eq!(body["status"], status, "{what}: {body}");
}

fn values(series: &Value) -> Vec<f64> {
    series["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["value"].as_f64().expect("value"))
        .collect()
}

/// Both tenants own a `CF-1`: each sees its own sensor, series, latest value and alerts,
/// and cannot read, ack or resolve the other's alert.
#[tokio::test(flavor = "multi_thread")]
async fn same_sensor_key_in_two_tenants_stays_apart() {
    let server = TestServer::start(Options::default());
    let a = TOKEN.to_string();
    let b = new_key(server.data_dir(), "acme", "acme-ops");

    for token in [&a, &b] {
        provision_freezer(&server, token, "CF-1").await;
    }
    let t = now_ms() - 120_000;
    post_readings(&server, &a, "CF-1", &[(t, -20.0), (t + 5_000, -21.0)]).await;
    post_readings(&server, &b, "CF-1", &[(t, -25.0), (t + 5_000, -26.0)]).await;
    post_readings(&server, &b, "B-ONLY", &[(t, -30.0)]).await;
    drained(&server).await;

    // Sensor lists: own keys, own latest values, distinct sensor ids for the shared key.
    let mut cf1_ids = Vec::new();
    for (token, want) in [
        (&a, vec![("CF-1", -21.0)]),
        (&b, vec![("B-ONLY", -30.0), ("CF-1", -26.0)]),
    ] {
        let sensors = get_ok(&server, token, "/api/v1/sensors").await;
        let got: Vec<(&str, f64)> = sensors
            .as_array()
            .expect("array")
            .iter()
            .map(|s| {
                (
                    s["key"].as_str().expect("key"),
                    s["latest"][0]["value"].as_f64().expect("latest"),
                )
            })
            .collect();
        assert_eq!(got, want, "{sensors}");
        let cf1 = sensors
            .as_array()
            .expect("array")
            .iter()
            .find(|s| s["key"] == "CF-1")
            .expect("CF-1");
        cf1_ids.push(cf1["id"].as_i64().expect("id"));
    }
    assert_ne!(cf1_ids[0], cf1_ids[1], "one sensor id per tenant");

    // Series: the same timestamps, each tenant's own values only.
    let series_a = get_ok(&server, &a, "/api/v1/sensors/CF-1/readings").await;
    let series_b = get_ok(&server, &b, "/api/v1/sensors/CF-1/readings").await;
    assert_eq!(values(&series_a), vec![-20.0, -21.0], "{series_a}");
    assert_eq!(values(&series_b), vec![-25.0, -26.0], "{series_b}");

    // B's own sensor does not exist for A.
    for path in ["/api/v1/sensors/B-ONLY", "/api/v1/sensors/B-ONLY/readings"] {
        assert_problem(get(&server, &a, path).await, 404, path).await;
    }

    // An excursion in A opens an alert for A only.
    post_readings(&server, &a, "CF-1", &[(t + 10_000, -12.0)]).await;
    drained(&server).await;
    let open_a = get_ok(&server, &a, "/api/v1/alerts?state=open").await;
    let open_a = open_a.as_array().expect("array");
    assert_eq!(open_a.len(), 1, "{open_a:?}");
    assert_eq!(
        (
            &open_a[0]["sensor"],
            &open_a[0]["kind"],
            &open_a[0]["value"]
        ),
        (&json!("CF-1"), &json!("threshold"), &json!(-12.0))
    );
    let id = open_a[0]["id"].as_i64().expect("id");
    assert_eq!(
        get_ok(&server, &b, "/api/v1/alerts").await,
        json!([]),
        "B sees no alert"
    );
    let b_cf1 = get_ok(&server, &b, "/api/v1/sensors/CF-1").await;
    assert_eq!(b_cf1["open_alerts"], 0, "{b_cf1}");
    assert_eq!(
        get_ok(&server, &a, "/api/v1/sensors/CF-1").await["open_alerts"],
        1
    );

    // B cannot reach A's alert by id, and trying changes nothing.
    let alert = format!("/api/v1/alerts/{id}");
    assert_problem(get(&server, &b, &alert).await, 404, "B GET A's alert").await;
    for action in ["ack", "resolve"] {
        let path = format!("{alert}/{action}");
        assert_problem(post(&server, &b, &path, &json!({})).await, 404, &path).await;
    }
    let still = get_ok(&server, &a, &alert).await;
    assert_eq!(still["state"], "open", "{still}");
    assert!(
        still["acked_by"].is_null() && still["resolved_by"].is_null(),
        "{still}"
    );

    // Rule state is per tenant too: A's open incident does not swallow B's excursion.
    post_readings(&server, &b, "CF-1", &[(t + 10_000, -10.0)]).await;
    drained(&server).await;
    let open_b = get_ok(&server, &b, "/api/v1/alerts?state=open").await;
    let open_b = open_b.as_array().expect("array");
    assert_eq!(open_b.len(), 1, "{open_b:?}");
    assert_eq!(
        (&open_b[0]["sensor"], &open_b[0]["value"]),
        (&json!("CF-1"), &json!(-10.0))
    );
    let id_b = open_b[0]["id"].as_i64().expect("id");
    assert_ne!(id_b, id);
    assert_eq!(
        get_ok(&server, &a, "/api/v1/alerts")
            .await
            .as_array()
            .expect("array")
            .len(),
        1
    );

    // Each owner acts on its own alert, under its own key's name.
    for (token, id, by) in [(&a, id, "bootstrap"), (&b, id_b, "acme-ops")] {
        let res = post(
            &server,
            token,
            &format!("/api/v1/alerts/{id}/ack"),
            &json!({}),
        )
        .await;
        assert_eq!(res.status(), 200);
        let acked: Value = res.json().await.expect("json");
        assert_eq!(
            (&acked["state"], &acked["acked_by"]),
            (&json!("acked"), &json!(by))
        );
    }
}

async fn ws_connect(server: &TestServer, token: &str) -> Socket {
    let url = format!(
        "{}/api/v1/ws?access_token={token}",
        server.base.replacen("http://", "ws://", 1)
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    ws
}

/// Every value an event carries (reading values, or the alert's value).
fn event_values(event: &Value) -> Vec<f64> {
    match event["type"].as_str() {
        Some("readings") => event["readings"]
            .as_array()
            .expect("readings")
            .iter()
            .map(|r| r["value"].as_f64().expect("value"))
            .collect(),
        Some("alert") => vec![event["alert"]["value"].as_f64().expect("alert value")],
        _ => Vec::new(),
    }
}

/// Events from `ws` until `done` holds for the ones received so far (at most 5 s).
async fn events_until(ws: &mut Socket, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut events = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = ws.next().await {
            let msg = msg.expect("websocket frame");
            let Ok(text) = msg.to_text() else { continue };
            let Ok(event) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            events.push(event);
            if done(&events) {
                return;
            }
        }
        panic!("websocket closed");
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; events so far: {events:?}"));
    events
}

fn saw_value(events: &[Value], value: f64) -> bool {
    events.iter().any(|e| event_values(e).contains(&value))
}

type SseStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// Appends B's SSE text to `text` until it contains `needle` (at most 5 s).
async fn sse_until(stream: &mut SseStream, text: &mut String, needle: &str) {
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("sse chunk")));
            if text.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "no {needle} on the SSE stream: {text}"
    );
}

/// The live feeds carry each tenant's events to that tenant only: A's readings and alert
/// never reach B's WebSocket or SSE stream, B's never reach A's.
#[tokio::test(flavor = "multi_thread")]
async fn live_feeds_carry_only_the_callers_tenant() {
    let server = TestServer::start(Options::default());
    let a = TOKEN.to_string();
    let b = new_key(server.data_dir(), "acme", "admin");
    for token in [&a, &b] {
        provision_freezer(&server, token, "CF-1").await;
    }
    let mut ws_a = ws_connect(&server, &a).await;
    let mut ws_b = ws_connect(&server, &b).await;
    let sse_b = client()
        .get(server.url(&format!("/api/v1/events?access_token={b}")))
        .send()
        .await
        .expect("sse");
    assert_eq!(sse_b.status(), 200);
    let mut sse_b: SseStream = Box::pin(sse_b.bytes_stream());
    let mut sse_text = String::new();

    // Distinct values mark whose event is whose: A's warm-up, reading, excursion and last
    // reading; B's warm-up and reading.
    let a_values = [-21.5, -20.25, -12.5, -19.5];
    let b_values = [-23.5, -24.75];
    let t = now_ms() - 60_000;

    // Warm-ups: each feed has seen its own tenant's event, so every subscription is live
    // before the events that must not cross.
    post_readings(&server, &a, "CF-1", &[(t - 5_000, a_values[0])]).await;
    let mut seen_a = events_until(&mut ws_a, |ev| saw_value(ev, a_values[0])).await;
    post_readings(&server, &b, "CF-1", &[(t - 5_000, b_values[0])]).await;
    let mut seen_b = events_until(&mut ws_b, |ev| saw_value(ev, b_values[0])).await;
    sse_until(&mut sse_b, &mut sse_text, "-23.5").await;

    post_readings(
        &server,
        &a,
        "CF-1",
        &[(t, a_values[1]), (t + 5_000, a_values[2])],
    )
    .await;
    seen_a.extend(
        events_until(&mut ws_a, |ev| {
            saw_value(ev, a_values[1])
                && ev
                    .iter()
                    .any(|e| e["type"] == "alert" && e["change"] == "opened")
        })
        .await,
    );
    // A's events are out before B posts, so had they leaked they would arrive first.
    post_readings(&server, &b, "CF-1", &[(t, b_values[1])]).await;
    seen_b.extend(events_until(&mut ws_b, |ev| saw_value(ev, b_values[1])).await);
    for event in &seen_b {
        assert_eq!(event["type"], "readings", "B's socket got {event}");
        for v in event_values(event) {
            assert!(
                b_values.contains(&v),
                "B's socket got A's value {v}: {seen_b:?}"
            );
        }
    }
    sse_until(&mut sse_b, &mut sse_text, "-24.75").await;
    assert!(!sse_text.contains("event: alert"), "{sse_text}");
    for v in ["-21.5", "-20.25", "-12.5"] {
        assert!(
            !sse_text.contains(v),
            "B's SSE stream got A's value {v}: {sse_text}"
        );
    }

    // And the other way round: after B's reading, A's socket sees A's next one, no B value.
    post_readings(&server, &a, "CF-1", &[(t + 10_000, a_values[3])]).await;
    seen_a.extend(events_until(&mut ws_a, |ev| saw_value(ev, a_values[3])).await);
    for event in &seen_a {
        for v in event_values(event) {
            assert!(
                a_values.contains(&v),
                "A's socket got B's value {v}: {event}"
            );
        }
    }
}

/// `vigia keys create` refuses what it cannot do with a message and a non-zero exit,
/// storing nothing; keys of `default` see the bootstrap key's data.
#[tokio::test(flavor = "multi_thread")]
async fn keys_create_refuses_bad_input_readably() {
    let server = TestServer::start(Options::default());
    let dir = server.data_dir().display().to_string();
    let long = "a".repeat(65);
    let missing = server.data_dir().join("nope").display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--data-dir", &dir, "--tenant", "Acme"],
            "invalid tenant slug `Acme`",
        ),
        (
            &["--data-dir", &dir, "--tenant", ""],
            "invalid tenant slug ``",
        ),
        (
            &["--data-dir", &dir, "--tenant", "acme corp"],
            "lowercase letters",
        ),
        (
            &["--data-dir", &dir, "--tenant", "acme_2"],
            "lowercase letters",
        ),
        (&["--data-dir", &dir, "--tenant", &long], "longer than 64"),
        (
            &["--data-dir", &dir, "--tenant", "acme", "--name", ""],
            "invalid key name",
        ),
        (&["--data-dir", &missing, "--tenant", "acme"], "no store at"),
        (
            &[
                "--data-dir",
                &dir,
                "--tenant",
                "acme",
                "--store",
                "nosuchdb://x",
            ],
            "store `nosuchdb`",
        ),
        (&["--data-dir", &dir], "--tenant"),
    ];
    for (args, needle) in cases {
        let out = keys_create(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(
        !server.data_dir().join("nope").exists(),
        "a missing store is not created"
    );

    // None of the refusals created `acme`: the first real call does; a second call adds
    // another key to the same tenant.
    let first = new_key(server.data_dir(), "acme", "admin");
    let second = new_key(server.data_dir(), "acme", "night");
    assert_ne!(first, second);
    post_readings(&server, &first, "ACME-1", &[(now_ms() - 1_000, 1.0)]).await;
    drained(&server).await;
    let seen = get_ok(&server, &second, "/api/v1/sensors").await;
    assert_eq!(
        seen[0]["key"], "ACME-1",
        "both keys reach the same tenant: {seen}"
    );

    // A second key of `default` reaches the bootstrap key's data; acme's does not.
    post_readings(&server, TOKEN, "D-1", &[(now_ms() - 1_000, 3.0)]).await;
    drained(&server).await;
    let second = new_key(server.data_dir(), "default", "night shift");
    let sensors = get_ok(&server, &second, "/api/v1/sensors").await;
    assert_eq!(sensors[0]["key"], "D-1", "{sensors}");
    let acme = new_key(server.data_dir(), "acme-2", "admin");
    assert_eq!(get_ok(&server, &acme, "/api/v1/sensors").await, json!([]));
    assert_problem(
        get(&server, "vg_not-a-key", "/api/v1/sensors").await,
        401,
        "unknown key",
    )
    .await;
}
