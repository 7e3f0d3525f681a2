//! Operations endpoints: liveness, readiness and the Prometheus metrics the issue names.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics() {
    let server = TestServer::start(Options::default());
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let res = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.text().await.unwrap(), body, "{path}");
    }

    let res = client()
        .put(server.url("/api/v1/sensors/M-1"))
        .bearer_auth(TOKEN)
        .json(&json!({"rules": [{"kind": "threshold", "max": 0, "severity": "warning"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = post_json(
        &server.url("/api/v1/readings"),
        &json!([{"sensor": "M-1", "value": 5}, {"sensor": "M-2", "value": 1}]),
    )
    .await;
    assert_eq!(res.status(), 202);
    let res = client()
        .get(server.url("/api/v1/sensors"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    drained(&server).await;

    let res = client().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    let expected = [
        "vigia_ingest_readings_total 2",
        "vigia_store_readings_written_total 2",
        "vigia_bus_depth_readings 0",
        "vigia_worker_batch_readings_bucket",
        "vigia_store_commit_seconds_bucket",
        "vigia_ingest_to_commit_seconds_bucket",
        "vigia_bus_commit_seconds_bucket",
        "vigia_bus_group_publishes_bucket",
        r#"vigia_alerts_opened_total{severity="warning",kind="threshold"} 1"#,
        r#"vigia_http_requests_total{route="/api/v1/readings",status="202"} 1"#,
        r#"vigia_http_requests_total{route="/api/v1/sensors",status="401"} 1"#,
        "vigia_process_resident_memory_bytes",
        "vigia_process_peak_resident_memory_bytes",
        "# TYPE vigia_store_commit_seconds histogram",
    ];
    for line in expected {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

/// Settings come from a TOML file, then `VIGIA_*` variables (which win), then flags.
#[tokio::test(flavor = "multi_thread")]
async fn config_file_and_environment_layer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vigia.toml");
    std::fs::write(
        &file,
        "[ingest]\nmax_body_bytes = 2048\nmax_batch_rows = 10\nqueue_capacity_readings = 1000\n",
    )
    .unwrap();
    let server = TestServer::start(Options {
        args: vec!["--config".into(), file.display().to_string()],
        env: vec![("VIGIA_INGEST__MAX_BATCH_ROWS".into(), "20".into())],
        ..Options::default()
    });
    let url = server.url("/api/v1/readings");
    let now = vigia_core::Timestamp::now().0;
    let rows = |n: usize| {
        serde_json::Value::Array(
            (0..n)
                .map(|i| json!({"sensor": "C", "ts": now - i as i64, "value": 1}))
                .collect(),
        )
    };
    // The file's body limit applies...
    let big = json!([{"sensor": "C", "value": 1, "metric": "x".repeat(3000)}]);
    assert_eq!(post_json(&url, &big).await.status(), 413);
    // ...and the environment overrides the file's row limit (10 → 20).
    assert_eq!(post_json(&url, &rows(15)).await.status(), 202);
    assert_eq!(post_json(&url, &rows(21)).await.status(), 413);
}

/// A bad setting stops the server at start with a message naming it.
#[test]
fn bad_configuration_is_refused_readably() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[ingest]\nmax_body_bites = 5\n").unwrap();
    // (command-line arguments, environment, text the error must contain)
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--config".into(), file.display().to_string()],
            vec![],
            "max_body_bites",
        ),
        (
            vec![],
            vec![("VIGIA_RULES__RESOLVE_HOLD", "soon")],
            "rules.resolve_hold",
        ),
        (
            vec![],
            vec![("VIGIA_STORE", "nosuchdb://db")],
            "store `nosuchdb`",
        ),
        (
            vec![],
            vec![("VIGIA_BOOTSTRAP_TOKEN", "short")],
            "VIGIA_BOOTSTRAP_TOKEN",
        ),
        (
            vec!["--config".into(), "/nonexistent.toml".into()],
            vec![],
            "does not exist",
        ),
    ];
    for (args, env, needle) in cases {
        let data = dir.path().join("data");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vigia"));
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(&args);
        for (k, _) in std::env::vars() {
            if k.starts_with("VIGIA_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{needle}: {stderr}");
        assert!(stderr.contains("error:"), "{needle}: {stderr}");
        assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
    }
}
