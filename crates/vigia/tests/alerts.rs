//! Rules end to end: thresholds, rates, one alert per excursion, live delivery,
//! ack/resolve and auto-resolve, against the real binary.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

fn rfc3339(ms: i64) -> String {
    vigia_core::Timestamp(ms).to_rfc3339()
}

fn now_ms() -> i64 {
    vigia_core::Timestamp::now().0
}

async fn alerts(server: &TestServer, query: &str) -> Vec<Value> {
    get_json(&server.url(&format!("/api/v1/alerts?{query}")))
        .await
        .as_array()
        .expect("array")
        .clone()
}

fn count(alerts: &[Value], sensor: &str, kind: &str) -> usize {
    alerts
        .iter()
        .filter(|a| a["sensor"] == sensor && a["kind"] == kind)
        .count()
}

async fn ws_connect(
    server: &TestServer,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!(
        "{}/api/v1/ws?access_token={TOKEN}",
        server.base.replacen("http://", "ws://", 1)
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    ws
}

/// Issue acceptance: with the demo running, -16 °C on CF-1 opens exactly one critical
/// threshold alert, visible in the API and pushed over the WebSocket within 1 s; the
/// fast rise opens a rate alert; -16 again opens nothing new.
#[tokio::test(flavor = "multi_thread")]
async fn demo_excursion_opens_one_critical_alert_pushed_within_a_second() {
    let server = TestServer::start(Options {
        demo: true,
        ..Options::default()
    });
    // Two simulated CF-1 readings at least 5 s apart give the rate rule its reference.
    eventually(Duration::from_secs(20), "two CF-1 readings", || async {
        let series = get_json(&server.url("/api/v1/sensors/CF-1/readings")).await;
        (series["points"].as_array()?.len() >= 2).then_some(())
    })
    .await;
    let before = alerts(&server, "state=open").await;
    assert_eq!(count(&before, "CF-1", "threshold"), 0, "{before:?}");

    let mut ws = ws_connect(&server).await;
    let sent = Instant::now();
    let res = post_json(
        &server.url("/api/v1/readings"),
        &json!({"sensor":"CF-1","value":-16}),
    )
    .await;
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"accepted": 1}));

    let pushed = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(msg)) = ws.next().await {
            let Ok(text) = msg.to_text() else { continue };
            let Ok(event) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if event["type"] == "alert"
                && event["change"] == "opened"
                && event["alert"]["sensor"] == "CF-1"
                && event["alert"]["kind"] == "threshold"
            {
                return event;
            }
        }
        panic!("websocket closed");
    })
    .await
    .expect("the alert reached the WebSocket within 1 s");
    println!("alert pushed after {:?}", sent.elapsed());
    assert_eq!(pushed["alert"]["severity"], "critical");
    assert_eq!(pushed["alert"]["state"], "open");
    assert_eq!(pushed["alert"]["value"], -16.0);

    let open = alerts(&server, "state=open").await;
    let threshold: Vec<_> = open
        .iter()
        .filter(|a| a["sensor"] == "CF-1" && a["kind"] == "threshold")
        .collect();
    assert_eq!(threshold.len(), 1, "{open:?}");
    assert_eq!(threshold[0]["severity"], "critical");
    assert_eq!(
        count(&open, "CF-1", "rate"),
        1,
        "the jump from about -20 is a fast rise: {open:?}"
    );

    // The same excursion again: nothing new.
    let res = post_json(
        &server.url("/api/v1/readings"),
        &json!({"sensor":"CF-1","value":-16}),
    )
    .await;
    assert_eq!(res.status(), 202);
    drained(&server).await;
    let open = alerts(&server, "state=open").await;
    assert_eq!(count(&open, "CF-1", "threshold"), 1, "{open:?}");
    assert_eq!(count(&open, "CF-1", "rate"), 1, "{open:?}");
}

