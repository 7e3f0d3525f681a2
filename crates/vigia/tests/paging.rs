//! The pagination convention of list routes (`limit`, an opaque `cursor`, and a
//! `Link: <…>; rel="next"` header): following the links returns every sensor and every
//! alert exactly once, in order; bad `limit`s and cursors get a 400 naming the parameter.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Fetches `path` and every following page; returns the pages' items and how many
/// requests it took.
async fn all_pages(server: &TestServer, path: &str) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut next = Some(path.to_string());
    let mut requests = 0;
    while let Some(path) = next {
        requests += 1;
        let res = client()
            .get(server.url(&path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET");
        assert_eq!(res.status(), 200, "GET {path}");
        next = res
            .headers()
            .get("link")
            .map(|v| v.to_str().expect("ASCII link").to_string())
            .map(|link| {
                let url = link
                    .strip_prefix('<')
                    .and_then(|l| l.split_once(">; rel=\"next\""))
                    .unwrap_or_else(|| panic!("not a next link: {link}"))
                    .0;
                assert!(url.contains("cursor="), "{url}");
                url.to_string()
            });
        let page: Vec<Value> = res.json().await.expect("JSON array");
        assert!(
            !page.is_empty() || next.is_none(),
            "an empty page ends the list"
        );
        items.extend(page);
    }
    (items, requests)
}

async fn status_and_field(server: &TestServer, path: &str) -> (u16, String) {
    let res = client()
        .get(server.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    let status = res.status().as_u16();
    let problem: Value = res.json().await.expect("problem");
    (
        status,
        problem["errors"][0]["field"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

#[tokio::test]
async fn following_next_links_lists_every_sensor_and_alert_once() {
    let server = TestServer::start(Options::default());
    // 250 sensors from one batch (workers provision them), keys in byte order.
    let now = vigia_core::Timestamp::now().0;
    let rows: Vec<Value> = (0..250)
        .map(|i| json!({"sensor": format!("S-{i:03}"), "ts": now - 1_000, "value": 1.0}))
        .collect();
    let res = post_json(&server.url("/api/v1/readings"), &json!(rows)).await;
    assert_eq!(res.status(), 202);
    // Workers provision the sensors before they commit the readings, so a listing may
    // show a sensor whose latest value is not stored yet: wait for both.
    let (sensors, requests) = eventually(Duration::from_secs(20), "250 sensors", || async {
        let (sensors, requests) = all_pages(&server, "/api/v1/sensors?limit=40").await;
        let complete =
            sensors.len() == 250 && sensors.iter().all(|s| s["latest"][0]["value"] == 1.0);
        complete.then_some((sensors, requests))
    })
    .await;
    assert_eq!(requests, 7, "250 sensors in pages of 40");
    let keys: Vec<&str> = sensors.iter().map(|s| s["key"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..250).map(|i| format!("S-{i:03}")).collect();
    assert_eq!(keys, want, "each sensor once, by key");
    assert!(
        sensors.iter().all(|s| s["latest"][0]["value"] == 1.0),
        "each page carries its sensors' latest values"
    );
    // Without `limit`: pages of 100.
    assert_eq!(all_pages(&server, "/api/v1/sensors").await.1, 3);

    // 30 alerts: one threshold excursion on each of 30 sensors.
    for i in 0..30 {
        let res = client()
            .put(server.url(&format!("/api/v1/sensors/S-{i:03}")))
            .bearer_auth(TOKEN)
            .json(&json!({"rules": [{"kind": "threshold", "max": 0, "severity": "warning"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
    let rows: Vec<Value> = (0..30)
        .map(|i| json!({"sensor": format!("S-{i:03}"), "ts": now, "value": 5.0}))
        .collect();
    assert_eq!(
        post_json(&server.url("/api/v1/readings"), &json!(rows))
            .await
            .status(),
        202
    );
    let alerts = eventually(Duration::from_secs(20), "30 alerts", || async {
        let (alerts, _) = all_pages(&server, "/api/v1/alerts?state=open&limit=7").await;
        (alerts.len() == 30).then_some(alerts)
    })
    .await;
    let ids: Vec<i64> = alerts.iter().map(|a| a["id"].as_i64().unwrap()).collect();
    let mut newest_first = ids.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    newest_first.dedup();
    assert_eq!(ids, newest_first, "each alert once, newest first");
    // The filter holds on every page: no resolved alerts among them.
    assert!(alerts.iter().all(|a| a["state"] == "open"));

    // Bad paging parameters.
    let sensor_cursor = {
        let res = client()
            .get(server.url("/api/v1/sensors?limit=1"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let link = res.headers()["link"].to_str().unwrap().to_string();
        link.split("cursor=")
            .nth(1)
            .unwrap()
            .split('>')
            .next()
            .unwrap()
            .to_string()
    };
    for (path, field) in [
        ("/api/v1/sensors?limit=0".to_string(), "limit"),
        ("/api/v1/sensors?limit=1001".to_string(), "limit"),
        ("/api/v1/sensors?cursor=%21%21".to_string(), "cursor"),
        (format!("/api/v1/alerts?cursor={sensor_cursor}"), "cursor"),
        ("/api/v1/alerts?limit=5000".to_string(), "limit"),
    ] {
        assert_eq!(
            status_and_field(&server, &path).await,
            (400, field.to_string()),
            "{path}"
        );
    }
}
