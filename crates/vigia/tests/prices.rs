//! Products and prices end to end, against the real binary: CSV imports over HTTP and by
//! `vigia prices import` (whole files, idempotent, every bad row and column named,
//! nothing stored on refusal), who may import, the size limit, and products CRUD.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

const GOOD: &str = "product,currency,price_per_kg,valid_from,source\n\
                    CF-beef,USD,2.40,2026-11-23,market\n\
                    CF-beef,USD,2.55,2026-11-30T06:00:00Z,market\n\
                    fish,EUR,11.125,2026-11-23,\n";

async fn import(server: &TestServer, key: &str, csv: &str) -> reqwest::Response {
    client()
        .post(server.url("/api/v1/prices/import"))
        .bearer_auth(key)
        .header("content-type", "text/csv")
        .body(csv.to_string())
        .send()
        .await
        .expect("import")
}

async fn prices(server: &TestServer, query: &str) -> Vec<Value> {
    get_json(&server.url(&format!("/api/v1/prices{query}")))
        .await
        .as_array()
        .expect("a list")
        .clone()
}

async fn viewer_key(server: &TestServer) -> String {
    let res = post_json(
        &server.url("/api/v1/keys"),
        &json!({"name": "viewer-key", "role": "viewer"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.expect("json");
    body["key"].as_str().expect("key").to_string()
}

fn prices_cli(server: &TestServer, file: &std::path::Path) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigia"));
    cmd.args(["prices", "import"])
        .arg(file)
        .args(["--data-dir", &server.data_dir().display().to_string()]);
    for (k, _) in std::env::vars() {
        if k.starts_with("VIGIA_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run vigia prices import")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_file_is_imported_once_and_exactly() {
    let server = TestServer::start(Options::default());
    let res = import(&server, TOKEN, GOOD).await;
    assert_eq!(res.status(), 200);
    let counts: Value = res.json().await.expect("json");
    assert_eq!(counts, json!({"imported": 3, "updated": 0, "unchanged": 0}));

    // Again: nothing changes.
    let res = import(&server, TOKEN, GOOD).await;
    assert_eq!(res.status(), 200);
    let counts: Value = res.json().await.expect("json");
    assert_eq!(counts, json!({"imported": 0, "updated": 0, "unchanged": 3}));
    let all = prices(&server, "").await;
    assert_eq!(all.len(), 3, "{all:?}");

    // A correction replaces one amount, under the same identity.
    let corrected = "product,currency,price_per_kg,valid_from,source\n\
                     CF-beef,USD,2.45,2026-11-23,market\n";
    let counts: Value = import(&server, TOKEN, corrected)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(counts, json!({"imported": 0, "updated": 1, "unchanged": 0}));

    let beef = prices(&server, "?product=CF-beef&currency=USD").await;
    let amounts: Vec<&str> = beef
        .iter()
        .map(|p| p["price_per_kg"].as_str().expect("decimal text"))
        .collect();
    assert_eq!(amounts, ["2.55", "2.45"], "newest import first, exact");
    assert_eq!(beef[1]["valid_from"], "2026-11-23T00:00:00.000Z");
    assert_eq!(beef[1]["source"], "market");
    let fish = prices(&server, "?currency=EUR").await;
    assert_eq!(fish.len(), 1);
    assert_eq!(fish[0]["price_per_kg"], "11.125");
    assert_eq!(fish[0]["source"], "csv", "an empty source is `csv`");

    // Pages: one at a time, with a next link.
    let res = client()
        .get(server.url("/api/v1/prices?limit=2"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("page");
    let link = res
        .headers()
        .get("link")
        .expect("a next link")
        .to_str()
        .expect("text")
        .to_string();
    let page: Vec<Value> = res.json().await.expect("json");
    assert_eq!(page.len(), 2);
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .expect("url")
        .to_string();
    let rest: Vec<Value> = client()
        .get(server.url(&next))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("next page")
        .json()
        .await
        .expect("json");
    assert_eq!(rest.len(), 1, "three prices in two pages");

    // Bad query parameters are named.
    let res = client()
        .get(server.url("/api/v1/prices?currency=usd"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("bad currency");
    assert_eq!(res.status(), 400);
    let problem: Value = res.json().await.expect("json");
    assert_eq!(problem["errors"][0]["field"], "currency");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_refused_whole_naming_each_row_and_column() {
    let server = TestServer::start(Options::default());
    let bad = "product,currency,price_per_kg,valid_from\n\
               beef,USD,2.40,2026-11-23\n\
               beef,usd,2.40,2026-11-23\n\
               fish,EUR,1e3,someday\n";
    let res = import(&server, TOKEN, bad).await;
    assert_eq!(res.status(), 422);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.expect("json");
    assert_eq!(problem["rows_with_errors"], 2);
    let cells: Vec<(u64, u64, &str)> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().expect("row"),
                e["line"].as_u64().expect("line"),
                e["field"].as_str().expect("field"),
            )
        })
        .collect();
    assert_eq!(
        cells,
        [
            (2, 3, "currency"),
            (3, 4, "price_per_kg"),
            (3, 4, "valid_from")
        ],
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("row 2 (line 3), column currency"),
        "{problem}"
    );
    assert!(prices(&server, "").await.is_empty(), "nothing stored");

    // A header without a required column, and an unknown one.
    let res = import(&server, TOKEN, "product,currency,price\nbeef,USD,1\n").await;
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.expect("json");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["price", "price_per_kg", "valid_from"], "{problem}");

    // Garbage is a 4xx problem, never a 5xx.
    for garbage in ["", "\u{0}\u{1}\u{2}", "\"", "a,b\n\"c", "\u{feff}"] {
        let res = import(&server, TOKEN, garbage).await;
        assert_eq!(res.status(), 422, "{garbage:?}");
    }
    assert!(prices(&server, "").await.is_empty(), "still nothing stored");

    // The command line says the same, row by row, and stores nothing either.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.csv");
    std::fs::write(&file, bad).expect("write");
    let out = prices_cli(&server, &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for needle in [
        "refused whole, nothing stored: 2 bad row(s)",
        "row 2 (line 3), column currency: `usd` is not an ISO 4217 currency code",
        "row 3 (line 4), column price_per_kg",
        "row 3 (line 4), column valid_from",
    ] {
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
    assert!(prices(&server, "").await.is_empty());

    // And a good file goes in, once.
    let good = dir.path().join("good.csv");
    std::fs::write(&good, GOOD).expect("write");
    let out = prices_cli(&server, &good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "imported 3, updated 0, unchanged 0");
    let out = prices_cli(&server, &good);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "imported 0, updated 0, unchanged 3"
    );
    assert_eq!(prices(&server, "").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_read_prices_but_cannot_import_and_files_are_bounded() {
    let server = TestServer::start(Options {
        env: vec![("VIGIA_PRICES__MAX_IMPORT_BYTES".into(), "1024".into())],
        ..Options::default()
    });
    let viewer = viewer_key(&server).await;
    let res = import(&server, &viewer, GOOD).await;
    assert_eq!(res.status(), 403);
    let problem: Value = res.json().await.expect("json");
    assert!(problem["detail"].as_str().unwrap().contains("viewer"));
    let res = client()
        .get(server.url("/api/v1/prices"))
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("list");
    assert_eq!(res.status(), 200, "a viewer reads prices");

    let mut large = String::from("product,currency,price_per_kg,valid_from\n");
    while large.len() <= 1024 {
        large.push_str("beef,USD,2.40,2026-11-23T00:00:00Z\n");
    }
    let res = import(&server, TOKEN, &large).await;
    assert_eq!(res.status(), 413);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(prices(&server, "").await.is_empty(), "nothing stored");
    let res = import(&server, TOKEN, GOOD).await;
    assert_eq!(res.status(), 200, "within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_are_created_replaced_listed_and_deleted() {
    let server = TestServer::start(Options::default());
    let put = |code: &str, body: Value| {
        let url = server.url(&format!("/api/v1/products/{code}"));
        async move {
            client()
                .put(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .expect("put")
        }
    };
    let res = put("beef", json!({"name": "Beef"})).await;
    assert_eq!(res.status(), 201);
    let beef: Value = res.json().await.expect("json");
    assert_eq!(beef["keep_below"], "2h", "the 4-hour rule's defaults");
    assert_eq!(beef["discard_after"], "4h");
    assert_eq!(beef["discard_after_ms"], 14_400_000);
    assert_eq!(beef["weight_kg"], Value::Null);

    let res = put(
        "beef",
        json!({"name": "Beef, frozen", "weight_kg": 25.5, "keep_below": "90m", "discard_after": "3h"}),
    )
    .await;
    assert_eq!(res.status(), 200, "replaced");
    let got = get_json(&server.url("/api/v1/products/beef")).await;
    assert_eq!(got["name"], "Beef, frozen");
    assert_eq!(got["weight_kg"], 25.5);
    assert_eq!(got["keep_below"], "90m");
    assert_eq!(got["keep_below_ms"], 5_400_000);

    // Every bad field is named; nothing changes.
    let res = put(
        "beef",
        json!({"name": "", "weight_kg": -1, "keep_below": "5h"}),
    )
    .await;
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.expect("json");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "weight_kg", "discard_after"], "{problem}");
    let res = put("beef", json!({"name": "x", "colour": "red"})).await;
    assert!(res.status().is_client_error(), "unknown fields refused");
    assert_eq!(
        get_json(&server.url("/api/v1/products/beef")).await["name"],
        "Beef, frozen"
    );

    assert_eq!(put("fish", json!({"name": "Fish"})).await.status(), 201);
    let list = get_json(&server.url("/api/v1/products")).await;
    let codes: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["beef", "fish"]);

    let viewer = viewer_key(&server).await;
    let res = client()
        .delete(server.url("/api/v1/products/fish"))
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("delete as viewer");
    assert_eq!(res.status(), 403);
    let res = client()
        .delete(server.url("/api/v1/products/fish"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    let res = client()
        .get(server.url("/api/v1/products/fish"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 404);
    let res = client()
        .delete(server.url("/api/v1/products/fish"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete again");
    assert_eq!(res.status(), 404);
}