async fn provision(server: &TestServer, key: &str) {
    let res = client()
        .put(server.url(&format!("/api/v1/sensors/{key}")))
        .bearer_auth(TOKEN)
        .json(&json!({
            "kind": "freezer",
            "unit": "°C",
            "rules": [
                {"kind": "threshold", "max": -18, "severity": "critical"},
                {"kind": "rate", "max_per_min": 1.0, "direction": "rise", "severity": "warning"}
            ]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

fn readings(key: &str, points: &[(i64, f64)]) -> Value {
    Value::Array(
        points
            .iter()
            .map(|(ts, v)| json!({"sensor": key, "ts": rfc3339(*ts), "value": v}))
            .collect(),
    )
}

/// Two readings of one excursion in the same millisecond, in two concurrent requests
/// (so possibly on two workers), open one alert, not two.
#[tokio::test(flavor = "multi_thread")]
async fn same_millisecond_readings_on_two_workers_open_one_alert() {
    let server = TestServer::start(Options::default());
    let t = now_ms() - 60_000;
    for round in 0..20 {
        let key = format!("FZ-{round}");
        provision(&server, &key).await;
        let body = readings(&key, &[(t, -15.0)]);
        let other = readings(&key, &[(t, -14.0)]);
        let url = server.url("/api/v1/readings");
        let (a, b) = tokio::join!(post_json(&url, &body), post_json(&url, &other));
        assert_eq!((a.status().as_u16(), b.status().as_u16()), (202, 202));
    }
    drained(&server).await;
    let open = alerts(&server, "state=open&limit=1000").await;
    for round in 0..20 {
        assert_eq!(
            count(&open, &format!("FZ-{round}"), "threshold"),
            1,
            "{open:?}"
        );
    }
}

/// Event time drives the rules: a rise over seconds opens a rate alert; noise does not;
/// readings back in range for the hold resolve both alerts automatically; a new
/// excursion opens new ones.
#[tokio::test(flavor = "multi_thread")]
async fn rate_alert_and_auto_resolve_follow_event_time() {
    let server = TestServer::start(Options {
        env: vec![("VIGIA_RULES__RESOLVE_HOLD".into(), "30s".into())],
        ..Options::default()
    });
    provision(&server, "CF-9").await;
    let t = now_ms() - 600_000;
    let url = server.url("/api/v1/readings");
    // Steady with noise for a minute: nothing.
    let steady: Vec<(i64, f64)> = (0..12)
        .map(|i| (t + i * 5_000, -20.0 + if i % 2 == 0 { 0.2 } else { -0.2 }))
        .collect();
    assert_eq!(
        post_json(&url, &readings("CF-9", &steady)).await.status(),
        202
    );
    drained(&server).await;
    assert!(alerts(&server, "sensor=CF-9").await.is_empty());

    // Seed 000: -20 → -16 in 5 s.
    let t1 = t + 60_000;
    assert_eq!(
        post_json(&url, &readings("CF-9", &[(t1, -16.0)]))
            .await
            .status(),
        202
    );
    drained(&server).await;
    let open = alerts(&server, "sensor=CF-9&state=open").await;
    assert_eq!(count(&open, "CF-9", "threshold"), 1, "{open:?}");
    assert_eq!(count(&open, "CF-9", "rate"), 1, "{open:?}");

    // Back to -20 and steady for two minutes of event time: both resolve, as `auto`.
    let back: Vec<(i64, f64)> = (1..=24).map(|i| (t1 + i * 5_000, -20.0)).collect();
    assert_eq!(
        post_json(&url, &readings("CF-9", &back)).await.status(),
        202
    );
    drained(&server).await;
    let all = alerts(&server, "sensor=CF-9").await;
    assert_eq!(all.len(), 2, "{all:?}");
    for a in &all {
        assert_eq!(a["state"], "resolved", "{a}");
        assert_eq!(a["resolved_by"], "auto", "{a}");
    }

    // A new excursion is a new alert.
    let t2 = t1 + 24 * 5_000 + 5_000;
    assert_eq!(
        post_json(&url, &readings("CF-9", &[(t2, -10.0)]))
            .await
            .status(),
        202
    );
    drained(&server).await;
    assert_eq!(
        count(
            &alerts(&server, "sensor=CF-9&state=open").await,
            "CF-9",
            "threshold"
        ),
        1
    );
}

/// Ack keeps the incident open (no duplicate); resolve by hand ends it, and a reading
/// still out of range then opens a new one. Bad ids and unknown alerts are problems.
#[tokio::test(flavor = "multi_thread")]
async fn ack_and_resolve_by_api() {
    let server = TestServer::start(Options::default());
    provision(&server, "CF-5").await;
    let url = server.url("/api/v1/readings");
    let t = now_ms() - 60_000;
    assert_eq!(
        post_json(&url, &readings("CF-5", &[(t, -12.0)]))
            .await
            .status(),
        202
    );
    drained(&server).await;
    let open = alerts(&server, "sensor=CF-5&state=open").await;
    assert_eq!(open.len(), 1, "{open:?}");
    let id = open[0]["id"].as_i64().unwrap();

    let ack = client()
        .post(server.url(&format!("/api/v1/alerts/{id}/ack")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 200);
    let acked: Value = ack.json().await.unwrap();
    assert_eq!(acked["state"], "acked");
    assert_eq!(acked["acked_by"], "bootstrap");

    assert_eq!(
        post_json(&url, &readings("CF-5", &[(t + 5_000, -12.0)]))
            .await
            .status(),
        202
    );
    drained(&server).await;
    assert_eq!(
        alerts(&server, "sensor=CF-5").await.len(),
        1,
        "acked blocks duplicates"
    );

    let resolve = client()
        .post(server.url(&format!("/api/v1/alerts/{id}/resolve")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resolve.status(), 200);
    assert_eq!(resolve.json::<Value>().await.unwrap()["state"], "resolved");
    // Acking a resolved alert conflicts.
    let again = client()
        .post(server.url(&format!("/api/v1/alerts/{id}/ack")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    assert_eq!(
        post_json(&url, &readings("CF-5", &[(t + 10_000, -12.0)]))
            .await
            .status(),
        202
    );
    drained(&server).await;
    let open = alerts(&server, "sensor=CF-5&state=open").await;
    assert_eq!(
        open.len(),
        1,
        "still out of range after a manual resolve: {open:?}"
    );
    assert_ne!(open[0]["id"].as_i64().unwrap(), id);

    for (path, status) in [
        ("/api/v1/alerts/999999/ack", 404),
        ("/api/v1/alerts/abc/ack", 400),
        ("/api/v1/alerts/999999/resolve", 404),
    ] {
        let res = client()
            .post(server.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let res = client()
        .get(server.url("/api/v1/alerts?state=closed"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "state");
}

/// Removing a rule by PUT resolves its unresolved alert (no reading could any more);
/// alerts of the rules that stay are left alone, and the change reaches the WebSocket.
#[tokio::test(flavor = "multi_thread")]
async fn removing_a_rule_resolves_its_alert() {
    let server = TestServer::start(Options::default());
    provision(&server, "CF-8").await;
    let t = now_ms() - 60_000;
    // -12 breaches the threshold; the 8 °C rise in 30 s breaches the rate.
    let res = post_json(
        &server.url("/api/v1/readings"),
        &readings("CF-8", &[(t, -20.0), (t + 30_000, -12.0)]),
    )
    .await;
    assert_eq!(res.status(), 202);
    drained(&server).await;
    let open = alerts(&server, "sensor=CF-8&state=open").await;
    assert_eq!(count(&open, "CF-8", "threshold"), 1, "{open:?}");
    assert_eq!(count(&open, "CF-8", "rate"), 1, "{open:?}");
    let rate_id = open.iter().find(|a| a["kind"] == "rate").unwrap()["id"].clone();

    let mut ws = ws_connect(&server).await;
    let res = client()
        .put(server.url("/api/v1/sensors/CF-8"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "kind": "freezer",
            "rules": [{"kind": "threshold", "max": -18, "severity": "critical"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["open_alerts"], 1, "{view}");

    let pushed = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(msg)) = ws.next().await {
            let Ok(event) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else {
                continue;
            };
            if event["type"] == "alert" && event["change"] == "resolved" {
                return event;
            }
        }
        panic!("websocket closed");
    })
    .await
    .expect("the resolution reached the WebSocket");
    assert_eq!(pushed["alert"]["id"], rate_id);

    let all = alerts(&server, "sensor=CF-8").await;
    let rate = all.iter().find(|a| a["id"] == rate_id).unwrap();
    assert_eq!(rate["state"], "resolved", "{rate}");
    assert_eq!(rate["resolved_by"], "bootstrap (rule removed)");
    let threshold = all.iter().find(|a| a["kind"] == "threshold").unwrap();
    assert_eq!(
        threshold["state"], "open",
        "the kept rule's alert stays: {threshold}"
    );
}

/// A slow rise that straddles a restart still opens its rate alert: the rate window is
/// rebuilt from stored readings. With only the last reading as reference, the rise
/// over the 5 s since it (0.9 °C) would read 0.9/min, under the 1/min limit; over the
/// whole window it reads 1.1/min.
#[tokio::test(flavor = "multi_thread")]
async fn rate_window_survives_a_restart() {
    let mut server = TestServer::start(Options::default());
    provision(&server, "CF-9").await;
    let t = now_ms();
    let res = post_json(
        &server.url("/api/v1/readings"),
        &readings(
            "CF-9",
            &[(t - 55_000, -20.0), (t - 30_000, -19.9), (t - 5_000, -19.8)],
        ),
    )
    .await;
    assert_eq!(res.status(), 202);
    drained(&server).await;
    assert!(alerts(&server, "sensor=CF-9").await.is_empty());

    server.restart();
    let res = post_json(
        &server.url("/api/v1/readings"),
        &readings("CF-9", &[(t, -18.9)]),
    )
    .await;
    assert_eq!(res.status(), 202);
    drained(&server).await;
    let open = alerts(&server, "sensor=CF-9&state=open").await;
    assert_eq!(
        count(&open, "CF-9", "rate"),
        1,
        "{open:?}\n{}",
        server.log()
    );
    assert!(
        server.log().contains("replayed=3"),
        "the three stored readings were replayed:\n{}",
        server.log()
    );
}

/// SSE carries the same events as the WebSocket.
#[tokio::test(flavor = "multi_thread")]
async fn sse_streams_readings_and_alerts() {
    let server = TestServer::start(Options::default());
    provision(&server, "CF-7").await;
    let res = client()
        .get(server.url(&format!("/api/v1/events?access_token={TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut stream = res.bytes_stream();
    let t = now_ms() - 1_000;
    post_json(
        &server.url("/api/v1/readings"),
        &readings("CF-7", &[(t, -5.0)]),
    )
    .await;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: readings") && text.contains("event: alert") {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no readings+alert events in: {text}"));
    assert!(text.contains("\"sensor\":\"CF-7\""), "{text}");
    assert!(text.contains("\"change\":\"opened\""), "{text}");

    let res = client()
        .get(server.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = client()
        .get(server.url("/api/v1/ws?access_token=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
