//! Dead letters end to end, on the real binary and the embedded store: listed in keyset
//! pages newest first, read whole, replayed into the store, dropped; admin only; another
//! tenant's are not found; bad ids and cursors are 400s naming the parameter.
//!
//! The letters are put in the store's file while the server is stopped: the worker's
//! side (which batches become dead letters) is tested against injected refusals in
//! crates/ingest/tests/test_kit.rs, since a real store refuses nothing ingest accepts.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use vigia_core::{Reading, Timestamp};
use vigia_store::{NewDeadLetter, OpenContext};

fn readings(sensor: &str, start: i64, n: usize) -> Vec<Reading> {
    (0..n)
        .map(|i| Reading {
            sensor: sensor.to_string(),
            metric: "temperature".into(),
            ts: Timestamp(start + i as i64 * 1_000),
            value: -20.5 + i as f64,
        })
        .collect()
}

async fn send(method: reqwest::Method, url: &str, token: &str) -> reqwest::Response {
    client()
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

fn next_link(res: &reqwest::Response) -> Option<String> {
    let link = res.headers().get("link")?.to_str().ok()?;
    let url = link.strip_prefix('<')?.split_once('>')?.0;
    Some(url.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_read_replayed_and_dropped_by_admins() {
    let mut server = TestServer::start(Options::default());
    // An operator key and another tenant's admin key, made while the server runs.
    let res = post_json(
        &server.url("/api/v1/keys"),
        &json!({"name": "ops", "role": "operator"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let operator = res.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let out = keys_create(&[
        "--data-dir",
        &server.data_dir().display().to_string(),
        "--tenant",
        "other",
        "--role",
        "admin",
        "--name",
        "other-admin",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other_admin = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(server.terminate(), Some(0));

    // Four letters of the default tenant and one of `other`, as a worker leaves them.
    let start = Timestamp::now().0 - 120_000;
    let store = vigia_store::open("sqlite", &OpenContext::new(server.data_dir()))
        .await
        .expect("open the store");
    let tenant = store.catalog().default_tenant().await.unwrap().id;
    let other = store
        .catalog()
        .tenant_by_slug("other")
        .await
        .unwrap()
        .expect("tenant other")
        .id;
    let mut ids = Vec::new();
    for i in 0..4 {
        let letter = NewDeadLetter {
            tenant,
            reason: format!("conflict: refused {i}"),
            received_at: Timestamp(start),
            readings: readings(&format!("DL-{i}"), start, 3 + i),
        };
        ids.push(
            store
                .dead_letters()
                .put(letter, Timestamp::now())
                .await
                .unwrap(),
        );
    }
    let foreign = store
        .dead_letters()
        .put(
            NewDeadLetter {
                tenant: other,
                reason: "theirs".into(),
                received_at: Timestamp(start),
                readings: readings("THEIRS", start, 1),
            },
            Timestamp::now(),
        )
        .await
        .unwrap();
    store.close().await;
    server.restart();

    // Pages of 3, newest first, following the links.
    let mut seen = Vec::new();
    let mut url = Some(server.url("/api/v1/dead-letters?limit=3"));
    while let Some(page) = url {
        let res = send(reqwest::Method::GET, &page, TOKEN).await;
        assert_eq!(res.status(), 200);
        url = next_link(&res).map(|path| server.url(&path));
        let body: Vec<Value> = res.json().await.unwrap();
        assert!(body.len() <= 3);
        for letter in body {
            assert!(letter.get("batch").is_none(), "lists carry no readings");
            seen.push(letter["id"].as_u64().unwrap());
        }
    }
    let newest_first: Vec<u64> = ids.iter().rev().copied().collect();
    assert_eq!(seen, newest_first);

    // One letter, whole.
    let res = send(
        reqwest::Method::GET,
        &server.url(&format!("/api/v1/dead-letters/{}", ids[2])),
        TOKEN,
    )
    .await;
    assert_eq!(res.status(), 200);
    let letter: Value = res.json().await.unwrap();
    assert_eq!(letter["reason"], "conflict: refused 2");
    assert_eq!(letter["readings"], 5);
    assert_eq!(letter["sensors"], json!(["DL-2"]));
    assert_eq!(letter["batch"].as_array().unwrap().len(), 5);
    assert_eq!(letter["batch"][0]["sensor"], "DL-2");

    // Admin only; tenants apart; bad ids and cursors named.
    for path in [
        "/api/v1/dead-letters".to_string(),
        format!("/api/v1/dead-letters/{}", ids[0]),
    ] {
        let res = send(reqwest::Method::GET, &server.url(&path), &operator).await;
        assert_eq!(res.status(), 403, "{path}");
    }
    let res = send(
        reqwest::Method::POST,
        &server.url(&format!("/api/v1/dead-letters/{}/replay", ids[0])),
        &operator,
    )
    .await;
    assert_eq!(res.status(), 403, "operators cannot replay");
    for (method, path) in [
        (
            reqwest::Method::GET,
            format!("/api/v1/dead-letters/{foreign}"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/v1/dead-letters/{foreign}"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/dead-letters/{foreign}/replay"),
        ),
    ] {
        let res = send(method.clone(), &server.url(&path), TOKEN).await;
        assert_eq!(res.status(), 404, "{method} {path}: another tenant's");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["status"], 404);
    }
    let theirs = send(
        reqwest::Method::GET,
        &server.url("/api/v1/dead-letters"),
        &other_admin,
    )
    .await;
    let theirs: Vec<Value> = theirs.json().await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["id"].as_u64(), Some(foreign));
    for (path, field) in [
        ("/api/v1/dead-letters/abc", "id"),
        ("/api/v1/dead-letters/-1", "id"),
        ("/api/v1/dead-letters?limit=0", "limit"),
        ("/api/v1/dead-letters?cursor=czE6Q0YtMQ", "cursor"),
        ("/api/v1/dead-letters?cursor=!!", "cursor"),
    ] {
        let res = send(reqwest::Method::GET, &server.url(path), TOKEN).await;
        assert_eq!(res.status(), 400, "{path}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{path}: {problem}");
    }

    // Replay: the readings land in the store and the letter is gone.
    let res = send(
        reqwest::Method::POST,
        &server.url(&format!("/api/v1/dead-letters/{}/replay", ids[1])),
        TOKEN,
    )
    .await;
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["accepted"], 4);
    eventually(Duration::from_secs(20), "the replayed readings", || async {
        let series = get_json(&server.url("/api/v1/sensors/DL-1/readings")).await;
        (series["points"].as_array()?.len() == 4).then_some(())
    })
    .await;
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let res = send(
            method,
            &server.url(&format!("/api/v1/dead-letters/{}", ids[1])),
            TOKEN,
        )
        .await;
        assert_eq!(res.status(), 404, "replayed letters are deleted");
    }

    // Drop: gone, and only that one.
    let res = send(
        reqwest::Method::DELETE,
        &server.url(&format!("/api/v1/dead-letters/{}", ids[3])),
        TOKEN,
    )
    .await;
    assert_eq!(res.status(), 204);
    let left: Vec<Value> = send(
        reqwest::Method::GET,
        &server.url("/api/v1/dead-letters"),
        TOKEN,
    )
    .await
    .json()
    .await
    .unwrap();
    let left: Vec<u64> = left.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert_eq!(left, vec![ids[2], ids[0]]);
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("vigia_dead_letters_total 0"),
        "the counter is exported from the start, and nothing was dead-lettered here"
    );
}
