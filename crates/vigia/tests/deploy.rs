//! The deployment artefacts (`deploy/`) and the two commands they lean on: `vigia probe`
//! (the image's health check; it has no curl) and `vigia serve --check` (validate a
//! configuration without starting anything).
//!
//! The manifests are validated offline by `tests/deploy/run.sh check` with pinned tools
//! that `.ci/run` installs; without them those tests are skipped with a notice, unless
//! `VIGIA_REQUIRE_SERVICES=1`, where they fail.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script() -> PathBuf {
    repo_root().join("tests/deploy/run.sh")
}

/// Whether the pinned validators are installed; skips (or fails, when services are
/// required) the calling test when not.
fn validators_installed(test: &str) -> bool {
    let status = Command::new("bash")
        .arg(script())
        .arg("installed")
        .status()
        .expect("run tests/deploy/run.sh installed");
    status.success()
        || vigia_core::services::skip_or_fail(
            test,
            "the deploy validators are not installed (bash tests/deploy/run.sh install)",
        )
}

fn run_script(command: &str, deploy_dir: Option<&Path>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).arg(command).stdin(Stdio::null());
    if let Some(dir) = deploy_dir {
        cmd.env("VIGIA_DEPLOY_CHECK_DIR", dir);
    }
    cmd.output().expect("run tests/deploy/run.sh")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `vigia` binary with a clean slate: no `VIGIA_*` from the developer's environment,
/// and a working directory without a `.env` or `vigia.toml` that `Config::load` would read.
fn vigia(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigia"));
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("VIGIA_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run vigia")
}

#[test]
fn the_manifests_and_compose_files_pass_the_offline_validators() {
    if !validators_installed("deploy check") {
        return;
    }
    let output = run_script("check", None);
    let out = text(&output);
    println!("{out}");
    assert!(output.status.success(), "tests/deploy/run.sh check:\n{out}");
    assert!(out.contains(", 0 problems"), "{out}");
}

