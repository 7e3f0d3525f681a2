//! Split roles end to end: `--roles api` alone serves reads and the page but takes no
//! readings; `--roles ingest,worker` alone ingests and judges but serves no reads; a
//! second process on the same embedded data dir is refused with a message saying why.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

fn with_roles(roles: &str, data_dir: Option<std::path::PathBuf>) -> TestServer {
    TestServer::start(Options {
        args: vec!["--roles".into(), roles.into()],
        data_dir,
        ..Options::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_worker_alone_ingest_and_judge_then_api_alone_reads() {
    let mut writer = with_roles("ingest,worker", None);
    let data_dir = writer.data_dir().to_path_buf();
    let res = post_json(
        &writer.url("/api/v1/readings"),
        &json!([{"sensor": "CF-9", "value": -20}, {"sensor": "CF-9", "metric": "door", "value": 1}]),
    )
    .await;
    assert_eq!(res.status(), 202);
    drained(&writer).await;
    assert_eq!(
        metric(&writer, "vigia_store_readings_written_total").await,
        2.0
    );
    for path in ["/api/v1/sensors", "/api/v1/alerts", "/"] {
        let res = client()
            .get(writer.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path} is the api role's");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let res = client().get(writer.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path} on every process");
    }
    assert_eq!(writer.terminate(), Some(0));

    let reader = with_roles("api", Some(data_dir));
    let sensors = get_json(&reader.url("/api/v1/sensors")).await;
    assert_eq!(sensors[0]["key"], "CF-9", "{sensors}");
    assert_eq!(sensors[0]["latest"].as_array().unwrap().len(), 2);
    let page = client().get(reader.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200, "the page");
    let res = post_json(
        &reader.url("/api/v1/readings"),
        &json!({"sensor": "CF-9", "value": 1}),
    )
    .await;
    assert_eq!(res.status(), 404, "no ingest without the ingest role");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let res = client().get(reader.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path} on every process");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_data_dir_is_refused() {
    let server = with_roles("api", None);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigia"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--roles",
        "api",
        "--data-dir",
    ])
    .arg(server.data_dir());
    for (k, _) in std::env::vars() {
        if k.starts_with("VIGIA_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run a second vigia serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another `vigia serve` is running on the data dir")
            && stderr.contains("own --data-dir"),
        "{stderr}"
    );
    // The first one is unaffected.
    let res = client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_roles_are_refused_with_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigia"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--roles",
        "api,cook",
        "--data-dir",
    ])
    .arg(dir.path());
    let out = cmd.output().expect("run vigia serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown role `cook`") && stderr.contains("ingest, worker, api, scheduler"),
        "{stderr}"
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
}