/// Each check must fail on the mistake it exists for: a copy of deploy/ broken one way at
/// a time, and the message must name the mistake.
#[test]
fn each_kind_of_mistake_in_deploy_fails_the_check() {
    if !validators_installed("deploy check of broken copies") {
        return;
    }
    // (file under deploy/, text to replace, replacement, what the failure must say)
    let mistakes: &[(&str, &str, &str, &str)] = &[
        // A misspelt field is accepted by Kubernetes' non-strict decoding and silently lost.
        (
            "k8s/07-api.yaml",
            "readinessProbe:",
            "readinesProbe:",
            "'readinesProbe' was unexpected",
        ),
        (
            "k8s/05-ingest.yaml",
            "averageUtilization: 60",
            "averageUtilization: sixty",
            "must be integer",
        ),
        (
            "k8s/06-worker.yaml",
            "max(vigia_bus_depth_readings",
            "max(vigia_bus_lag_readings",
            "vigia_bus_lag_readings, which no crate records",
        ),
        (
            "k8s/08-analytics.yaml",
            "value: api,scheduler",
            "value: analytics",
            "`analytics` is not a role",
        ),
        (
            "k8s/05-ingest.yaml",
            "path: /readyz",
            "path: /ready",
            "/ready is not a route",
        ),
        (
            "k8s/01-config.yaml",
            "VIGIA_BUS: redis://vigia-redis:6379/0",
            "VIGIA_BUS: redis://vigia-cache:6379/0",
            "VIGIA_BUS points at `vigia-cache`, which is not a service here",
        ),
        (
            "k8s/02-secrets.yaml",
            "POSTGRES_PASSWORD: change-me-postgres-password",
            "POSTGRES_PASSWORD: another-password",
            "the password in VIGIA_STORE differs",
        ),
        (
            "docker-compose.yml",
            "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-vigia-dev-only}",
            "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-another-default}",
            "the password in VIGIA_STORE differs from postgres's",
        ),
        (
            "docker-compose.yml",
            "VIGIA_STORE_MAX_CONNECTIONS",
            "VIGIA_STORE_CONNECTIONS",
            "VIGIA_STORE_CONNECTIONS is not a setting",
        ),
        (
            "docker-compose.mariadb-nats.yml",
            "condition: service_healthy",
            "condition: service_started",
            "without condition: service_healthy",
        ),
        (
            "docker-compose.yml",
            "stop_grace_period:",
            "stop_grace_periods:",
            "(stop_grace_periods)",
        ),
        (
            "Dockerfile",
            "http://127.0.0.1:8080/readyz",
            "http://127.0.0.1:9090/readyz",
            "probes port 9090, the process listens on 8080",
        ),
    ];
    for (file, from, to, needle) in mistakes {
        let tmp = tempfile::tempdir().expect("tempdir");
        let copy = tmp.path().join("deploy");
        copy_dir(&repo_root().join("deploy"), &copy);
        let path = copy.join(file);
        let original = std::fs::read_to_string(&path).expect("read the copy");
        assert!(original.contains(from), "{file} no longer holds `{from}`");
        std::fs::write(&path, original.replacen(from, to, 1)).expect("break the copy");
        let output = run_script("check", Some(&copy));
        let out = text(&output);
        assert!(
            !output.status.success(),
            "{file}: `{to}` passed the check:\n{out}"
        );
        assert!(
            out.contains(needle),
            "{file}: expected `{needle}` in:\n{out}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Every Vigía container of every compose file and manifest gets a configuration that
/// `serve` accepts: its variables, roles and URLs are checked by the real loader.
#[test]
fn every_deployed_configuration_passes_serve_check() {
    if !validators_installed("serve --check of deploy/") {
        return;
    }
    let output = run_script("envs", None);
    assert!(output.status.success(), "run.sh envs:\n{}", text(&output));
    let envs: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let envs = envs.as_array().expect("an array");
    assert!(
        envs.len() >= 8,
        "two compose files and four Deployments: {envs:?}"
    );
    let cwd = tempfile::tempdir().expect("tempdir");
    for entry in envs {
        let source = entry["source"].as_str().expect("source");
        let env: Vec<(&str, &str)> = entry["env"]
            .as_object()
            .expect("env")
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().expect("string value")))
            .collect();
        let output = vigia(&["serve", "--check"], &env, cwd.path());
        let out = text(&output);
        // Backends being added by #13: the deployment is right, this build cannot open
        // them yet. Everything else must pass.
        let pending = ["store `mysql` is not available", "unknown scheme `nats`"];
        if !output.status.success() && pending.iter().any(|p| out.contains(p)) {
            eprintln!("NOTICE {source}: a backend this build lacks yet (#13): {out}");
            continue;
        }
        assert!(output.status.success(), "{source}: serve --check:\n{out}");
        let roles = env
            .iter()
            .find(|(k, _)| *k == "VIGIA_ROLES")
            .map(|(_, v)| *v)
            .expect("VIGIA_ROLES");
        for role in roles.split(',') {
            assert!(out.contains(role), "{source}: summary lacks {role}:\n{out}");
        }
        assert!(
            !out.contains("change-me-postgres-password") && !out.contains("vigia-dev-only"),
            "{source}: the summary shows a password:\n{out}"
        );
    }
}

#[test]
fn serve_check_accepts_a_good_config_and_names_what_is_wrong_in_a_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("never-created");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "listen = \"0.0.0.0:9999\"\ndata_dir = \"{}\"\nroles = \"worker,ingest\"\n\
             store = \"postgres://vigia:hunter22@db:5432/vigia\"\n[workers]\ncount = 3\n",
            data_dir.display()
        ),
    )
    .expect("write config");
    let output = vigia(
        &["serve", "--check", "--config", good.to_str().unwrap()],
        &[("VIGIA_BOOTSTRAP_TOKEN", "a-secret-token-value")],
        dir.path(),
    );
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    for needle in [
        "configuration is valid",
        "0.0.0.0:9999",
        "ingest,worker",
        "postgres://vigia:***@db:5432/vigia",
        "3 × batches of 500",
    ] {
        assert!(out.contains(needle), "`{needle}` in:\n{out}");
    }
    assert!(!out.contains("hunter22") && !out.contains("a-secret-token-value"));
    // A check starts nothing: no data dir, no listener, no store opened.
    assert!(!data_dir.exists(), "serve --check created the data dir");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "roles = \"ingest,cook\"\n").expect("write config");
    let output = vigia(
        &["serve", "--check", "--config", bad.to_str().unwrap()],
        &[],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(err.contains("unknown role `cook`"), "{err}");
    assert!(output.stdout.is_empty(), "no summary for a bad config");

    // Environment variables are read as serve reads them.
    let output = vigia(
        &["serve", "--check"],
        &[("VIGIA_WORKERS__COUNT", "0")],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(err.contains("workers.count"), "{err}");
}

#[test]
fn probe_exits_zero_on_a_ready_server_and_non_zero_on_an_error_status() {
    let server = TestServer::start(Options::default());
    let cwd = tempfile::tempdir().expect("tempdir");
    for route in ["/readyz", "/healthz"] {
        let output = vigia(&["probe", &server.url(route)], &[], cwd.path());
        assert!(output.status.success(), "{route}: {}", text(&output));
        assert!(String::from_utf8_lossy(&output.stdout).starts_with("200 "));
    }
    let url = server.url("/no-such-route");
    let output = vigia(&["probe", &url], &[], cwd.path());
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains(&url) && err.contains("404 Not Found"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn probe_fails_readably_on_a_closed_port_a_silent_server_and_a_bad_url() {
    let cwd = tempfile::tempdir().expect("tempdir");
    // A port that was free a moment ago: nothing listens there now.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let output = vigia(
        &["probe", &format!("http://127.0.0.1:{port}/readyz")],
        &[],
        cwd.path(),
    );
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains(&format!("could not connect to 127.0.0.1:{port}")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // Accepts and never answers: the timeout must end the probe.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/readyz", silent.local_addr().expect("addr"));
    let started = Instant::now();
    let output = vigia(&["probe", "--timeout-s", "0.5", &url], &[], cwd.path());
    assert!(!output.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("no answer within 0.5s"), "{err}");

    for (args, needle) in [
        (vec!["probe", "https://127.0.0.1:1/readyz"], "only http://"),
        (
            vec!["probe", "--timeout-s", "0", "http://127.0.0.1:1/"],
            "--timeout-s",
        ),
    ] {
        let output = vigia(&args, &[], cwd.path());
        assert!(!output.status.success());
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
